#include "cpu/combine.h"

#include <algorithm>
#include <cmath>
#include <string>

#include <immintrin.h>

#include "core/moe_op_checks.h"
#include "core/numerics.h"
#include "cpu/cpu_features.h"
#include "cpu/index_snapshot.h"
#include "cpu/thread_pool.h"

// GCC 12's AVX-512 intrinsics self-initialize their "undefined" operands,
// which -Wall reports at every inlined call site.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace moe::cpu {

namespace {

// Columns per task: tasks tile [T, H] so that decode (a few tokens) still
// spreads over the threads; each output element is summed by one task in the
// same fixed order, so the tiling never changes the bits.
constexpr int64_t kColsPerTask = 2048;

std::string str(int64_t v) { return std::to_string(v); }

// The shapes and dtypes: core/moe_op_checks (shared with the CUDA backend).
// slotRow's and the weights' values are data, read here once the shapes are known good.
Status validateCombine(const CombineArgs& a) {
  MOE_RETURN_IF_ERROR(checkCombine(a));
  const int64_t rows = a.y.dim(0), tokens = a.slotRow.dim(0), slots = a.slotRow.dim(1);
  const int32_t* slotRow = a.slotRow.as<const int32_t>();  // [T, k] i32
  const float* weights = a.weights.as<const float>();      // [T, k] f32
  for (int64_t i = 0; i < tokens * slots; ++i) {
    if (slotRow[i] < -1 || slotRow[i] >= rows) {
      return Status(Code::kRange, "combine: slotRow[" + str(i / slots) + ", " + str(i % slots) + "] = " + str(slotRow[i]) +
                                      " is out of range [-1, " + str(rows) + ")");
    }
    if (!std::isfinite(weights[i])) {
      return Status(Code::kNonFinite, "combine: weights[" + str(i / slots) + ", " + str(i % slots) + "] = " +
                                          std::to_string(weights[i]) + " is not finite");
    }
  }
  return Status::ok();
}

inline float widen(float v) { return v; }
inline float widen(uint16_t v) { return bf16ToFloat(v); }

// acc [n] += w * src [n]: a plain loop that -O3 vectorizes (no FMA contraction
// without -mfma, so the product is rounded before the add, as in the reference).
template <typename T>
void accumulate(float* acc, const T* src, float w, int64_t n) {
  for (int64_t c = 0; c < n; ++c) acc[c] += w * widen(src[c]);
}

template <typename T>
void addRow(float* acc, const T* src, int64_t n) {
  for (int64_t c = 0; c < n; ++c) acc[c] += widen(src[c]);
}

// Dispatches on a row's dtype: acc [n] += w * row [n] (w == nullptr: plain add).
void accumulateRow(float* acc, const TensorView& t, int64_t row, int64_t c0, int64_t n, const float* w) {
  const int64_t offset = row * t.dim(1) + c0;
  if (t.dtype == DType::kF32) {
    const float* src = t.as<const float>() + offset;
    w ? accumulate(acc, src, *w, n) : addRow(acc, src, n);
  } else {
    const uint16_t* src = t.as<const uint16_t>() + offset;
    w ? accumulate(acc, src, *w, n) : addRow(acc, src, n);
  }
}

void storeRow(const TensorView& out, int64_t token, int64_t c0, int64_t n, const float* acc) {
  const int64_t offset = token * out.dim(1) + c0;
  if (out.dtype == DType::kF32) {
    std::copy(acc, acc + n, out.as<float>() + offset);
  } else {
    uint16_t* dst = out.as<uint16_t>() + offset;  // rounded once, nearest even
    for (int64_t c = 0; c < n; ++c) dst[c] = bf16FromFloat(acc[c]);
  }
}

// out[t, c0 .. c0+n) for one token: slots 0..k-1 in order, then the shared term.
void combineTile(const CombineArgs& a, int64_t token, int64_t c0, int64_t n, float* acc /* [n] f32 */) {
  const int64_t slots = a.slotRow.dim(1);
  const int32_t* slotRow = a.slotRow.as<const int32_t>() + token * slots;  // [k] i32
  const float* weights = a.weights.as<const float>() + token * slots;      // [k] f32
  std::fill(acc, acc + n, 0.0f);
  for (int64_t j = 0; j < slots; ++j) {
    if (slotRow[j] >= 0) accumulateRow(acc, a.y, slotRow[j], c0, n, &weights[j]);
  }
  if (a.shared.data != nullptr) accumulateRow(acc, a.shared, token, c0, n, nullptr);
  storeRow(a.out, token, c0, n, acc);
}

// ---- SIMD kernels ------------------------------------------------------------
//
// One token's row, a chunk of columns at a time with the accumulators in
// registers: acc = 0, then acc += w_j * y_j (product rounded, then added: the
// same two IEEE operations per element, in the same slot order, as
// combineTile), then acc += shared, then one store. Same bits as the scalar code.

struct RowRefs {
  const void* y[16];  // the slot rows (nullptr-free, in slot order)
  float w[16];
  int n = 0;
};

// The next token's rows are asked for while this token's are summed, chunk by
// chunk at the same columns: its k rows of y sit at scattered rows of [R, H]
// (3.5 KB each at H = 1792, bf16), too short for the hardware prefetcher to
// ramp up on before each ends, and the op ran at a third of memory speed.
struct NextRows {
  const RowRefs* refs = nullptr;  // nullptr: none (the last token of a task)
  const void* shared = nullptr;
};

// Every 64-byte line of columns [c, c + n) of the rows of `next`.
inline void prefetchChunk(const NextRows& next, int64_t c, int64_t n, size_t ySize, size_t sharedSize) {
  if (next.refs == nullptr) return;
  for (int j = 0; j < next.refs->n; ++j) {
    const char* row = static_cast<const char*>(next.refs->y[j]) + c * static_cast<int64_t>(ySize);
    for (int64_t b = 0; b < n * static_cast<int64_t>(ySize); b += 64) _mm_prefetch(row + b, _MM_HINT_T0);
  }
  if (next.shared != nullptr) {
    const char* row = static_cast<const char*>(next.shared) + c * static_cast<int64_t>(sharedSize);
    for (int64_t b = 0; b < n * static_cast<int64_t>(sharedSize); b += 64) _mm_prefetch(row + b, _MM_HINT_T0);
  }
}

template <bool kBF16>
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512 load512(const void* base, int64_t i, __mmask16 m) {
  if (kBF16) {
    const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(base) + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  return _mm512_maskz_loadu_ps(m, static_cast<const float*>(base) + i);
}

// bf16 bits of v (nearest even, NaN quieted, as bf16FromFloat) in the upper
// half of each 32-bit lane, the lower half zero.
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512i bf16High(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7FFF)), lsb);
  const __m512i quiet = _mm512_or_si512(bits, _mm512_set1_epi32(0x400000));
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(bits, _mm512_set1_epi32(0x7FFFFFFF)),
                                                _mm512_set1_epi32(0x7F800000));
  return _mm512_and_si512(_mm512_mask_mov_epi32(rounded, nan, quiet), _mm512_set1_epi32(static_cast<int>(0xFFFF0000u)));
}

template <bool kBF16>
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline void store512(void* base, int64_t i, __mmask16 m, __m512 v) {
  if (kBF16) {
    _mm512_mask_cvtepi32_storeu_epi16(static_cast<uint16_t*>(base) + i, m, _mm512_srli_epi32(bf16High(v), 16));
  } else {
    _mm512_mask_storeu_ps(static_cast<float*>(base) + i, m, v);
  }
}

// Columns [c0, c1) of one token; kV vectors of 16 per chunk.
template <bool kYBF16, bool kSBF16, bool kOBF16>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void combineRowAvx512(const RowRefs& refs, const void* shared, void* out,
                                                                  int64_t c0, int64_t c1, const NextRows& next) {
  constexpr int kV = 8;
  for (int64_t c = c0; c < c1; c += 16 * kV) {
    prefetchChunk(next, c, std::min<int64_t>(16 * kV, c1 - c), kYBF16 ? 2 : 4, kSBF16 ? 2 : 4);
    __mmask16 m[kV];
    for (int v = 0; v < kV; ++v) {
      const int64_t left = c1 - (c + 16 * v);
      m[v] = left >= 16 ? __mmask16(0xFFFF) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1u);
    }
    __m512 acc[kV];
    for (auto& a : acc) a = _mm512_setzero_ps();
    for (int j = 0; j < refs.n; ++j) {
      const __m512 w = _mm512_set1_ps(refs.w[j]);
      for (int v = 0; v < kV; ++v) {
        // The rounding-mode form of the multiply is not a plain vector
        // operation, so -ffp-contract cannot fuse it with the add into an FMA.
        const __m512 p = _mm512_mul_round_ps(w, load512<kYBF16>(refs.y[j], c + 16 * v, m[v]),
                                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        acc[v] = _mm512_add_ps(acc[v], p);
      }
    }
    if (shared) {
      for (int v = 0; v < kV; ++v) acc[v] = _mm512_add_ps(acc[v], load512<kSBF16>(shared, c + 16 * v, m[v]));
    }
    for (int v = 0; v < kV; ++v) store512<kOBF16>(out, c + 16 * v, m[v], acc[v]);
  }
}

// All three bf16 (the layer's case): a token's rows in passes of up to
// kRowsPerPass rows, each pass reading its rows start to end side by side,
// the sums of the token's tile kept in an L1 buffer between passes. The
// chunked kernel above reads all k rows side by side, 256 bytes of each in
// turn; read so, the rows came at 9-11 GB/s per core (T = 4096, H = 1792,
// k = 8, any prefetch distance or hint). One row per pass took 0.6-0.7x
// that time, and three rows per pass (the 8 slot rows and the shared row in
// three passes) 0.8x the time of one; two or four rows per pass 0.85-0.99x.
// Each pass asks for the lines of the next pass's rows (the next token's
// after the last) as it goes.
//
// A 512-bit load holds 32 columns as 16 lanes of two bf16, and each lane's
// halves widen in place: the even column by a shift (x << 16), the odd one
// by a mask (x & 0xFFFF0000), into two f32 vectors, without the cross-lane
// widening. The per-column operations are those of the kernels above, in
// the same order: sum = 0, sum += w_j * y_j (product rounded, then added)
// for each slot, sum += shared, one rounding to bf16.

constexpr int kRowsPerPass = 3;

// Columns [c0, c1) of one token (c1 - c0 <= kColsPerTask); `next`: the next token's rows.
__attribute__((target("avx512f,avx512bw,avx512vl"))) void combineRowBf16(const RowRefs& refs, const void* shared, void* out,
                                                                      int64_t c0, int64_t c1, const NextRows& next) {
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  // [c1 - c0] f32: per 32 columns, the 16 even columns' sums, then the 16 odd ones'.
  alignas(64) float sums[kColsPerTask];
  // The rows in the order they are read: this token's slot rows, its shared
  // row, then the next token's first ones (asked for during the last pass).
  const void* order[16 + 1 + kRowsPerPass];
  int count = 0;
  for (int j = 0; j < refs.n; ++j) order[count++] = refs.y[j];
  if (shared) order[count++] = shared;
  const int own = count;
  if (next.refs != nullptr) {
    for (int j = 0; j < next.refs->n && count < own + kRowsPerPass; ++j) order[count++] = next.refs->y[j];
    if (next.shared != nullptr && count < own + kRowsPerPass) order[count++] = next.shared;
  }
  const int slots = refs.n;
  // Rows [r0, r0 + kRowsPerPass) of `order` per pass; the last pass (at
  // least one, for a token with no rows) stores the result.
  for (int r0 = 0;; r0 += kRowsPerPass) {
    const bool last = r0 + kRowsPerPass >= own;
    const uint16_t* rows[kRowsPerPass];  // nullptr past this token's rows
    __m512 w[kRowsPerPass];              // the slot's weight; the shared row has none
    const char* later[kRowsPerPass];     // the next pass's rows, nullptr past them
    for (int g = 0; g < kRowsPerPass; ++g) {
      const int r = r0 + g, ahead = r + kRowsPerPass;
      rows[g] = r < own ? static_cast<const uint16_t*>(order[r]) : nullptr;
      w[g] = _mm512_set1_ps(r < slots ? refs.w[r] : 1.0f);
      later[g] = ahead < count ? static_cast<const char*>(order[ahead]) : nullptr;
    }
    for (int64_t c = c0; c < c1; c += 32) {
      const int64_t left = c1 - c;
      const __mmask32 m = left >= 32 ? ~__mmask32(0) : __mmask32((1u << left) - 1u);
      for (int g = 0; g < kRowsPerPass; ++g) {
        if (later[g] != nullptr) _mm_prefetch(later[g] + 2 * c, _MM_HINT_T0);
      }
      float* at = sums + (c - c0);
      __m512 even = r0 == 0 ? _mm512_setzero_ps() : _mm512_load_ps(at);
      __m512 odd = r0 == 0 ? _mm512_setzero_ps() : _mm512_load_ps(at + 16);
      for (int g = 0; g < kRowsPerPass && rows[g] != nullptr; ++g) {
        const __m512i x = _mm512_maskz_loadu_epi16(m, rows[g] + c);
        __m512 xEven = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
        __m512 xOdd = _mm512_castsi512_ps(_mm512_and_si512(x, high));
        if (r0 + g < slots) {
          // The rounding-mode form of the multiply is not a plain vector
          // operation, so -ffp-contract cannot fuse it with the add into an FMA.
          xEven = _mm512_mul_round_ps(w[g], xEven, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
          xOdd = _mm512_mul_round_ps(w[g], xOdd, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        }
        even = _mm512_add_ps(even, xEven);
        odd = _mm512_add_ps(odd, xOdd);
      }
      if (last) {
        const __m512i lanes = _mm512_or_si512(_mm512_srli_epi32(bf16High(even), 16), bf16High(odd));
        _mm512_mask_storeu_epi16(static_cast<uint16_t*>(out) + c, m, lanes);
      } else {
        _mm512_store_ps(at, even);
        _mm512_store_ps(at + 16, odd);
      }
    }
    if (last) return;
  }
}

// AVX2: 8 lanes, 4 vectors per chunk, scalar tail. The target has no FMA, so
// the multiply and the add stay separate.
template <bool kBF16>
__attribute__((target("avx2"))) inline __m256 load256(const void* base, int64_t i) {
  if (kBF16) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  return _mm256_loadu_ps(static_cast<const float*>(base) + i);
}

template <bool kBF16>
__attribute__((target("avx2"))) inline void store256(void* base, int64_t i, __m256 v) {
  if (kBF16) {
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    const __m256i rounded =
        _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7FFF)), lsb), 16);
    const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0x7FFFFFFF)),
                                           _mm256_set1_epi32(0x7F800000));
    const __m256i r = _mm256_blendv_epi8(rounded, quiet, nan);  // 8 x u32, values < 2^16
    const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(base) + i), packed);
  } else {
    _mm256_storeu_ps(static_cast<float*>(base) + i, v);
  }
}

template <bool kYBF16, bool kSBF16, bool kOBF16>
__attribute__((target("avx2"))) void combineRowAvx2(const RowRefs& refs, const void* shared, void* out, int64_t c0,
                                                    int64_t c1, const NextRows& next) {
  constexpr int kV = 4;
  int64_t c = c0;
  for (; c + 8 * kV <= c1; c += 8 * kV) {
    prefetchChunk(next, c, 8 * kV, kYBF16 ? 2 : 4, kSBF16 ? 2 : 4);
    __m256 acc[kV];
    for (auto& a : acc) a = _mm256_setzero_ps();
    for (int j = 0; j < refs.n; ++j) {
      const __m256 w = _mm256_set1_ps(refs.w[j]);
      for (int v = 0; v < kV; ++v) {
        acc[v] = _mm256_add_ps(acc[v], _mm256_mul_ps(w, load256<kYBF16>(refs.y[j], c + 8 * v)));
      }
    }
    if (shared) {
      for (int v = 0; v < kV; ++v) acc[v] = _mm256_add_ps(acc[v], load256<kSBF16>(shared, c + 8 * v));
    }
    for (int v = 0; v < kV; ++v) store256<kOBF16>(out, c + 8 * v, acc[v]);
  }
  // Tail: scalar, same operations.
  for (; c < c1; ++c) {
    float acc = 0.0f;
    for (int j = 0; j < refs.n; ++j) {
      const float y = kYBF16 ? bf16ToFloat(static_cast<const uint16_t*>(refs.y[j])[c]) : static_cast<const float*>(refs.y[j])[c];
      acc += refs.w[j] * y;
    }
    if (shared) acc += kSBF16 ? bf16ToFloat(static_cast<const uint16_t*>(shared)[c]) : static_cast<const float*>(shared)[c];
    if (kOBF16) {
      static_cast<uint16_t*>(out)[c] = bf16FromFloat(acc);
    } else {
      static_cast<float*>(out)[c] = acc;
    }
  }
}

using CombineRow = void (*)(const RowRefs& refs, const void* shared, void* out, int64_t c0, int64_t c1, const NextRows& next);

template <template <bool, bool, bool> class K>
CombineRow pick(bool y, bool sh, bool o) {
  const int i = (y ? 4 : 0) | (sh ? 2 : 0) | (o ? 1 : 0);
  switch (i) {
    case 0: return K<false, false, false>::fn;
    case 1: return K<false, false, true>::fn;
    case 2: return K<false, true, false>::fn;
    case 3: return K<false, true, true>::fn;
    case 4: return K<true, false, false>::fn;
    case 5: return K<true, false, true>::fn;
    case 6: return K<true, true, false>::fn;
    default: return K<true, true, true>::fn;
  }
}
template <bool a, bool b, bool c>
struct Avx512K {
  static constexpr CombineRow fn = combineRowAvx512<a, b, c>;
};
template <bool a, bool b, bool c>
struct Avx2K {
  static constexpr CombineRow fn = combineRowAvx2<a, b, c>;
};

// A SIMD row kernel, and how many tokens ahead of the one it sums the
// token whose rows it asks for (`next`) is.
struct RowKernel {
  CombineRow fn = nullptr;  // nullptr: the portable path
  int ahead = 2;
};

// The SIMD row kernel for these dtypes.
RowKernel selectCombineRow(const CombineArgs& a) {
  const CpuFeatures& f = cpuFeatures();
  const bool y = a.y.dtype == DType::kBF16, sh = a.shared.data != nullptr && a.shared.dtype == DType::kBF16,
             o = a.out.dtype == DType::kBF16;
  if (f.avx512f && f.avx512bw && f.avx512vl) {
    if (y && o && (sh || a.shared.data == nullptr)) return RowKernel{combineRowBf16, 1};
    return RowKernel{pick<Avx512K>(y, sh, o)};
  }
  if (f.avx2) return RowKernel{pick<Avx2K>(y, sh, o)};
  return RowKernel{};
}

// The rows token `token` sums: its slots' rows of y in slot order (skipping
// -1), with their weights, and its row of the shared term (nullptr: none).
void tokenRows(const CombineArgs& a, int64_t token, RowRefs* refs, const void** shared) {
  const int64_t slots = a.slotRow.dim(1), hidden = a.y.dim(1);
  const int32_t* slotRow = a.slotRow.as<const int32_t>() + token * slots;  // [k] i32
  const float* weights = a.weights.as<const float>() + token * slots;      // [k] f32
  const size_t ySize = dtypeSize(a.y.dtype);
  *shared = a.shared.data == nullptr
                ? nullptr
                : static_cast<const char*>(a.shared.data) + token * hidden * dtypeSize(a.shared.dtype);
  refs->n = 0;
  for (int64_t j = 0; j < slots; ++j) {  // slots <= 16 (checked by combine())
    if (slotRow[j] < 0) continue;
    refs->y[refs->n] = static_cast<const char*>(a.y.data) + slotRow[j] * hidden * ySize;
    refs->w[refs->n] = weights[j];
    ++refs->n;
  }
}

// Tokens [t0, t1), columns [c0, c0 + n), each token's rows asked for while
// the one kernel.ahead tokens before it is summed.
constexpr int kMaxAhead = 2;

void combineTokensSimd(const CombineArgs& a, RowKernel kernel, int64_t t0, int64_t t1, int64_t c0, int64_t n) {
  const int64_t hidden = a.y.dim(1);
  const int ahead = kernel.ahead, ring = kernel.ahead + 1;
  RowRefs refs[kMaxAhead + 1];  // a ring: token t at t % ring
  const void* shared[kMaxAhead + 1];
  for (int64_t t = t0; t < std::min(t1, t0 + ahead); ++t) tokenRows(a, t, &refs[t % ring], &shared[t % ring]);
  for (int64_t t = t0; t < t1; ++t) {
    NextRows next;
    if (t + ahead < t1) {
      const int64_t k = (t + ahead) % ring;
      tokenRows(a, t + ahead, &refs[k], &shared[k]);
      next = NextRows{&refs[k], shared[k]};
    }
    void* out = static_cast<char*>(a.out.data) + t * hidden * dtypeSize(a.out.dtype);
    kernel.fn(refs[t % ring], shared[t % ring], out, c0, c0 + n, next);
  }
}

}  // namespace

Status combine(const CombineArgs& input) {
  CombineArgs args = input;
  IndexSnapshot slotRow;  // validated and read from one copy (index_snapshot.h)
  if (!slotRow.take(&args.slotRow)) return Status(Code::kInternal, "combine: out of memory for a copy of slotRow");
  MOE_RETURN_IF_ERROR(validateCombine(args));
  const int64_t tokens = args.out.dim(0), hidden = args.out.dim(1);
  const int64_t colsPerTask = std::min<int64_t>(kColsPerTask, std::max<int64_t>(hidden, 1));
  const int64_t colTiles = ceilDiv(hidden, colsPerTask);
  // ~8K output elements per task (each reads k rows): enough work to amortize
  // the hand-out; up to 4x that where T leaves 8 tasks per thread, so that
  // fewer tokens start a task without their rows asked for in advance.
  const int64_t threads = ThreadPool::instance().numThreads();
  const int64_t baseTokens = std::max<int64_t>(1, 8192 / colsPerTask);
  const int64_t tokensPerTask = std::clamp<int64_t>(tokens / (8 * threads), baseTokens, 4 * baseTokens);
  const int64_t tokenTiles = ceilDiv(tokens, tokensPerTask);
  // The SIMD kernels hold up to 16 slots per pass; more slots (rare) take the scalar path.
  const RowKernel kernel = args.slotRow.dim(1) <= 16 ? selectCombineRow(args) : RowKernel{};
  if (kernel.fn) {
    ThreadPool::instance().parallelFor(tokenTiles * colTiles, [&](int64_t task, int) {
      const int64_t c0 = (task % colTiles) * colsPerTask;
      const int64_t n = std::min(hidden, c0 + colsPerTask) - c0;
      const int64_t t0 = (task / colTiles) * tokensPerTask;
      combineTokensSimd(args, kernel, t0, std::min(tokens, t0 + tokensPerTask), c0, n);
    });
    return Status::ok();
  }
  ThreadPool::instance().parallelFor(tokenTiles * colTiles, [&](int64_t task, int) {
    float acc[kColsPerTask];  // [colsPerTask] f32 accumulator of one token's tile
    const int64_t c0 = (task % colTiles) * colsPerTask;
    const int64_t n = std::min(hidden, c0 + colsPerTask) - c0;
    const int64_t t0 = (task / colTiles) * tokensPerTask;
    const int64_t t1 = std::min(tokens, t0 + tokensPerTask);
    for (int64_t t = t0; t < t1; ++t) combineTile(args, t, c0, n, acc);
  });
  return Status::ok();
}

}  // namespace moe::cpu
