// Split-K reduction (split_k_reduce.h): one thread per 4 outputs, 16-byte
// loads of each slice, the slices added in split order so that the result is
// the same on every run. Memory-bound: (splits + 1) x count x 4 bytes.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "common.h"
#include "split_k_reduce.h"

namespace moe_cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) split_k_reduce_kernel(const float4* __restrict__ partial, int32_t splits,
                                                                  int64_t quads, void* __restrict__ d, bool d_f32) {
  for (int64_t q = blockIdx.x * int64_t(kThreads) + threadIdx.x; q < quads; q += int64_t(gridDim.x) * kThreads) {
    float4 sum = __ldg(partial + q);
    for (int32_t s = 1; s < splits; ++s) {
      const float4 v = __ldg(partial + s * quads + q);
      sum.x = __fadd_rn(sum.x, v.x);
      sum.y = __fadd_rn(sum.y, v.y);
      sum.z = __fadd_rn(sum.z, v.z);
      sum.w = __fadd_rn(sum.w, v.w);
    }
    if (d_f32) {
      static_cast<float4*>(d)[q] = sum;
    } else {
      __nv_bfloat162* out = static_cast<__nv_bfloat162*>(d) + 2 * q;
      out[0] = __floats2bfloat162_rn(sum.x, sum.y);  // round to nearest even
      out[1] = __floats2bfloat162_rn(sum.z, sum.w);
    }
  }
}

}  // namespace

int split_k_reduce(const float* partial, int32_t splits, int64_t count, void* d, bool d_f32, cudaStream_t stream,
                   char* err, size_t err_len) {
  if (count % 4 != 0 || splits < 1) {
    return fail(MOE_CUDA_ERR_INTERNAL, err, err_len, "split-K reduction: %lld outputs (a multiple of 4 expected), %d splits",
                static_cast<long long>(count), splits);
  }
  const int64_t quads = count / 4;
  if (quads == 0) return MOE_CUDA_OK;
  const int64_t blocks = (quads + kThreads - 1) / kThreads;
  const unsigned grid = static_cast<unsigned>(blocks < 65535 * 8 ? blocks : 65535 * 8);
  split_k_reduce_kernel<<<grid, kThreads, 0, stream>>>(reinterpret_cast<const float4*>(partial), splits, quads, d, d_f32);
  MOE_CUDA_CHECK_LAUNCH("split_k_reduce_kernel");
  return MOE_CUDA_OK;
}

}  // namespace moe_cuda
