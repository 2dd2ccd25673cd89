// The MoE layer's element-wise and routing kernels (SPEC.md "Routing",
// "Dispatch layout, dispatch, combine"): problems and launchers. moe_ops_entry.cpp
// checks every argument on the host before a launcher runs; launchers only
// enqueue on `stream` and return a moe_cuda_status. Kernels never read or
// write out of bounds on out-of-contract data (ids, rowToken, slotRow out of
// range): they skip it and set a bit in the problem's optional device flag.
#pragma once

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include "moe_cuda_api.h"

namespace moe_cuda {

struct RouterLogitsProblem {
  const void* x;  // [T, H] f32 or bf16
  bool x_bf16;
  const void* w;  // [E, H] f32 or bf16
  bool w_bf16;
  float* logits;  // [T, E] f32
  int64_t tokens, hidden, experts;
};

struct RouteProblem {
  const void* logits;  // [T, E] f32 or bf16
  bool logits_bf16;
  const float* bias;   // [E] f32 or null (sigmoid only)
  int32_t* ids;        // [T, k] i32
  float* weights;      // [T, k] f32
  int32_t* flag;       // optional: MOE_CUDA_FLAG_* bits (see moe_cuda_api.h)
  int64_t tokens, experts, top_k, groups, top_k_groups;
  bool sigmoid, renormalize;
  float scale;
};

struct LayoutProblem {
  const int32_t* ids;        // [T, k] i32
  int32_t* tokens_per_expert;  // [E] i32
  int32_t* offsets;          // [E + 1] i32
  int32_t* row_token;        // [capacity] i32
  int32_t* group_index;      // [capacity] i32
  int32_t* slot_row;         // [T, k] i32
  int32_t* flag;             // optional: MOE_CUDA_FLAG_* bits
  int64_t tokens, slots, experts, capacity;
  int64_t align;             // contiguous
  bool masked;
  int64_t max_rows;          // masked
};

struct DispatchProblem {
  const void* x;          // [T, H] f32 or bf16
  bool x_bf16;
  const int32_t* row_token;  // [R] i32
  void* out;              // [R, H]: x's dtype, or fp8 when quantizing
  float* scales;          // [R, ceil(H/128)] f32, or null (no quantization)
  int32_t* flag;          // optional: MOE_CUDA_FLAG_BAD_INDEX / _NONFINITE
  int64_t rows, tokens, hidden;
  bool ue8m0;
};

struct SwigluProblem {
  const void* h;   // [R, 2I] f32 or bf16
  bool h_bf16;
  void* out;       // [R, I] f32 / bf16, or fp8 when quantizing
  int32_t out_dtype;  // MOE_CUDA_DTYPE_*
  float* scales;   // [R, ceil(I/128)] f32 when quantizing
  int32_t* flag;   // optional: MOE_CUDA_FLAG_NONFINITE
  int64_t rows, inter;
  bool ue8m0;
};

struct CombineProblem {
  const void* y;          // [R, H] f32 or bf16
  bool y_bf16;
  const int32_t* slot_row;  // [T, k] i32
  const float* weights;   // [T, k] f32
  const void* shared;     // [T, H] f32 or bf16, or null
  bool shared_bf16;
  void* out;              // [T, H] f32 or bf16
  bool out_bf16;
  int32_t* flag;          // optional: MOE_CUDA_FLAG_BAD_INDEX / _NONFINITE
  int64_t rows, tokens, slots, hidden;
};

int router_logits_run(const RouterLogitsProblem& p, cudaStream_t stream, char* err, size_t err_len);
int route_run(const RouteProblem& p, cudaStream_t stream, char* err, size_t err_len);
int dispatch_layout_run(const LayoutProblem& p, cudaStream_t stream, char* err, size_t err_len);
int dispatch_run(const DispatchProblem& p, cudaStream_t stream, char* err, size_t err_len);
int swiglu_run(const SwigluProblem& p, cudaStream_t stream, char* err, size_t err_len);
int combine_run(const CombineProblem& p, cudaStream_t stream, char* err, size_t err_len);

// Dynamic shared memory the route kernel needs per warp (one token), bytes;
// moe_ops_entry.cpp rejects problems whose one warp would not fit.
size_t route_smem_per_warp(int64_t experts, int64_t groups);

}  // namespace moe_cuda
