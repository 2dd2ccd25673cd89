// The MoE layer's forward on the CUDA plug-in's one stream (SPEC.md "The MoE
// layer"): the same stages as core/moe_forward.cpp, but every tensor is on
// the device and nothing waits for the GPU except where said:
//   - contiguous layout (prefill; segments aligned to args.align, 128 for the
//     Hopper grouped GEMM): ONE host synchronization after the layout, to
//     learn R = offsets[E] (the grouped GEMMs' row count) and the layout's
//     error flag;
//   - masked layout (decode, `masked`): no synchronization at all; every
//     size is fixed (R = E * maxRowsPerExpert, the masked grouped GEMM reads
//     tokensPerExpert on the device), so the forward can be captured into a
//     CUDA graph.
// Bad input (NaN in x, ...) is reported through `flags` ([8] i32 on the
// device, one word per stage, zeroed here): the caller reads them after the
// forward has completed and turns them into errors with
// flagsStatus() — no extra synchronization inside the forward.
#pragma once

#include "core/moe_forward.h"

namespace moe::cuda {

struct CudaMoeOptions {
  bool masked = false;
  int64_t maxRowsPerExpert = 0;  // masked: Mmax (T always suffices)
  TensorView flags;              // [kNumFlags] i32 on the device
};

constexpr int kNumFlags = 8;

Status cudaMoeForward(const MoeForwardArgs& args, const CudaMoeOptions& options);

// The first error recorded in flags [kNumFlags] (host copy), or ok.
Status flagsStatus(const int32_t* flags);

}  // namespace moe::cuda
