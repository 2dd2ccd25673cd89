// Per-token math of the routing kernel (route.cu), host and device. The
// kernel runs one warp per token; everything a warp decides goes through
// these functions, and test/moe_math_test.cu composes them on the host the
// way the kernel does and compares with the CPU backend (cpu/route.cpp) on
// random inputs: ids exactly, sigmoid weights bit for bit, softmax weights
// within SPEC.md's 1e-5 (see softmax below).
//
// Selection is a total order, so the warp's reductions are exact in any
// order: expert a beats b when score_a > score_b, or they are equal and
// a < b (ties to the lower index). An expert whose score is -inf (a
// non-finite logit, or an expert of a dropped group) or NaN is never chosen,
// exactly as the CPU's "v > bar" with bar starting at -inf.
#pragma once

#include <stdint.h>

#include "exp_math.cuh"
#include "quantize_math.cuh"

namespace moe_cuda {
namespace route_math {

MOE_QUANT_HD float neg_inf() { return quant::float_from_bits(0xFF800000u); }

// DeepSeek-V3's renormalization guard (sigmoid scoring): w /= (sum(w) + 1e-20).
constexpr float kSigmoidRenormEpsilon = 1e-20f;

// An expert (or group) in the running: index -1 is "nothing".
struct Cand {
  float v;
  int32_t i;
};

MOE_QUANT_HD Cand no_cand() { return Cand{0.0f, -1}; }

// Selectable: a score above -inf (NaN compares false, so it is not).
MOE_QUANT_HD bool selectable(float v) { return v > neg_inf(); }

// a strictly better than b (b may be nothing).
MOE_QUANT_HD bool better(Cand a, Cand b) {
  if (a.i < 0) return false;
  if (b.i < 0) return true;
  return a.v > b.v || (a.v == b.v && a.i < b.i);
}

// The better of two; associative and commutative for distinct indices, so a
// warp's butterfly reduction gives every lane the same winner.
MOE_QUANT_HD Cand pick(Cand a, Cand b) { return better(b, a) ? b : a; }

// Expert e as a candidate, or nothing when it cannot be selected.
MOE_QUANT_HD Cand expert(float score, int32_t e) { return selectable(score) ? Cand{score, e} : no_cand(); }

// ---- scores -----------------------------------------------------------------

// Sigmoid scoring of one expert: weight s = 1 / (1 + e^-logit) (the CPU's
// sigmoidScores, same operations), selection score b = s + bias. A
// non-finite logit gives s = 0 and b = -inf.
MOE_QUANT_HD void sigmoid_score(float logit, bool has_bias, float bias, float* weight, float* score) {
  if (!quant::is_finite(logit)) {
    *weight = 0.0f;
    *score = neg_inf();
    return;
  }
  const float s = quant::div_rn(1.0f, expm::one_plus_exp(-logit));
  *weight = s;
  *score = has_bias ? expm::add_rn(s, bias) : s;
}

// Softmax scoring: the selection score is the logit itself (softmax is
// monotonic, and ranking by logit avoids ties made by rounding p), -inf for
// a non-finite logit.
MOE_QUANT_HD float softmax_score(float logit) { return quant::is_finite(logit) ? logit : neg_inf(); }

// The softmax weights p = e^(score - m) / sum in the CPU backend's operation
// order (cpu/route.cpp), so that they equal its bits: each exponential by the
// CPU's expNonPositive; the sum over kSoftmaxPartials partial sums, partial j
// accumulating e = j, j + 16, ... in increasing e (the CPU's vector lanes),
// then the partials added in j order; finally p[e] = w[e] / sum.
constexpr int kSoftmaxPartials = 16;

MOE_QUANT_HD float softmax_unnormalized(float score, float m) {
  return selectable(score) ? expm::exp_non_positive(expm::sub_rn(score, m)) : 0.0f;
}

MOE_QUANT_HD float softmax_partial(const float* weight /* [E] */, int64_t E, int j) {
  float sum = 0.0f;
  for (int64_t e = j; e < E; e += kSoftmaxPartials) sum = expm::add_rn(sum, weight[e]);
  return sum;
}

// ---- groups -------------------------------------------------------------------

// A group's score from its experts' selection scores v[0, n): the sum of the
// top two selectable ones (with a bias), else the max; *any = whether it has
// a selectable expert. The CPU's scoreGroups, in the same order (duplicates
// count twice).
MOE_QUANT_HD float group_score(const float* v, int64_t n, bool top_two_sum, bool* any) {
  const float ninf = neg_inf();
  float first = ninf, second = ninf;
  for (int64_t i = 0; i < n; ++i) {
    const float x = v[i];
    const float lo = x < first ? x : first;
    second = second < lo ? lo : second;
    first = first < x ? x : first;
  }
  *any = first > ninf;
  return (top_two_sum && second > ninf) ? expm::add_rn(first, second) : first;
}

// Group order (the CPU's maskGroups): groups with a selectable expert first,
// then by score, ties to the lower index. v is NaN-free here, so encode
// "has none" as the lowest key: groups without any compare only by index.
struct GroupCand {
  float v;
  int32_t g;    // -1: nothing
  int32_t any;  // 1 when the group has a selectable expert
};

MOE_QUANT_HD GroupCand no_group() { return GroupCand{0.0f, -1, 0}; }

MOE_QUANT_HD bool group_better(GroupCand a, GroupCand b) {
  if (a.g < 0) return false;
  if (b.g < 0) return true;
  if (a.any != b.any) return a.any > b.any;
  if (a.any && a.v != b.v) return a.v > b.v;
  return a.g < b.g;
}

MOE_QUANT_HD GroupCand group_pick(GroupCand a, GroupCand b) { return group_better(b, a) ? b : a; }

// ---- the token's output -------------------------------------------------------

// ids / weights [topK] of one token from the `chosen` experts (best first,
// raw weights already in weights[0, chosen)): the CPU's writeToken. The sum
// runs in slot order; unfilled slots get id -1 and weight 0.
MOE_QUANT_HD void finish_token(int32_t* ids, float* weights, int64_t chosen, int64_t top_k, bool renormalize,
                               bool sigmoid, float scale) {
  float sum = 0.0f;
  for (int64_t j = 0; j < chosen; ++j) sum = expm::add_rn(sum, weights[j]);
  if (renormalize && chosen > 0) {
    const float denom = sigmoid ? expm::add_rn(sum, kSigmoidRenormEpsilon) : sum;
    if (denom > 0.0f) {
      for (int64_t j = 0; j < chosen; ++j) weights[j] = quant::div_rn(weights[j], denom);
    }
  }
  for (int64_t j = 0; j < chosen; ++j) weights[j] = quant::mul_rn(weights[j], scale);
  for (int64_t j = chosen; j < top_k; ++j) {
    ids[j] = -1;
    weights[j] = 0.0f;
  }
}

}  // namespace route_math
}  // namespace moe_cuda
