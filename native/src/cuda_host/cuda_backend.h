// The CUDA backend: the Backend interface over the dlopen'd plug-in. Tensors
// are device pointers (TensorView::device == kCuda); shapes are checked here
// with the same checks as the CPU backend before anything is enqueued.
#pragma once

#include "core/backend.h"

namespace moe::cuda {

Backend& cudaBackend();

}  // namespace moe::cuda
