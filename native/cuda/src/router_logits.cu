// routerLogits: logits [T, E] f32 = x [T, H] * w [E, H]^T, f32 accumulation
// (SIMT; the router is ~E*H*T*2 flops, small next to the expert GEMMs).
// Summation order differs from the CPU backend's, so results agree to f32
// rounding (a relative ~1e-6 of the dot product's magnitude), not bitwise.
//
// Two kernels:
//   - decode (T <= 32): one warp per (expert, block of 4 tokens); lanes walk
//     H with coalesced loads, 4 partial sums, a warp tree reduction; E *
//     ceil(T/4) warps, so even T = 1 spreads w's E rows over E warps.
//   - tiled (larger T): 64 x 64 output tiles, K steps of 16 staged in shared
//     memory as f32; 256 threads, 4 x 4 outputs each.

#include <cuda_runtime.h>

#include "common.h"
#include "moe_ops.h"
#include "quantize_math.cuh"

namespace moe_cuda {
namespace {

constexpr unsigned kFull = 0xFFFFFFFFu;

__device__ __forceinline__ float load_elem(const void* base, int64_t i, bool bf16) {
  return bf16 ? quant::bf16_to_float(static_cast<const uint16_t*>(base)[i]) : static_cast<const float*>(base)[i];
}

constexpr int kDecodeTokens = 4;
constexpr int kDecodeThreads = 128;

__global__ void __launch_bounds__(kDecodeThreads) router_logits_decode_kernel(RouterLogitsProblem p) {
  const int lane = threadIdx.x & 31;
  const int64_t token_blocks = (p.tokens + kDecodeTokens - 1) / kDecodeTokens;
  const int64_t warp_id = static_cast<int64_t>(blockIdx.x) * (kDecodeThreads / 32) + (threadIdx.x >> 5);
  if (warp_id >= p.experts * token_blocks) return;  // warp-uniform
  const int64_t e = warp_id % p.experts, t0 = (warp_id / p.experts) * kDecodeTokens;
  const int64_t H = p.hidden;
  float acc[kDecodeTokens] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int64_t c = lane; c < H; c += 32) {
    const float wv = load_elem(p.w, e * H + c, p.w_bf16);
#pragma unroll
    for (int i = 0; i < kDecodeTokens; ++i) {
      if (t0 + i < p.tokens) acc[i] = fmaf(load_elem(p.x, (t0 + i) * H + c, p.x_bf16), wv, acc[i]);
    }
  }
#pragma unroll
  for (int i = 0; i < kDecodeTokens; ++i) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc[i] += __shfl_xor_sync(kFull, acc[i], off);
  }
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < kDecodeTokens; ++i) {
      if (t0 + i < p.tokens) p.logits[(t0 + i) * p.experts + e] = acc[i];  // [T, E] f32
    }
  }
}

constexpr int kTile = 64, kK = 16, kTiledThreads = 256;

__global__ void __launch_bounds__(kTiledThreads) router_logits_tiled_kernel(RouterLogitsProblem p) {
  __shared__ float xs[kK][kTile + 4];  // [K, tokens] f32
  __shared__ float ws[kK][kTile + 4];  // [K, experts] f32
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kTile, e0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;  // 16 x 16 threads, 4 x 4 outputs each
  const int64_t H = p.hidden;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < H; k0 += kK) {
    // 64 x 16 of x and of w: 4 elements per thread each (k fastest: coalesced rows).
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      const int idx = threadIdx.x + l * kTiledThreads;
      const int row = idx / kK, kk = idx % kK;
      const int64_t k = k0 + kk;
      xs[kk][row] = (t0 + row < p.tokens && k < H) ? load_elem(p.x, (t0 + row) * H + k, p.x_bf16) : 0.0f;
      ws[kk][row] = (e0 + row < p.experts && k < H) ? load_elem(p.w, (e0 + row) * H + k, p.w_bf16) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        a[i] = xs[kk][ty * 4 + i];
        b[i] = ws[kk][tx * 4 + i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t t = t0 + ty * 4 + i;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t e = e0 + tx * 4 + j;
      if (t < p.tokens && e < p.experts) p.logits[t * p.experts + e] = acc[i][j];  // [T, E] f32
    }
  }
}

}  // namespace

int router_logits_run(const RouterLogitsProblem& p, cudaStream_t stream, char* err, size_t err_len) {
  if (p.tokens == 0 || p.experts == 0) return MOE_CUDA_OK;
  if (p.tokens <= 32) {
    const int64_t warps = p.experts * ((p.tokens + kDecodeTokens - 1) / kDecodeTokens);
    const int64_t blocks = (warps + kDecodeThreads / 32 - 1) / (kDecodeThreads / 32);
    router_logits_decode_kernel<<<static_cast<unsigned>(blocks), kDecodeThreads, 0, stream>>>(p);
    MOE_CUDA_CHECK_LAUNCH("router_logits_decode_kernel");
    return MOE_CUDA_OK;
  }
  const int64_t ty = (p.tokens + kTile - 1) / kTile;
  if (ty > 65535) return fail(MOE_CUDA_ERR_RANGE, err, err_len, "routerLogits: T = %lld is above the kernel's 65535 * 64 tokens", (long long)p.tokens);
  const dim3 grid(static_cast<unsigned>((p.experts + kTile - 1) / kTile), static_cast<unsigned>(ty));
  router_logits_tiled_kernel<<<grid, kTiledThreads, 0, stream>>>(p);
  MOE_CUDA_CHECK_LAUNCH("router_logits_tiled_kernel");
  return MOE_CUDA_OK;
}

}  // namespace moe_cuda
