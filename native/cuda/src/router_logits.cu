// routerLogits: logits [T, E] f32 = x [T, H] * w [E, H]^T, f32 accumulation
// (the router is ~E*H*T*2 flops, small next to the expert GEMMs when it runs
// on tensor cores).
// Summation order differs from the CPU backend's, so results agree to f32
// rounding (a relative ~1e-6 of the dot product's magnitude), not bitwise.
//
// Three kernels:
//   - decode (T <= 32): one warp per (expert, block of 4 tokens); lanes walk
//     H with coalesced loads, 4 partial sums, a warp tree reduction; E *
//     ceil(T/4) warps, so even T = 1 spreads w's E rows over E warps.
//   - tensor cores (larger T, x and w both bf16, H % 8 == 0, 16-byte aligned):
//     64 x 64 output tiles, K steps of 32 staged in shared memory with 16-byte
//     loads; 4 warps of 32 x 32, mma.sync m16n8k16 bf16 (products of bf16 are
//     exact in f32; f32 accumulation). At DeepSeek-V3's T = 4096, H = 7168,
//     E = 256 the router is 15 GFLOP: a SIMT kernel would take a large share
//     of the layer's expert GEMMs' time.
//   - tiled (larger T otherwise): 64 x 64 output tiles, K steps of 16 staged
//     in shared memory as f32; 256 threads, 4 x 4 outputs each.

#include <cuda_runtime.h>

#include "common.h"
#include "mma_m16n8k16.h"
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

// ---- tensor cores ----------------------------------------------------------

constexpr int kMmaTile = 64, kMmaK = 32, kMmaThreads = 128;
// A staged row: kMmaK bf16 as 16 words (pairs, the lower k in the low half)
// plus 4 words of padding, so that a fragment load (8 rows x 4 words) touches
// 32 distinct banks and every row starts on 16 bytes.
constexpr int kMmaRowWords = kMmaK / 2 + 4;

__device__ __forceinline__ void mma_bf16_16816(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// tile [64][kMmaRowWords] = rows [row0, row0 + 64) x k [k0, k0 + 32) of m
// [rows, H] bf16, zero past its end: 256 chunks of 8 bf16, 2 per thread.
__device__ __forceinline__ void stage_rows(const uint16_t* m, int64_t rows, int64_t H, int64_t row0, int64_t k0,
                                           uint32_t (*tile)[kMmaRowWords]) {
  for (int i = threadIdx.x; i < kMmaTile * (kMmaK / 8); i += kMmaThreads) {
    const int r = i / (kMmaK / 8), chunk = i % (kMmaK / 8);
    const int64_t row = row0 + r, k = k0 + chunk * 8;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (row < rows && k < H) v = *reinterpret_cast<const uint4*>(m + row * H + k);
    *reinterpret_cast<uint4*>(&tile[r][chunk * 4]) = v;
  }
}

__global__ void __launch_bounds__(kMmaThreads) router_logits_mma_kernel(RouterLogitsProblem p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using namespace mma16816;
  __shared__ __align__(16) uint32_t xs[kMmaTile][kMmaRowWords];  // [64 tokens][32 k] bf16 pairs
  __shared__ __align__(16) uint32_t ws[kMmaTile][kMmaRowWords];  // [64 experts][32 k] bf16 pairs
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kMmaTile, e0 = static_cast<int64_t>(blockIdx.x) * kMmaTile;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;  // the warp's 32 tokens x 32 experts
  const auto* x = static_cast<const uint16_t*>(p.x);  // [T, H] bf16
  const auto* w = static_cast<const uint16_t*>(p.w);  // [E, H] bf16
  float acc[2][4][4] = {};                             // [token m16 tile][expert n8 tile][fragment]
  for (int64_t k0 = 0; k0 < p.hidden; k0 += kMmaK) {
    stage_rows(x, p.tokens, p.hidden, t0, k0, xs);
    stage_rows(w, p.experts, p.hidden, e0, k0, ws);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kMmaK; kk += kK) {
      uint32_t a[2][4], b[4][2];
#pragma unroll
      for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
        for (int r = 0; r < 4; ++r) a[mi][r] = xs[wm + mi * kM + a_row(lane, r)][(kk + a_col(lane, r)) / 2];
      }
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) {
#pragma unroll
        for (int r = 0; r < 2; ++r) b[ni][r] = ws[wn + ni * kN + b_n(lane)][(kk + b_k(lane, r)) / 2];
      }
#pragma unroll
      for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) mma_bf16_16816(acc[mi][ni], a[mi], b[ni]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
    for (int ni = 0; ni < 4; ++ni) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int64_t t = t0 + wm + mi * kM + c_row(lane, c), e = e0 + wn + ni * kN + c_col(lane, c);
        if (t < p.tokens && e < p.experts) p.logits[t * p.experts + e] = acc[mi][ni][c];  // [T, E] f32
      }
    }
  }
#endif
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

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
  static_assert(kTile == kMmaTile, "both tiled kernels share the grid");
  const int64_t ty = (p.tokens + kTile - 1) / kTile;
  if (ty > 65535) return fail(MOE_CUDA_ERR_RANGE, err, err_len, "routerLogits: T = %lld is above the kernel's 65535 * 64 tokens", (long long)p.tokens);
  const dim3 grid(static_cast<unsigned>((p.experts + kTile - 1) / kTile), static_cast<unsigned>(ty));
  if (p.x_bf16 && p.w_bf16 && p.hidden % 8 == 0 && aligned16(p.x) && aligned16(p.w)) {
    router_logits_mma_kernel<<<grid, kMmaThreads, 0, stream>>>(p);
    MOE_CUDA_CHECK_LAUNCH("router_logits_mma_kernel");
    return MOE_CUDA_OK;
  }
  router_logits_tiled_kernel<<<grid, kTiledThreads, 0, stream>>>(p);
  MOE_CUDA_CHECK_LAUNCH("router_logits_tiled_kernel");
  return MOE_CUDA_OK;
}

}  // namespace moe_cuda
