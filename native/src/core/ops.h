// The plain argument structs that cross from the addon into a backend, one per
// operation. Every tensor is a TensorView; shapes are validated by the
// backend (and, before that, by the TypeScript layer).
#pragma once

#include <vector>

#include "core/tensor.h"

namespace moe {

enum class ScaleFormat { kF32, kUE8M0 };

// Per-token 1x128 quantization of activations, or 128x128 block quantization
// of weights (SPEC.md, "Quantization").
struct QuantizeArgs {
  TensorView x;       // [M, K] f32 or bf16, K-major
  TensorView q;       // [M, K] fp8_e4m3 (output)
  TensorView scales;  // [M, ceil(K/128)] (activations) or [ceil(M/128), ceil(K/128)] (weights), f32 (output)
  ScaleFormat scaleFormat = ScaleFormat::kF32;
};

// x = q * s with the scale layout told by `blockRows` (1 for activations, 128 for weights).
struct DequantizeArgs {
  TensorView q;       // [M, K] fp8_e4m3
  TensorView scales;  // [ceil(M/blockRows), ceil(K/128)] f32
  int64_t blockRows = 1;
  TensorView out;     // [M, K] f32 or bf16 (output)
};

// D = A * B^T with 1x128 scales on A and 128x128 scales on B (SPEC.md, "FP8 GEMM").
struct GemmFp8Args {
  TensorView a;        // [M, K] fp8_e4m3, K-major
  TensorView aScales;  // [M, ceil(K/128)] f32
  TensorView b;        // [N, K] fp8_e4m3, K-major
  TensorView bScales;  // [ceil(N/128), ceil(K/128)] f32
  TensorView d;        // [M, N] bf16 or f32 (output)
  // Batch invariance (the layer's batchInvariant): one kernel path and
  // reduction order per row at every M, so that a row's bits do not depend on
  // the rows computed with it.
  bool batchInvariant = false;
};

constexpr int64_t kQuantGroup = 128;  // channels per scale group (K direction)
constexpr int64_t kWeightBlockRows = 128;  // rows per weight scale block (N direction)

}  // namespace moe

namespace moe {

// ---- The MoE layer's operations (SPEC.md, "Routing" and "Dispatch layout, dispatch, combine") ----

enum class Scoring { kSoftmax, kSigmoid };

struct RouteArgs {
  TensorView logits;   // [T, E] f32 or bf16
  TensorView bias;     // [E] f32, or data == nullptr for none (sigmoid only; selection only)
  Scoring scoring = Scoring::kSoftmax;
  int64_t topK = 1;
  int64_t numGroups = 1;    // E % numGroups == 0
  int64_t topKGroups = 1;   // 1 <= topKGroups <= numGroups
  bool renormalize = false;
  float scale = 1.0f;
  TensorView ids;      // [T, topK] i32 (output); -1 where fewer than topK experts can be selected
  TensorView weights;  // [T, topK] f32 (output); 0 where ids is -1
};

// The contiguous layout: expert e's rows start at offsets[e] (a multiple of
// align) and span roundUp(count_e, align) rows; within an expert rows follow
// token order, then slot order. The masked layout: rows [e * maxRows, e * maxRows + count_e).
struct LayoutArgs {
  TensorView ids;              // [T, k] i32, entries in [-1, E)
  int64_t numExperts = 0;      // E
  int64_t align = 128;         // contiguous layout: segment alignment
  bool masked = false;         // masked layout instead of contiguous
  int64_t maxRowsPerExpert = 0;  // masked layout: Mmax (rows per expert)
  TensorView tokensPerExpert;  // [E] i32 (output); = maskedM for the masked layout
  TensorView offsets;          // [E + 1] i32 (output): first row of each expert, then the row count
  TensorView rowToken;         // [capacity] i32 (output): token of each row, -1 for padding
  TensorView groupIndex;       // [capacity] i32 (output): expert of each row, -1 for padding
  TensorView slotRow;          // [T, k] i32 (output): row of each (token, slot), -1 where ids is -1
  // Rows actually used are offsets[E]; rows past it up to capacity are set to -1.
};

// Gather rows of x by rowToken (padding rows zero), optionally quantized 1x128.
struct DispatchArgs {
  TensorView x;         // [T, H] f32 or bf16
  TensorView rowToken;  // [R] i32, -1 for padding
  TensorView out;       // [R, H] x's dtype, or fp8_e4m3 when quantizing (output)
  TensorView scales;    // [R, ceil(H/128)] f32 when quantizing (output), else data == nullptr
  ScaleFormat scaleFormat = ScaleFormat::kF32;
};

// out = silu(gate) * up, h = [gate | up] per row, computed in f32, optionally quantized 1x128.
struct SwigluArgs {
  TensorView h;         // [R, 2I] f32 or bf16
  TensorView out;       // [R, I] f32 or bf16, or fp8_e4m3 when quantizing (output)
  TensorView scales;    // [R, ceil(I/128)] f32 when quantizing (output), else data == nullptr
  ScaleFormat scaleFormat = ScaleFormat::kF32;
};

// out[t] = shared[t] + sum_j w[t, j] * y[slotRow[t, j]] over slots with slotRow >= 0, in f32, slot order.
struct CombineArgs {
  TensorView y;         // [R, H] f32 or bf16
  TensorView slotRow;   // [T, k] i32
  TensorView weights;   // [T, k] f32
  TensorView shared;    // [T, H] f32 or bf16, or data == nullptr for none
  TensorView out;       // [T, H] f32 or bf16 (output)
};

// Grouped GEMMs. Contiguous: D[r] = A[r] * B[groupIndex[r]]^T, zero where groupIndex[r] == -1.
// Masked: D[g, m] = A[g, m] * B[g]^T for m < maskedM[g], zero beyond.
// Where each group's weights are when they do not lie in one [G, N, K]
// tensor: expert weights mapped from a checkpoint sit one expert per shard,
// and one call over all of them instead of one per shard saves a parallel
// region per expert (a decode step at E = 256 ran ~2x slower without it).
// The call's b and bScales (w13, w13Scales) are then group 0's, [1, N, K]
// and [1, ceil(N/128), ceil(K/128)], for the shapes; group g's are here.
struct GroupTable {
  std::vector<const uint8_t*> b;      // [G]: group g's [N, K] fp8_e4m3
  std::vector<const float*> bScales;  // [G]: group g's [ceil(N/128), ceil(K/128)] f32
};

struct GroupedGemmFp8Args {
  TensorView a;           // contiguous: [R, K]; masked: [G, Mmax, K]; fp8_e4m3
  TensorView aScales;     // contiguous: [R, ceil(K/128)]; masked: [G, Mmax, ceil(K/128)]; f32
  TensorView b;           // [G, N, K] fp8_e4m3
  TensorView bScales;     // [G, ceil(N/128), ceil(K/128)] f32
  TensorView groupIndex;  // contiguous: [R] i32 in [-1, G); masked: data == nullptr
  TensorView maskedM;     // masked: [G] i32 in [0, Mmax]; contiguous: data == nullptr
  TensorView d;           // contiguous: [R, N]; masked: [G, Mmax, N]; bf16 or f32 (output)
  // Contiguous: b holds groups [groupOffset, groupOffset + G) of a larger set
  // (weights over 4 GiB live in several shards); groupIndex values are global.
  int64_t groupOffset = 0;
  // Contiguous: every group's rows start at a multiple of this many rows (the
  // dispatch layout's align; padding rows -1), so that a device kernel may
  // give a whole block of rows one group. 1: nothing promised.
  int64_t segmentAlign = 1;
  // Masked: rows per group on average, a tile-size hint for a device (0: unknown).
  int64_t expectedRows = 0;
  bool batchInvariant = false;  // as GemmFp8Args's
  // Contiguous layout, backends with OpKind::kGroupTable: the groups' weights (see GroupTable).
  const GroupTable* groupTable = nullptr;
  // Contiguous layout, backends with OpKind::kSharedExpert, optional: one
  // more product in the same call, sharedD = sharedA * sharedB^T (the shared
  // expert's, as a dense gemmFp8 gives it), so that its weights stream in
  // the same parallel work as the groups'. sharedA.data == nullptr: none.
  TensorView sharedA, sharedAScales;  // [S, K] fp8_e4m3, [S, ceil(K/128)] f32
  TensorView sharedB, sharedBScales;  // [N, K] fp8_e4m3, [ceil(N/128), ceil(K/128)] f32
  TensorView sharedD;                 // [S, N], d's dtype (output)
};

// The routed experts' first half, fused (a backend may lack it: see
// OpKind::kExpertUp): for every contiguous-layout row r of an expert,
//   h = xq[rowToken[r]] * w13[groupIndex[r]]^T   (bf16, as groupedGemmFp8)
//   hq[r], hqScales[r] = fp8 1x128 of silu(h[:I]) * h[I:]   (as swiglu)
// Bit-identical to dispatch (of the tokens quantized once), groupedGemmFp8
// and swiglu, without writing the gathered rows or h to memory: the GEMM
// reads each expert's token rows in place and h stays in per-thread scratch.
struct ExpertUpArgs {
  TensorView xq, xqScales;   // [T, H] fp8_e4m3, [T, ceil(H/128)] f32: the tokens quantized 1x128
  TensorView rowToken;       // [R] i32 in [-1, T): the token of each row
  TensorView groupIndex;     // [R] i32: -1 or a group of w13 (global index, see groupOffset)
  TensorView w13, w13Scales; // [G, 2I, H] fp8_e4m3, [G, ceil(2I/128), ceil(H/128)] f32
  int64_t groupOffset = 0;   // w13 holds groups [groupOffset, groupOffset + G)
  TensorView hq, hqScales;   // [R, I] fp8_e4m3, [R, ceil(I/128)] f32 (output)
  // Optional output: wall-clock seconds of the call spent in SwiGLU (summed
  // over threads, divided by the threads that shared the work).
  double* swigluSeconds = nullptr;
  bool batchInvariant = false;  // as GemmFp8Args's
  // Backends with OpKind::kGroupTable: the groups' weights (see GroupTable).
  const GroupTable* groupTable = nullptr;
  // Backends with OpKind::kSharedExpert, optional: the shared expert as one
  // more group whose rows are the T tokens, sharedHq = fp8 1x128 of
  // swiglu(xq * sharedW13^T), bit-identical to gemmFp8 and swiglu on xq.
  // sharedW13.data == nullptr: none.
  TensorView sharedW13, sharedW13Scales;  // [2I, H] fp8_e4m3, [ceil(2I/128), ceil(H/128)] f32
  TensorView sharedHq, sharedHqScales;    // [T, I] fp8_e4m3, [T, ceil(I/128)] f32 (output)
};

// The routed experts' two halves as one operation where a backend can
// (OpKind::kExpertChain): expertUp, then the contiguous groupedGemmFp8 of
// its output by w2, bit-identical to the two calls, with each expert's
// second GEMM free to start once its own first half is done.
struct ExpertChainArgs {
  ExpertUpArgs up;
  // Contiguous layout over up's rows: a, aScales = up.hq, up.hqScales, the
  // same groupIndex, groupOffset and groupTable; with up's shared expert,
  // sharedA, sharedAScales = up.sharedHq, up.sharedHqScales.
  GroupedGemmFp8Args down;
  // Optional output: wall-clock seconds of the call spent in the second
  // GEMM (summed over threads, divided by the threads that shared the work).
  double* downSeconds = nullptr;
};

// logits = x * w^T in f32: the router's dense projection.
struct RouterLogitsArgs {
  TensorView x;       // [T, H] f32 or bf16
  TensorView w;       // [E, H] f32 or bf16
  TensorView logits;  // [T, E] f32 (output)
  bool batchInvariant = false;  // as GemmFp8Args's: one reduction order per token at every T
};

// routerLogits and quantizeActivations of the same x in one pass where the
// backend can: the CPU's AMX router quantizes each block of token rows while
// they are in cache, instead of reading x from memory a second time.
// Bit-identical to the two operations.
struct RouterQuantizeArgs {
  RouterLogitsArgs router;
  QuantizeArgs quantize;  // quantize.x is router.x; activations (1x128)
  // Optional output: wall-clock seconds of the call spent quantizing (summed
  // over threads, divided by the threads that shared the work).
  double* quantizeSeconds = nullptr;
};

}  // namespace moe
