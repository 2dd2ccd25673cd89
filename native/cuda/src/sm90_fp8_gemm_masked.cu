// Hopper FP8 block-scaled GEMM, masked layout: A [G, Mmax, K], B [G, N, K], masked_m [G], D [G, Mmax, N].
// The kernel template and its launcher are in sm90_fp8_gemm.cuh.
#include "sm90_fp8_gemm.cuh"
#include "sm90_fp8_gemm.h"

namespace moe_cuda {

int sm90_fp8_gemm_masked(const GemmProblem& p, uint32_t block_m, int sm_count, cudaStream_t stream, char* err,
                        size_t err_len) {
  return sm90::sm90_fp8_gemm_dispatch<sm90::MaskedScheduler>(p, block_m, sm_count, stream, err, err_len);
}

}  // namespace moe_cuda
