#include "cpu/route.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include "core/numerics.h"
#include "cpu/thread_pool.h"

namespace moe::cpu {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// DeepSeek-V3's renormalization guard: w /= (sum(w) + 1e-20).
constexpr float kSigmoidRenormEpsilon = 1e-20f;

std::string str(int64_t v) { return std::to_string(v); }

Status validateLogits(const TensorView& logits) {
  if (logits.ndim != 2) {
    return Status(Code::kShape, "route: logits must be 2-D [T, E], got shape " + logits.shapeString());
  }
  if (logits.dtype != DType::kF32 && logits.dtype != DType::kBF16) {
    return Status(Code::kDtype, std::string("route: logits: expected dtype f32 or bf16, got ") + dtypeName(logits.dtype));
  }
  if (logits.dim(1) < 1) return Status(Code::kShape, "route: logits must have E >= 1 experts, got shape " + logits.shapeString());
  return expectContiguous(logits, "route: logits");
}

Status validateOptions(const RouteArgs& a, int64_t experts) {
  if (a.scoring != Scoring::kSoftmax && a.scoring != Scoring::kSigmoid) {
    return Status(Code::kRange, "route: scoring must be softmax or sigmoid");
  }
  if (a.topK < 1 || a.topK > experts) {
    return Status(Code::kRange, "route: topK must be in [1, E=" + str(experts) + "], got " + str(a.topK));
  }
  if (a.numGroups < 1 || a.numGroups > experts || experts % a.numGroups != 0) {
    return Status(Code::kRange, "route: numGroups must be >= 1 and divide E=" + str(experts) + ", got " + str(a.numGroups));
  }
  if (a.topKGroups < 1 || a.topKGroups > a.numGroups) {
    return Status(Code::kRange, "route: topKGroups must be in [1, numGroups=" + str(a.numGroups) + "], got " + str(a.topKGroups));
  }
  // Only experts of the kept groups can be chosen; asking for more is a configuration error.
  const int64_t keptExperts = a.topKGroups * (experts / a.numGroups);
  if (a.topK > keptExperts) {
    return Status(Code::kRange, "route: topK must be <= topKGroups * (E / numGroups) = " + str(keptExperts) + ", got " + str(a.topK));
  }
  if (!std::isfinite(a.scale)) return Status(Code::kNonFinite, "route: scale must be finite, got " + std::to_string(a.scale));
  return Status::ok();
}

Status validateBias(const RouteArgs& a, int64_t experts) {
  if (a.bias.data == nullptr) return Status::ok();
  if (a.scoring != Scoring::kSigmoid) {
    return Status(Code::kRange, "route: bias is only supported with sigmoid scoring");
  }
  MOE_RETURN_IF_ERROR(expectDtype(a.bias, DType::kF32, "route: bias"));
  MOE_RETURN_IF_ERROR(expectShape(a.bias, {experts}, "route: bias"));
  MOE_RETURN_IF_ERROR(expectContiguous(a.bias, "route: bias"));
  const float* bias = a.bias.as<const float>();  // [E] f32
  for (int64_t e = 0; e < experts; ++e) {
    if (!std::isfinite(bias[e])) {
      return Status(Code::kNonFinite, "route: bias[" + str(e) + "] = " + std::to_string(bias[e]) + " is not finite");
    }
  }
  return Status::ok();
}

Status validateOutput(const TensorView& t, DType dtype, int64_t tokens, int64_t topK, const char* what) {
  MOE_RETURN_IF_ERROR(expectDtype(t, dtype, what));
  MOE_RETURN_IF_ERROR(expectShape(t, {tokens, topK}, what));
  return expectContiguous(t, what);
}

Status validateRoute(const RouteArgs& a) {
  MOE_RETURN_IF_ERROR(validateLogits(a.logits));
  const int64_t tokens = a.logits.dim(0), experts = a.logits.dim(1);
  MOE_RETURN_IF_ERROR(validateOptions(a, experts));
  MOE_RETURN_IF_ERROR(validateBias(a, experts));
  MOE_RETURN_IF_ERROR(validateOutput(a.ids, DType::kI32, tokens, a.topK, "route: ids"));
  return validateOutput(a.weights, DType::kF32, tokens, a.topK, "route: weights");
}

// Per-task scratch, sized once per task so that nothing allocates per token.
struct Scratch {
  std::vector<float> logits;       // [E] f32: the token's logits, widened
  std::vector<float> score;        // [E] f32: selection score (softmax: logit; sigmoid: s + bias)
  std::vector<float> weight;       // [E] f32: the unnormalized weight (softmax: p; sigmoid: s)
  std::vector<uint8_t> selectable; // [E] 1 where the expert may be chosen
  std::vector<int32_t> candidates; // [E] indices of selectable experts
  std::vector<float> groupScore;   // [G] f32
  std::vector<uint8_t> groupAny;   // [G] 1 where the group has a selectable expert
  std::vector<int32_t> groupOrder; // [G] group indices, best first

  Scratch(int64_t experts, int64_t groups)
      : logits(experts), score(experts), weight(experts), selectable(experts), candidates(experts),
        groupScore(groups), groupAny(groups), groupOrder(groups) {}
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

// Softmax over the finite logits (others get probability 0 and are not
// selectable). Selection uses the logit itself: softmax is monotonic, and
// ranking by logit avoids ties that only come from rounding p.
void softmaxScores(int64_t experts, Scratch& s) {
  float maxLogit = kNegInf;
  for (int64_t e = 0; e < experts; ++e) {
    s.selectable[e] = std::isfinite(s.logits[e]) ? 1 : 0;
    if (s.selectable[e]) maxLogit = std::max(maxLogit, s.logits[e]);
  }
  float sum = 0.0f;
  for (int64_t e = 0; e < experts; ++e) {
    s.weight[e] = s.selectable[e] ? std::exp(s.logits[e] - maxLogit) : 0.0f;
    s.score[e] = s.selectable[e] ? s.logits[e] : kNegInf;
    sum += s.weight[e];
  }
  if (sum > 0.0f) {
    for (int64_t e = 0; e < experts; ++e) s.weight[e] /= sum;
  }
}

// s = sigmoid(logit), b = s + bias (bias: [E] f32 or null).
void sigmoidScores(int64_t experts, const float* bias, Scratch& s) {
  for (int64_t e = 0; e < experts; ++e) {
    const float logit = s.logits[e];
    s.selectable[e] = std::isfinite(logit) ? 1 : 0;
    const float sig = s.selectable[e] ? 1.0f / (1.0f + std::exp(-logit)) : 0.0f;
    s.weight[e] = sig;
    s.score[e] = s.selectable[e] ? (bias ? sig + bias[e] : sig) : kNegInf;
  }
}

// A group's score: the sum of its top-2 selectable scores (with a bias), else
// its max selectable score. A group with no selectable expert has none.
void scoreGroups(int64_t groups, int64_t groupSize, bool topTwoSum, Scratch& s) {
  for (int64_t g = 0; g < groups; ++g) {
    float first = kNegInf, second = kNegInf;
    int64_t count = 0;
    for (int64_t e = g * groupSize; e < (g + 1) * groupSize; ++e) {
      if (!s.selectable[e]) continue;
      ++count;
      const float v = s.score[e];
      if (v > first) {
        second = first;
        first = v;
      } else if (v > second) {
        second = v;
      }
    }
    s.groupAny[g] = count > 0 ? 1 : 0;
    s.groupScore[g] = (topTwoSum && count >= 2) ? first + second : first;
  }
}

// Keeps the best `keep` groups (groups with a selectable expert first, then by
// score, ties to the lower index) and makes every expert of the others unselectable.
void maskGroups(int64_t groups, int64_t groupSize, int64_t keep, Scratch& s) {
  for (int64_t g = 0; g < groups; ++g) s.groupOrder[g] = static_cast<int32_t>(g);
  const auto better = [&](int32_t a, int32_t b) {
    if (s.groupAny[a] != s.groupAny[b]) return s.groupAny[a] > s.groupAny[b];
    if (s.groupAny[a] && s.groupScore[a] != s.groupScore[b]) return s.groupScore[a] > s.groupScore[b];
    return a < b;
  };
  std::partial_sort(s.groupOrder.begin(), s.groupOrder.begin() + keep, s.groupOrder.end(), better);
  for (int64_t i = keep; i < groups; ++i) {
    const int64_t g = s.groupOrder[i];
    std::fill(s.selectable.begin() + g * groupSize, s.selectable.begin() + (g + 1) * groupSize, uint8_t{0});
  }
}

// Fills candidates with the top `topK` selectable experts, best first (ties to
// the lower index); returns how many were found (< topK when too few are selectable).
int64_t selectTopK(int64_t experts, int64_t topK, Scratch& s) {
  int64_t n = 0;
  for (int64_t e = 0; e < experts; ++e) {
    if (s.selectable[e]) s.candidates[n++] = static_cast<int32_t>(e);
  }
  const int64_t chosen = std::min(n, topK);
  const auto better = [&](int32_t a, int32_t b) {
    return s.score[a] != s.score[b] ? s.score[a] > s.score[b] : a < b;
  };
  std::partial_sort(s.candidates.begin(), s.candidates.begin() + chosen, s.candidates.begin() + n, better);
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

void routeToken(const RouteArgs& a, int64_t token, Scratch& s) {
  const int64_t experts = a.logits.dim(1);
  loadLogits(a.logits, token, experts, s.logits.data());
  const float* bias = a.bias.as<const float>();  // [E] f32 or null
  if (a.scoring == Scoring::kSoftmax) {
    softmaxScores(experts, s);
  } else {
    sigmoidScores(experts, bias, s);
  }
  if (a.numGroups > 1 && a.topKGroups < a.numGroups) {
    const int64_t groupSize = experts / a.numGroups;
    scoreGroups(a.numGroups, groupSize, bias != nullptr, s);
    maskGroups(a.numGroups, groupSize, a.topKGroups, s);
  }
  const int64_t chosen = selectTopK(experts, a.topK, s);
  int32_t* ids = a.ids.as<int32_t>() + token * a.topK;        // [topK] i32
  float* weights = a.weights.as<float>() + token * a.topK;    // [topK] f32
  writeToken(a, chosen, s, ids, weights);
}

}  // namespace

Status route(const RouteArgs& args) {
  MOE_RETURN_IF_ERROR(validateRoute(args));
  const int64_t tokens = args.logits.dim(0), experts = args.logits.dim(1);
  // A few thousand logits per task amortize the scratch allocation and the hand-out.
  const int64_t tokensPerTask = std::max<int64_t>(1, 4096 / experts);
  std::atomic<bool> allocFailed{false};
  ThreadPool::instance().parallelFor(ceilDiv(tokens, tokensPerTask), [&](int64_t task, int) {
    try {
      Scratch scratch(experts, args.numGroups);
      const int64_t t1 = std::min(tokens, (task + 1) * tokensPerTask);
      for (int64_t t = task * tokensPerTask; t < t1; ++t) routeToken(args, t, scratch);
    } catch (const std::bad_alloc&) {
      allocFailed.store(true, std::memory_order_relaxed);  // exceptions must not leave a pool thread
    }
  });
  if (allocFailed.load()) return Status(Code::kInternal, "route: out of memory for scratch buffers");
  return Status::ok();
}

}  // namespace moe::cpu
