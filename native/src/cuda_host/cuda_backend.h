// The CUDA backend: the Backend interface over the dlopen'd plug-in. Tensors
// are device pointers (TensorView::device == kCuda); shapes are checked here
// with the same checks as the CPU backend before anything is enqueued.
#pragma once

#include "core/backend.h"

namespace moe::cuda {

Backend& cudaBackend();

// Benchmarks only: with `enabled` false the MoE ops (route ... combine) skip
// their error-flag readback (a host sync per call), so that CUDA events time
// the kernels alone; bad input then goes unreported. Default: enabled.
void setDataChecks(bool enabled);

}  // namespace moe::cuda
