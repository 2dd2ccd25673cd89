#include "cpu/router_dots.h"

#include <immintrin.h>

#include "core/numerics.h"
#include "cpu/cpu_features.h"

// GCC 12's AVX-512 intrinsics self-initialize their "undefined" operands,
// which -Wall reports at every inlined call site.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace moe::cpu {

namespace {

// ---- the lane sums (one tree for every logit of an ISA) ----------------------

// The sum of v's 16 lanes: within each 128-bit block (l0 + l2) + (l1 + l3),
// then (B0 + B1) + (B2 + B3). sum16 below adds in exactly this order.
__attribute__((target("avx512f"))) inline float reduce16(__m512 v) {
  __m512 s = _mm512_add_ps(v, _mm512_permute_ps(v, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm512_add_ps(s, _mm512_permute_ps(s, _MM_SHUFFLE(2, 3, 0, 1)));
  s = _mm512_add_ps(s, _mm512_shuffle_f32x4(s, s, _MM_SHUFFLE(2, 3, 0, 1)));
  s = _mm512_add_ps(s, _mm512_shuffle_f32x4(s, s, _MM_SHUFFLE(1, 0, 3, 2)));
  return _mm512_cvtss_f32(s);
}

// Lane i of the result is reduce16(v[i]) (the same adds, as floating-point
// addition is commutative): a transpose-and-add tree, 15 adds and 30
// shuffles for 16 sums instead of 64 instructions.
__attribute__((target("avx512f"))) inline __m512 sum16(const __m512* v) {
  __m512 a[8], b[4], c[2];
  for (int i = 0; i < 8; ++i) {
    a[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  }
  for (int i = 0; i < 4; ++i) {
    b[i] = _mm512_add_ps(_mm512_shuffle_ps(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  for (int i = 0; i < 2; ++i) {
    c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  }
  return _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(c[0], c[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// Writes the kTok x kExp accumulators (token-major) as logits of tokens
// [t0, t0 + kTok) and experts [e, e + kExp). By value: a kernel whose own
// array's address escaped would keep that array in memory.
template <int kTok, int kExp>
struct Accumulators {
  __m512 v[kTok * kExp];
};

template <int kTok, int kExp>
__attribute__((target("avx512f"))) inline void storeAvx512(Accumulators<kTok, kExp> acc, const RouterBlock& b, int64_t t0,
                                                           int64_t e) {
  alignas(64) float sums[kTok * kExp];
  if constexpr (kTok * kExp == 16) {
    _mm512_store_ps(sums, sum16(acc.v));
  } else {
    for (int i = 0; i < kTok * kExp; ++i) sums[i] = reduce16(acc.v[i]);
  }
  for (int t = 0; t < kTok; ++t) {
    for (int j = 0; j < kExp; ++j) b.logits[(t0 + t) * b.ldLogits + e + j] = sums[t * kExp + j];
  }
}

// The sum of v's 8 lanes: (l0 + l2) + (l1 + l3) in each half, then the halves.
__attribute__((target("avx2"))) inline float reduce8(__m256 v) {
  __m256 s = _mm256_add_ps(v, _mm256_permute_ps(v, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm256_add_ps(s, _mm256_permute_ps(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1)));
}

// The next rows of a run: a decode step (one token) streams w from memory,
// kExp rows at a time; their lines are asked for one run ahead.
inline void prefetchNextRun(const void* row, int64_t runBytes) {
  _mm_prefetch(static_cast<const char*>(row) + runBytes, _MM_HINT_T0);
}

// ---- AVX512_BF16: x and w both bf16 ------------------------------------------
//
// The kernels keep acc in registers only if GCC sees every index of it as a
// constant before it places the array: hence `#pragma GCC unroll` on each
// loop over acc (left alone, the zeroing becomes a memset) and the copy
// into Accumulators at the end. Otherwise acc lives in memory and every
// accumulator is stored on every step of the H loop: a store per VDPBF16PS
// or FMA, which held the router to a third of its peak.

struct Bf16DotKernel {
  // A run of 6 experts' rows (21 KB at H = 1792) stays in L1 while blocks of
  // 4 tokens stream past it: 24 accumulators, 10 loads per 24 VDPBF16PS.
  static constexpr int kTokens = 4;
  static constexpr int experts(int tokens) { return tokens <= 4 ? 6 : 2; }

  template <int kTok, int kExp>
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static void dots(const RouterBlock& b, int64_t t0, int64_t e,
                                                                                      bool prefetch) {
    const int64_t h = b.hidden;
    const auto* x = static_cast<const uint16_t*>(b.rows) + t0 * h;  // kTok rows of [count, H] bf16
    const auto* w = static_cast<const uint16_t*>(b.w) + e * h;      // kExp rows of [E, H] bf16
    __m512 acc[kTok * kExp];
    #pragma GCC unroll 32
    for (auto& a : acc) a = _mm512_setzero_ps();
    for (int64_t i = 0; i < h; i += 32) {
      // Pairs past H load as zeros and add +0 products.
      const __mmask32 m = h - i >= 32 ? ~__mmask32(0) : __mmask32((1u << (h - i)) - 1u);
      __m512i wv[kExp];
      for (int j = 0; j < kExp; ++j) {
        if (prefetch) prefetchNextRun(w + j * h + i, kExp * h * 2);
        wv[j] = _mm512_maskz_loadu_epi16(m, w + j * h + i);
      }
      #pragma GCC unroll 32
      for (int t = 0; t < kTok; ++t) {
        const __m512i xv = _mm512_maskz_loadu_epi16(m, x + t * h + i);
        #pragma GCC unroll 32
        for (int j = 0; j < kExp; ++j) {
          acc[t * kExp + j] = _mm512_dpbf16_ps(acc[t * kExp + j], (__m512bh)xv, (__m512bh)wv[j]);
        }
      }
    }
    Accumulators<kTok, kExp> done;
    #pragma GCC unroll 32
    for (int k = 0; k < kTok * kExp; ++k) done.v[k] = acc[k];
    storeAvx512<kTok, kExp>(done, b, t0, e);
  }
};

// ---- FMA kernels: f32 rows, w f32 or bf16 widened in registers ----------------

template <class W>
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512 load16(const W* p, __mmask16 m) {
  if constexpr (sizeof(W) == 4) {
    return _mm512_maskz_loadu_ps(m, p);
  } else {  // bf16: the high half of an f32
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
  }
}

template <class W>
struct Avx512FmaKernel {
  // As Bf16DotKernel: 6 experts' rows in L1, blocks of 4 tokens.
  static constexpr int kTokens = 4;
  static constexpr int experts(int tokens) { return tokens <= 4 ? 6 : 2; }

  template <int kTok, int kExp>
  __attribute__((target("avx512f,avx512bw,avx512vl"))) static void dots(const RouterBlock& b, int64_t t0, int64_t e, bool prefetch) {
    const int64_t h = b.hidden;
    const auto* x = static_cast<const float*>(b.rows) + t0 * h;  // kTok rows of [count, H] f32
    const W* w = static_cast<const W*>(b.w) + e * h;    // kExp rows of [E, H]
    __m512 acc[kTok * kExp];
    #pragma GCC unroll 32
    for (auto& a : acc) a = _mm512_setzero_ps();
    for (int64_t i = 0; i < h; i += 16) {
      const __mmask16 m = h - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (h - i)) - 1u);
      __m512 wv[kExp];
      for (int j = 0; j < kExp; ++j) {
        if (prefetch && i % (64 / sizeof(W)) == 0) prefetchNextRun(w + j * h + i, kExp * h * static_cast<int64_t>(sizeof(W)));
        wv[j] = load16(w + j * h + i, m);
      }
      #pragma GCC unroll 32
      for (int t = 0; t < kTok; ++t) {
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + t * h + i);
        #pragma GCC unroll 32
        for (int j = 0; j < kExp; ++j) acc[t * kExp + j] = _mm512_fmadd_ps(xv, wv[j], acc[t * kExp + j]);
      }
    }
    Accumulators<kTok, kExp> done;
    #pragma GCC unroll 32
    for (int k = 0; k < kTok * kExp; ++k) done.v[k] = acc[k];
    storeAvx512<kTok, kExp>(done, b, t0, e);
  }
};

template <class W>
__attribute__((target("avx2,fma"))) inline __m256 load8(const W* p) {
  if constexpr (sizeof(W) == 4) {
    return _mm256_loadu_ps(p);
  } else {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
  }
}

inline float widen(float v) { return v; }
inline float widen(uint16_t v) { return bf16ToFloat(v); }

template <class W>
struct Avx2FmaKernel {
  // 16 ymm registers: kTok * kExp accumulators + kExp w vectors + one x.
  static constexpr int kTokens = 2;
  static constexpr int experts(int tokens) { return tokens <= 2 ? 4 : tokens <= 4 ? 2 : 1; }

  template <int kTok, int kExp>
  __attribute__((target("avx2,fma"))) static void dots(const RouterBlock& b, int64_t t0, int64_t e, bool prefetch) {
    const int64_t h = b.hidden;
    const auto* x = static_cast<const float*>(b.rows) + t0 * h;  // kTok rows of [count, H] f32
    const W* w = static_cast<const W*>(b.w) + e * h;
    __m256 acc[kTok * kExp];
    #pragma GCC unroll 32
    for (auto& a : acc) a = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= h; i += 8) {
      __m256 wv[kExp];
      for (int j = 0; j < kExp; ++j) {
        if (prefetch && i % (64 / sizeof(W)) == 0) prefetchNextRun(w + j * h + i, kExp * h * static_cast<int64_t>(sizeof(W)));
        wv[j] = load8(w + j * h + i);
      }
      #pragma GCC unroll 32
      for (int t = 0; t < kTok; ++t) {
        const __m256 xv = _mm256_loadu_ps(x + t * h + i);
        #pragma GCC unroll 32
        for (int j = 0; j < kExp; ++j) acc[t * kExp + j] = _mm256_fmadd_ps(xv, wv[j], acc[t * kExp + j]);
      }
    }
    #pragma GCC unroll 32
    for (int t = 0; t < kTok; ++t) {
      #pragma GCC unroll 32
      for (int j = 0; j < kExp; ++j) {
        float sum = reduce8(acc[t * kExp + j]);
        for (int64_t k = i; k < h; ++k) sum += x[t * h + k] * widen(w[j * h + k]);  // the H tail, in order
        b.logits[(t0 + t) * b.ldLogits + e + j] = sum;
      }
    }
  }
};

// ---- portable ------------------------------------------------------------------

// Eight independent partial sums so that the compiler can vectorize the loop
// without reassociating a single float sum (which -O3 alone will not do).
template <class W>
float dot(const float* a, const W* b, int64_t n) {
  float partial[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) partial[j] += a[i + j] * widen(b[i + j]);
  }
  for (; i < n; ++i) partial[i % 8] += a[i] * widen(b[i]);
  return ((partial[0] + partial[1]) + (partial[2] + partial[3])) + ((partial[4] + partial[5]) + (partial[6] + partial[7]));
}

template <class W>
void runPortable(const RouterBlock& b, int64_t e0, int64_t e1) {
  const auto* x = static_cast<const float*>(b.rows);
  const W* w = static_cast<const W*>(b.w);
  for (int64_t t = 0; t < b.count; ++t) {
    for (int64_t e = e0; e < e1; ++e) b.logits[t * b.ldLogits + e] = dot(x + t * b.hidden, w + e * b.hidden, b.hidden);
  }
}

// ---- runs of experts -------------------------------------------------------------

// Tokens [t0, t1) (a multiple of kTok of them) against experts [e0, e1): for
// each run of kExp experts, every kTok-token block in turn, so that the run's
// rows of w are read from memory once per RouterBlock and from L1 after (the
// first block asks for the next run's rows); the last < kExp experts as one
// shorter run. Each logit's arithmetic is the same in any run.
template <class K, int kTok, int kExp = K::experts(kTok)>
void runTokens(const RouterBlock& b, int64_t t0, int64_t t1, int64_t e0, int64_t e1) {
  int64_t e = e0;
  for (; e + kExp <= e1; e += kExp) {
    for (int64_t t = t0; t < t1; t += kTok) K::template dots<kTok, kExp>(b, t, e, t == t0);
  }
  if constexpr (kExp > 1) {
    if (e < e1) runTokens<K, kTok, kExp - 1>(b, t0, t1, e, e1);
  }
}

// The last `count` < kTok tokens of a block, from t0, as one block.
template <class K, int kTok>
void runTail(const RouterBlock& b, int64_t t0, int64_t count, int64_t e0, int64_t e1) {
  if constexpr (kTok >= 1) {
    if (count == kTok) return runTokens<K, kTok>(b, t0, t0 + kTok, e0, e1);
    runTail<K, kTok - 1>(b, t0, count, e0, e1);
  }
}

// The block's whole K::kTokens-token blocks, then its last tokens together.
template <class K>
void runBlock(const RouterBlock& b, int64_t e0, int64_t e1) {
  constexpr int kTok = K::kTokens;
  const int64_t whole = b.count / kTok * kTok;
  if (whole > 0) runTokens<K, kTok>(b, 0, whole, e0, e1);
  runTail<K, kTok - 1>(b, whole, b.count - whole, e0, e1);
}

template <template <class> class K>
RouterKernel fmaKernel(DType w, const char* name) {
  return RouterKernel{false, w == DType::kBF16 ? runBlock<K<uint16_t>> : runBlock<K<float>>, name};
}

}  // namespace

RouterKernel selectRouterKernel(DType x, DType w) {
  const CpuFeatures& f = cpuFeatures();
  const bool avx512 = f.avx512f && f.avx512bw && f.avx512vl;
  if (avx512 && f.avx512bf16 && x == DType::kBF16 && w == DType::kBF16) {
    return RouterKernel{true, runBlock<Bf16DotKernel>, "avx512bf16"};
  }
  if (avx512) return fmaKernel<Avx512FmaKernel>(w, "avx512");
  if (f.avx2 && f.fma) return fmaKernel<Avx2FmaKernel>(w, "avx2");
  return RouterKernel{false, w == DType::kBF16 ? runPortable<uint16_t> : runPortable<float>, "portable"};
}

}  // namespace moe::cpu
