// Per-element math of the SwiGLU kernel (swiglu.cu), host and device:
// act = silu(g) * up = g / (1 + e^-g) * up, the CPU backend's siluMul
// (cpu/quantize.cpp) operation for operation: one_plus_exp (exp_math.cuh),
// an IEEE division, an IEEE multiply. So the GPU's activations are the CPU's
// bits (no expf: CUDA's expf and glibc's differ by an ulp here and there),
// and the fp8 quantization of them (quantize_math.cuh) is bit-exact too.
#pragma once

#include "exp_math.cuh"
#include "quantize_math.cuh"

namespace moe_cuda {
namespace swiglu_math {

MOE_QUANT_HD float silu_mul(float g, float up) {
  return quant::mul_rn(quant::div_rn(g, expm::one_plus_exp(-g)), up);
}

}  // namespace swiglu_math
}  // namespace moe_cuda
