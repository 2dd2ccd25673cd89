// SIMT FP8 GEMMs: plain CUDA-core kernels, correct on any sm_80+ GPU. They are
// the fallback for shapes or devices the Hopper kernels do not take, and the
// first thing the Hopper kernels are compared against.
#pragma once

#include <cuda_runtime_api.h>
#include <stddef.h>

#include "gemm_problem.h"

namespace moe_cuda {

// Enqueues the SIMT kernel for `p` on `stream`. Returns a moe_cuda_status.
// Whether this binary holds the SIMT kernels in a form the current device can
// run (sm_80/89/90 SASS, or compute_90 PTX for the driver to JIT).
bool simt_fp8_gemm_image_available(char* why, size_t len);

int simt_fp8_gemm_run(const GemmProblem& p, cudaStream_t stream, char* err, size_t err_len);

}  // namespace moe_cuda
