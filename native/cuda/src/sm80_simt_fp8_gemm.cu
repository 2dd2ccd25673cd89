// SIMT FP8 block-scaled GEMMs (dense, grouped contiguous, grouped masked).
//
// One thread computes one output element, exactly as SPEC.md writes it:
//   D[m, n] = sum_g sa[m, g] * sb[n / 128, g] * (sum_{k in g} A[m, k] * B[n, k])
// in fp32, group by group, k in increasing order. No shared memory, no tensor
// cores: simple enough to be obviously right. Neighbouring threads (same m,
// consecutive n) share the A row through L1.
//
// Napkin math: 2*M*N*K flops at a few hundred GFLOP/s of fp8->fp32 decode; a
// fallback, not a fast path.

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include "common.h"
#include "sm80_simt_fp8_gemm.h"
#include "sm80_simt_fp8_gemm_math.cuh"

namespace moe_cuda {
namespace {

constexpr int kTileN = 32;  // threads along N (one warp: coalesced B rows, broadcast A)
constexpr int kTileM = 8;   // threads along M

__device__ __forceinline__ void store_out(void* d, int64_t idx, float v, bool f32) {
  if (f32) {
    static_cast<float*>(d)[idx] = v;
  } else {
    static_cast<__nv_bfloat16*>(d)[idx] = __float2bfloat16_rn(v);  // round to nearest even
  }
}

// ---------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------

// Dense: grid (ceil(N/32), min(ceil(M/8), 65535)), looping over rows.
__global__ void simt_fp8_gemm_dense_kernel(const simt::Operands o, void* __restrict__ d, bool d_f32) {
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kTileN + threadIdx.x;
  if (col >= o.n) return;
  for (int64_t row = static_cast<int64_t>(blockIdx.y) * kTileM + threadIdx.y; row < o.rows;
       row += static_cast<int64_t>(gridDim.y) * kTileM) {
    store_out(d, row * o.n + col, simt::dense_element(o, row, col), d_f32);  // D [M, N]
  }
}

// Contiguous grouped: grid (ceil(N/32), min(ceil(R/8), 65535)).
__global__ void simt_fp8_gemm_contiguous_kernel(const simt::Operands o, void* __restrict__ d, bool d_f32) {
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kTileN + threadIdx.x;
  if (col >= o.n) return;
  for (int64_t row = static_cast<int64_t>(blockIdx.y) * kTileM + threadIdx.y; row < o.rows;
       row += static_cast<int64_t>(gridDim.y) * kTileM) {
    store_out(d, row * o.n + col, simt::contiguous_element(o, row, col), d_f32);  // D [R, N]
  }
}

// Masked grouped: grid (ceil(N/32), min(ceil(Mmax/8), 65535), G).
__global__ void simt_fp8_gemm_masked_kernel(const simt::Operands o, void* __restrict__ d, bool d_f32) {
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kTileN + threadIdx.x;
  const int64_t g = blockIdx.z;
  if (col >= o.n) return;
  for (int64_t row = static_cast<int64_t>(blockIdx.y) * kTileM + threadIdx.y; row < o.rows;
       row += static_cast<int64_t>(gridDim.y) * kTileM) {
    store_out(d, (g * o.rows + row) * o.n + col, simt::masked_element(o, g, row, col), d_f32);  // D [G, Mmax, N]
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// Launchers
// ---------------------------------------------------------------------------

bool simt_fp8_gemm_image_available(char* why, size_t len) {
  cudaFuncAttributes attr;
  const cudaError_t e = cudaFuncGetAttributes(&attr, simt_fp8_gemm_dense_kernel);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    fail(MOE_CUDA_ERR_UNSUPPORTED, why, len, "no SIMT kernel image for this GPU: %s", cudaGetErrorString(e));
    return false;
  }
  return true;
}

int simt_fp8_gemm_run(const GemmProblem& p, cudaStream_t stream, char* err, size_t err_len) {
  if (p.rows == 0 || p.n == 0) return MOE_CUDA_OK;
  const dim3 block(kTileN, kTileM);
  const int64_t gx = (p.n + kTileN - 1) / kTileN;
  // NOTE: gridDim.y and .z are limited to 65535; the kernels loop over rows.
  const int64_t gy_full = (p.rows + kTileM - 1) / kTileM;
  const int64_t gy = gy_full < 65535 ? gy_full : 65535;
  if (gx > 0x7FFFFFFF || p.a_groups() > 65535) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len,
                "SIMT FP8 GEMM: problem too large for one launch (rows %lld, n %lld, groups %lld)",
                static_cast<long long>(p.rows), static_cast<long long>(p.n), static_cast<long long>(p.a_groups()));
  }
  const simt::Operands o{p.a, p.sa, p.b, p.sb, p.group_index, p.masked_m, p.rows, p.n, p.k, p.groups};
  switch (p.layout) {
    case GemmLayout::kDense: {
      const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
      simt_fp8_gemm_dense_kernel<<<grid, block, 0, stream>>>(o, p.d, p.d_f32);
      MOE_CUDA_CHECK_LAUNCH("simt_fp8_gemm_dense_kernel");
      return MOE_CUDA_OK;
    }
    case GemmLayout::kContiguous: {
      const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
      simt_fp8_gemm_contiguous_kernel<<<grid, block, 0, stream>>>(o, p.d, p.d_f32);
      MOE_CUDA_CHECK_LAUNCH("simt_fp8_gemm_contiguous_kernel");
      return MOE_CUDA_OK;
    }
    case GemmLayout::kMasked: {
      const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(p.groups));
      simt_fp8_gemm_masked_kernel<<<grid, block, 0, stream>>>(o, p.d, p.d_f32);
      MOE_CUDA_CHECK_LAUNCH("simt_fp8_gemm_masked_kernel");
      return MOE_CUDA_OK;
    }
  }
  return fail(MOE_CUDA_ERR_INTERNAL, err, err_len, "SIMT FP8 GEMM: unknown layout %d", static_cast<int>(p.layout));
}

}  // namespace moe_cuda
