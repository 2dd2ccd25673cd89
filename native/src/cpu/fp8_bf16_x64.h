// fp8 e4m3 -> bf16, 64 values at a time, by table lookup (exact: every e4m3
// value, subnormals included, is a normal bf16), for the AMX kernels' weight
// operand. Include it only AFTER a translation unit's `#pragma GCC target(...
// avx512bw, avx512vbmi ...)`: the anonymous namespace keeps each copy private
// to its (AVX-512) file.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace moe::cpu {
namespace {

// The bf16 bits of every e4m3 magnitude (0x7F, NaN, as a quiet NaN; NaN codes
// are caught on the bytes anyway), split into high and low bytes: two
// 128-byte tables that vpermi2b indexes by the low 7 bits of each byte.
struct Bf16ByteTables {
  uint8_t hi[128], lo[128];
};
constexpr uint16_t bf16OfE4m3Magnitude(int v) {
  if (v == 0x7F) return 0x7FC0;
  const int e = v >> 3, m = v & 7;
  if (e > 0) return static_cast<uint16_t>(((e + 120) << 7) | (m << 4));
  if (m == 0) return 0;
  const int p = m >= 4 ? 2 : m >= 2 ? 1 : 0;  // m * 2^-9 = 2^(p - 9) * (m / 2^p)
  return static_cast<uint16_t>(((118 + p) << 7) | (((m - (1 << p)) << (7 - p)) & 0x7F));
}
constexpr Bf16ByteTables makeBf16ByteTables() {
  Bf16ByteTables t{};
  for (int v = 0; v < 128; ++v) {
    t.hi[v] = static_cast<uint8_t>(bf16OfE4m3Magnitude(v) >> 8);
    t.lo[v] = static_cast<uint8_t>(bf16OfE4m3Magnitude(v) & 0xFF);
  }
  return t;
}
alignas(64) constexpr Bf16ByteTables kBf16Bytes = makeBf16ByteTables();

// Byte order that makes unpacklo/unpackhi (which work per 128-bit lane)
// return elements 0..31 and 32..63 in order: in lane L, bytes 0..7 hold
// elements 8L..8L+7 and bytes 8..15 hold 32+8L..32+8L+7.
constexpr struct UnpackOrder {
  uint8_t idx[64];
  constexpr UnpackOrder() : idx{} {
    for (int p = 0; p < 64; ++p) {
      const int lane = p / 16, j = p % 16;
      idx[p] = static_cast<uint8_t>(j < 8 ? 8 * lane + j : 32 + 8 * lane + (j - 8));
    }
  }
} kUnpackOrder;

// The decode's constants, loaded once by a loop that decodes many times (a
// kernel whose other registers leave room keeps them there).
struct Fp8Bf16Tables {
  __m512i hi0, hi1, lo0, lo1, order, sign;
  static Fp8Bf16Tables load() {
    return {_mm512_load_si512(kBf16Bytes.hi), _mm512_load_si512(kBf16Bytes.hi + 64),
            _mm512_load_si512(kBf16Bytes.lo), _mm512_load_si512(kBf16Bytes.lo + 64),
            _mm512_loadu_si512(kUnpackOrder.idx), _mm512_set1_epi8(static_cast<char>(0x80))};
  }
};

// The 64 bytes as 64 bf16 in two vectors: lo = k 0..31, hi = k 32..63.
// Five shuffle-port uops per 64 values (a shift-and-fix decode takes three
// per 32 plus four ALU uops).
// The decode proper, of bytes already permuted (x = vpermb(order, bytes)):
// lo word 8L + t (L < 4 the 128-bit lane, t < 8) is bf16(x byte 16L + t) and
// hi word 8L + t is bf16(x byte 16L + 8 + t). With kUnpackOrder that is k
// order; a caller with another layout in mind passes its own permutation.
// nanHigh tracks NaN codes off the table's high byte, 0x7F only for the NaN
// magnitude (every other one <= 0x43): the byte maxima, one op (see
// sawNanHigh64; callers that track the raw bytes instead drop it).
inline void bf16FromPermutedFp8x64(const Fp8Bf16Tables& t, __m512i x, __m512i& lo, __m512i& hi, __m512i& nanHigh) {
  __m512i high = _mm512_permutex2var_epi8(t.hi0, x, t.hi1);
  const __m512i low = _mm512_permutex2var_epi8(t.lo0, x, t.lo1);
  nanHigh = _mm512_max_epu8(nanHigh, high);
  high = _mm512_ternarylogic_epi32(high, x, t.sign, 0xF8);  // high | (x & 0x80): the sign
  lo = _mm512_unpacklo_epi8(low, high);
  hi = _mm512_unpackhi_epi8(low, high);
}

inline void bf16FromPermutedFp8x64(__m512i x, __m512i& lo, __m512i& hi) {
  __m512i unused = _mm512_setzero_si512();
  bf16FromPermutedFp8x64(Fp8Bf16Tables::load(), x, lo, hi, unused);
}

inline void bf16FromFp8x64(__m512i bytes, __m512i& lo, __m512i& hi) {
  bf16FromPermutedFp8x64(_mm512_permutexvar_epi8(_mm512_loadu_si512(kUnpackOrder.idx), bytes), lo, hi);
}

// The same, stored: out[0..31] = k 0..31, out[32..63] = k 32..63 (64-byte aligned).
inline void bf16FromFp8x64(__m512i bytes, uint16_t* out) {
  __m512i lo, hi;
  bf16FromFp8x64(bytes, lo, hi);
  _mm512_store_si512(out, lo);
  _mm512_store_si512(out + 32, hi);
}

// The same with the constants at hand and NaN codes tracked in nanHigh.
inline void bf16FromFp8x64(const Fp8Bf16Tables& t, __m512i bytes, uint16_t* out, __m512i& nanHigh) {
  __m512i lo, hi;
  bf16FromPermutedFp8x64(t, _mm512_permutexvar_epi8(t.order, bytes), lo, hi, nanHigh);
  _mm512_store_si512(out, lo);
  _mm512_store_si512(out + 32, hi);
}

// The same decode with three of its constants in memory: the second table
// of each vpermi2b and the sign mask are its memory operands (L1 loads; the
// sign one broadcast), so that a kernel whose register tile needs the room
// keeps its partial sums in registers. The dot kernel at 4 rows x 4 B rows
// (16 partial sums and 8 vectors of A) spilled three of its sums with the
// constants in registers: a store and a reload inside their chains at every
// 64 bytes of k. (Inline asm: GCC otherwise hoists the loads out of the
// loop into registers again.)
alignas(4) constexpr uint32_t kSignBytes = 0x80808080u;

struct Fp8Bf16LeanTables {
  __m512i hi0, lo0, order;
  static Fp8Bf16LeanTables load() {
    return {_mm512_load_si512(kBf16Bytes.hi), _mm512_load_si512(kBf16Bytes.lo), _mm512_loadu_si512(kUnpackOrder.idx)};
  }
};

// vpermi2b with its second table from memory: bytes of [table0 | *table1] at idx's low 7 bits.
inline __m512i permute2TablesFromMemory(__m512i idx, __m512i table0, const uint8_t* table1) {
  asm("vpermi2b %2, %1, %0" : "+v"(idx) : "v"(table0), "m"(*reinterpret_cast<const __m512i*>(table1)));
  return idx;
}

// bf16FromFp8x64's lo / hi of 64 fp8 bytes (k order), NaN codes tracked in nanHigh.
inline void bf16FromFp8x64Lean(const Fp8Bf16LeanTables& t, __m512i bytes, __m512i& lo, __m512i& hi, __m512i& nanHigh) {
  const __m512i x = _mm512_permutexvar_epi8(t.order, bytes);
  __m512i high = permute2TablesFromMemory(x, t.hi0, kBf16Bytes.hi + 64);
  nanHigh = _mm512_max_epu8(nanHigh, high);
  asm("vpternlogd $0xF8, %2%{1to16%}, %1, %0" : "+v"(high) : "v"(x), "m"(kSignBytes));  // high | (x & 0x80)
  const __m512i low = permute2TablesFromMemory(x, t.lo0, kBf16Bytes.lo + 64);
  lo = _mm512_unpacklo_epi8(low, high);
  hi = _mm512_unpackhi_epi8(low, high);
}

inline bool sawNanHigh64(__m512i nanHigh) {
  return _mm512_cmpeq_epi8_mask(nanHigh, _mm512_set1_epi8(0x7F)) != 0;
}

inline bool sawNan64(__m512i acc) {
  return _mm512_cmpeq_epi8_mask(acc, _mm512_set1_epi8(-1)) != 0;
}

inline __m512i trackNan64(__m512i acc, __m512i bytes) {
  return _mm512_max_epu8(acc, _mm512_or_si512(bytes, _mm512_set1_epi8(static_cast<char>(0x80))));
}

}  // namespace
}  // namespace moe::cpu
