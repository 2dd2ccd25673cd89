#include "core/moe_forward.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace moe {

namespace {

// Rows [row0, row0 + rows) of a row-major tensor viewed as [*, cols].
TensorView rows(const TensorView& t, int64_t row0, int64_t count) {
  const int64_t cols = t.ndim >= 2 ? t.shape[t.ndim - 1] : 1;
  auto* base = static_cast<uint8_t*>(t.data) + row0 * cols * static_cast<int64_t>(dtypeSize(t.dtype));
  TensorView view = t.ndim >= 2 ? TensorView::contiguous(base, t.dtype, {count, cols}) : TensorView::contiguous(base, t.dtype, {count});
  view.device = t.device;
  return view;
}

// Groups [g0, g0 + count) of a tensor whose rows are [G, rowsPerGroup]
// blocks (the masked layout), viewed as [count, rowsPerGroup, cols].
TensorView groups(const TensorView& t, int64_t g0, int64_t count, int64_t rowsPerGroup) {
  const int64_t cols = t.shape[t.ndim - 1];
  TensorView view = rows(t, g0 * rowsPerGroup, count * rowsPerGroup);
  view = TensorView::contiguous(view.data, t.dtype, {count, rowsPerGroup, cols});
  view.device = t.device;
  return view;
}

class StageClock {
 public:
  explicit StageClock(double* seconds) : seconds_(seconds) {}
  // Charges the time since the previous call to `stage`.
  void charge(MoeStage stage) {
    const auto now = std::chrono::steady_clock::now();
    if (seconds_) seconds_[stage] += std::chrono::duration<double>(now - last_).count();
    last_ = now;
  }
  // Re-attributes `seconds` of a fused stage's time to the stage it absorbed.
  void move(MoeStage from, MoeStage to, double seconds) {
    if (!seconds_) return;
    seconds_[from] -= seconds;
    seconds_[to] += seconds;
  }

 private:
  double* seconds_;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

Status validateShards(const ExpertWeights& w, int64_t experts, const char* what) {
  if (w.data.size() != w.scales.size()) return Status(Code::kShape, std::string(what) + ": shards and scales differ in count");
  int64_t total = 0;
  for (const TensorView& shard : w.data) {
    if (shard.ndim != 3) return Status(Code::kShape, std::string(what) + ": expected [G, N, K] shards, got " + shard.shapeString());
    total += shard.dim(0);
  }
  if (total != experts) {
    return Status(Code::kShape, std::string(what) + ": shards hold " + std::to_string(total) + " experts, expected " +
                                    std::to_string(experts));
  }
  return Status::ok();
}

// Calls run(shard, firstExpert, row0, row1) for every shard of `w` whose
// experts have rows: with the contiguous layout a shard's experts own the one
// range of rows [row0, row1).
template <class Run>
Status forEachShard(const ExpertWeights& w, const int32_t* offsets, Run run) {
  int64_t firstExpert = 0;
  for (size_t s = 0; s < w.data.size(); ++s) {
    const int64_t experts = w.data[s].dim(0);
    const int64_t row0 = offsets[firstExpert], row1 = offsets[firstExpert + experts];
    if (row1 > row0) MOE_RETURN_IF_ERROR(run(s, firstExpert, row0, row1));
    firstExpert += experts;
  }
  return Status::ok();
}

// Expert weights in several shards on a backend that takes a group table:
// each expert's weights and scales by address, so that one call runs them
// all. Else (one shard, or a backend without it) null: one call per shard.
struct ShardTable {
  GroupTable table;
  TensorView first, firstScales;  // expert 0's [1, N, K] and [1, ceil(N/128), ceil(K/128)], for the shapes
  bool use = false;
};

ShardTable shardTable(Backend& backend, const ExpertWeights& w) {
  ShardTable t;
  if (w.data.size() <= 1 || !backend.supportsOp(OpKind::kGroupTable)) return t;
  for (size_t s = 0; s < w.data.size(); ++s) {
    const TensorView& data = w.data[s];    // [Gs, N, K] fp8
    const TensorView& scales = w.scales[s];  // [Gs, ceil(N/128), ceil(K/128)] f32
    const int64_t expertBytes = data.dim(1) * data.dim(2);
    const int64_t expertScales = scales.dim(1) * scales.dim(2);
    for (int64_t e = 0; e < data.dim(0); ++e) {
      t.table.b.push_back(data.as<const uint8_t>() + e * expertBytes);
      t.table.bScales.push_back(scales.as<const float>() + e * expertScales);
    }
  }
  const TensorView& data = w.data[0];
  const TensorView& scales = w.scales[0];
  t.first = TensorView::contiguous(data.data, data.dtype, {1, data.dim(1), data.dim(2)});
  t.firstScales = TensorView::contiguous(scales.data, scales.dtype, {1, scales.dim(1), scales.dim(2)});
  t.use = true;
  return t;
}

// The shared expert's [N, K] weights and [ceil(N/128), ceil(K/128)] scales.
void sharedWeights(const ExpertWeights& w, TensorView* data, TensorView* scales) {
  *data = rows(w.data[0], 0, w.data[0].dim(1));
  *scales = rows(w.scales[0], 0, w.scales[0].dim(1));
}

// Where the shared expert's products run inside the routed experts' ops
// (OpKind::kSharedExpert): its second GEMM's operands, or none.
struct SharedProduct {
  const ExpertWeights* w = nullptr;  // null: the shared expert runs on its own
  TensorView a, aScales, d;          // [T, K] fp8, [T, ceil(K/128)] f32, [T, N]
};

void foldShared(const SharedProduct& shared, GroupedGemmFp8Args* g) {
  if (shared.w == nullptr) return;
  g->sharedA = shared.a;
  g->sharedAScales = shared.aScales;
  sharedWeights(*shared.w, &g->sharedB, &g->sharedBScales);
  g->sharedD = shared.d;
}

// The expert weights one call of an experts op reads: shard `s` of `w`
// (its experts from firstExpert on), or, where `t` is in use, every expert
// through the group table (`data`, `scales`: expert 0's, for the shapes).
struct CallWeights {
  TensorView data, scales;  // [G, N, K] fp8, [G, ceil(N/128), ceil(K/128)] f32
  const GroupTable* table = nullptr;
  int64_t groupOffset = 0;
};

CallWeights callWeights(const ExpertWeights& w, const ShardTable& t, size_t s, int64_t firstExpert) {
  if (t.use) return CallWeights{t.first, t.firstScales, &t.table, 0};
  return CallWeights{w.data[s], w.scales[s], nullptr, firstExpert};
}

// The contiguous grouped GEMM's arguments over the rows [row0, row1) of the
// experts of shard `s` of `w` (from expert firstExpert on), or, where `t` is
// in use, over every expert through its group table (s, firstExpert unused).
// `shared`: the shared expert's product in the same call.
GroupedGemmFp8Args contiguousGemmArgs(const MoeForwardArgs& args, const ExpertWeights& w, const ShardTable& t, size_t s,
                                      int64_t firstExpert, int64_t row0, int64_t row1, const TensorView& a,
                                      const TensorView& aScales, const TensorView& d, const SharedProduct& shared) {
  GroupedGemmFp8Args g;
  g.a = rows(a, row0, row1 - row0);
  g.aScales = rows(aScales, row0, row1 - row0);
  const CallWeights cw = callWeights(w, t, s, firstExpert);
  g.b = cw.data;
  g.bScales = cw.scales;
  g.groupTable = cw.table;
  g.groupOffset = cw.groupOffset;
  g.groupIndex = rows(args.ws.groupIndex, row0, row1 - row0);
  g.d = rows(d, row0, row1 - row0);
  g.batchInvariant = args.batchInvariant;
  g.segmentAlign = args.align;  // a shard's first row is its first expert's, a multiple of align
  foldShared(shared, &g);       // (one call: one shard or the group table)
  return g;
}

// The grouped GEMM over all experts of `w`, one call per shard: contiguous
// rows (a shard's experts own the rows [offsets[e0], offsets[e0 + Gs])), or
// masked groups (a shard's experts own the groups [e0, e0 + Gs)).
// `shared` (contiguous, one call): the shared expert's product in that call.
Status groupedGemm(Backend& backend, ExecContext& ctx, const MoeForwardArgs& args, const ExpertWeights& w, const TensorView& a,
                   const TensorView& aScales, const std::vector<int32_t>& offsets, const TensorView& d,
                   const SharedProduct& shared = {}) {
  const MoeWorkspace& ws = args.ws;
  if (args.masked) {
    const int64_t mmax = args.maxRowsPerExpert;
    const int64_t experts = static_cast<int64_t>(ws.tokensPerExpert.numel());
    int64_t firstExpert = 0;
    for (size_t s = 0; s < w.data.size(); ++s) {
      const int64_t count = w.data[s].dim(0);
      GroupedGemmFp8Args g;
      g.a = groups(a, firstExpert, count, mmax);
      g.aScales = groups(aScales, firstExpert, count, mmax);
      g.b = w.data[s];
      g.bScales = w.scales[s];
      g.maskedM = rows(ws.tokensPerExpert, firstExpert, count);
      g.d = groups(d, firstExpert, count, mmax);
      g.expectedRows = ceilDiv(args.x.dim(0) * args.routing.topK, experts);  // rows per expert on average
      g.batchInvariant = args.batchInvariant;
      MOE_RETURN_IF_ERROR(backend.groupedGemmFp8(g, ctx));
      firstExpert += count;
    }
    return Status::ok();
  }
  const ShardTable t = shardTable(backend, w);
  if (t.use) {
    return backend.groupedGemmFp8(contiguousGemmArgs(args, w, t, 0, 0, 0, offsets[t.table.b.size()], a, aScales, d, shared), ctx);
  }
  return forEachShard(w, offsets.data(), [&](size_t s, int64_t firstExpert, int64_t row0, int64_t row1) {
    return backend.groupedGemmFp8(contiguousGemmArgs(args, w, t, s, firstExpert, row0, row1, a, aScales, d, shared), ctx);
  });
}

// The fused first half's arguments (ExpertUpArgs) over the rows [row0, row1)
// of the experts of shard `s` of `w13` (from expert firstExpert on), or,
// where `t` is in use, over every expert through its group table.
// `sharedW13` (non-null: one call): the shared expert's first half in that
// call, into ws.sharedHq. *swigluSeconds receives the call's SwiGLU time.
ExpertUpArgs expertUpArgs(const ExpertWeights& w13, const ShardTable& t, size_t s, int64_t firstExpert, int64_t row0, int64_t row1,
                          const MoeWorkspace& ws, int64_t tokens, bool batchInvariant, const ExpertWeights* sharedW13,
                          double* swigluSeconds) {
  ExpertUpArgs up;
  up.xq = rows(ws.xq, 0, tokens);
  up.xqScales = rows(ws.xqScales, 0, tokens);
  up.rowToken = rows(ws.rowToken, row0, row1 - row0);
  up.groupIndex = rows(ws.groupIndex, row0, row1 - row0);
  const CallWeights cw = callWeights(w13, t, s, firstExpert);
  up.w13 = cw.data;
  up.w13Scales = cw.scales;
  up.groupTable = cw.table;
  up.groupOffset = cw.groupOffset;
  up.hq = rows(ws.hq, row0, row1 - row0);
  up.hqScales = rows(ws.hqScales, row0, row1 - row0);
  up.swigluSeconds = swigluSeconds;
  up.batchInvariant = batchInvariant;
  if (sharedW13 != nullptr) {
    sharedWeights(*sharedW13, &up.sharedW13, &up.sharedW13Scales);
    up.sharedHq = ws.sharedHq;
    up.sharedHqScales = ws.sharedHqScales;
  }
  return up;
}

// The fused first half (ExpertUpArgs) over all experts of `w13`, one call per
// shard. Adds the time spent in SwiGLU to *swigluSeconds. `sharedW13`
// (non-null: one call): the shared expert's first half in that call, into
// ws.sharedHq.
Status expertUp(Backend& backend, ExecContext& ctx, const ExpertWeights& w13, const MoeWorkspace& ws, int64_t tokens,
                const int32_t* offsets, double* swigluSeconds, bool batchInvariant, const ExpertWeights* sharedW13) {
  const ShardTable t = shardTable(backend, w13);
  const auto run = [&](size_t s, int64_t firstExpert, int64_t row0, int64_t row1) {
    double seconds = 0;
    MOE_RETURN_IF_ERROR(backend.expertUp(
        expertUpArgs(w13, t, s, firstExpert, row0, row1, ws, tokens, batchInvariant, sharedW13, &seconds), ctx));
    *swigluSeconds += seconds;
    return Status::ok();
  };
  if (t.use) return run(0, 0, 0, offsets[t.table.b.size()]);
  return forEachShard(w13, offsets, run);
}

// Both halves of the routed experts (and of the shared expert, with
// `withShared`) as one expertChain call, where the backend has it and each
// half is one call (one shard, or a group table): *ran says whether it did.
// Adds the SwiGLU and second-GEMM times to *swigluSeconds, *gemm2Seconds.
Status expertChain(Backend& backend, ExecContext& ctx, const MoeForwardArgs& a, const MoeWorkspace& up, int64_t tokens,
                   const std::vector<int32_t>& offsets, bool withShared, double* swigluSeconds, double* gemm2Seconds, bool* ran) {
  *ran = false;
  if (!backend.supportsOp(OpKind::kExpertChain)) return Status::ok();
  const ShardTable t13 = shardTable(backend, a.w13), t2 = shardTable(backend, a.w2);
  if (t13.use != t2.use || (!t13.use && (a.w13.data.size() != 1 || a.w2.data.size() != 1))) return Status::ok();
  const int64_t allRows = offsets.back();
  if (allRows == 0) return Status::ok();  // (the two calls: no rows, no work)
  const MoeWorkspace& ws = a.ws;
  double swiglu = 0, gemm2 = 0;
  ExpertChainArgs chain;
  chain.up = expertUpArgs(a.w13, t13, 0, 0, 0, allRows, up, tokens, a.batchInvariant, withShared ? &a.sharedW13 : nullptr, &swiglu);
  SharedProduct shared;
  if (withShared) shared = SharedProduct{&a.sharedW2, ws.sharedHq, ws.sharedHqScales, ws.sharedOut};
  chain.down = contiguousGemmArgs(a, a.w2, t2, 0, 0, 0, allRows, ws.hq, ws.hqScales, ws.y, shared);
  chain.downSeconds = &gemm2;
  MOE_RETURN_IF_ERROR(backend.expertChain(chain, ctx));
  *swigluSeconds += swiglu;
  *gemm2Seconds += gemm2;
  *ran = true;
  return Status::ok();
}

// MOE_FUSED_EXPERTS=0 runs the separate ops even where the backend has the
// fused one (for comparing the two; both give the same bits).
bool fusionAllowed() {
  const char* env = std::getenv("MOE_FUSED_EXPERTS");
  return env == nullptr || std::strcmp(env, "0") != 0;
}

// D = A * W^T for the single expert of `w` (the shared expert's [1, N, K] weights).
GemmFp8Args singleExpertGemm(const ExpertWeights& w, const TensorView& a, const TensorView& aScales, const TensorView& d,
                             bool batchInvariant) {
  GemmFp8Args gemm;
  gemm.a = a;
  gemm.aScales = aScales;
  gemm.b = rows(w.data[0], 0, w.data[0].dim(1));          // [N, K] fp8
  gemm.bScales = rows(w.scales[0], 0, w.scales[0].dim(1));  // [ceil(N/128), ceil(K/128)] f32
  gemm.d = d;
  gemm.batchInvariant = batchInvariant;
  return gemm;
}

// The shared experts: the same FP8 MLP on every token.
// xq, xqScales: the tokens quantized 1x128 when the caller has them, else
// data == nullptr (quantized here).
Status sharedExperts(Backend& backend, ExecContext& ctx, const MoeForwardArgs& args, TensorView xq, TensorView xqScales) {
  const MoeWorkspace& ws = args.ws;
  if (xq.data == nullptr) {
    QuantizeArgs q;
    q.x = args.x;
    q.q = xq = ws.sharedXq;
    q.scales = xqScales = ws.sharedXqScales;
    MOE_RETURN_IF_ERROR(backend.quantizeActivations(q, ctx));
  }
  MOE_RETURN_IF_ERROR(backend.gemmFp8(singleExpertGemm(args.sharedW13, xq, xqScales, ws.sharedH, args.batchInvariant), ctx));
  SwigluArgs act;
  act.h = ws.sharedH;
  act.out = ws.sharedHq;
  act.scales = ws.sharedHqScales;
  MOE_RETURN_IF_ERROR(backend.swiglu(act, ctx));
  return backend.gemmFp8(singleExpertGemm(args.sharedW2, ws.sharedHq, ws.sharedHqScales, ws.sharedOut, args.batchInvariant), ctx);
}

// The workspace must hold the layout's rows: T * k + E * (align - 1)
// (contiguous; always enough) or E * maxRowsPerExpert (masked).
Status validateLayout(const MoeForwardArgs& args, int64_t experts) {
  const MoeWorkspace& ws = args.ws;
  const int64_t tokens = args.x.dim(0);
  if (args.masked && args.maxRowsPerExpert < tokens) {
    return Status(Code::kRange, "moeForward: maxRowsPerExpert must be >= T (an expert can receive every token)");
  }
  const int64_t need = args.masked ? experts * args.maxRowsPerExpert : tokens * args.routing.topK + experts * (args.align - 1);
  for (const TensorView* t : {&ws.rowToken, &ws.groupIndex, &ws.xq, &ws.xqScales, &ws.h, &ws.hq, &ws.hqScales, &ws.y}) {
    if (t->ndim < 1 || t->dim(0) < need) {
      return Status(Code::kShape, "moeForward: the workspace holds " + std::to_string(t->ndim < 1 ? 0 : t->dim(0)) +
                                      " rows, the layout needs " + std::to_string(need));
    }
  }
  return Status::ok();
}


// The router's projection and routing of the layer's tokens into ws.ids and
// ws.weights; with `quantizeOnce` also the tokens' 1x128 quantization into
// ws.xq's first T rows (*tokensQ, *tokensQScales), in the router's pass
// where the backend can.
Status routeTokens(Backend& backend, ExecContext& ctx, const MoeForwardArgs& args, bool quantizeOnce, StageClock& clock,
                   TensorView* tokensQ, TensorView* tokensQScales) {
  const MoeWorkspace& ws = args.ws;
  const int64_t tokens = args.x.dim(0);
  RouterLogitsArgs project{args.x, args.gate, ws.logits, args.batchInvariant};
  QuantizeArgs q;
  if (quantizeOnce) {
    q.x = args.x;
    q.q = *tokensQ = rows(ws.xq, 0, tokens);
    q.scales = *tokensQScales = rows(ws.xqScales, 0, tokens);
  }
  if (quantizeOnce && backend.supportsOp(OpKind::kRouterQuantize)) {
    double quantizeSeconds = 0;
    MOE_RETURN_IF_ERROR(backend.routerLogitsQuantize(RouterQuantizeArgs{project, q, &quantizeSeconds}, ctx));
    clock.charge(kStageRouter);
    clock.move(kStageRouter, kStageDispatch, quantizeSeconds);
  } else {
    MOE_RETURN_IF_ERROR(backend.routerLogits(project, ctx));
    clock.charge(kStageRouter);
    if (quantizeOnce) {
      MOE_RETURN_IF_ERROR(backend.quantizeActivations(q, ctx));
      clock.charge(kStageDispatch);
    }
  }
  RouteArgs routing = args.routing;
  routing.logits = ws.logits;
  routing.bias = args.bias;
  routing.ids = ws.ids;
  routing.weights = ws.weights;
  MOE_RETURN_IF_ERROR(backend.route(routing, ctx));
  clock.charge(kStageRoute);
  return Status::ok();
}

// The tokens the routed experts run on: the layer's own (single process) or,
// with expert parallelism, the ones other ranks sent here.
struct ExpertInput {
  int64_t tokens = 0;
  int64_t numExperts = 0;    // the experts w13 and w2 hold
  TensorView ids;            // [T, k] i32: experts of w13/w2, -1 for none
  // [T, H] fp8 and [T, ceil(H/128)] f32: the tokens quantized once, or
  // data == nullptr (then dispatch quantizes args.x as it gathers).
  TensorView xq, xqScales;
};

// layout -> dispatch -> grouped GEMM w13 -> swiglu (or the fused expertUp)
// -> grouped GEMM w2, over `a.ws`: its y holds one row per (token, slot) and
// its slotRow where. *numRows: the rows the experts' stages ran over.
// `withShared` (fused experts, one call per op): the shared expert's two
// products run inside expertUp and the w2 grouped GEMM, into ws.sharedHq and
// ws.sharedOut, as one more expert whose rows are the tokens.
Status routedExperts(Backend& backend, ExecContext& ctx, const MoeForwardArgs& a, const ExpertInput& in, bool fuseExperts, bool withShared,
                     StageClock& clock, int64_t* numRows) {
  const MoeWorkspace& ws = a.ws;
  LayoutArgs layout;
  layout.ids = in.ids;
  layout.numExperts = in.numExperts;
  layout.align = a.align;
  layout.masked = a.masked;
  layout.maxRowsPerExpert = a.maxRowsPerExpert;
  layout.tokensPerExpert = ws.tokensPerExpert;
  layout.offsets = ws.offsets;
  layout.rowToken = ws.rowToken;
  layout.groupIndex = ws.groupIndex;
  layout.slotRow = ws.slotRow;
  MOE_RETURN_IF_ERROR(backend.dispatchLayout(layout, ctx));
  // The rows the experts' stages run over: all E * Mmax of the masked layout
  // (fixed: nothing waits), or the contiguous layout's R = offsets[E].
  std::vector<int32_t> offsets;  // [E + 1] on the host (contiguous)
  *numRows = in.numExperts * a.maxRowsPerExpert;
  if (!a.masked) {
    MOE_RETURN_IF_ERROR(backend.layoutOffsets(layout, ctx, &offsets));
    *numRows = offsets[in.numExperts];
  }
  clock.charge(kStageLayout);

  if (fuseExperts) {
    MoeWorkspace up = ws;  // expertUp reads the tokens' rows in place
    up.xq = in.xq;
    up.xqScales = in.xqScales;
    double swigluSeconds = 0, gemm2Seconds = 0;
    bool chained = false;
    MOE_RETURN_IF_ERROR(expertChain(backend, ctx, a, up, in.tokens, offsets, withShared, &swigluSeconds, &gemm2Seconds, &chained));
    if (chained) {
      clock.charge(kStageGemm1);
      clock.move(kStageGemm1, kStageSwiglu, swigluSeconds);
      clock.move(kStageGemm1, kStageGemm2, gemm2Seconds);
      return Status::ok();
    }
    MOE_RETURN_IF_ERROR(expertUp(backend, ctx, a.w13, up, in.tokens, offsets.data(), &swigluSeconds, a.batchInvariant,
                                 withShared ? &a.sharedW13 : nullptr));
    clock.charge(kStageGemm1);
    clock.move(kStageGemm1, kStageSwiglu, swigluSeconds);
  } else {
    DispatchArgs gather;
    gather.rowToken = rows(ws.rowToken, 0, *numRows);
    if (in.xq.data == nullptr) {  // gathered and quantized in one pass
      gather.x = a.x;
      gather.out = rows(ws.xq, 0, *numRows);
      gather.scales = rows(ws.xqScales, 0, *numRows);
      MOE_RETURN_IF_ERROR(backend.dispatch(gather, ctx));
    } else {
      // The tokens arrived quantized: their fp8 rows and scales are gathered
      // as they are. Unquantized dispatch copies rows bit for bit, so the fp8
      // bytes travel as bf16 pairs (H is a multiple of 16).
      const int64_t hidden = in.xq.dim(1);
      gather.x = TensorView::contiguous(in.xq.data, DType::kBF16, {in.tokens, hidden / 2});
      gather.x.device = in.xq.device;
      gather.out = TensorView::contiguous(ws.xq.data, DType::kBF16, {*numRows, hidden / 2});
      gather.out.device = ws.xq.device;
      MOE_RETURN_IF_ERROR(backend.dispatch(gather, ctx));
      gather.x = in.xqScales;
      gather.out = rows(ws.xqScales, 0, *numRows);
      MOE_RETURN_IF_ERROR(backend.dispatch(gather, ctx));
    }
    clock.charge(kStageDispatch);

    MOE_RETURN_IF_ERROR(groupedGemm(backend, ctx, a, a.w13, ws.xq, ws.xqScales, offsets, ws.h));
    clock.charge(kStageGemm1);

    SwigluArgs act;
    act.h = rows(ws.h, 0, *numRows);
    act.out = rows(ws.hq, 0, *numRows);
    act.scales = rows(ws.hqScales, 0, *numRows);
    MOE_RETURN_IF_ERROR(backend.swiglu(act, ctx));
    clock.charge(kStageSwiglu);
  }

  SharedProduct shared;
  if (withShared) shared = SharedProduct{&a.sharedW2, ws.sharedHq, ws.sharedHqScales, ws.sharedOut};
  MOE_RETURN_IF_ERROR(groupedGemm(backend, ctx, a, a.w2, ws.hq, ws.hqScales, offsets, ws.y, shared));
  clock.charge(kStageGemm2);
  return Status::ok();
}

// The received batch's workspace, cut from the shard's buffers.
MoeWorkspace receivedWorkspace(EpExchange& ex, int64_t tokens, int64_t hidden, int64_t intermediate, int64_t topK, int64_t align) {
  EpShard& s = ex.shard();
  const int64_t el = s.numLocalExperts, r = tokens * topK + el * (align - 1);  // as EpExchange::reserveWorkspace
  MoeWorkspace ws;
  ws.tokensPerExpert = ex.tensor(s.tokensPerExpert, DType::kI32, {el});
  ws.offsets = ex.tensor(s.offsets, DType::kI32, {el + 1});
  ws.rowToken = ex.tensor(s.rowToken, DType::kI32, {r});
  ws.groupIndex = ex.tensor(s.groupIndex, DType::kI32, {r});
  ws.slotRow = ex.tensor(s.slotRow, DType::kI32, {tokens, topK});
  ws.xq = ex.tensor(s.xq, DType::kFP8E4M3, {r, hidden});
  ws.xqScales = ex.tensor(s.xqScales, DType::kF32, {r, ceilDiv(hidden, kQuantGroup)});
  ws.h = ex.tensor(s.h, DType::kBF16, {r, 2 * intermediate});
  ws.hq = ex.tensor(s.hq, DType::kFP8E4M3, {r, intermediate});
  ws.hqScales = ex.tensor(s.hqScales, DType::kF32, {r, ceilDiv(intermediate, kQuantGroup)});
  ws.y = ex.tensor(s.y, DType::kBF16, {r, hidden});
  return ws;
}

// Expert parallelism's own conditions: the contiguous layout, and a
// workspace whose xq holds the T tokens quantized once.
Status validateExpertParallel(const MoeForwardArgs& args) {
  if (args.masked) return Status(Code::kUnsupported, "moeForward: expert-parallel forwards use the contiguous layout, not the masked one");
  if (args.ws.xq.ndim < 1 || args.ws.xq.dim(0) < args.x.dim(0) || args.ws.xqScales.ndim < 1 || args.ws.xqScales.dim(0) < args.x.dim(0)) {
    return Status(Code::kShape, "moeForward: ws.xq and ws.xqScales must hold the T tokens");
  }
  return Status::ok();
}

}  // namespace

Status Backend::forward(const MoeForwardArgs& args, ExecContext& ctx) { return moeForward(*this, args, ctx); }

Status moeForward(Backend& backend, const MoeForwardArgs& args, ExecContext& ctx) {
  const MoeWorkspace& ws = args.ws;
  if (args.x.ndim != 2) return Status(Code::kShape, "moeForward: x: expected [T, H], got " + args.x.shapeString());
  const int64_t experts = args.gate.ndim == 2 ? args.gate.dim(0) : 0;
  // An expert-parallel rank holds its slice of the experts only.
  const int64_t held = args.ep ? args.ep->numLocalExperts : experts;
  if (args.ep && args.ep->numExperts != experts) {
    return Status(Code::kShape, "moeForward: the router has " + std::to_string(experts) + " experts, the expert-parallel shard " +
                                    std::to_string(args.ep->numExperts));
  }
  MOE_RETURN_IF_ERROR(validateShards(args.w13, held, "moeForward: w13"));
  MOE_RETURN_IF_ERROR(validateShards(args.w2, held, "moeForward: w2"));
  const bool hasShared = !args.sharedW13.empty();
  if (hasShared) {
    MOE_RETURN_IF_ERROR(validateShards(args.sharedW13, 1, "moeForward: sharedW13"));
    MOE_RETURN_IF_ERROR(validateShards(args.sharedW2, 1, "moeForward: sharedW2"));
  }
  // The received rows of an expert-parallel forward live in the shard's buffers, not the workspace.
  MOE_RETURN_IF_ERROR(args.ep ? validateExpertParallel(args) : validateLayout(args, experts));
  MOE_RETURN_IF_ERROR(backend.expectBatchInvariant(args.batchInvariant, "moeForward"));
  if (!args.masked && args.w13.data.size() > 1 && !backend.supportsOp(OpKind::kShardedExperts)) {
    return Status(Code::kUnsupported, std::string("moeForward: expert weights in shards do not run on the ") + backend.name() +
                                          " backend (hold each in one tensor [E, N, K])");
  }
  // A queued device reports its ops' verdicts into the workspace's flag
  // words, zeroed here in queue order and read by the caller after completion.
  if (backend.queued()) {
    if (ws.flags.data == nullptr || ws.flags.numel() < kFlagWordsAllocated || ws.flags.dtype != DType::kI32) {
      return Status(Code::kShape, "moeForward: ws.flags: expected [8] i32 on the device");
    }
    MOE_RETURN_IF_ERROR(backend.fill(ws.flags.data, 0, kFlagWordsAllocated * sizeof(int32_t)));
    ctx.flagWords = ws.flags;
  }
  if (args.stageSeconds) {
    for (int s = 0; s < kNumStages; ++s) args.stageSeconds[s] = 0;
  }
  StageClock clock(backend.queued() ? nullptr : args.stageSeconds);

  const int64_t tokens = args.x.dim(0);
  // Fused experts: dispatch is the tokens' quantization, once for all (shared
  // with the shared expert); expertUp's GEMM reads each expert's token rows in
  // place. Where the backend can, the router's pass over x quantizes it too.
  // Expert parallelism sends the tokens' fp8 rows: quantized once as well.
  const bool fuseExperts = !args.masked && backend.supportsOp(OpKind::kExpertUp) && fusionAllowed();
  const bool quantizeOnce = fuseExperts || args.ep != nullptr;
  TensorView tokensQ, tokensQScales;  // [T, H] fp8, [T, ceil(H/128)] f32 when quantized once for all
  // A rank with no tokens still takes every exchange step.
  const Status routed = tokens > 0 ? routeTokens(backend, ctx, args, quantizeOnce, clock, &tokensQ, &tokensQScales) : Status::ok();

  // The shared expert inside the routed experts' parallel work (one region
  // each for the two halves, not two more of its own), where the backend
  // runs it so and the experts' ops are one call each.
  bool sharedFolded = hasShared && args.ep == nullptr && fuseExperts && backend.supportsOp(OpKind::kSharedExpert) &&
                      (args.w13.data.size() == 1 || backend.supportsOp(OpKind::kGroupTable));
  CombineArgs sum;
  sum.out = args.out;
  std::optional<EpExchange> ex;  // held to the end: the final sum reads its buffers
  if (args.ep == nullptr) {
    MOE_RETURN_IF_ERROR(routed);
    ExpertInput in;
    in.tokens = tokens;
    in.numExperts = experts;
    in.ids = ws.ids;
    in.xq = tokensQ;  // the fused experts' (else none: dispatch quantizes x)
    in.xqScales = tokensQScales;
    int64_t numRows = 0;
    MOE_RETURN_IF_ERROR(routedExperts(backend, ctx, args, in, fuseExperts, sharedFolded, clock, &numRows));
    sharedFolded = sharedFolded && numRows > 0;  // (a one-shard call with no rows does not run)
    sum.y = rows(ws.y, 0, numRows);
    sum.slotRow = ws.slotRow;
    sum.weights = ws.weights;
  } else {
    // Expert parallelism: dispatch -> this rank's experts on what it received
    // -> each received token's experts reduced into one bf16 row -> combine
    // sends the rows back -> the final sum below adds them in rank order.
    const int64_t hidden = args.x.dim(1), topK = args.routing.topK;
    const int64_t intermediate = args.w13.data[0].dim(1) / 2;
    // On a GPU the rows move between devices where the shard has a device
    // transport (NCCL), else through host memory (core/ep_exchange.h).
    args.ep->device = backend.queued() ? &backend : nullptr;
    ex.emplace(*args.ep, tokens, hidden, topK, &ctx);
    MOE_RETURN_IF_ERROR(ex->dispatch(routed, ws.ids, ws.weights, tokensQ, tokensQScales, ws.flags));
    clock.charge(kStageDispatch);
    const EpBatch& batch = ex->batch();
    Status local = ex->receivedStatus();
    if (local.isOk()) local = ex->reserveWorkspace(intermediate, !fuseExperts, args.align);
    if (local.isOk() && batch.tokens > 0) {
      MoeForwardArgs received = args;  // the same layer over the received batch
      received.ws = receivedWorkspace(*ex, batch.tokens, hidden, intermediate, topK, args.align);
      received.ws.flags = ws.flags;
      ExpertInput in;
      in.tokens = batch.tokens;
      in.numExperts = held;
      in.ids = batch.ids;
      in.xq = batch.xq;
      in.xqScales = batch.xqScales;
      int64_t numRows = 0;
      local = routedExperts(backend, ctx, received, in, fuseExperts, false, clock, &numRows);
      if (local.isOk() && !backend.queued()) {  // (a device's counts stay there)
        const int32_t* counts = received.ws.tokensPerExpert.as<const int32_t>();  // [El]
        int64_t active = 0;
        for (int64_t e = 0; e < held; ++e) active += counts[e] > 0;
        args.ep->last.activeExperts = active;
      }
      if (local.isOk()) {
        CombineArgs reduce;  // the token's experts on this rank, in slot order
        reduce.y = rows(received.ws.y, 0, numRows);
        reduce.slotRow = received.ws.slotRow;
        reduce.weights = batch.weights;
        reduce.out = ex->partial();
        local = backend.combine(reduce, ctx);
      }
    }
    MOE_RETURN_IF_ERROR(ex->combine(local, ws.flags));
    clock.charge(kStageCombine);
    if (tokens == 0) return Status::ok();
    sum.y = ex->returned();
    sum.slotRow = ex->returnSlot();
    sum.weights = ex->ones();  // 1 * row is exact: the rows are added as they came, in rank order
  }

  if (hasShared && !sharedFolded) MOE_RETURN_IF_ERROR(sharedExperts(backend, ctx, args, tokensQ, tokensQScales));
  clock.charge(kStageShared);

  if (hasShared) sum.shared = ws.sharedOut;
  MOE_RETURN_IF_ERROR(backend.combine(sum, ctx));
  clock.charge(kStageCombine);
  return Status::ok();
}

std::vector<TensorView> moeForwardFirstReads(const TensorView& gate, const TensorView& bias, const ExpertWeights& sharedW13,
                                             const ExpertWeights& sharedW2) {
  std::vector<TensorView> reads = {gate, bias};
  for (const ExpertWeights* w : {&sharedW13, &sharedW2}) {
    for (size_t s = 0; s < w->data.size(); ++s) reads.insert(reads.end(), {w->data[s], w->scales[s]});
  }
  return reads;
}

Status epFailForward(EpShard& shard, const Status& error, int64_t hidden, int64_t topK) {
  EpExchange ex(shard, 0, hidden, topK);
  const TensorView none;
  return ex.dispatch(error, none, none, none, none);
}

}  // namespace moe
