#include "cpu/route.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include <immintrin.h>

#include "core/moe_op_checks.h"
#include "core/numerics.h"
#include "cpu/cpu_features.h"
#include "cpu/one_plus_exp.h"
#include "cpu/thread_pool.h"

// GCC 12's AVX-512 intrinsics self-initialize their "undefined" operands,
// which -Wall reports at every inlined call site.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace moe::cpu {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// DeepSeek-V3's renormalization guard: w /= (sum(w) + 1e-20).
constexpr float kSigmoidRenormEpsilon = 1e-20f;

std::string str(int64_t v) { return std::to_string(v); }

// The shapes, dtypes and options: core/moe_op_checks (shared with the CUDA
// backend). The bias values are data, read here once the shapes are known good.
Status validateRoute(const RouteArgs& a) {
  MOE_RETURN_IF_ERROR(checkRoute(a));
  if (a.bias.data == nullptr) return Status::ok();
  const float* bias = a.bias.as<const float>();  // [E] f32
  for (int64_t e = 0; e < a.bias.dim(0); ++e) {
    if (!std::isfinite(bias[e])) {
      return Status(Code::kNonFinite, "route: bias[" + str(e) + "] = " + std::to_string(bias[e]) + " is not finite");
    }
  }
  return Status::ok();
}

// Per-task scratch, sized once per task so that nothing allocates per token.
struct Scratch {
  std::vector<float> logits;       // [E] f32: the token's logits, widened
  std::vector<float> score;        // [E] f32: selection score (softmax: logit; sigmoid: s + bias); -inf: unselectable
  std::vector<float> weight;       // [E] f32: the unnormalized weight (softmax: p; sigmoid: s)
  std::vector<uint8_t> keep;       // [G] 1 where the group is kept
  std::vector<float> groupScore;   // [G] f32
  std::vector<uint8_t> groupAny;   // [G] 1 where the group has a selectable expert
  std::vector<int32_t> groupOrder; // [G] group indices, best first
  std::vector<int32_t> candidates; // [topK] chosen experts, best first
  std::vector<float> candScore;    // [topK] their scores
  // The AVX-512 selection's pool: one 64-bit order key per selectable-range
  // expert (addToPool), each range padded to whole vectors with -inf keys.
  std::vector<uint64_t> poolKey;   // [E + 16 G] u64
  Scratch(int64_t experts, int64_t groups, int64_t topK)
      : logits(experts), score(experts), weight(experts), keep(groups), groupScore(groups), groupAny(groups),
        groupOrder(groups), candidates(topK), candScore(topK), poolKey(experts + 16 * (groups + 1)) {}
};

void loadLogits(const TensorView& logits, int64_t token, int64_t experts, float* row) {
  const int64_t base = token * experts;
  if (logits.dtype == DType::kBF16) {
    const uint16_t* src = logits.as<const uint16_t>() + base;  // [E] bf16
    for (int64_t e = 0; e < experts; ++e) row[e] = bf16ToFloat(src[e]);
  } else {
    const float* src = logits.as<const float>() + base;  // [E] f32
    for (int64_t e = 0; e < experts; ++e) row[e] = src[e];
  }
}

// ---- softmax scores ------------------------------------------------------------
//
// Softmax over the finite logits (others get probability 0 and are not
// selectable: score -inf). Selection uses the logit itself: softmax is
// monotonic, and ranking by logit avoids ties that only come from rounding p.
// p = e^(logit - max) / sum, with e^x from one_plus_exp.h. The sum runs in 16
// interleaved partial sums (expert e into partial e % 16, in expert order),
// then the 16 partials in order: the order a 16-lane vector loop gives,
// written the same way for every ISA so that all give the same bits.
constexpr int kSoftmaxLanes = 16;

float sumPartials(const float* partial) {
  float sum = 0.0f;
  for (int i = 0; i < kSoftmaxLanes; ++i) sum += partial[i];
  return sum;
}

void divideWeights(float* weight, int64_t experts, float sum) {
  if (!(sum > 0.0f)) return;
  for (int64_t e = 0; e < experts; ++e) weight[e] /= sum;
}

// The largest finite logit of [e0, e1), or `max` if that is larger.
float maxFiniteLogit(const float* logits, int64_t e0, int64_t e1, float max) {
  for (int64_t e = e0; e < e1; ++e) {
    if (std::isfinite(logits[e])) max = std::max(max, logits[e]);
  }
  return max;
}

// Experts [e0, e1) one at a time: weight, score, and the weight into its partial sum.
void softmaxScalarSteps(const float* logits, int64_t e0, int64_t e1, float maxLogit, float* weight, float* score,
                        float* partial /* [kSoftmaxLanes] */) {
  for (int64_t e = e0; e < e1; ++e) {
    const bool selectable = std::isfinite(logits[e]);
    weight[e] = selectable ? qrow::expNonPositive(logits[e] - maxLogit) : 0.0f;
    score[e] = selectable ? logits[e] : kNegInf;
    partial[e % kSoftmaxLanes] += weight[e];
  }
}

void softmaxScoresPortable(const float* logits, int64_t experts, float* weight, float* score) {
  const float maxLogit = maxFiniteLogit(logits, 0, experts, kNegInf);
  float partial[kSoftmaxLanes] = {};
  softmaxScalarSteps(logits, 0, experts, maxLogit, weight, score, partial);
  divideWeights(weight, experts, sumPartials(partial));
}

inline __mmask16 lanesLeft(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }

__attribute__((target("avx512f"))) inline __mmask16 finiteLanes(__m512 v) {
  const __m512i absBits = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7FFFFFFF));
  return _mm512_cmplt_epi32_mask(absBits, _mm512_set1_epi32(0x7F800000));
}

__attribute__((target("avx2"))) inline __m256 finiteLanes(__m256 v) {
  const __m256i absBits = _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x7FFFFFFF));
  return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(0x7F800000), absBits));
}

__attribute__((target("avx512f"))) void softmaxScoresAvx512(const float* logits, int64_t experts, float* weight,
                                                            float* score) {
  __m512 top = _mm512_set1_ps(kNegInf);
  for (int64_t e = 0; e < experts; e += 16) {
    const __m512 v = _mm512_maskz_loadu_ps(lanesLeft(experts - e), logits + e);
    top = _mm512_mask_max_ps(top, finiteLanes(v) & lanesLeft(experts - e), top, v);
  }
  const __m512 maxLogit = _mm512_set1_ps(_mm512_reduce_max_ps(top));
  __m512 partial = _mm512_setzero_ps();
  for (int64_t e = 0; e < experts; e += 16) {
    const __mmask16 m = lanesLeft(experts - e);
    const __m512 v = _mm512_maskz_loadu_ps(m, logits + e);
    const __mmask16 selectable = finiteLanes(v) & m;
    const __m512 p = _mm512_maskz_mov_ps(selectable, qrow::expNonPositiveAvx512(_mm512_sub_ps(v, maxLogit)));
    _mm512_mask_storeu_ps(weight + e, m, p);
    _mm512_mask_storeu_ps(score + e, m, _mm512_mask_mov_ps(_mm512_set1_ps(kNegInf), selectable, v));
    partial = _mm512_add_ps(partial, p);
  }
  alignas(64) float partials[kSoftmaxLanes];
  _mm512_store_ps(partials, partial);
  const float sum = sumPartials(partials);
  if (!(sum > 0.0f)) return;
  const __m512 sumV = _mm512_set1_ps(sum);
  for (int64_t e = 0; e < experts; e += 16) {
    const __mmask16 m = lanesLeft(experts - e);
    _mm512_mask_storeu_ps(weight + e, m, _mm512_div_ps(_mm512_maskz_loadu_ps(m, weight + e), sumV));
  }
}

// 16 lanes as two 8-lane halves; the tail (experts % 16) takes the portable
// steps on the same partials.
__attribute__((target("avx2,fma"))) void softmaxScoresAvx2(const float* logits, int64_t experts, float* weight,
                                                          float* score) {
  const int64_t whole = experts / 16 * 16;
  float maxLogit = kNegInf;
  __m256 top = _mm256_set1_ps(kNegInf);
  for (int64_t e = 0; e < whole; e += 8) {
    const __m256 v = _mm256_loadu_ps(logits + e);
    top = _mm256_max_ps(top, _mm256_blendv_ps(_mm256_set1_ps(kNegInf), v, finiteLanes(v)));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, top);
  for (float v : lanes) maxLogit = std::max(maxLogit, v);
  maxLogit = maxFiniteLogit(logits, whole, experts, maxLogit);
  const __m256 maxV = _mm256_set1_ps(maxLogit);
  __m256 half[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};  // partials 0..7 and 8..15
  for (int64_t e = 0; e < whole; e += 16) {
    for (int h = 0; h < 2; ++h) {
      const __m256 v = _mm256_loadu_ps(logits + e + 8 * h);
      const __m256 selectable = finiteLanes(v);
      const __m256 p = _mm256_and_ps(selectable, qrow::expNonPositiveAvx2(_mm256_sub_ps(v, maxV)));
      _mm256_storeu_ps(weight + e + 8 * h, p);
      _mm256_storeu_ps(score + e + 8 * h, _mm256_blendv_ps(_mm256_set1_ps(kNegInf), v, selectable));
      half[h] = _mm256_add_ps(half[h], p);
    }
  }
  alignas(32) float partial[kSoftmaxLanes];
  _mm256_store_ps(partial, half[0]);
  _mm256_store_ps(partial + 8, half[1]);
  softmaxScalarSteps(logits, whole, experts, maxLogit, weight, score, partial);
  divideWeights(weight, experts, sumPartials(partial));
}

using SoftmaxScores = void (*)(const float* logits, int64_t experts, float* weight, float* score);

SoftmaxScores selectSoftmaxScores() {
  const CpuFeatures& f = cpuFeatures();
  if (f.avx512f) return softmaxScoresAvx512;
  if (f.avx2 && f.fma) return softmaxScoresAvx2;
  return softmaxScoresPortable;
}

// ---- sigmoid scores ----------------------------------------------------------
//
// s = 1 / (1 + e^-logit), with 1 + e^x computed as swiglu's exp does
// (quantize_row_kernels.h, qexp: within ~2 ulp, the same bits on every ISA:
// the same operation sequence with explicit FMAs). b = s + bias; a non-finite
// logit gets s = 0 and b = -inf (never selected).

void sigmoidScoresPortable(const float* logits, int64_t experts, const float* bias, float* weight, float* score) {
  for (int64_t e = 0; e < experts; ++e) {
    const float logit = logits[e];
    if (!std::isfinite(logit)) {
      weight[e] = 0.0f;
      score[e] = kNegInf;
      continue;
    }
    const float sig = 1.0f / qrow::onePlusExp(-logit);
    weight[e] = sig;
    score[e] = bias ? sig + bias[e] : sig;
  }
}

__attribute__((target("avx512f"))) void sigmoidScoresAvx512(const float* logits, int64_t experts, const float* bias,
                                                            float* weight, float* score) {
  for (int64_t e = 0; e < experts; e += 16) {
    const __mmask16 m = experts - e >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (experts - e)) - 1u);
    const __m512 logit = _mm512_maskz_loadu_ps(m, logits + e);
    const __m512i absBits = _mm512_and_si512(_mm512_castps_si512(logit), _mm512_set1_epi32(0x7FFFFFFF));
    const __mmask16 finite = _mm512_cmplt_epi32_mask(absBits, _mm512_set1_epi32(0x7F800000));
    const __m512 neg = _mm512_sub_ps(_mm512_setzero_ps(), logit);
    const __m512 sig = _mm512_maskz_div_ps(finite, _mm512_set1_ps(1.0f), qrow::onePlusExpAvx512(neg));
    __m512 b = bias ? _mm512_add_ps(sig, _mm512_maskz_loadu_ps(m, bias + e)) : sig;
    b = _mm512_mask_mov_ps(_mm512_set1_ps(kNegInf), finite, b);
    _mm512_mask_storeu_ps(weight + e, m, sig);
    _mm512_mask_storeu_ps(score + e, m, b);
  }
}

__attribute__((target("avx2,fma"))) void sigmoidScoresAvx2(const float* logits, int64_t experts, const float* bias,
                                                          float* weight, float* score) {
  int64_t e = 0;
  for (; e + 8 <= experts; e += 8) {
    const __m256 logit = _mm256_loadu_ps(logits + e);
    const __m256i absBits = _mm256_and_si256(_mm256_castps_si256(logit), _mm256_set1_epi32(0x7FFFFFFF));
    const __m256 finite = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(0x7F800000), absBits));
    const __m256 neg = _mm256_sub_ps(_mm256_setzero_ps(), logit);
    const __m256 sig = _mm256_and_ps(finite, _mm256_div_ps(_mm256_set1_ps(1.0f), qrow::onePlusExpAvx2(neg)));
    __m256 b = bias ? _mm256_add_ps(sig, _mm256_loadu_ps(bias + e)) : sig;
    b = _mm256_blendv_ps(_mm256_set1_ps(kNegInf), b, finite);
    _mm256_storeu_ps(weight + e, sig);
    _mm256_storeu_ps(score + e, b);
  }
  sigmoidScoresPortable(logits + e, experts - e, bias ? bias + e : nullptr, weight + e, score + e);
}

using SigmoidScores = void (*)(const float* logits, int64_t experts, const float* bias, float* weight, float* score);

SigmoidScores selectSigmoidScores() {
  const CpuFeatures& f = cpuFeatures();
  if (f.avx512f) return sigmoidScoresAvx512;
  if (f.avx2 && f.fma) return sigmoidScoresAvx2;
  return sigmoidScoresPortable;
}

// A group's score: the sum of its top-2 selectable scores (with a bias), else
// its max selectable score. A group with no selectable expert has none.
// Unselectable experts score -inf and every selectable score is finite, so
// "count >= 2" is "second > -inf". Branch-free top-2 (duplicates count twice).
void scoreGroups(int64_t groups, int64_t groupSize, bool topTwoSum, Scratch& s) {
  for (int64_t g = 0; g < groups; ++g) {
    const float* v = s.score.data() + g * groupSize;
    float first = kNegInf, second = kNegInf;
    for (int64_t i = 0; i < groupSize; ++i) {
      const float x = v[i];
      const float lo = x < first ? x : first;
      second = second < lo ? lo : second;
      first = first < x ? x : first;
    }
    s.groupAny[g] = first > kNegInf ? 1 : 0;
    s.groupScore[g] = (topTwoSum && second > kNegInf) ? first + second : first;
  }
}

// Keeps the best `keep` groups (groups with a selectable expert first, then by
// score, ties to the lower index).
void maskGroups(int64_t groups, int64_t keep, Scratch& s) {
  const auto better = [&](int32_t a, int32_t b) {
    if (s.groupAny[a] != s.groupAny[b]) return s.groupAny[a] > s.groupAny[b];
    if (s.groupAny[a] && s.groupScore[a] != s.groupScore[b]) return s.groupScore[a] > s.groupScore[b];
    return a < b;
  };
  // Insertion into the best `keep` so far, in index order: equal groups stay behind earlier ones.
  int64_t n = 0;
  for (int32_t g = 0; g < groups; ++g) {
    s.keep[g] = 0;
    if (n == keep && !better(g, s.groupOrder[n - 1])) continue;
    int64_t i = n < keep ? n++ : keep - 1;
    while (i > 0 && better(g, s.groupOrder[i - 1])) {
      s.groupOrder[i] = s.groupOrder[i - 1];
      --i;
    }
    s.groupOrder[i] = g;
  }
  for (int64_t i = 0; i < n; ++i) s.keep[s.groupOrder[i]] = 1;
}

// Fills candidates with the top `topK` selectable experts of experts
// [e0, e1), best first, ties to the lower index; n is the count found so far.
inline void selectRange(const float* score, int64_t e0, int64_t e1, int64_t topK, int64_t& n, Scratch& s) {
  float* cs = s.candScore.data();
  int32_t* ci = s.candidates.data();
  if (topK < 1) return;
  float bar = n == topK ? cs[topK - 1] : kNegInf;  // a candidate must beat this strictly
  for (int64_t e = e0; e < e1; ++e) {
    const float v = score[e];
    if (!(v > bar)) continue;
    int64_t i = n < topK ? n++ : topK - 1;
    while (i > 0 && v > cs[i - 1]) {
      cs[i] = cs[i - 1];
      ci[i] = ci[i - 1];
      --i;
    }
    cs[i] = v;
    ci[i] = static_cast<int32_t>(e);
    if (n == topK) bar = cs[topK - 1];
  }
}

// AVX-512 forms of scoreGroups and of the selection (addToPool +
// selectPoolAvx512 choose what selectRange chooses, in the same order: all
// are exact comparisons). Group scores need groupSize % 16 == 0.
__attribute__((target("avx512f"))) void scoreGroupsAvx512(int64_t groups, int64_t groupSize, bool topTwoSum,
                                                          Scratch& s) {
  const __m512 negInf = _mm512_set1_ps(kNegInf);
  for (int64_t g = 0; g < groups; ++g) {
    const float* v = s.score.data() + g * groupSize;
    __m512 t1 = negInf, t2 = negInf;  // per lane: the top two
    for (int64_t i = 0; i < groupSize; i += 16) {
      const __m512 x = _mm512_loadu_ps(v + i);
      t2 = _mm512_max_ps(t2, _mm512_min_ps(t1, x));
      t1 = _mm512_max_ps(t1, x);
    }
    const float first = _mm512_reduce_max_ps(t1);
    // The second: the best of t2 and of t1 without (one) lane holding the first.
    const __mmask16 at = _mm512_cmp_ps_mask(t1, _mm512_set1_ps(first), _CMP_EQ_OQ);
    const __mmask16 one = static_cast<__mmask16>(at & (~at + 1u));  // lowest set bit
    const __m512 rest = _mm512_mask_mov_ps(t1, one, negInf);
    const float second = _mm512_reduce_max_ps(_mm512_max_ps(rest, t2));
    s.groupAny[g] = first > kNegInf ? 1 : 0;
    s.groupScore[g] = (topTwoSum && second > kNegInf) ? first + second : first;
  }
}

// DeepSeek-V3's group stage (8 groups of 32) in registers: scoreGroups +
// maskGroups with no per-group reductions and no data-dependent branches.
// Each group's top two are found by a merge tree that halves the candidate
// lanes while doubling the groups per vector: merging (a1, a2) with (b1, b2)
// gives (max(a1, b1), max(min(a1, b1), max(a2, b2))), the top two of the
// four (duplicates count twice, as in scoreGroups). The kept groups are
// those ranked below `keep` by order key (score, then lower index), which is
// maskGroups' order: groups with no selectable expert score -inf, the lowest.
// DeepSeek-V3 routing, single thread, back to back with the old code on the
// dev VM: 776 -> 618 ns per token (the scalar insertion into the kept groups
// mispredicted).
constexpr int64_t kFastGroups = 8, kFastGroupSize = 32;

struct TopTwo {
  __m512 first, second;
};

__attribute__((target("avx512f"))) inline TopTwo mergeTopTwo(TopTwo a, TopTwo b) {
  return {_mm512_max_ps(a.first, b.first),
          _mm512_max_ps(_mm512_min_ps(a.first, b.first), _mm512_max_ps(a.second, b.second))};
}

// Merges two vectors' candidates: a and b are each laid out as the two
// arguments' selected 128-bit lanes (imm: _mm512_shuffle_f32x4's selector).
template <int kImmA, int kImmB>
__attribute__((target("avx512f"))) inline TopTwo mergeLanes128(TopTwo x, TopTwo y) {
  const TopTwo a{_mm512_shuffle_f32x4(x.first, y.first, kImmA), _mm512_shuffle_f32x4(x.second, y.second, kImmA)};
  const TopTwo b{_mm512_shuffle_f32x4(x.first, y.first, kImmB), _mm512_shuffle_f32x4(x.second, y.second, kImmB)};
  return mergeTopTwo(a, b);
}

template <int kImmA, int kImmB>
__attribute__((target("avx512f"))) inline TopTwo mergeElements(TopTwo x, TopTwo y) {
  const TopTwo a{_mm512_shuffle_ps(x.first, y.first, kImmA), _mm512_shuffle_ps(x.second, y.second, kImmA)};
  const TopTwo b{_mm512_shuffle_ps(x.first, y.first, kImmB), _mm512_shuffle_ps(x.second, y.second, kImmB)};
  return mergeTopTwo(a, b);
}

__attribute__((target("avx512f"))) void scoreAndMaskGroups8x32(bool topTwoSum, int64_t keep, Scratch& s) {
  const float* score = s.score.data();
  TopTwo g[kFastGroups];  // per group: 16 lanes of (top, second) candidates
  for (int i = 0; i < kFastGroups; ++i) {
    const __m512 a = _mm512_loadu_ps(score + 32 * i), b = _mm512_loadu_ps(score + 32 * i + 16);
    g[i] = {_mm512_max_ps(a, b), _mm512_min_ps(a, b)};
  }
  // 16 lanes per group -> 8 (two groups per vector) -> 4 (group q in 128-bit lane q)
  TopTwo pairs[4];
  for (int i = 0; i < 4; ++i) pairs[i] = mergeLanes128<0x44, 0xEE>(g[2 * i], g[2 * i + 1]);
  const TopTwo low = mergeLanes128<0x88, 0xDD>(pairs[0], pairs[1]);   // lane q: group q
  const TopTwo high = mergeLanes128<0x88, 0xDD>(pairs[2], pairs[3]);  // lane q: group q + 4
  // -> 2 per group (elements 0, 1: group q; 2, 3: group q + 4) -> 1 (element 0: q; 1: q + 4)
  const TopTwo two = mergeElements<_MM_SHUFFLE(1, 0, 1, 0), _MM_SHUFFLE(3, 2, 3, 2)>(low, high);
  const TopTwo one = mergeElements<_MM_SHUFFLE(2, 0, 2, 0), _MM_SHUFFLE(3, 1, 3, 1)>(two, two);
  alignas(64) float first[16], second[16];
  _mm512_store_ps(first, one.first);
  _mm512_store_ps(second, one.second);
  alignas(64) uint64_t keys[kFastGroups];
  for (int q = 0; q < 4; ++q) {
    for (int h = 0; h < 2; ++h) {
      const int group = q + 4 * h;
      const float f = first[4 * q + h], sec = second[4 * q + h];
      s.groupAny[group] = f > kNegInf ? 1 : 0;
      const float groupScore = (topTwoSum && sec > kNegInf) ? f + sec : f;
      s.groupScore[group] = groupScore;
      const uint32_t bits = floatBits(groupScore);
      const uint32_t order = bits & 0x80000000u ? ~bits : bits | 0x80000000u;
      keys[group] = (uint64_t{order} << 32) | static_cast<uint32_t>(~static_cast<uint32_t>(group));
    }
  }
  // rank[g] = how many groups come before g; kept: rank < keep.
  const __m512i all = _mm512_load_si512(keys);
  __m512i rank = _mm512_setzero_si512();
  for (int h = 0; h < kFastGroups; ++h) {
    const __mmask8 before = _mm512_cmpgt_epu64_mask(_mm512_set1_epi64(static_cast<int64_t>(keys[h])), all);
    rank = _mm512_mask_add_epi64(rank, before, rank, _mm512_set1_epi64(1));
  }
  alignas(64) int64_t ranks[kFastGroups];
  _mm512_store_si512(ranks, rank);
  for (int i = 0; i < kFastGroups; ++i) s.keep[i] = ranks[i] < keep ? 1 : 0;
}

// The selection pool holds one unsigned 64-bit key per expert whose order is
// the selection order: the score's bits made order-preserving as an unsigned
// integer (negative scores flipped whole, positive ones get the sign bit) in
// the high half, ~id in the low half (equal scores: the lower id is larger).
// Keys are unique because ids are, so "the best key below the last one
// chosen" is the next pick: no entry is ever removed or stored to, and no
// search for the winner's position is needed.
__attribute__((target("avx512f"))) inline __m512i orderKeysOfScores(__m256 score, __m256i id) {
  const __m256i bits = _mm256_castps_si256(score);
  const __m256i flip = _mm256_or_si256(_mm256_srai_epi32(bits, 31), _mm256_set1_epi32(INT32_MIN));
  const __m512i high = _mm512_slli_epi64(_mm512_cvtepu32_epi64(_mm256_xor_si256(bits, flip)), 32);
  return _mm512_or_si512(high, _mm512_cvtepu32_epi64(_mm256_xor_si256(id, _mm256_set1_epi32(-1))));
}

inline float scoreOfKey(uint64_t key) {
  const uint32_t high = static_cast<uint32_t>(key >> 32);
  return floatFromBits(high & 0x80000000u ? high & 0x7FFFFFFFu : ~high);
}

// Appends experts [e0, e1) to the selection pool (padded to whole vectors
// with -inf); returns the pool's new length.
__attribute__((target("avx512f"))) int64_t addToPool(const float* score, int64_t e0, int64_t e1, int64_t length,
                                                     Scratch& s) {
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int64_t c = e0; c < e1; c += 16, length += 16) {
    const __mmask16 m = e1 - c >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (e1 - c)) - 1u);
    const __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(kNegInf), m, score + c);
    const __m512i id = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(c)), lanes);
    uint64_t* out = s.poolKey.data() + length;
    _mm512_storeu_si512(out, orderKeysOfScores(_mm512_castps512_ps256(v), _mm512_castsi512_si256(id)));
    _mm512_storeu_si512(out + 8, orderKeysOfScores(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)),
                                                   _mm512_extracti64x4_epi64(id, 1)));
  }
  return length;
}

// The top `topK` selectable entries of the pool (length a multiple of 16),
// best first, ties to the lower id: each round takes the largest key below
// the previous round's. This replaced an insertion sort whose data-dependent
// branches mispredicted on nearly every insertion, and then a repeated
// maximum that removed each winner with a store (the next round's vector
// loads of that line waited for it: store forwarding fails from a 4-byte
// store to a 64-byte load). Single thread, DeepSeek-V3 routing (E = 256,
// 4 of 8 groups, k = 8) on the dev VM: 1170 -> 1080 ns per token for the
// repeated maximum, 1116 -> 900 for the keys (then 770 with the exp's fast
// path for the sigmoid, one_plus_exp.h).
// Returns how many were chosen (fewer when the pool runs out of selectable
// entries, whose scores are -inf).
__attribute__((target("avx512f"))) int64_t selectPoolAvx512(int64_t length, int64_t topK, Scratch& s) {
  const uint64_t* keys = s.poolKey.data();
  const uint64_t negInfKey = (uint64_t{~floatBits(kNegInf)} << 32) | 0xFFFFFFFFu;  // -inf with the lowest possible id
  __m512i last = _mm512_set1_epi64(-1);  // above every key
  int64_t chosen = 0;
  for (; chosen < topK; ++chosen) {
    __m512i top0 = _mm512_setzero_si512(), top1 = _mm512_setzero_si512();
    int64_t i = 0;
    for (; i + 16 <= length; i += 16) {
      const __m512i k0 = _mm512_loadu_si512(keys + i), k1 = _mm512_loadu_si512(keys + i + 8);
      top0 = _mm512_mask_max_epu64(top0, _mm512_cmplt_epu64_mask(k0, last), top0, k0);
      top1 = _mm512_mask_max_epu64(top1, _mm512_cmplt_epu64_mask(k1, last), top1, k1);
    }
    const uint64_t best = _mm512_reduce_max_epu64(_mm512_max_epu64(top0, top1));
    if (best <= negInfKey) break;  // only -inf left
    s.candidates[static_cast<size_t>(chosen)] = static_cast<int32_t>(~static_cast<uint32_t>(best));
    s.candScore[static_cast<size_t>(chosen)] = scoreOfKey(best);
    last = _mm512_set1_epi64(static_cast<int64_t>(best));
  }
  return chosen;
}

// ids [topK] i32 and weights [topK] f32 of one token; unfilled slots are -1 / 0.
void writeToken(const RouteArgs& a, int64_t chosen, const Scratch& s, int32_t* ids, float* weights) {
  float sum = 0.0f;
  for (int64_t j = 0; j < chosen; ++j) {
    ids[j] = s.candidates[j];
    weights[j] = s.weight[s.candidates[j]];
    sum += weights[j];  // slot order
  }
  if (a.renormalize && chosen > 0) {
    const float denom = a.scoring == Scoring::kSigmoid ? sum + kSigmoidRenormEpsilon : sum;
    if (denom > 0.0f) {
      for (int64_t j = 0; j < chosen; ++j) weights[j] /= denom;
    }
  }
  for (int64_t j = 0; j < chosen; ++j) weights[j] *= a.scale;
  for (int64_t j = chosen; j < a.topK; ++j) {
    ids[j] = -1;
    weights[j] = 0.0f;
  }
}

// The per-ISA kernels a route call uses.
struct RouteKernels {
  SigmoidScores sigmoid = selectSigmoidScores();
  SoftmaxScores softmax = selectSoftmaxScores();
  bool avx512 = cpuFeatures().avx512f;
};

void routeToken(const RouteArgs& a, const RouteKernels& k, int64_t token, Scratch& s) {
  const bool avx512 = k.avx512;
  const int64_t experts = a.logits.dim(1);
  const float* bias = a.bias.as<const float>();  // [E] f32 or null
  const float* logits;
  if (a.logits.dtype == DType::kF32) {
    logits = a.logits.as<const float>() + token * experts;
  } else {
    loadLogits(a.logits, token, experts, s.logits.data());
    logits = s.logits.data();
  }
  if (a.scoring == Scoring::kSoftmax) {
    k.softmax(logits, experts, s.weight.data(), s.score.data());
  } else {
    k.sigmoid(logits, experts, bias, s.weight.data(), s.score.data());
  }
  int64_t chosen = 0;
  if (a.numGroups > 1 && a.topKGroups < a.numGroups) {
    const int64_t groupSize = experts / a.numGroups;
    if (avx512 && a.numGroups == kFastGroups && groupSize == kFastGroupSize) {
      scoreAndMaskGroups8x32(bias != nullptr, a.topKGroups, s);
    } else {
      if (avx512 && groupSize % 16 == 0) {
        scoreGroupsAvx512(a.numGroups, groupSize, bias != nullptr, s);
      } else {
        scoreGroups(a.numGroups, groupSize, bias != nullptr, s);
      }
      maskGroups(a.numGroups, a.topKGroups, s);
    }
    int64_t pool = 0;
    for (int64_t g = 0; g < a.numGroups; ++g) {
      if (!s.keep[g]) continue;
      if (avx512) {
        pool = addToPool(s.score.data(), g * groupSize, (g + 1) * groupSize, pool, s);
      } else {
        selectRange(s.score.data(), g * groupSize, (g + 1) * groupSize, a.topK, chosen, s);
      }
    }
    if (avx512) chosen = selectPoolAvx512(pool, a.topK, s);
  } else if (avx512) {
    chosen = selectPoolAvx512(addToPool(s.score.data(), 0, experts, 0, s), a.topK, s);
  } else {
    selectRange(s.score.data(), 0, experts, a.topK, chosen, s);
  }
  int32_t* ids = a.ids.as<int32_t>() + token * a.topK;        // [topK] i32
  float* weights = a.weights.as<float>() + token * a.topK;    // [topK] f32
  writeToken(a, chosen, s, ids, weights);
}

}  // namespace

Status route(const RouteArgs& args) {
  MOE_RETURN_IF_ERROR(validateRoute(args));
  const int64_t tokens = args.logits.dim(0), experts = args.logits.dim(1);
  // A few thousand logits per task amortize the scratch allocation and the hand-out.
  const int64_t tokensPerTask = std::max<int64_t>(1, 8192 / experts);
  const RouteKernels kernels;
  std::atomic<bool> allocFailed{false};
  ThreadPool::instance().parallelFor(ceilDiv(tokens, tokensPerTask), [&](int64_t task, int) {
    try {
      Scratch scratch(experts, args.numGroups, args.topK);
      const int64_t t1 = std::min(tokens, (task + 1) * tokensPerTask);
      for (int64_t t = task * tokensPerTask; t < t1; ++t) routeToken(args, kernels, t, scratch);
    } catch (const std::bad_alloc&) {
      allocFailed.store(true, std::memory_order_relaxed);  // exceptions must not leave a pool thread
    }
  });
  if (allocFailed.load()) return Status(Code::kInternal, "route: out of memory for scratch buffers");
  return Status::ok();
}

}  // namespace moe::cpu
