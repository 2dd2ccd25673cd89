// Hopper FP8 block-scaled GEMM, dense layout: A [M, K], B [N, K], D [M, N];
// split over K when its tiles cannot fill the GPU (GemmProblem::k_splits).
// The kernel template and its launcher are in sm90_fp8_gemm.cuh.
#include "sm90_fp8_gemm.cuh"
#include "sm90_fp8_gemm.h"
#include "split_k_reduce.h"

namespace moe_cuda {

int sm90_fp8_gemm_dense(const GemmProblem& p, uint32_t block_m, int sm_count, cudaStream_t stream, char* err,
                        size_t err_len) {
  if (p.k_splits <= 1) return sm90::sm90_fp8_gemm_dispatch<sm90::DenseScheduler>(p, block_m, sm_count, stream, err, err_len);
  // Split-K: the partial tiles as f32 into the workspace's slices, then their
  // sum in split order into D.
  GemmProblem partial = p;
  partial.d = p.split_workspace;  // [k_splits, M, N] f32
  partial.d_f32 = true;
  const int rc = sm90::sm90_fp8_gemm_dispatch<sm90::DenseScheduler>(partial, block_m, sm_count, stream, err, err_len);
  if (rc != MOE_CUDA_OK) return rc;
  return split_k_reduce(p.split_workspace, p.k_splits, p.rows * p.n, p.d, p.d_f32, stream, err, err_len);
}

}  // namespace moe_cuda

namespace moe_cuda {

bool sm90_fp8_gemm_image_available() {
  cudaFuncAttributes attr;
  const cudaError_t e = cudaFuncGetAttributes(
      &attr, sm90::sm90_fp8_gemm_kernel<128, 128, sm90::max_stages(128, 128, 2), __nv_bfloat16,
                                        sm90::DenseScheduler<128>>);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // clear the (non-sticky) error
    return false;
  }
  return true;
}

}  // namespace moe_cuda
