// Host test of the MoE kernels' math (route.cu, dispatch_layout.cu,
// dispatch.cu, swiglu.cu, combine.cu) against the CPU backend, no GPU needed.
// nvcc compiles the *_math.cuh headers as host code; each test below replays
// a kernel's decomposition on the host (lanes, warps, tiles, reductions in
// the kernel's order, built from the same __host__ __device__ functions) and
// compares with the CPU backend's op (linked from native/src/cpu) on random
// inputs, ragged shapes, ties and non-finite values:
//   - one_plus_exp == cpu::qrow::onePlusExp bit for bit (16M+ inputs incl. specials);
//   - route: ids exactly; sigmoid and softmax weights bit for bit;
//   - dispatchLayout (contiguous, several aligns; masked): every output equal;
//   - dispatch (fp8): q and scales bit for bit, padding rows included;
//   - swiglu (fp8, f32, bf16 out): bit for bit;
//   - combine: bit for bit, every dtype mix, with and without shared;
//   - on malformed arguments each CPU op returns the verdict of the shape /
//     dtype / option checks the CUDA backend runs (core/moe_op_checks.cpp,
//     one copy both backends call): no CPU-only check comes first.
// What it cannot check is the CUDA-only glue (shuffles, ballots, shared
// memory): test/moe-ops-cuda.test.ts does that on a GPU.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <algorithm>
#include <random>
#include <vector>

#include "combine_math.cuh"
#include "exp_math.cuh"
#include "layout_math.cuh"
#include "quantize_math.cuh"
#include "route_math.cuh"
#include "swiglu_math.cuh"

#include "core/moe_op_checks.h"
#include "core/numerics.h"
#include "core/ops.h"
#include "cpu/combine.h"
#include "cpu/dispatch.h"
#include "cpu/dispatch_layout.h"
#include "cpu/one_plus_exp.h"
#include "cpu/route.h"
#include "cpu/swiglu.h"

using namespace moe_cuda;

static int g_checks = 0, g_failures = 0;

static void expect(bool ok, const char* what) {
  ++g_checks;
  printf("  %s %s\n", ok ? "ok  " : "FAIL", what);
  fflush(stdout);
  if (!ok) ++g_failures;
}

static uint32_t bits(float x) { return quant::float_bits(x); }

template <typename T>
static moe::TensorView view(std::vector<T>& v, moe::DType dtype, std::initializer_list<int64_t> dims) {
  return moe::TensorView::contiguous(v.data(), dtype, dims);
}

// ---- exp -------------------------------------------------------------------------
static void test_exp() {
  long long bad = 0, n = 0;
  for (uint64_t b = 0; b < (1ull << 32); b += 251) {
    const float x = quant::float_from_bits(static_cast<uint32_t>(b));
    const float g = expm::one_plus_exp(x), c = moe::cpu::qrow::onePlusExp(x);
    ++n;
    if (bits(g) != bits(c) && !(quant::is_nan(g) && quant::is_nan(c))) ++bad;
  }
  const float specials[] = {0.0f, -0.0f, 1.0f, -1.0f, 88.72283935546875f, 88.7228470f, -103.972084045410156f, -104.0f,
                            INFINITY, -INFINITY, NAN, 1e-30f, -1e-30f};
  for (float x : specials) {
    const float g = expm::one_plus_exp(x), c = moe::cpu::qrow::onePlusExp(x);
    ++n;
    if (bits(g) != bits(c) && !(quant::is_nan(g) && quant::is_nan(c))) ++bad;
  }
  char what[160];
  snprintf(what, sizeof what, "one_plus_exp == cpu onePlusExp bit for bit on %lld inputs (%lld differ)", n, bad);
  expect(bad == 0, what);
}

// ---- route: the kernel's per-token steps on the host ------------------------------
struct RouteCase {
  int64_t tokens, experts, topK, groups, topKGroups;
  bool sigmoid, bias, renormalize, bf16, ties, nonfinite;
  float scale;
  float spread = 1.0f;  // logits ~ N(0, spread^2): wide ones make subnormal and zero softmax weights
};

// 32 lanes each take experts lane, lane + 32, ...; their partial winners are
// combined in the kernel's butterfly order (any order gives the same: pick is
// a total order).
static route_math::Cand warp_best(const std::vector<float>& score, int64_t E) {
  route_math::Cand lanes[32];
  for (int l = 0; l < 32; ++l) {
    lanes[l] = route_math::no_cand();
    for (int64_t e = l; e < E; e += 32) lanes[l] = route_math::pick(lanes[l], route_math::expert(score[e], static_cast<int32_t>(e)));
  }
  for (int off = 16; off > 0; off >>= 1) {
    route_math::Cand next[32];
    for (int l = 0; l < 32; ++l) next[l] = route_math::pick(lanes[l], lanes[l ^ off]);
    std::copy(next, next + 32, lanes);
  }
  for (int l = 1; l < 32; ++l) {
    if (lanes[l].i != lanes[0].i) return route_math::Cand{0.0f, -2};  // lanes disagree: a bug
  }
  return lanes[0];
}

static void route_token_model(const RouteCase& c, const float* logits, const float* bias, int32_t* ids, float* weights) {
  using namespace route_math;
  const int64_t E = c.experts, G = c.groups;
  std::vector<float> score(E), weight(E);
  if (c.sigmoid) {
    for (int64_t e = 0; e < E; ++e) sigmoid_score(logits[e], bias != nullptr, bias ? bias[e] : 0.0f, &weight[e], &score[e]);
  } else {
    float m = neg_inf();
    for (int64_t e = 0; e < E; ++e) {
      score[e] = softmax_score(logits[e]);
      if (selectable(score[e])) m = std::max(m, score[e]);
    }
    for (int64_t e = 0; e < E; ++e) weight[e] = softmax_unnormalized(score[e], m);
    float sum = 0.0f;
    for (int j = 0; j < kSoftmaxPartials; ++j) sum = expm::add_rn(sum, softmax_partial(weight.data(), E, j));
    if (sum > 0.0f) {
      for (int64_t e = 0; e < E; ++e) weight[e] = quant::div_rn(weight[e], sum);
    }
  }
  if (G > 1 && c.topKGroups < G) {
    const int64_t gs = E / G;
    std::vector<float> gscore(G);
    std::vector<int32_t> gstate(G);
    for (int64_t g = 0; g < G; ++g) {
      bool any = false;
      gscore[g] = group_score(score.data() + g * gs, gs, bias != nullptr, &any);
      gstate[g] = any ? 1 : 0;
    }
    for (int64_t r = 0; r < c.topKGroups; ++r) {
      GroupCand lanes[32];
      for (int l = 0; l < 32; ++l) {
        lanes[l] = no_group();
        for (int64_t g = l; g < G; g += 32) {
          if ((gstate[g] & 2) == 0) lanes[l] = group_pick(lanes[l], GroupCand{gscore[g], static_cast<int32_t>(g), gstate[g] & 1});
        }
      }
      for (int off = 16; off > 0; off >>= 1) {
        GroupCand next[32];
        for (int l = 0; l < 32; ++l) next[l] = group_pick(lanes[l], lanes[l ^ off]);
        std::copy(next, next + 32, lanes);
      }
      if (lanes[0].g >= 0) gstate[lanes[0].g] |= 2;
    }
    for (int64_t e = 0; e < E; ++e) {
      if ((gstate[e / gs] & 2) == 0) score[e] = neg_inf();
    }
  }
  int64_t chosen = 0;
  for (; chosen < c.topK; ++chosen) {
    const Cand best = warp_best(score, E);
    if (best.i < 0) {
      if (best.i == -2) ids[0] = -99;  // lane disagreement shows up as a mismatch
      break;
    }
    ids[chosen] = best.i;
    weights[chosen] = weight[best.i];
    score[best.i] = neg_inf();
  }
  finish_token(ids, weights, chosen, c.topK, c.renormalize, c.sigmoid, c.scale);
}

static void test_route(std::mt19937& rng) {
  const RouteCase cases[] = {
      {37, 256, 8, 8, 4, true, true, true, false, false, false, 2.5f},   // DeepSeek-V3
      {33, 256, 8, 8, 4, true, true, true, true, true, true, 2.5f},      // bf16 logits, ties, NaN/inf
      {20, 64, 6, 8, 3, true, false, true, false, true, false, 1.0f},    // groups without bias: max
      {19, 64, 6, 1, 1, true, true, false, false, false, true, 1.0f},
      {41, 8, 2, 1, 1, false, false, true, false, false, false, 1.0f},   // Mixtral
      {17, 60, 4, 1, 1, false, false, false, true, true, true, 1.0f},    // Qwen-like, ragged E
      {9, 160, 6, 20, 5, true, true, true, false, true, true, 16.0f},     // 20 groups
      {5, 512, 8, 16, 16, true, true, true, false, false, false, 2.5f},  // topKGroups == groups: no masking
      {3, 7, 7, 1, 1, false, false, true, false, false, true, 1.0f},     // k == E with non-finite: -1 padding
      {29, 96, 8, 1, 1, false, false, false, false, false, false, 1.0f, 40.0f},  // softmax, subnormal / zero weights
      {23, 72, 6, 1, 1, false, false, true, true, false, true, 2.0f, 25.0f},     // the same, bf16, renormalized
  };
  int bad_ids = 0, bad_sigmoid = 0, bad_softmax = 0, n = 0;
  for (const RouteCase& c : cases) {
    const int64_t T = c.tokens, E = c.experts, k = c.topK;
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> logits(T * E);
    for (float& v : logits) v = c.ties ? std::round(normal(rng) * 2.0f) / 2.0f : normal(rng) * c.spread;
    if (c.nonfinite) {
      for (int64_t t = 0; t < T; t += 2) {
        logits[t * E + (t % E)] = NAN;
        logits[t * E + ((t + 3) % E)] = INFINITY;
        logits[t * E + ((t + 5) % E)] = -INFINITY;
      }
      if (T > 1) std::fill(logits.begin() + E, logits.begin() + 2 * E, NAN);  // a token with nothing selectable
    }
    std::vector<uint16_t> logitsBF16(T * E);
    for (int64_t i = 0; i < T * E; ++i) logitsBF16[i] = moe::bf16FromFloat(logits[i]);
    std::vector<float> widened(T * E);
    for (int64_t i = 0; i < T * E; ++i) widened[i] = c.bf16 ? moe::bf16ToFloat(logitsBF16[i]) : logits[i];
    std::vector<float> bias(E);
    for (float& b : bias) b = c.ties ? std::round(normal(rng) * 4.0f) / 64.0f : normal(rng) * 0.05f;
    moe::RouteArgs a;
    a.logits = c.bf16 ? view(logitsBF16, moe::DType::kBF16, {T, E}) : view(logits, moe::DType::kF32, {T, E});
    if (c.bias) a.bias = view(bias, moe::DType::kF32, {E});
    a.scoring = c.sigmoid ? moe::Scoring::kSigmoid : moe::Scoring::kSoftmax;
    a.topK = k;
    a.numGroups = c.groups;
    a.topKGroups = c.topKGroups;
    a.renormalize = c.renormalize;
    a.scale = c.scale;
    std::vector<int32_t> ids(T * k);
    std::vector<float> weights(T * k);
    a.ids = view(ids, moe::DType::kI32, {T, k});
    a.weights = view(weights, moe::DType::kF32, {T, k});
    const moe::Status st = moe::cpu::route(a);
    if (!st.isOk()) {
      printf("    cpu route failed: %s\n", st.message().c_str());
      ++bad_ids;
      continue;
    }
    std::vector<int32_t> gids(T * k, 12345);
    std::vector<float> gw(T * k, 12345.0f);
    for (int64_t t = 0; t < T; ++t) {
      route_token_model(c, widened.data() + t * E, c.bias ? bias.data() : nullptr, gids.data() + t * k, gw.data() + t * k);
    }
    for (int64_t i = 0; i < T * k; ++i, ++n) {
      if (gids[i] != ids[i]) {
        if (bad_ids < 5) printf("    ids differ: E=%lld k=%lld at [%lld, %lld]: %d vs CPU %d\n", (long long)E, (long long)k,
                                (long long)(i / k), (long long)(i % k), gids[i], ids[i]);
        ++bad_ids;
      } else if (c.sigmoid) {
        bad_sigmoid += bits(gw[i]) != bits(weights[i]);
      } else {
        bad_softmax += bits(gw[i]) != bits(weights[i]);
      }
    }
  }
  char what[200];
  snprintf(what, sizeof what, "route ids == cpu route on %d slots (11 configs: DeepSeek-V3, groups, softmax, ties, NaN/inf, bf16, wide logits)", n);
  expect(bad_ids == 0, what);
  expect(bad_sigmoid == 0, "route sigmoid weights == cpu route bit for bit");
  expect(bad_softmax == 0, "route softmax weights == cpu route, bit for bit");
}

// ---- dispatch layout: the three passes on the host ----------------------------------
static void layout_model(const std::vector<int32_t>& ids, int64_t T, int64_t k, int64_t E, int64_t capacity, int64_t align,
                         bool masked, int64_t maxRows, std::vector<int32_t>& tpe, std::vector<int32_t>& offsets,
                         std::vector<int32_t>& rowToken, std::vector<int32_t>& groupIndex, std::vector<int32_t>& slotRow) {
  using namespace layout_math;
  const int64_t n = T * k;
  for (int64_t e = 0; e < E; ++e) tpe[e] = static_cast<int32_t>(std::count(ids.begin(), ids.end(), static_cast<int32_t>(e)));
  int64_t row = 0;
  for (int64_t e = 0; e < E; ++e) {
    offsets[e] = static_cast<int32_t>(row);
    row += segment_rows(tpe[e], align, masked, maxRows);
  }
  offsets[E] = static_cast<int32_t>(row);
  // Block e, tiles of 256 entries, 8 warps: ballot -> popc prefix.
  for (int64_t e = 0; e < E; ++e) {
    const int64_t base = offsets[e];
    const int64_t limit = std::min<int64_t>(capacity, base + segment_rows(tpe[e], align, masked, maxRows));
    int64_t seen = 0;
    for (int64_t t0 = 0; t0 < n; t0 += 256) {
      uint32_t ballots[8] = {0};
      for (int th = 0; th < 256; ++th) {
        if (t0 + th < n && ids[t0 + th] == e) ballots[th / 32] |= 1u << (th % 32);
      }
      for (int th = 0; th < 256; ++th) {
        const int64_t i = t0 + th;
        if (!(i < n && ids[i] == e)) continue;
        int64_t before = seen;
        for (int w = 0; w < th / 32; ++w) before += popc(ballots[w]);
        const int64_t rank = before + rank_in_warp(ballots[th / 32], th % 32);
        const int64_t r = base + rank;
        const bool fits = r < limit && (!masked || rank < maxRows);
        slotRow[i] = fits ? static_cast<int32_t>(r) : -1;
        if (fits) {
          rowToken[r] = static_cast<int32_t>(i / k);
          groupIndex[r] = static_cast<int32_t>(e);
        }
      }
      for (int w = 0; w < 8; ++w) seen += popc(ballots[w]);
    }
    for (int64_t r = base + tpe[e]; r < limit; ++r) rowToken[r] = groupIndex[r] = -1;
  }
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= E) slotRow[i] = -1;
  }
  for (int64_t r = offsets[E]; r < capacity; ++r) rowToken[r] = groupIndex[r] = -1;
}

static void test_layout(std::mt19937& rng) {
  struct Case { int64_t T, k, E, align; bool masked; };
  const Case cases[] = {{1, 8, 256, 128, false}, {37, 8, 256, 128, false}, {300, 8, 16, 1, false}, {77, 6, 64, 7, false},
                        {5, 2, 8, 1, true},      {40, 8, 32, 1, true},      {129, 4, 9, 128, false}, {0, 8, 16, 128, false}};
  int bad = 0, n = 0;
  for (const Case& c : cases) {
    const int64_t T = c.T, k = c.k, E = c.E;
    std::vector<int32_t> ids(T * k);
    for (int64_t t = 0; t < T; ++t) {  // distinct experts per token (top-k), some -1
      std::vector<int32_t> perm(E);
      for (int64_t e = 0; e < E; ++e) perm[e] = static_cast<int32_t>(e);
      std::shuffle(perm.begin(), perm.end(), rng);
      for (int64_t j = 0; j < k; ++j) ids[t * k + j] = (j < E && (rng() % 11) != 0) ? perm[j % E] : -1;
    }
    const int64_t maxRows = c.masked ? T : 0;
    const int64_t capacity = c.masked ? E * maxRows : T * k + E * (c.align - 1);
    std::vector<int32_t> tpe(E), off(E + 1), rt(capacity), gi(capacity), sr(T * k);
    std::vector<int32_t> tpe2(E, 7), off2(E + 1, 7), rt2(capacity, 7), gi2(capacity, 7), sr2(T * k, 7);
    moe::LayoutArgs a;
    a.ids = view(ids, moe::DType::kI32, {T, k});
    a.numExperts = E;
    a.align = c.align;
    a.masked = c.masked;
    a.maxRowsPerExpert = maxRows;
    a.tokensPerExpert = view(tpe, moe::DType::kI32, {E});
    a.offsets = view(off, moe::DType::kI32, {E + 1});
    a.rowToken = view(rt, moe::DType::kI32, {capacity});
    a.groupIndex = view(gi, moe::DType::kI32, {capacity});
    a.slotRow = view(sr, moe::DType::kI32, {T, k});
    const moe::Status st = moe::cpu::dispatchLayout(a);
    if (!st.isOk()) {
      printf("    cpu dispatchLayout failed: %s\n", st.message().c_str());
      ++bad;
      continue;
    }
    layout_model(ids, T, k, E, capacity, c.align, c.masked, maxRows, tpe2, off2, rt2, gi2, sr2);
    ++n;
    if (tpe != tpe2 || off != off2 || rt != rt2 || gi != gi2 || sr != sr2) {
      printf("    layout differs: T=%lld k=%lld E=%lld align=%lld masked=%d\n", (long long)T, (long long)k, (long long)E,
             (long long)c.align, c.masked);
      ++bad;
    }
  }
  char what[200];
  snprintf(what, sizeof what, "dispatchLayout (count, scan, ballot placement) == cpu dispatchLayout in %d cases (contiguous align 1/7/128, masked)", n);
  expect(bad == 0, what);
}

// ---- dispatch / swiglu: 16 values per lane, groups of 8 lanes ----------------------------
// q and scales of one row `v` [n] as the kernels quantize it (n % 16 == 0).
static void quantize_row_model(const float* v, int64_t n, bool ue8m0, uint8_t* q, float* scales) {
  for (int64_t g0 = 0; g0 < n; g0 += 128) {
    float lane_amax[8];
    for (int l = 0; l < 8; ++l) {
      lane_amax[l] = 0.0f;
      for (int j = 0; j < 16; ++j) {
        const int64_t c = g0 + l * 16 + j;
        if (c < n) lane_amax[l] = quant::amax_step(lane_amax[l], v[c]);
      }
    }
    for (int off = 4; off > 0; off >>= 1) {
      float next[8];
      for (int l = 0; l < 8; ++l) next[l] = quant::amax_step(lane_amax[l], lane_amax[l ^ off]);
      std::copy(next, next + 8, lane_amax);
    }
    const float s = quant::group_scale(lane_amax[0], ue8m0);
    scales[g0 / 128] = s;
    for (int64_t c = g0; c < std::min<int64_t>(n, g0 + 128); ++c) q[c] = quant::quantize_value(v[c], s);
  }
}

static void test_dispatch(std::mt19937& rng) {
  int bad = 0, cases = 0;
  for (int64_t H : {16, 272, 1024}) {
    for (bool bf16 : {false, true}) {
      for (bool ue8m0 : {false, true}) {
        const int64_t T = 13, R = 29, groups = (H + 127) / 128;
        std::normal_distribution<float> normal(0.0f, 3.0f);
        std::vector<float> x(T * H);
        for (float& v : x) v = normal(rng);
        x[5 * H + 3] = 1e30f;  // a saturating row
        std::vector<uint16_t> xb(T * H);
        for (int64_t i = 0; i < T * H; ++i) xb[i] = moe::bf16FromFloat(x[i]);
        std::vector<int32_t> rowToken(R);
        for (int64_t r = 0; r < R; ++r) rowToken[r] = (r % 5 == 4) ? -1 : static_cast<int32_t>(rng() % T);
        std::vector<uint8_t> q(R * H, 0xAA), q2(R * H, 0x55);
        std::vector<float> s(R * groups, -1.0f), s2(R * groups, -2.0f);
        moe::DispatchArgs a;
        a.x = bf16 ? view(xb, moe::DType::kBF16, {T, H}) : view(x, moe::DType::kF32, {T, H});
        a.rowToken = view(rowToken, moe::DType::kI32, {R});
        a.out = view(q, moe::DType::kFP8E4M3, {R, H});
        a.scales = view(s, moe::DType::kF32, {R, groups});
        a.scaleFormat = ue8m0 ? moe::ScaleFormat::kUE8M0 : moe::ScaleFormat::kF32;
        if (!moe::cpu::dispatch(a).isOk()) ++bad;
        std::vector<float> row(H);
        for (int64_t r = 0; r < R; ++r) {
          for (int64_t c = 0; c < H; ++c) {
            const int64_t t = rowToken[r];
            row[c] = t < 0 ? 0.0f : (bf16 ? quant::bf16_to_float(xb[t * H + c]) : x[t * H + c]);
          }
          quantize_row_model(row.data(), H, ue8m0, q2.data() + r * H, s2.data() + r * groups);
        }
        ++cases;
        if (q != q2 || memcmp(s.data(), s2.data(), s.size() * 4) != 0) ++bad;
      }
    }
  }
  char what[160];
  snprintf(what, sizeof what, "dispatch fp8 (16 per lane, 8-lane groups) == cpu dispatch bit for bit in %d cases, padding rows included", cases);
  expect(bad == 0, what);
}

static void test_swiglu(std::mt19937& rng) {
  int bad = 0, cases = 0;
  for (int64_t I : {16, 144, 512}) {
    for (bool bf16 : {false, true}) {
      for (int out : {0, 1, 2}) {  // fp8, f32, bf16
        const int64_t R = 23, groups = (I + 127) / 128;
        std::normal_distribution<float> normal(0.0f, 4.0f);
        std::vector<float> h(R * 2 * I);
        for (float& v : h) v = normal(rng);
        h[3] = 95.0f;  // large gates: the exp's clamps
        h[4] = -120.0f;
        std::vector<uint16_t> hb(R * 2 * I);
        for (size_t i = 0; i < h.size(); ++i) hb[i] = moe::bf16FromFloat(h[i]);
        std::vector<float> act(R * I), act2(R * I);
        for (int64_t r = 0; r < R; ++r) {
          for (int64_t c = 0; c < I; ++c) {
            const int64_t g = r * 2 * I + c;
            const float gate = bf16 ? quant::bf16_to_float(hb[g]) : h[g];
            const float up = bf16 ? quant::bf16_to_float(hb[g + I]) : h[g + I];
            act2[r * I + c] = swiglu_math::silu_mul(gate, up);
          }
        }
        moe::SwigluArgs a;
        a.h = bf16 ? view(hb, moe::DType::kBF16, {R, 2 * I}) : view(h, moe::DType::kF32, {R, 2 * I});
        std::vector<uint8_t> q(R * I), q2(R * I);
        std::vector<float> s(R * groups), s2(R * groups);
        std::vector<uint16_t> ob(R * I), ob2(R * I);
        if (out == 0) {
          a.out = view(q, moe::DType::kFP8E4M3, {R, I});
          a.scales = view(s, moe::DType::kF32, {R, groups});
        } else if (out == 1) {
          a.out = view(act, moe::DType::kF32, {R, I});
        } else {
          a.out = view(ob, moe::DType::kBF16, {R, I});
        }
        if (!moe::cpu::swiglu(a).isOk()) ++bad;
        ++cases;
        if (out == 0) {
          for (int64_t r = 0; r < R; ++r) quantize_row_model(act2.data() + r * I, I, false, q2.data() + r * I, s2.data() + r * groups);
          if (q != q2 || memcmp(s.data(), s2.data(), s.size() * 4) != 0) ++bad;
        } else if (out == 1) {
          if (memcmp(act.data(), act2.data(), act.size() * 4) != 0) ++bad;
        } else {
          for (int64_t i = 0; i < R * I; ++i) ob2[i] = quant::bf16_from_float(act2[i]);
          if (ob != ob2) ++bad;
        }
      }
    }
  }
  char what[160];
  snprintf(what, sizeof what, "swiglu (silu_mul + fp8 / f32 / bf16 out) == cpu swiglu bit for bit in %d cases", cases);
  expect(bad == 0, what);
}

// ---- combine ----------------------------------------------------------------------------
static void test_combine(std::mt19937& rng) {
  int bad = 0, cases = 0;
  for (bool ybf : {false, true}) {
    for (int shared : {0, 1, 2}) {
      for (bool obf : {false, true}) {
        const int64_t T = 11, k = 8, R = 40, H = 136;
        std::normal_distribution<float> normal(0.0f, 1.0f);
        std::vector<float> y(R * H), sh(T * H), w(T * k);
        for (float& v : y) v = normal(rng);
        for (float& v : sh) v = normal(rng);
        for (float& v : w) v = normal(rng) * 0.3f;
        std::vector<uint16_t> yb(R * H), shb(T * H);
        for (size_t i = 0; i < y.size(); ++i) yb[i] = moe::bf16FromFloat(y[i]);
        for (size_t i = 0; i < sh.size(); ++i) shb[i] = moe::bf16FromFloat(sh[i]);
        std::vector<int32_t> slot(T * k);
        for (auto& v : slot) v = (rng() % 7 == 0) ? -1 : static_cast<int32_t>(rng() % R);
        std::vector<float> of(T * H), of2(T * H);
        std::vector<uint16_t> ob(T * H), ob2(T * H);
        moe::CombineArgs a;
        a.y = ybf ? view(yb, moe::DType::kBF16, {R, H}) : view(y, moe::DType::kF32, {R, H});
        a.slotRow = view(slot, moe::DType::kI32, {T, k});
        a.weights = view(w, moe::DType::kF32, {T, k});
        if (shared == 1) a.shared = view(sh, moe::DType::kF32, {T, H});
        if (shared == 2) a.shared = view(shb, moe::DType::kBF16, {T, H});
        a.out = obf ? view(ob, moe::DType::kBF16, {T, H}) : view(of, moe::DType::kF32, {T, H});
        if (!moe::cpu::combine(a).isOk()) ++bad;
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t c = 0; c < H; ++c) {
            float acc = 0.0f;
            for (int64_t j = 0; j < k; ++j) {
              const int32_t r = slot[t * k + j];
              if (!combine_math::valid_row(r, R)) continue;
              const float yv = ybf ? quant::bf16_to_float(yb[r * H + c]) : y[r * H + c];
              acc = combine_math::accumulate(acc, w[t * k + j], yv);
            }
            if (shared) acc = combine_math::add_shared(acc, shared == 1 ? sh[t * H + c] : quant::bf16_to_float(shb[t * H + c]));
            of2[t * H + c] = acc;
            ob2[t * H + c] = quant::bf16_from_float(acc);
          }
        }
        ++cases;
        if (obf ? ob != ob2 : memcmp(of.data(), of2.data(), of.size() * 4) != 0) ++bad;
      }
    }
  }
  char what[160];
  snprintf(what, sizeof what, "combine (slot order, rounded product then add) == cpu combine bit for bit in %d dtype cases", cases);
  expect(bad == 0, what);
}

// ---- argument checks: the CPU ops report core/moe_op_checks' verdict ----
// Both backends call core/moe_op_checks; the CPU ops then read the data (ids
// and rows in range, finite bias and weights), which the CUDA backend learns
// from its kernels' flags. These cases (valid data, one malformed argument)
// pin that the CPU ops run the shared checks first and unchanged.
static int g_check_cases = 0, g_check_bad = 0;
static void same_verdict(const moe::Status& cpu, const moe::Status& shared, const char* what) {
  ++g_check_cases;
  if (cpu.isOk() || cpu.code() != shared.code() || cpu.message() != shared.message()) {
    ++g_check_bad;
    printf("    %s: cpu %d '%s' vs checks %d '%s'\n", what, static_cast<int>(cpu.code()), cpu.message().c_str(),
           static_cast<int>(shared.code()), shared.message().c_str());
  }
}

static void test_checks() {
  using moe::DType;
  std::vector<float> f(4096, 0.5f);
  std::vector<int32_t> i32(4096, 0);
  std::vector<uint16_t> b16(4096, 0);
  std::vector<uint8_t> u8(4096, 0);
  auto F = [&](std::initializer_list<int64_t> d) { return view(f, DType::kF32, d); };
  auto I = [&](std::initializer_list<int64_t> d) { return view(i32, DType::kI32, d); };
  auto B = [&](std::initializer_list<int64_t> d) { return view(b16, DType::kBF16, d); };
  auto Q = [&](std::initializer_list<int64_t> d) { return view(u8, DType::kFP8E4M3, d); };
  // route
  auto route = [&](auto mutate, const char* what) {
    moe::RouteArgs a;
    a.logits = F({4, 16});
    a.scoring = moe::Scoring::kSigmoid;
    a.topK = 4;
    a.numGroups = 4;
    a.topKGroups = 2;
    a.ids = I({4, 4});
    a.weights = F({4, 4});
    mutate(a);
    same_verdict(moe::cpu::route(a), moe::checkRoute(a), what);
  };
  route([&](moe::RouteArgs& a) { a.logits = F({64}); }, "route 1-D logits");
  route([&](moe::RouteArgs& a) { a.logits = I({4, 16}); }, "route i32 logits");
  route([&](moe::RouteArgs& a) { a.topK = 17; }, "route topK > E");
  route([&](moe::RouteArgs& a) { a.numGroups = 3; }, "route groups do not divide E");
  route([&](moe::RouteArgs& a) { a.topKGroups = 5; }, "route topKGroups > groups");
  route([&](moe::RouteArgs& a) { a.topKGroups = 1; a.topK = 5; }, "route topK > kept experts");
  route([&](moe::RouteArgs& a) { a.scale = INFINITY; }, "route scale inf");
  route([&](moe::RouteArgs& a) { a.bias = F({15}); }, "route bias shape");
  route([&](moe::RouteArgs& a) { a.scoring = moe::Scoring::kSoftmax; a.numGroups = 1; a.topKGroups = 1; a.bias = F({16}); }, "route softmax bias");
  route([&](moe::RouteArgs& a) { a.ids = F({4, 4}); }, "route ids dtype");
  route([&](moe::RouteArgs& a) { a.weights = F({4, 3}); }, "route weights shape");
  // dispatchLayout
  auto layout = [&](auto mutate, const char* what) {
    moe::LayoutArgs a;
    a.ids = I({4, 2});
    a.numExperts = 8;
    a.align = 4;
    a.tokensPerExpert = I({8});
    a.offsets = I({9});
    a.rowToken = I({64});
    a.groupIndex = I({64});
    a.slotRow = I({4, 2});
    mutate(a);
    same_verdict(moe::cpu::dispatchLayout(a), moe::checkDispatchLayout(a), what);
  };
  layout([&](moe::LayoutArgs& a) { a.numExperts = 0; }, "layout E = 0");
  layout([&](moe::LayoutArgs& a) { a.align = 0; }, "layout align 0");
  layout([&](moe::LayoutArgs& a) { a.masked = true; a.maxRowsPerExpert = -1; }, "layout maxRows < 0");
  layout([&](moe::LayoutArgs& a) { a.ids = F({4, 2}); }, "layout ids dtype");
  layout([&](moe::LayoutArgs& a) { a.offsets = I({8}); }, "layout offsets shape");
  layout([&](moe::LayoutArgs& a) { a.groupIndex = I({63}); }, "layout groupIndex rows");
  layout([&](moe::LayoutArgs& a) { a.slotRow = I({4, 3}); }, "layout slotRow shape");
  layout([&](moe::LayoutArgs& a) { a.masked = true; a.maxRowsPerExpert = 9; }, "layout masked capacity");
  // dispatch
  auto dispatch = [&](auto mutate, const char* what) {
    moe::DispatchArgs a;
    a.x = B({4, 32});
    a.rowToken = I({6});
    a.out = Q({6, 32});
    a.scales = F({6, 1});
    mutate(a);
    same_verdict(moe::cpu::dispatch(a), moe::checkDispatch(a), what);
  };
  dispatch([&](moe::DispatchArgs& a) { a.x = Q({4, 32}); }, "dispatch x dtype");
  dispatch([&](moe::DispatchArgs& a) { a.x = B({128}); }, "dispatch 1-D x");
  dispatch([&](moe::DispatchArgs& a) { a.x = B({4, 24}); a.out = Q({6, 24}); }, "dispatch H % 16");
  dispatch([&](moe::DispatchArgs& a) { a.out = B({6, 32}); }, "dispatch out dtype");
  dispatch([&](moe::DispatchArgs& a) { a.scales = F({6, 2}); }, "dispatch scales shape");
  dispatch([&](moe::DispatchArgs& a) { a.scales = moe::TensorView(); }, "dispatch fp8 out without scales");
  dispatch([&](moe::DispatchArgs& a) { a.scales = moe::TensorView(); a.out = F({6, 32}); }, "dispatch plain out dtype");
  dispatch([&](moe::DispatchArgs& a) { a.out = Q({5, 32}); }, "dispatch out rows");
  dispatch([&](moe::DispatchArgs& a) { a.rowToken = F({6}); }, "dispatch rowToken dtype");
  // swiglu
  auto swiglu = [&](auto mutate, const char* what) {
    moe::SwigluArgs a;
    a.h = B({4, 64});
    a.out = Q({4, 32});
    a.scales = F({4, 1});
    mutate(a);
    same_verdict(moe::cpu::swiglu(a), moe::checkSwiglu(a), what);
  };
  swiglu([&](moe::SwigluArgs& a) { a.h = B({4, 63}); }, "swiglu odd 2I");
  swiglu([&](moe::SwigluArgs& a) { a.h = I({4, 64}); }, "swiglu h dtype");
  swiglu([&](moe::SwigluArgs& a) { a.h = B({4, 40}); a.out = Q({4, 20}); }, "swiglu I % 16");
  swiglu([&](moe::SwigluArgs& a) { a.scales = F({4, 2}); }, "swiglu scales shape");
  swiglu([&](moe::SwigluArgs& a) { a.scales = moe::TensorView(); }, "swiglu fp8 without scales");
  swiglu([&](moe::SwigluArgs& a) { a.scales = moe::TensorView(); a.out = I({4, 32}); }, "swiglu out dtype");
  swiglu([&](moe::SwigluArgs& a) { a.out = Q({3, 32}); }, "swiglu out rows");
  // combine
  auto combine = [&](auto mutate, const char* what) {
    moe::CombineArgs a;
    a.y = B({8, 32});
    a.slotRow = I({4, 2});
    a.weights = F({4, 2});
    a.out = B({4, 32});
    mutate(a);
    same_verdict(moe::cpu::combine(a), moe::checkCombine(a), what);
  };
  combine([&](moe::CombineArgs& a) { a.y = Q({8, 32}); }, "combine y dtype");
  combine([&](moe::CombineArgs& a) { a.slotRow = F({4, 2}); }, "combine slotRow dtype");
  combine([&](moe::CombineArgs& a) { a.slotRow = I({8}); }, "combine 1-D slotRow");
  combine([&](moe::CombineArgs& a) { a.weights = F({4, 3}); }, "combine weights shape");
  combine([&](moe::CombineArgs& a) { a.shared = B({4, 31}); }, "combine shared shape");
  combine([&](moe::CombineArgs& a) { a.out = B({4, 31}); }, "combine out shape");
  combine([&](moe::CombineArgs& a) { a.out = Q({4, 32}); }, "combine out dtype");
  char what[200];
  snprintf(what, sizeof what, "the CPU ops' code and message == core/moe_op_checks' (the CUDA backend's checks) in %d malformed cases",
           g_check_cases);
  expect(g_check_bad == 0, what);
}

int main() {
  printf("MoE kernel math vs the CPU backend\n");
  std::mt19937 rng(20260611);
  test_exp();
  test_route(rng);
  test_layout(rng);
  test_dispatch(rng);
  test_swiglu(rng);
  test_combine(rng);
  test_checks();
  printf("  %d check(s), %d failure(s)\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
