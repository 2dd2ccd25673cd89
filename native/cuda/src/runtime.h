// The plug-in's state and what every entry point shares: one device, one
// stream, one memory pool (runtime.cpp), and the guards that keep the kernels
// in bounds. The op rules themselves (shapes, dtypes, options) are checked
// once, by the addon's core checks (native/src/core/op_checks.h), before any
// entry point is called; what is checked here is only what a direct caller
// could break memory with: null pointers, alignment, extents past 2^31 - 1.
#pragma once

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include <mutex>

#include "common.h"
#include "split_k_workspace.h"

namespace moe_cuda {

// ---------------------------------------------------------------------------
// Plug-in state: one device, one stream, one memory pool.
// ---------------------------------------------------------------------------
struct State {
  std::mutex mu;
  bool probed = false;
  int status = MOE_CUDA_ERR_UNSUPPORTED;
  char reason[512] = {0};
  moe_cuda_device_info info{};
  int device = 0;
  cudaStream_t stream = nullptr;
  cudaMemPool_t pool = nullptr;  // null: the device has no memory pools; use cudaMalloc
  void* l2_flush = nullptr;      // moe_cuda_flush_l2's buffer (cudaMalloc, kept), guarded by mu
  size_t l2_flush_bytes = 0;
  int l2_flush_value = 0;
  int32_t gemm_kernel = MOE_CUDA_KERNEL_AUTO;  // what MOE_CUDA_KERNEL_AUTO means (MOE_CUDA_GEMM_KERNEL)
  uint64_t hang_trap_ns = 10'000'000'000ull;   // the Hopper GEMM's pipeline-wait limit (MOE_CUDA_HANG_TRAP_S)
  bool split_k = true;                          // dense Hopper GEMMs may split K (MOE_CUDA_SPLIT_K=0: never)
  SplitKWorkspace split;                        // their partial slices (cudaMalloc, kept; see split_k_workspace.h)
};

State& state();

// Every entry point: the device must have probed usable; make it current on
// this thread (the runtime's current device is per host thread). `stream`
// (may be null): where this thread's work goes: the plug-in's stream, or
// while this thread captures a graph, its capture stream (graphs.cpp).
int ready(cudaStream_t* stream, char* err, size_t err_len);

// This thread's capture stream while it captures a graph, else null.
void set_capture_stream(cudaStream_t stream);

constexpr int64_t kMaxExtent = 0x7FFFFFFF;

int check_extent(const char* op, const char* name, int64_t v, int64_t min, char* err, size_t err_len);
int null_pointer(const char* op, const char* name, char* err, size_t err_len);
int check_aligned(const char* op, const char* name, const void* p, size_t align, char* err, size_t err_len);

}  // namespace moe_cuda
