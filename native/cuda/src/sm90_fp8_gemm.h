// Host interface of the Hopper (sm_90a) FP8 GEMM kernels. The kernels live in
// sm90_fp8_gemm.cuh, instantiated per layout in sm90_fp8_gemm_{dense,grouped,
// masked}.cu; the heuristics that pick and check a configuration are in
// sm90_fp8_gemm_heuristics.cpp, apart from the kernels.
#pragma once

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include "gemm_problem.h"
#include "sm90_fp8_gemm_heuristics.h"

namespace moe_cuda {

// Whether this binary holds the sm_90a kernels in a form the current device
// can run (false on any GPU other than sm_90).
bool sm90_fp8_gemm_image_available();

// One entry per layout (one translation unit each, so they compile in parallel).
int sm90_fp8_gemm_dense(const GemmProblem& p, uint32_t block_m, int sm_count, cudaStream_t stream, char* err,
                        size_t err_len);
int sm90_fp8_gemm_contiguous(const GemmProblem& p, uint32_t block_m, int sm_count, cudaStream_t stream, char* err,
                             size_t err_len);
int sm90_fp8_gemm_masked(const GemmProblem& p, uint32_t block_m, int sm_count, cudaStream_t stream, char* err,
                         size_t err_len);

}  // namespace moe_cuda
