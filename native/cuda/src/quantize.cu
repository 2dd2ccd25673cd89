// fp8 quantize / dequantize kernels (SPEC.md "Quantization"), bit for bit the
// CPU backend's (cpu/quantize.cpp) results: the per-element math is
// quantize_math.cuh, checked on the host by test/quantize_math_test.cu.
//
// Simple on purpose, memory-bound:
//   - 1x128 (activations) and dequantize: one warp per (row, 128-column
//     group); lane l holds columns l, l+32, l+64, l+96 (coalesced); the amax
//     is a warp shuffle reduction.
//   - 128x128 (weights): one 256-thread block per (128-row block, group);
//     warp w takes rows w, w+8, ...; the amax goes warp shuffle -> shared
//     memory -> every thread; a second pass re-reads the tile (64 KB of f32,
//     L2-resident) and writes q.
// The amax is a max of values >= +0 that skips NaN (amax_step), so the order
// of the reduction does not change its bits. Grids are capped and the kernels
// loop (grid-stride), with int64 indices throughout.

#include <cuda_runtime.h>

#include "common.h"
#include "quantize.h"
#include "quantize_math.cuh"

namespace moe_cuda {
namespace {

using namespace quant;

constexpr int kThreads = 256;               // 8 warps
constexpr int kWarps = kThreads / 32;
constexpr int kPerLane = kGroup / 32;       // 4 columns of a group per lane
constexpr int64_t kMaxBlocks = 65536;       // grid cap; the kernels loop
constexpr unsigned kFullMask = 0xFFFFFFFFu;

__device__ __forceinline__ float load_x(const void* __restrict__ x, int64_t i, bool bf16) {
  return bf16 ? bf16_to_float(static_cast<const uint16_t*>(x)[i]) : static_cast<const float*>(x)[i];
}

__device__ __forceinline__ float warp_amax(float a) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) a = amax_step(a, __shfl_xor_sync(kFullMask, a, off));
  return a;
}

// Activations, 1x128: one warp per (row, group). Every lane of a warp runs
// the same iterations (t depends only on the warp), so the full-mask shuffles
// are safe.
__global__ void __launch_bounds__(kThreads) quantize_1x128_kernel(const void* __restrict__ x, bool x_bf16,
                                                                  uint8_t* __restrict__ q,
                                                                  float* __restrict__ scales,
                                                                  int32_t* __restrict__ nonfinite, int64_t rows,
                                                                  int64_t cols, bool ue8m0) {
  const int lane = threadIdx.x & 31;
  const int64_t groups = (cols + kGroup - 1) / kGroup;
  const int64_t tasks = rows * groups;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32; t < tasks; t += stride) {
    const int64_t row = t / groups, g = t % groups;
    const int64_t c0 = g * kGroup;
    const int64_t n = cols - c0 < kGroup ? cols - c0 : kGroup;  // the last group may be shorter
    const int64_t base = row * cols + c0;
    float v[kPerLane];
    float amax = 0.0f;
    bool finite = true;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int c = lane + 32 * i;
      v[i] = 0.0f;
      if (c < n) {
        v[i] = load_x(x, base + c, x_bf16);
        finite &= is_finite(v[i]);
        amax = amax_step(amax, v[i]);
      }
    }
    amax = warp_amax(amax);
    const float s = group_scale(amax, ue8m0);
    if (lane == 0) scales[row * groups + g] = s;  // scales [rows, groups]
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int c = lane + 32 * i;
      if (c < n) q[base + c] = quantize_value(v[i], s);
    }
    if (__any_sync(kFullMask, !finite) && lane == 0 && nonfinite != nullptr) atomicOr(nonfinite, 1);
  }
}

// Weights, 128x128: one block per (row block, group); the loop over tiles is
// block-uniform, so the __syncthreads are reached by every thread.
__global__ void __launch_bounds__(kThreads) quantize_128x128_kernel(const void* __restrict__ x, bool x_bf16,
                                                                    uint8_t* __restrict__ q,
                                                                    float* __restrict__ scales,
                                                                    int32_t* __restrict__ nonfinite, int64_t rows,
                                                                    int64_t cols, bool ue8m0) {
  __shared__ float warp_max[kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x / 32;
  const int64_t groups = (cols + kGroup - 1) / kGroup;
  const int64_t row_blocks = (rows + kGroup - 1) / kGroup;
  const int64_t tiles = row_blocks * groups;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t rb = t / groups, g = t % groups;
    const int64_t r0 = rb * kGroup, c0 = g * kGroup;
    const int64_t nr = rows - r0 < kGroup ? rows - r0 : kGroup;
    const int64_t nc = cols - c0 < kGroup ? cols - c0 : kGroup;
    const int64_t base = r0 * cols + c0;
    float amax = 0.0f;
    bool finite = true;
    for (int64_t r = warp; r < nr; r += kWarps) {
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) {
        const int c = lane + 32 * i;
        if (c < nc) {
          const float v = load_x(x, base + r * cols + c, x_bf16);
          finite &= is_finite(v);
          amax = amax_step(amax, v);
        }
      }
    }
    amax = warp_amax(amax);
    if (__any_sync(kFullMask, !finite) && lane == 0 && nonfinite != nullptr) atomicOr(nonfinite, 1);
    if (lane == 0) warp_max[warp] = amax;
    __syncthreads();
    float block_amax = warp_max[0];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) block_amax = amax_step(block_amax, warp_max[w]);
    const float s = group_scale(block_amax, ue8m0);
    if (threadIdx.x == 0) scales[rb * groups + g] = s;  // scales [row_blocks, groups]
    for (int64_t r = warp; r < nr; r += kWarps) {
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) {
        const int c = lane + 32 * i;
        if (c < nc) {
          const int64_t idx = base + r * cols + c;
          q[idx] = quantize_value(load_x(x, idx, x_bf16), s);
        }
      }
    }
    __syncthreads();  // warp_max is rewritten by the next tile
  }
}

// Dequantize: one warp per (row, group); any block_rows >= 1.
__global__ void __launch_bounds__(kThreads) dequantize_kernel(const uint8_t* __restrict__ q,
                                                              const float* __restrict__ scales,
                                                              void* __restrict__ out, bool out_bf16, int64_t rows,
                                                              int64_t cols, int64_t block_rows) {
  const int lane = threadIdx.x & 31;
  const int64_t groups = (cols + kGroup - 1) / kGroup;
  const int64_t tasks = rows * groups;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32; t < tasks; t += stride) {
    const int64_t row = t / groups, g = t % groups;
    const int64_t c0 = g * kGroup;
    const int64_t n = cols - c0 < kGroup ? cols - c0 : kGroup;
    const int64_t base = row * cols + c0;
    const float s = scales[(row / block_rows) * groups + g];
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int c = lane + 32 * i;
      if (c < n) {
        const float v = dequantize_value(q[base + c], s);
        if (out_bf16) {
          static_cast<uint16_t*>(out)[base + c] = bf16_from_float(v);
        } else {
          static_cast<float*>(out)[base + c] = v;
        }
      }
    }
  }
}

unsigned grid_for(int64_t work_items) {
  const int64_t blocks = work_items < kMaxBlocks ? work_items : kMaxBlocks;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

}  // namespace

int quantize_run(const QuantizeProblem& p, cudaStream_t stream, char* err, size_t err_len) {
  if (p.rows == 0 || p.cols == 0) return MOE_CUDA_OK;
  const int64_t groups = (p.cols + kGroup - 1) / kGroup;
  if (p.block_rows == 1) {
    const int64_t warps = p.rows * groups;
    quantize_1x128_kernel<<<grid_for((warps + kWarps - 1) / kWarps), kThreads, 0, stream>>>(
        p.x, p.x_bf16, p.q, p.scales, p.nonfinite, p.rows, p.cols, p.ue8m0);
    MOE_CUDA_CHECK_LAUNCH("quantize_1x128_kernel");
    return MOE_CUDA_OK;
  }
  if (p.block_rows == kGroup) {
    const int64_t tiles = ((p.rows + kGroup - 1) / kGroup) * groups;
    quantize_128x128_kernel<<<grid_for(tiles), kThreads, 0, stream>>>(p.x, p.x_bf16, p.q, p.scales, p.nonfinite,
                                                                      p.rows, p.cols, p.ue8m0);
    MOE_CUDA_CHECK_LAUNCH("quantize_128x128_kernel");
    return MOE_CUDA_OK;
  }
  return fail(MOE_CUDA_ERR_RANGE, err, err_len, "quantize: block_rows must be 1 or 128, got %lld",
              static_cast<long long>(p.block_rows));
}

int dequantize_run(const DequantizeProblem& p, cudaStream_t stream, char* err, size_t err_len) {
  if (p.rows == 0 || p.cols == 0) return MOE_CUDA_OK;
  if (p.block_rows < 1) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "dequantize: block_rows must be 1 or 128, got %lld",
                static_cast<long long>(p.block_rows));
  }
  const int64_t warps = p.rows * ((p.cols + kGroup - 1) / kGroup);
  dequantize_kernel<<<grid_for((warps + kWarps - 1) / kWarps), kThreads, 0, stream>>>(
      p.q, p.scales, p.out, p.out_bf16, p.rows, p.cols, p.block_rows);
  MOE_CUDA_CHECK_LAUNCH("dequantize_kernel");
  return MOE_CUDA_OK;
}

}  // namespace moe_cuda
