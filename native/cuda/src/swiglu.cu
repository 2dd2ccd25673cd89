// swiglu (SPEC.md): h [R, 2I] holds gate then up; out = silu(gate) * up in
// f32, fused with 1x128 fp8 quantization (or stored as f32 / bf16). The
// activation is swiglu_math::silu_mul: the CPU backend's exact operation
// sequence (its own exp, not expf), so activations and their fp8 bits equal
// the CPU's (tested on the host in test/moe_math_test.cu).
//
// Quantized: one warp per row, 512 columns per step, 16 per lane (two 16-byte
// bf16 loads each of gate and up, one 16-byte fp8 store); a 128-column group
// is 8 adjacent lanes (3 xor shuffles for the amax), as in dispatch.cu.
// Unquantized: a flat grid-stride loop over the R * I outputs.

#include <cuda_runtime.h>

#include "common.h"
#include "moe_ops.h"
#include "quantize_math.cuh"
#include "swiglu_math.cuh"
#include "vec_io.cuh"

namespace moe_cuda {
namespace {

using namespace quant;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFull = 0xFFFFFFFFu;
constexpr int32_t kNonFiniteBit = MOE_CUDA_FLAG_NONFINITE;

template <bool kBF16>
__global__ void __launch_bounds__(kThreads) swiglu_fp8_kernel(SwigluProblem p) {
  const int lane = threadIdx.x & 31;
  const int64_t I = p.inter, groups = (I + kGroup - 1) / kGroup;
  uint8_t* out = static_cast<uint8_t*>(p.out);  // [R, I] fp8
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); r < p.rows;
       r += static_cast<int64_t>(gridDim.x) * kWarps) {
    bool finite = true;
    for (int64_t c0 = 0; c0 < I; c0 += kStep) {
      const int64_t col = c0 + lane * kPerLane;
      const bool active = col < I;  // I % 16 == 0
      float act[kPerLane];
      float amax = 0.0f;
      if (active) {
        float up[kPerLane];
        load16<kBF16>(p.h, r * 2 * I + col, act);    // gate
        load16<kBF16>(p.h, r * 2 * I + I + col, up);
#pragma unroll
        for (int j = 0; j < kPerLane; ++j) {
          act[j] = swiglu_math::silu_mul(act[j], up[j]);
          finite &= is_finite(act[j]);
          amax = amax_step(amax, act[j]);
        }
      }
      quantize_store16(act, amax, active, p.ue8m0, lane, out + r * I, p.scales + r * groups, col);  // scales: [R, groups] f32
    }
    if (__any_sync(kFull, !finite) && lane == 0 && p.flag != nullptr) atomicOr(p.flag, kNonFiniteBit);
  }
}

template <bool kHBF16, bool kOutBF16>
__global__ void __launch_bounds__(kThreads) swiglu_plain_kernel(SwigluProblem p) {
  const int64_t I = p.inter, n = p.rows * I;
  bool finite = true;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t r = i / I, c = i % I;
    const int64_t g = r * 2 * I + c;
    const float gate = kHBF16 ? bf16_to_float(static_cast<const uint16_t*>(p.h)[g]) : static_cast<const float*>(p.h)[g];
    const float up = kHBF16 ? bf16_to_float(static_cast<const uint16_t*>(p.h)[g + I]) : static_cast<const float*>(p.h)[g + I];
    const float v = swiglu_math::silu_mul(gate, up);
    finite &= is_finite(v);
    if (kOutBF16) {
      static_cast<uint16_t*>(p.out)[i] = bf16_from_float(v);
    } else {
      static_cast<float*>(p.out)[i] = v;
    }
  }
  if (!finite && p.flag != nullptr) atomicOr(p.flag, kNonFiniteBit);
}

unsigned grid_for(int64_t blocks) { return static_cast<unsigned>(blocks < 1 ? 1 : (blocks < 65536 ? blocks : 65536)); }

}  // namespace

int swiglu_run(const SwigluProblem& p, cudaStream_t stream, char* err, size_t err_len) {
  if (p.rows == 0) return MOE_CUDA_OK;
  if (p.out_dtype == MOE_CUDA_DTYPE_FP8_E4M3) {
    const unsigned grid = grid_for((p.rows + kWarps - 1) / kWarps);
    if (p.h_bf16) {
      swiglu_fp8_kernel<true><<<grid, kThreads, 0, stream>>>(p);
    } else {
      swiglu_fp8_kernel<false><<<grid, kThreads, 0, stream>>>(p);
    }
    MOE_CUDA_CHECK_LAUNCH("swiglu_fp8_kernel");
    return MOE_CUDA_OK;
  }
  const unsigned grid = grid_for((p.rows * p.inter + kThreads - 1) / kThreads);
  const bool out_bf16 = p.out_dtype == MOE_CUDA_DTYPE_BF16;
  if (p.h_bf16) {
    out_bf16 ? swiglu_plain_kernel<true, true><<<grid, kThreads, 0, stream>>>(p)
             : swiglu_plain_kernel<true, false><<<grid, kThreads, 0, stream>>>(p);
  } else {
    out_bf16 ? swiglu_plain_kernel<false, true><<<grid, kThreads, 0, stream>>>(p)
             : swiglu_plain_kernel<false, false><<<grid, kThreads, 0, stream>>>(p);
  }
  MOE_CUDA_CHECK_LAUNCH("swiglu_plain_kernel");
  return MOE_CUDA_OK;
}

}  // namespace moe_cuda
