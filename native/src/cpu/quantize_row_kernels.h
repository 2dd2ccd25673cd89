// Internal interface between the quantization / SwiGLU drivers (quantize.cpp,
// swiglu.cpp, dispatch.cpp) and their per-ISA row kernels
// (quantize_row_avx512.cpp, quantize_row_avx2.cpp; the portable scalar set
// lives in quantize.cpp). Not part of the public API.
//
// As in gemm_fp8_kernels.h, each ISA file is compiled with
// `#pragma GCC target(...)` and exports exactly one constant-initialized
// RowKernels object, so linking it is safe on any x86-64 CPU; only calling
// through its pointers needs the ISA.
//
// Every set is bit-exact with the scalar definitions:
// - fp8 quantization: per 128-column group, amax = max |x| (NaN ignored, as
//   std::max(amax, |x|) does), s = groupScale(amax, format), q = fp8FromFloat(x / s)
//   with IEEE f32 division. For ue8m0 s is a power of two and the kernels may
//   multiply by 1/s instead: both are the correctly rounded x * 2^-k, so equal.
// - swiglu: act = silu(g) * up = g / (1 + exp(-g)) * up, with the exp
//   described at qexp below (not std::exp): the same operation sequence in
//   every set (explicit FMAs), so all ISAs give the same bits.
#pragma once

#include <cstdint>

#include "core/numerics.h"
#include "core/ops.h"
#include "cpu/quantize.h"

namespace moe::cpu::qrow {

struct RowKernels {
  const char* name;

  // quantizeRow's contract (quantize.h) for an f32 row / a bf16 row (bf16
  // widens exactly to f32 first): q [cols] fp8, scales [ceil(cols/128)].
  // Returns false if the row holds a NaN or infinity.
  bool (*quantizeRowF32)(const float* row, int64_t cols, ScaleFormat format, uint8_t* q, float* scales);
  bool (*quantizeRowBF16)(const uint16_t* row, int64_t cols, ScaleFormat format, uint8_t* q, float* scales);

  // One scale block: x [rows, ld] (the block's first element at x), cols <= 128
  // columns per row; amax over the whole block, *scale = groupScale(amax),
  // q[r * ldq + c] = fp8(x[r * ld + c] / *scale). Returns false on a NaN or infinity.
  bool (*quantizeTileF32)(const float* x, int64_t ld, int64_t rows, int64_t cols, ScaleFormat format,
                          uint8_t* q, int64_t ldq, float* scale);
  bool (*quantizeTileBF16)(const uint16_t* x, int64_t ld, int64_t rows, int64_t cols, ScaleFormat format,
                           uint8_t* q, int64_t ldq, float* scale);

  // act[i] = silu(gate[i]) * up[i] in f32 (gate, up f32 or bf16). Returns false
  // if a result is not finite.
  bool (*swigluF32)(const float* gate, const float* up, int64_t n, float* act);
  bool (*swigluBF16)(const uint16_t* gate, const uint16_t* up, int64_t n, float* act);

  // dst[i] = bf16FromFloat(src[i]) (round to nearest even, NaN stays NaN).
  void (*narrowBF16)(const float* src, int64_t n, uint16_t* dst);
};

extern const RowKernels kRowAvx512;
extern const RowKernels kRowAvx2;
extern const RowKernels kRowPortable;

// The set chosen by cpuFeatures() (and so by MOE_CPU_ISA): the same level as gemmIsa().
const RowKernels& selectedRowKernels();

// Helpers shared by the sets (baseline code in quantize.cpp).
// amax of a block as the scalar loop computes it (NaN ignored, inf kept); used
// only when the fast integer max saw a non-finite value.
float scalarAbsMaxF32(const float* x, int64_t ld, int64_t rows, int64_t cols);
float scalarAbsMaxBF16(const uint16_t* x, int64_t ld, int64_t rows, int64_t cols);

// The scale of a group whose max |x| has the f32 bits `amaxBits` (no NaN), as
// groupScale(amax, format) gives it, and whether the kernels may multiply by
// *inverse (= 1/scale exactly: ue8m0 with a finite amax, scale = 2^k with k in
// [-22, 120]) instead of dividing by the scale. Inline so that the kernels do
// not pay a call per group; bit-exact with groupScale (checked by the harness).
inline float groupScaleFromBits(uint32_t amaxBits, ScaleFormat format, float* inverse, bool* multiply) {
  constexpr float kMinAmax = 1e-4f;
  *multiply = false;
  float amax = floatFromBits(amaxBits);
  if (format == ScaleFormat::kF32) return (amax > kMinAmax ? amax : kMinAmax) / kFp8E4M3Max;
  if (amaxBits >= 0x7F800000u) return groupScale(amax, format);  // inf: groupScale's own rule
  const float s = (amax > kMinAmax ? amax : kMinAmax) / kFp8E4M3Max;  // positive normal, < 2^120
  // 2^ceil(log2 s): round the exponent up unless the mantissa is zero.
  const uint32_t pow2 = (floatBits(s) + 0x7FFFFFu) & 0xFF800000u;
  *inverse = floatFromBits((254u - (pow2 >> 23)) << 23);
  *multiply = true;
  return floatFromBits(pow2);
}

// The exp of swiglu, identical in every set (the portable one in scalar form):
//   1 + e^x = fma(p(r) * 2^n1, 2^n2, 1), n = round(x * log2(e)) (one fma plus
//   the 1.5 * 2^23 rounding trick), r = x - n * ln2 (two-part ln2, fma),
//   p(r) = 1 + r + r^2 * (degree-5 polynomial) (Cephes expf coefficients),
//   n = n1 + n2 split so that both powers of two are normal.
// x > kMaxX gives 1 + e^x = +inf, x < kMinX gives exactly 1; NaN stays NaN.
// Accuracy, measured over every third f32 g with |g| in [2^-20, 88] (1.5e8
// values) against a long-double reference: silu(g) = g / (1 + e^-g) is within
// 2.39 ulp (the former std::exp-based code: 2.33 ulp; the f32 add and divide
// dominate). silu(g) * up adds the multiply's rounding: <= ~2.9 ulp in all.
// AVX-512, AVX2 and scalar give the same bits (checked on all 2^32 g).
namespace qexp {
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693145751953125f;        // ln 2 high part (exact in 16 bits)
constexpr float kLn2Lo = 1.428606765330187045e-06f; // ln 2 - kLn2Hi
constexpr float kMaxX = 88.72283935546875f;          // above: +inf
constexpr float kMinX = -103.972084045410156f;       // below: +0
constexpr float kP0 = 1.9875691500e-4f;
constexpr float kP1 = 1.3981999507e-3f;
constexpr float kP2 = 8.3334519073e-3f;
constexpr float kP3 = 4.1665795894e-2f;
constexpr float kP4 = 1.6666665459e-1f;
constexpr float kP5 = 5.0000001201e-1f;
}  // namespace qexp

}  // namespace moe::cpu::qrow
