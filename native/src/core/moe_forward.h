// The whole MoE layer (SPEC.md, "The MoE layer (DeepSeek-V3 form)") as one
// sequence of Backend operations, written once for every backend, so that a
// forward is a single call into native code (one worker-thread hop for the
// Promise API on the CPU; one queue for a GPU):
//
//   logits = x * Wgate^T -> route -> layout -> dispatch (fp8) -> grouped GEMM w13
//   -> swiglu (fp8) -> grouped GEMM w2 -> combine (+ shared expert) -> out
//
// Two row layouts. Contiguous (every backend): expert segments aligned to
// `align`; the grouped GEMMs need the row count R = offsets[E], which a queued
// device learns with one host synchronization (Backend::layoutOffsets).
// Masked (`masked`, for decode on a queued device): [E, maxRowsPerExpert]
// rows, every size fixed, no synchronization at all, so the forward can be
// captured into a graph. On a queued backend the ops' device verdicts (NaN in
// x, ...) go to `ws.flags`, read by the caller after completion
// (Backend::flagsStatus).
//
// Capabilities that differ (supportsOp): the CPU fuses the experts' first
// half (kExpertUp, kRouterQuantize), chains both halves in one parallel
// region (kExpertChain) and runs sharded expert weights
// (kShardedExperts); `stageSeconds` is host wall time, measured where the
// backend is not queued (a queued backend's calls return before the work is
// done: the stages are left at zero).
#pragma once

#include <vector>

#include "core/backend.h"
#include "core/ep_exchange.h"

namespace moe {

// One FP8 weight matrix per expert, stacked in shards (a JS typed array holds
// at most 4 GiB, and a full DeepSeek-V3 layer's w13 is 7.5 GB).
struct ExpertWeights {
  std::vector<TensorView> data;    // each [Gs, N, K] fp8_e4m3, shards in expert order
  std::vector<TensorView> scales;  // each [Gs, ceil(N/128), ceil(K/128)] f32
  bool empty() const { return data.empty(); }
};

// Scratch tensors, sized by the caller for this call's T (R = T * k rows).
struct MoeWorkspace {
  TensorView logits;           // [T, E] f32
  TensorView ids;              // [T, k] i32
  TensorView weights;          // [T, k] f32
  TensorView tokensPerExpert;  // [E] i32
  TensorView offsets;          // [E + 1] i32
  TensorView rowToken;         // [R] i32
  TensorView groupIndex;       // [R] i32
  TensorView slotRow;          // [T, k] i32
  TensorView xq, xqScales;     // [R, H] fp8, [R, ceil(H/128)] f32
  TensorView h;                // [R, 2I] bf16
  TensorView hq, hqScales;     // [R, I] fp8, [R, ceil(I/128)] f32
  TensorView y;                // [R, H] bf16
  // The shared experts (absent when the layer has none).
  TensorView sharedXq, sharedXqScales;  // [T, H] fp8, [T, ceil(H/128)] f32
  TensorView sharedH;                   // [T, 2Is] bf16
  TensorView sharedHq, sharedHqScales;  // [T, Is] fp8, [T, ceil(Is/128)] f32
  TensorView sharedOut;                 // [T, H] bf16 (f32 also works)
  // A queued device's verdicts (ExecContext::flagWords); absent on the CPU.
  TensorView flags;                     // [kFlagWordsAllocated] i32 on the device
};

enum MoeStage { kStageRouter, kStageRoute, kStageLayout, kStageDispatch, kStageGemm1, kStageSwiglu, kStageGemm2, kStageShared, kStageCombine, kNumStages };

struct MoeForwardArgs {
  TensorView x;        // [T, H] f32 or bf16
  TensorView gate;     // [E, H] f32 or bf16: the router
  TensorView bias;     // [E] f32 or none: the score-correction bias
  RouteArgs routing;   // options only; its tensors are filled in from the workspace
  int64_t align = 1;   // contiguous layout alignment
  bool masked = false;            // the masked layout instead of the contiguous one
  int64_t maxRowsPerExpert = 0;   // masked: Mmax (>= T: an expert can receive every token)
  ExpertWeights w13;   // [E, 2I, H] in shards: gate then up
  ExpertWeights w2;    // [E, H, I] in shards
  ExpertWeights sharedW13;  // [1, 2Is, H] or empty
  ExpertWeights sharedW2;   // [1, H, Is] or empty
  MoeWorkspace ws;
  TensorView out;      // [T, H] bf16 or f32 (output)
  double* stageSeconds = nullptr;  // [kNumStages] (output, optional): wall time of each stage
  // Expert parallelism: this rank's slice of the experts (w13 and w2 hold
  // only those) and the transport; nullptr for a single-process layer. The
  // forward then gains its exchange steps (core/ep_exchange.h): route ->
  // dispatch -> the rank's experts on the rows it received -> combine ->
  // the returned rows summed in rank order (+ shared experts). The
  // workspace's xq then holds the T tokens quantized once; the received
  // rows' layout lives in the shard's buffers.
  EpShard* ep = nullptr;
  // A token's output bits independent of the other tokens of the call: every
  // GEMM (router, experts, shared) pinned to one path per row (ops.h).
  bool batchInvariant = false;
};

// Backend::forward calls this.
Status moeForward(Backend& backend, const MoeForwardArgs& args, ExecContext& ctx);

// The weights a forward reads before the router has chosen the routed
// experts, in the order it reads them: the router's gate and bias, then the
// shared experts' (which the CPU's experts region runs first). Known before
// the forward's arguments are checked, so a backend can start their memory
// stream early.
std::vector<TensorView> moeForwardFirstReads(const TensorView& gate, const TensorView& bias, const ExpertWeights& sharedW13,
                                             const ExpertWeights& sharedW2);

// The expert-parallel forward's first collective step taken by a rank that
// failed before it could start one (bad input found in TypeScript): the
// other ranks fail this forward with kEpPeer naming `error`, and this rank
// returns `error`.
Status epFailForward(EpShard& shard, const Status& error, int64_t hidden, int64_t topK);

}  // namespace moe
