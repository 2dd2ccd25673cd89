// Hopper FP8 block-scaled GEMM, contiguous layout: A [R, K], B [G, N, K], group_index [R], D [R, N].
// The kernel template and its launcher are in sm90_fp8_gemm.cuh.
#include "sm90_fp8_gemm.cuh"
#include "sm90_fp8_gemm.h"

namespace moe_cuda {

int sm90_fp8_gemm_contiguous(const GemmProblem& p, uint32_t block_m, int sm_count, cudaStream_t stream, char* err,
                        size_t err_len) {
  return sm90::sm90_fp8_gemm_dispatch<sm90::ContiguousScheduler>(p, block_m, sm_count, stream, err, err_len);
}

}  // namespace moe_cuda
