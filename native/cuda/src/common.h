// Internal helpers shared by the plug-in's host code: error reporting into the
// caller's buffer, CUDA call checking. No exceptions anywhere in the plug-in.
#pragma once

#include <cuda_runtime_api.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include "fail.h"
#include "moe_cuda_api.h"

namespace moe_cuda {

// Reports a CUDA runtime error as MOE_CUDA_ERR_INTERNAL, naming the call.
// A trap (the Hopper GEMM's hang watchdog) surfaces as one of the two
// launch-failure codes below, possibly at a later call than the kernel's.
inline int cuda_fail(cudaError_t e, const char* what, char* err, size_t len) {
  // Reported now, so cleared: a non-sticky error (a failed registration, an
  // allocation) would otherwise resurface as the next launch's failure.
  (void)cudaGetLastError();
  const bool kernel_died = e == cudaErrorLaunchFailure || e == cudaErrorIllegalInstruction;
  return fail(MOE_CUDA_ERR_INTERNAL, err, len, "%s failed: %s (%s)%s", what, cudaGetErrorString(e), cudaGetErrorName(e),
              kernel_died ? ": a kernel faulted or trapped (the Hopper GEMM traps when a pipeline wait exceeds "
                            "MOE_CUDA_HANG_TRAP_S); the GPU context is unusable until the process exits"
                          : "");
}

}  // namespace moe_cuda

// Evaluates a cudaError_t expression; on failure returns an internal error
// naming the expression. For functions returning int status with (err, len).
#define MOE_CUDA_CHECK(expr)                                              \
  do {                                                                    \
    cudaError_t moe_e_ = (expr);                                          \
    if (moe_e_ != cudaSuccess) return ::moe_cuda::cuda_fail(moe_e_, #expr, err, err_len); \
  } while (0)

// After a <<<>>> launch: catches configuration errors (bad grid, too much smem).
#define MOE_CUDA_CHECK_LAUNCH(name)                                       \
  do {                                                                    \
    cudaError_t moe_e_ = cudaGetLastError();                              \
    if (moe_e_ != cudaSuccess) return ::moe_cuda::cuda_fail(moe_e_, "launch of " name, err, err_len); \
  } while (0)
