// 16-byte vector loads and stores shared by the row kernels (dispatch.cu,
// swiglu.cu): 16 consecutive values per lane, so a warp step covers 512
// columns and a 128-column scale group is 8 adjacent lanes. Device only; the
// element math they wrap is quantize_math.cuh.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include "quantize_math.cuh"

namespace moe_cuda {

constexpr int kPerLane = 16;                              // columns per lane per access
constexpr int kStep = 32 * kPerLane;                      // 512 columns per warp step
constexpr int kLanesPerGroup = quant::kGroup / kPerLane;  // 8 lanes per 128-column group
static_assert(kStep % quant::kGroup == 0, "a step covers whole groups");

// 16 values from x (bf16: 2 x 16 B; f32: 4 x 16 B); 16-byte aligned.
template <bool kBF16>
__device__ __forceinline__ void load16(const void* __restrict__ x, int64_t i, float (&v)[kPerLane]) {
  if (kBF16) {
    const uint4* src = reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(x) + i);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint4 w = __ldg(src + h);
      const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        v[8 * h + 2 * j] = quant::float_from_bits(words[j] << 16);
        v[8 * h + 2 * j + 1] = quant::float_from_bits(words[j] & 0xFFFF0000u);
      }
    }
  } else {
    const float4* src = reinterpret_cast<const float4*>(static_cast<const float*>(x) + i);
#pragma unroll
    for (int h = 0; h < 4; ++h) {
      const float4 w = __ldg(src + h);
      v[4 * h] = w.x;
      v[4 * h + 1] = w.y;
      v[4 * h + 2] = w.z;
      v[4 * h + 3] = w.w;
    }
  }
}

// q = fp8(v / s) for 16 values, one 16-byte store (dst 16-byte aligned).
__device__ __forceinline__ void store16_fp8(uint8_t* dst, const float (&v)[kPerLane], float s) {
  uint32_t packed[4];
#pragma unroll
  for (int w = 0; w < 4; ++w) {
    packed[w] = static_cast<uint32_t>(quant::quantize_value(v[4 * w], s)) |
                (static_cast<uint32_t>(quant::quantize_value(v[4 * w + 1], s)) << 8) |
                (static_cast<uint32_t>(quant::quantize_value(v[4 * w + 2], s)) << 16) |
                (static_cast<uint32_t>(quant::quantize_value(v[4 * w + 3], s)) << 24);
  }
  *reinterpret_cast<uint4*>(dst) = make_uint4(packed[0], packed[1], packed[2], packed[3]);
}

// The end of one quantized warp step, the same in dispatch and swiglu: the
// group's amax over its 8 lanes (xor 4, 2, 1 stays inside them; a max of
// values >= 0, so order-free), its scale, the lane's 16 fp8 values at q and,
// from the group's first lane, the group's scale: the lane's columns start
// at col of the row q_row ([cols] fp8), whose scales are scale_row ([groups]
// f32). amax: the lane's own. Every lane calls it (the shuffles), active (a
// lane inside the row) or not.
__device__ __forceinline__ void quantize_store16(const float (&v)[kPerLane], float amax, bool active, bool ue8m0, int lane,
                                                 uint8_t* q_row, float* scale_row, int64_t col) {
#pragma unroll
  for (int off = kLanesPerGroup / 2; off > 0; off >>= 1) amax = quant::amax_step(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, off));
  const float s = quant::group_scale(amax, ue8m0);
  if (active) {
    store16_fp8(q_row + col, v, s);
    if ((lane & (kLanesPerGroup - 1)) == 0) scale_row[col / quant::kGroup] = s;
  }
}

}  // namespace moe_cuda
