// Internal interface between the fp8 GEMM drivers (gemm_fp8.cpp: blocking,
// threading, dispatch; gemm_fp8_bf16.cpp: the AVX512_BF16 path) and their
// per-ISA kernels (gemm_fp8_avx512.cpp, gemm_fp8_avx2.cpp,
// gemm_fp8_portable.cpp, gemm_fp8_avx512bf16.cpp, gemm_fp8_amx.cpp). Not part
// of the public API.
//
// Each ISA file is compiled with `#pragma GCC target(...)` and exports exactly
// one constant-initialized KernelSet object (no code runs at load time, so
// linking the AVX-512 file is safe on a machine without AVX-512; only calling
// through its pointers is not).
//
// Conventions shared by every kernel:
// - "packed value" = fp8 value * its scale(s), as f32; the scales are folded in
//   while decoding, so the inner loops are plain f32 FMAs over all of K.
// - k0 (the first K index of a block) is a multiple of 128 and every length in
//   K is a multiple of 16 (SPEC: K % 16 == 0), so a 16-wide chunk never
//   straddles a scale group.
// - Functions that read fp8 return true when they met a NaN code (0x7F/0xFF).
#pragma once

#include <cstdint>

namespace moe::cpu::fp8gemm {

// K block of the packed path: a multiple of 128 (whole scale groups) and the
// row stride of a packed A block, a compile-time constant so the microkernel
// addresses all mr rows of A from one pointer (row i at byte offset
// i * kKc * 4). 256 floats of an A micro-panel (14 rows: 14 KiB) plus one B
// micro-panel (256 x 32 floats: 32 KiB) stay near L1 (48 KiB).
constexpr int64_t kKc = 256;

constexpr int kMaxMr = 16;  // upper bound of KernelSet::mr over all ISAs

// Where a microkernel puts its tile: back into the f32 accumulator tile c
// (more K blocks follow), or, on the last K block, straight into D as f32 or
// bf16, which saves a pass over c (at K = 512 that pass costs ~10%).
enum class TileOut { kAccumulator, kF32, kBf16 };

// tile = A[mr, kc] * B[kc, nr] (+ c[mr, nr] when accumulate), written to c
// (kAccumulator) or to d (kF32: float, kBf16: uint16_t):
//   a: [mr, kKc] packed rows (row stride kKc floats), only the first kc used
//   b: [kc, nr] packed panel, nr-interleaved
//   c: [mr, ldc] f32 accumulator tile; d: [mr, ldd] output
using MicroKernel = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                             bool accumulate, TileOut out, void* d, int64_t ldd);

struct KernelSet {
  const char* name;
  int mr;  // most rows of a micro-tile (a tile may have fewer: micro[1..mr])
  int nr;  // columns of a micro-tile = width of one packed B panel; divides 128
  // The streaming path (scaleForStream + streamRows) takes M <= streamMaxM,
  // the packed path (packA, packB, micro) larger M: where each ISA's
  // measured crossover lies (see its file).
  int streamMaxM;

  // dst[r, k] = fp8(src[r, k0 + k]) * scales[r, (k0 + k) / 128] for r < rows,
  // k < kc.   src: [rows, lds] fp8; scales: [rows, ldScales]; dst: [rows, ldd].
  bool (*packA)(const uint8_t* src, int64_t lds, const float* scales, int64_t ldScales, int64_t rows,
                int64_t k0, int64_t kc, float* dst, int64_t ldd);

  // One B panel: dst[k, j] = fp8(src[j, k0 + k]) * scaleRow[(k0 + k) / 128]
  // for j < rows (<= nr; rows rows..nr-1 are written as zeros), k < kc.
  // All rows of a panel lie in one 128-row scale block, hence one scale row.
  //   src: [rows, lds] fp8; dst: [kc, nr] f32.
  bool (*packB)(const uint8_t* src, int64_t lds, const float* scaleRow, int64_t rows, int64_t k0,
                int64_t kc, float* dst);

  MicroKernel micro[kMaxMr + 1];  // micro[h] computes h rows, 1 <= h <= mr

  // Small-M path. Prepares A for streamRows against one 128-row block of B:
  // dst[m, k] = src[m, k] * scaleRow[k / 128] * (the factor streamRows' own
  // fp8 decode leaves out), each row's k permuted within 32-k chunks where
  // the kernel's decode lays B out that way (AVX2).
  //   src, dst: [rows, ld] f32; scaleRow: [ceil(K/128)].
  void (*scaleForStream)(const float* src, int64_t rows, int64_t K, int64_t ld,
                         const float* scaleRow, float* dst);

  // out[m, j] = sum_k a[m, k] * fp8(b[j, k]) for m < rows (any count: under
  // batchInvariant every M streams), j < nRows, with a prepared by
  // scaleForStream. Reads each B row from memory once per call (or per block
  // of A rows). A row's bits depend on K only, not on `rows` or nRows.
  //   a: [rows, lda] f32; b: [nRows, ldb] fp8; out: [rows, ldo] f32.
  bool (*streamRows)(const float* a, int64_t lda, int64_t rows, const uint8_t* b, int64_t ldb,
                     int64_t nRows, int64_t K, float* out, int64_t ldo);

  // d[r, j] = c[r, j] for r < rows, j < cols, converted to bf16 (round to
  // nearest even, NaN stays NaN) when `bf16`.   c: [rows, ldc] f32;
  // d: [rows, ldd] f32 or bf16.
  void (*storeTile)(const float* c, int64_t ldc, int64_t rows, int64_t cols, void* d, int64_t ldd,
                    bool bf16);

  // Machine-peak probe: `iters` rounds of independent FMA chains with this
  // ISA's widest vectors. Returns the flops done; writes a result to *sink.
  double (*fmaBurn)(int64_t iters, float* sink);
};

extern const KernelSet kAvx512Kernels;
extern const KernelSet kAvx2Kernels;
extern const KernelSet kPortableKernels;

// The set chosen by cpuFeatures() (and so by MOE_CPU_ISA).
const KernelSet& selectedKernels();

// ---- AVX512_BF16 path (gemm_fp8_avx512bf16.cpp; call only when gemmUsesAvx512Bf16()) ----
//
// As on AMX: e4m3 -> bf16 is exact and so is a product of two bf16 in f32;
// VDPBF16PS adds two such products per f32 lane at twice the FMA rate. The
// block scales cannot be folded into bf16 values (that would round them), so
// each 128-wide K group is summed unscaled and then promoted:
// acc += partial * sa[m, g] * sb[n / 128, g] (f32 FMA), as DeepGEMM does.
// K is padded with zeros to whole groups (Kp = 128 * ceil(K/128)).
//
// Three kernels (gemm_fp8.cpp picks one by M, gemm_fp8_bf16.cpp threads them):
// - dot (M <= kBf16DotMaxM, GEMV and the smallest batches): B's fp8 rows
//   streamed straight from memory, decoded in registers and dotted with all M
//   rows of A along K (lanes along k, summed at the end): no packing at all.
// - row lanes (larger M): the rows of A in the 16 lanes of one to three zmm
//   (D^T is computed; up to M = kBf16HalfLaneMaxM 8 rows of two k-pairs
//   each in one zmm, to kBf16TwoHalfLaneMaxM two such zmm, at M = 21..26
//   three; more rows in lane groups
//   of 2 or 3 zmm that share each decoded B block, and above kBf16LaneMaxM
//   rows tiles of A, one call each), B decoded per block of rows into L1
//   in its natural order (no transpose) and broadcast pair by pair; one
//   promotion per 64 k-pairs and no horizontal sums, but a zmm costs the
//   same whatever rows it holds; a few rows past whole zmm (the tail) are
//   dotted along k against the same decoded rows, as the dot kernel dots
//   them.
// - panel (batchInvariant, any M): B decoded once per K block into bf16
//   panels of 32 columns in VNNI order (dword [k-pair][column]) and reused by
//   every row of A; a 4 x 64 register tile of VDPBF16PS with A's bf16 pairs
//   broadcast.
//
// Batch invariance: in each kernel an output element's K reduction order is
// fixed by K alone (groups in order; inside a group the same lanes, pairs and
// K blocks whatever the M or N blocking and thread count), so a row's bits do
// not depend on which or how many other rows share its call, as long as the
// same kernel runs (the row-lane kernel's tail rows count as the dot
// kernel's: they do its operations in the same order; 8 rows of two k-pairs
// per zmm are a kernel of their own).

constexpr int64_t kBf16Group = 128;  // K per scale group (= per promotion)
constexpr int kBf16Mr = 4;           // rows of a panel micro-tile (4 x 64: 16 partial zmm)
constexpr int kBf16Nr = 32;          // columns of a panel (two zmm of 16 f32 lanes)
// K block of the panel kernel (a multiple of kBf16Group): a B panel [kc/2][32]
// dwords is 32 KiB (L1), a block of nc columns nc KiB (L2).
constexpr int64_t kBf16Kc = 512;
// Where the kernels switch, measured on this AMD EPYC (Zen 5, 2026-12-07)
// with the old and new code interleaved in one process: streaming wins while
// it decodes 64 bytes for few enough rows (M = 1, 2; a tie at 4); the
// row-lane kernel from M = 5 at every larger M: against the panel kernel
// (2 threads, weights from memory, CPU time) 0.61-0.90x at M = 20..64 (four
// DeepSeek-V3 shapes), 0.89-0.99x at 72, 0.82-0.92x at 80, 0.80-0.93x at 96,
// 0.87-0.95x at 128, 0.89-0.99x at 256 (seven shapes), 1.01-1.02x at 257
// (row tiles of 144 and 113), 0.94-0.96x at 512, 0.95-0.98x at 1024 (three
// shapes): the panel's transposing decode of B, not overlapped with its
// products, costs more than the idle lanes.
constexpr int kBf16DotMaxM = 4;  // the dot kernel takes M <= this

// Rows of A per call of the row-lane kernel (its A pass block and promoted
// sums sized for L2): up to 3 zmm of rows in one lane group, more in several
// groups sharing each decoded B block; the driver cuts larger M into
// near-equal row tiles of whole zmm.
constexpr int kBf16LaneMaxM = 256;
constexpr int kBf16LaneNb = 16;    // most B rows the row-lane kernel decodes at a time (its register tile)
// K block of the row-lane kernel (a multiple of 128): a lane group's A block
// [kc / 2, 16 MZ] dwords (MZ <= 3 zmm of rows: 8 to 24 KiB) and two decoded
// B blocks [NB, kc] bf16 (one in use, the next being decoded; NB <=
// kBf16LaneNb) stay in L1.
constexpr int64_t kBf16LaneKc = 256;
// Rows past the last whole zmm of rows (the tail) that the row-lane kernel
// computes as the dot kernel does (lanes along k), from the B block it decoded for
// the lanes, instead of in one more zmm of mostly empty lanes: a tail row
// costs ~1/16 of a zmm's products and a promotion per 4 of them (lanes along
// k), ~6% of the zmm's time. Grouped GEMM, 128 experts of M rows each,
// weights from memory, 2 threads, against one more zmm (alternating): at
// DeepSeek-V3's expert shapes 1024 x 1792 and 1792 x 512, M = 17 0.52-0.70x
// the time, 18 0.72-0.74x, 20 0.78x, 22 0.86-0.89x, 24 0.88x and 1.00x
// (where the two cost the same).
constexpr int kBf16LaneTailMax = 8;
// A zmm of the row-lane kernel holds 16 / P rows of A, P consecutive k-pairs
// of each (lane P r + q: row r, pair P s + q at step s), against P pairs of
// a B row broadcast to every group of P lanes; each row's P lane sums are
// added at the end. P = 2 halves the products of a call of up to 8 rows
// (against 16 lanes of which half stay empty). Against the blocked dot
// kernel it replaced at M = 5..11 (B decoded per 12 rows, lanes along k,
// a promotion per 4 products), 128 experts of M rows, weights from memory,
// one thread, alternating: at 1024 x 1792 M = 5 0.91x the time, 6 0.89x,
// 8 0.73x, 11 0.98x; at 1792 x 512 1.07x, 0.98x, 0.80x, 0.92x.
constexpr int kBf16HalfLaneMaxM = 11;  // P = 2 (8 rows in one zmm, and a tail) up to this M
// Past one zmm of 16 rows and a tail of 4 (M = 21..24), P = 2 again: three
// zmm of 8 rows, the same products as one zmm of 16 rows and a tail of 8 (a
// tail row costs ~1/8 of a zmm), but each B broadcast (a qword) serves the
// three zmm, and no tail pass. 2 threads, weights from memory, 2112 x 7168
// and 7168 x 2048, against one zmm and a tail (CPU time, alternating): M = 21
// 0.88-0.99x, 22 0.83-0.88x, 23 0.80-0.82x, 24 0.80-0.84x; two zmm of 16
// rows (no tail) 0.85-1.25x; at M = 20 three zmm ran 1.0-1.12x. (At M = 12..16
// two zmm of 8 rows ran 1.0-1.12x in that kernel; after its decoder and tile
// changes they pay, see kBf16TwoHalfLaneMaxM.) At M = 25, 26 three zmm and a
// tail of 1, 2 rows against two
// zmm of 16 rows: one thread at DeepSeek-V3's expert shapes (1024 x 1792,
// 1792 x 512, weights from memory) 0.79-0.97x / 0.84-1.0x the time, 2
// threads at 2112 x 7168, 7168 x 2048 and 4096 x 7168 0.86-0.99x /
// 0.92-1.03x; at 27 0.98-1.13x, at 28 1.06-1.13x.
constexpr int kBf16PairLaneMinM = 21, kBf16PairLaneMaxM = 26;
// At M = 12..16, two zmm of 8 rows of two k-pairs instead of one zmm of 16
// rows: the same products, but one zmm of 16 rows issues a broadcast load per
// VDPBF16PS (38 memory operations per 32 VDPBF16PS with the decode's, at ~2
// per cycle: a ceiling of ~84% that it nearly reaches), while a qword
// broadcast feeds both zmm. Against one zmm (with its short-block tiles and
// pointer walk), one thread, L2/L3 data, alternating, 2112 x 7168 and
// 7168 x 2048: 0.93-0.96x the time with 128-row tasks, 0.95-0.97x with
// 64-row tasks (through the addon, 2 threads, weights from memory: M = 12..16
// 0.89-0.97x); against 8 B rows per block instead of 12, 0.99-1.01x.
constexpr int kBf16TwoHalfLaneMaxM = 16;
struct Bf16LaneShape {
  int phases;     // P: k-pairs per row in a zmm (1 or 2)
  int64_t width;  // rows held in lanes (16 / P per zmm); rows past it are the tail
};
// Past two zmm of rows a third one costs less than a tail of 5..8 rows: one
// group of three zmm against 8 B rows runs ~1.2x the products per second of
// two against 12 (M = 48 against 32, one thread), while a tail row costs
// ~1/4 of a zmm's time there. M = 38..40 as three zmm against two and a
// tail, weights from memory, alternating: one thread at 1024 x 1792 and
// 1792 x 512 0.85-0.97x the time, 2 threads at 2112 x 7168, 7168 x 2048 and
// 4096 x 7168 0.91-1.0x; at 37 0.89-1.09x (so: not there).
constexpr int kBf16LaneTailMaxAtTwoZmm = 5;
// The row-lane kernel's shape for `rows` rows (<= kBf16LaneMaxM): whole zmm,
// the last one padded with zero rows unless its rows fit the tail.
constexpr Bf16LaneShape bf16LaneShape(int64_t rows) {
  if (rows <= kBf16HalfLaneMaxM) return {2, 8};
  if (rows <= kBf16TwoHalfLaneMaxM) return {2, 16};
  if (rows >= kBf16PairLaneMinM && rows <= kBf16PairLaneMaxM) return {2, 24};
  const int64_t whole = rows / 16 * 16;
  const int64_t tailMax = whole == 32 ? kBf16LaneTailMaxAtTwoZmm : kBf16LaneTailMax;
  return {1, whole > 0 && rows - whole <= tailMax ? whole : whole + 16};
}

// How the row-lane kernel cuts the lane rows of A (bf16LaneShape) into lane
// groups, each a register tile of MZ zmm of rows (16 MZ lanes) that shares
// the decoded B block of NB rows: up to 3 zmm, one group with the widest B
// block the 32 zmm allow (NB = 16, 12, 8 for MZ = 1..3); above, near-equal
// groups of 2 or 3 zmm against blocks of 8 B rows (4 zmm: 2 + 2). Never 1
// zmm (8 chains of partial sums would wait on the instruction's latency).
// One group of 4 zmm against 6 B rows (its A block per K block, 32 KiB,
// and the two decoded B blocks overfill L1) took 1.09-1.11x the time of
// 2 + 2 against 8 at 1792 x 512, M = 57..72, and 0.99-1.05x at 1024 x 1792
// (one thread, weights from memory).
// Groups of up to 4 zmm against 6 B rows (fewer loads per product: 8 zmm as
// 4 + 4, 0.42 loads per VDPBF16PS against 0.5 for 3 + 3 + 2) ran 1.0-1.045x
// the time at M = 96..160 (one thread, four shapes, alternating): the loads
// are not what binds.
struct Bf16LaneGroups {
  static constexpr int kMax = (kBf16LaneMaxM + 31) / 32;
  int nb = 0;      // B rows per decoded block
  int count = 0;   // lane groups
  int zmm = 0;     // zmm of lane rows in all (rows past M as zeros)
  int z0[kMax + 1] = {};  // group i: zmm [z0[i], z0[i + 1]) of the rows
  constexpr explicit Bf16LaneGroups(int64_t rows) {
    const Bf16LaneShape shape = bf16LaneShape(rows);
    zmm = static_cast<int>(shape.width * shape.phases / 16);
    count = zmm <= 3 ? 1 : (zmm + 2) / 3;
    nb = count > 1 ? 8 : zmm == 1 ? 16 : zmm == 2 ? 12 : 8;
    for (int i = 0; i <= count; ++i) z0[i] = zmm * i / count;
  }
  int width(int i) const { return 16 * (z0[i + 1] - z0[i]); }  // lanes of group i
};

// Scratch of the row-lane kernel for `rows` rows of A and a task of nRows B
// rows: two decoded B blocks of kBf16LaneNb rows, the task's promoted sums
// [nRows rounded up to whole blocks, the lanes: 16 zmm] f32 and the
// tail's, per block of NB B rows [kBf16LaneTailMax][NB][16] f32.
constexpr size_t kBf16LaneScratchBytes(int64_t rows, int64_t nRows) {
  return static_cast<size_t>(2 * kBf16LaneNb * kBf16LaneKc * 2 + (nRows + kBf16LaneNb) * Bf16LaneGroups(rows).zmm * 64 +
                             (nRows + kBf16LaneNb) * kBf16LaneTailMax * 64);
}

// tile = A[mr, kc] * B[kc, 64] (micro) or B[kc, 32] (micro32) over kc / 128
// whole groups, each promoted with its scales (+ c when accumulate), written
// to c (kAccumulator) or to d:
//   a: [mr, lda] bf16 (natural K order, at the block's first k)
//   b: [kc / 2, 32] dwords of bf16 pairs (bf16PackB), the second panel (micro) right after it
//   sa: [mr, ldsa] f32 at the block's first group; sb0, sb1: [kc / 128] f32 (the two panels' scale rows)
//   c: [mr, ldc] f32; d: [mr, ldd] f32 or bf16
// Per output element the operations and their order are the same in both.
using Bf16MicroKernel = void (*)(int64_t kc, const uint16_t* a, int64_t lda, const uint32_t* b, const float* sa,
                                 int64_t ldsa, const float* sb0, const float* sb1, float* c, int64_t ldc,
                                 bool accumulate, TileOut out, void* d, int64_t ldd);

struct Bf16KernelSet {
  // dst[r, k] = bf16(fp8(A row aRows[m0 + r] (or m0 + r), k)) for r < rows,
  // k < ldd (ldd a multiple of 128 >= K; k >= K as zeros).
  //   a: [*, K] fp8; aRows: [M] i32 or null; dst: [rows, ldd] bf16, 64-byte aligned rows.
  bool (*packA)(const uint8_t* a, const int32_t* aRows, int64_t m0, int64_t rows, int64_t K, int64_t ldd, uint16_t* dst);

  // One B panel: dst[p, j] = (bf16(B[j, k0 + 2p]), bf16(B[j, k0 + 2p + 1]))
  // for j < 32 (rows >= `rows` as zeros), p < kc / 2 (k >= K as zeros).
  //   b: [rows, K] fp8 (the panel's first row); dst: [kc / 2, 32] uint32, 64-byte aligned.
  bool (*packB)(const uint8_t* b, int64_t K, int64_t rows, int64_t k0, int64_t kc, uint32_t* dst);

  Bf16MicroKernel micro[kBf16Mr + 1];  // micro[h]: h rows x 64 columns, 1 <= h <= kBf16Mr
  // micro32[h]: h rows x 32 columns, 1 <= h <= 2 kBf16Mr: a tile's odd last
  // panel, two micro-panels' rows at a time (8 x 32 keeps 16 partial chains,
  // as micro does; 4 x 32 had 8 and ran at ~0.7x its rate).
  Bf16MicroKernel micro32[2 * kBf16Mr + 1];

  // out[m, j] = sum_g sa[m, g] * sb[g] * sum_{k in g} A[m, k] * fp8(b[j, k])
  // for m < rows (<= kBf16DotMaxM), j < nRows (all inside one 128-row scale block).
  //   a: [rows, lda] bf16 from packA (lda = Kp); sa: [rows, ldsa] f32; b: [nRows, K] fp8;
  //   sb: [ceil(K/128)] f32; out: [rows, ldo] f32.
  bool (*dotRows)(const uint16_t* a, int64_t lda, int64_t rows, const float* sa, int64_t ldsa, const uint8_t* b,
                  int64_t K, int64_t nRows, const float* sb, float* out, int64_t ldo);

  // The row-lane kernel's A operand, one lane group (Bf16LaneGroups) of
  // `rows` rows with P = `phases` pairs per row and zmm: dst[s, P r + q] =
  // the bf16 pair (a[r, 2p], a[r, 2p + 1]), pair p = P s + q, for the group's
  // ldl lanes (a multiple of 16; rows >= `rows` as zeros), s < lda / 2P.
  //   a: [rows, lda] bf16 from packA (64-byte aligned rows); dst: [lda / 2P, ldl] uint32, 64-byte aligned.
  void (*packRowLanes)(const uint16_t* a, int64_t lda, int64_t rows, int phases, int64_t ldl, uint32_t* dst);

  // The same product as dotRows for rows <= kBf16LaneMaxM, in the shape
  // bf16LaneShape(rows) (P, W): rows below W in the lanes of its lane groups
  // (Bf16LaneGroups), the tail rows W .. rows - 1 as dotRows computes them
  // (the same operations in the same order); B decoded once per block of
  // rows (Bf16LaneGroups::nb) and K block into scratch
  // (kBf16LaneScratchBytes(rows, nRows), 64-byte aligned). The nRowsAfter
  // rows of b after its nRows (the caller's next task on this thread; 0 at
  // B's end) may be requested, never read.
  //   lanes: the groups of A's first min(rows, W) rows one after another, group i [lda / 2P, width(i)]
  //   from packRowLanes; saT: the same, group i [lda / 128, width(i)] f32 (lane l: sa of row l / P, 0
  //   past rows); a: [rows, lda] bf16 from packA; sa: [rows, ldsa] f32 (the tail's operands).
  bool (*laneRows)(const uint32_t* lanes, const float* saT, const uint16_t* a, const float* sa, int64_t ldsa,
                   int64_t lda, int64_t rows, const uint8_t* b, int64_t K, int64_t nRows, int64_t nRowsAfter,
                   const float* sb, float* out, int64_t ldo, void* scratch);

  // Machine-peak probe: `iters` rounds of independent VDPBF16PS chains (zmm).
  // Returns the flops done (4 per f32 lane: two multiply-adds).
  double (*dotBurn)(int64_t iters, float* sink);
};

extern const Bf16KernelSet kAvx512Bf16Kernels;

// ---- AMX-BF16 path (gemm_fp8_amx.cpp; call only when gemmUsesAmx()) ---------
//
// e4m3 -> bf16 is exact (3 mantissa bits; every e4m3 exponent, subnormals
// included, is a normal bf16), products of two bf16 are exact in f32, and
// TDPBF16PS accumulates them in f32. The block scales are applied by
// promotion: the tiles accumulate one 128-wide K group, then
// acc += tile * sa[m, g] * sb[n / 128, g] in f32 (AVX-512), as DeepGEMM does.
//
// The operands are swapped: B (the big weight matrix, [N, K] K-major) is the
// tiles' row operand, so decoding it to bf16 needs no transpose; A, packed
// once per call, is the VNNI operand; the tiles hold D^T, transposed once
// when the block is written to D.

constexpr int64_t kAmxKStep = 32;   // K per TDPBF16PS
constexpr int64_t kAmxTileWords = 256;  // dwords (bf16 pairs) of one packed A tile: 16 k-pairs x 16 rows

// Packs A rows [16 * tile, 16 * tile + 16) (rows >= M as zeros) for the VNNI
// tile operand, into the group-major layout act[g][t][s][p][r] (g < groups,
// t < mTiles = ceil(M/16), s < 4 K steps of 32, p < 16 k-pairs, r < 16 rows):
// the dword (bf16(A[16 t + r, k]), bf16(A[16 t + r, k + 1])) (low half first)
// with k = 128 g + 32 s + 2p; k >= K as zeros (K steps wholly past K are not
// written). One group of a block's rows is then contiguous. With `rows`
// (may be null), row m of A is a's row rows[m] (a gather for free: the MoE
// layer's tokens are read in place rather than copied per expert first).
//   a: [M, K] fp8 (or [*, K] with rows: [M] i32); act: [groups][mTiles][4][16][16] uint32.
// Returns true when it met an fp8 NaN code.
bool amxPackA(const uint8_t* a, const int32_t* rows, int64_t M, int64_t K, int64_t tile, int64_t mTiles, uint32_t* act);

// What both AMX walks read and write: B, A packed once per call, D.
struct AmxOperands {
  const uint8_t* b;      // [N, K] fp8
  const float* sb;       // [ceil(N/128), groups]
  const uint32_t* act;   // amxPackA output of all tiles: [groups][mTiles][4][256]
  const float* saT;      // [groups][ldSaT]: sa transposed, 0 past M
  int64_t ldSaT;
  int64_t N, K, groups, mTiles;  // mTiles = ceil(M/16)
  char* d;               // D [M, N] (f32 or bf16)
  bool bf16;
};

// One output block D[m0 .. m0 + mEff, n0 .. n0 + nEff) over all of K.
struct AmxBlockJob : AmxOperands {
  int64_t m0, mEff;      // m0 % 16 == 0
  int64_t n0, nEff;      // n0 % 32 == 0; nEff <= kAmxNcMax
  uint16_t* wbuf;        // scratch: [2][roundUp(nEff, 32)][128] bf16, 64-byte aligned
  float* cbuf;           // scratch: [2][4][16][16] f32, 64-byte aligned
  float* acc;            // scratch: [roundUp(nEff, 32)][roundUp(mEff, 16)] f32, 64-byte aligned
};
constexpr int64_t kAmxNcMax = 128;
constexpr int64_t kAmxMcMax = 512;

// Loads this thread's tile configuration and runs the block. Returns true
// when it met an fp8 NaN code in B (the block then stops, D partly written).
bool amxRunBlock(const AmxBlockJob& job);

// Small-M form (M <= 32, one or two m-tiles): the task walks strips of 32 B
// rows over all of K, decoding one 128-wide group of the strip at a time into
// a small L1 buffer (double-buffered: the next group decodes while the tiles
// run), promoting the tiles into a 32 x M f32 accumulator and writing the
// strip to D at its end. B is read as 32 sequential row streams, prefetched a
// few groups ahead (and into the next strip), so the run is bound by B's bytes
// over the memory bandwidth rather than by per-block overheads.
struct AmxStripJob : AmxOperands {  // mTiles <= 2
  int64_t M;
  int64_t n0, n1;        // rows [n0, n1) of B: n0 % 32 == 0, n1 <= N
  uint16_t* wbuf;        // scratch: [2][32][128] bf16, 64-byte aligned
  float* cbuf;           // scratch: [2][4][16][16] f32, 64-byte aligned
  float* acc;            // scratch: [4][16][16] f32, 64-byte aligned
};
constexpr int64_t kAmxStripRows = 32;
constexpr size_t kAmxStripScratchBytes = (2 * 32 * 128) * 2 + (2 * 4 * 256) * 4 + (4 * 256) * 4;

// Loads this thread's tile configuration and runs the strips. Returns true
// when it met an fp8 NaN code in B (it then stops, D partly written).
bool amxRunStrips(const AmxStripJob& job);

// Machine-peak probe: `iters` rounds of 4 independent TDPBF16PS (16x16x32)
// on this thread (loads its tile configuration). Returns the flops done.
double amxBurn(int64_t iters, float* sink);

}  // namespace moe::cpu::fp8gemm
