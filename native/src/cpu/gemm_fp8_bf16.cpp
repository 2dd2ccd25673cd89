// The AVX512_BF16 path of the fp8 GEMM: blocking and threading around the
// kernels of gemm_fp8_avx512bf16.cpp (see gemm_fp8_kernels.h for the scale
// promotion and the three kernels).
//
// All kernels start from A packed once per call: [M, Kp] bf16 (Kp = K padded
// to whole 128-groups with zeros), its rows gathered through aRows on the way
// (the MoE layer's tokens are read in place), with sa gathered beside it.
//
// * Dot (every kernel but the panel): tasks are runs of B rows inside one 128-row
//   scale block, each thread taking a contiguous share of them in order
//   (parallelForInRuns); each streams its fp8 rows once from memory. At
//   M <= kBf16DotMaxM they go through the decode and the dot products with all
//   M rows in registers (no B packing: the run time is B's bytes over the
//   memory bandwidth); above, A is turned once into pairs across the 16
//   lanes of one to three zmm (packRowLanes; up to kBf16HalfLaneMaxM rows, 8
//   rows of two pairs in one zmm, to kBf16TwoHalfLaneMaxM two such, at M =
//   21..26 three; above 48 rows,
//   lane groups of 2 or 3 zmm, each its own block) and the row-lane kernel
//   decodes 16 to 8 B rows at a time (fewer the more zmm of rows: its
//   register tile; 8 for lane groups, each block serving every group) into a bf16 block in L1, the next
//   block's decode spread over the current block's products; up to
//   kBf16LaneTailMax rows past the last whole zmm stay in row form and are
//   dotted against the same decoded blocks. Above kBf16LaneMaxM rows, each
//   row tile of A is a task of its own for every run of B rows.
//
// * Panel (batchInvariant): D is cut into mc x nc tiles, one task each. A task walks
//   K in blocks of kBf16Kc: it decodes its nc B rows into bf16 panels once per
//   block (every row of the tile reuses them) and runs the 4 x 64 microkernel
//   over the tile, accumulating in an f32 tile [mc, nc]; the last K block
//   writes D directly. Decoding a panel costs about as much as 10 rows of
//   products, so with M <= mc (every expert segment of a decode step) B is
//   decoded exactly once per call.
#include <algorithm>
#include <atomic>
#include <cstdint>

#include "core/ops.h"
#include "core/tensor.h"
#include "cpu/gemm_fp8.h"
#include "cpu/gemm_fp8_kernels.h"
#include "cpu/tile_plan.h"
#include "cpu/gemm_fp8_problem.h"
#include "cpu/task_runs.h"
#include "cpu/thread_pool.h"
#include "cpu/thread_scratch.h"

namespace moe::cpu::fp8gemm {

namespace {

// Tile limits of the panel path: a B block [nc, kBf16Kc] bf16 = nc KiB and an
// A micro-panel (4 rows, 4 KiB) stay in L2 / L1; larger mc only saves B decodes.
constexpr int64_t kMcMax = 384;
constexpr int64_t kNcMax = 512;

// The caller's packed A and gathered sa; each pool thread's task scratch.
// Separate objects, as the caller is pool thread 0.
thread_local ThreadScratch t_packedA;
thread_local ThreadScratch t_laneA;
thread_local ThreadScratch t_task;

size_t alignUp64(size_t bytes) { return (bytes + 63) / 64 * 64; }

struct PackedA {
  const uint16_t* a;  // [M, lda] bf16
  int64_t lda;        // Kp
  const float* sa;    // [M, groups] f32
  // The row-lane kernel's form (else null): per row tile (RowTiles), A's
  // first min(rows, W) rows ((P, W) = bf16LaneShape(rows)) across the lanes of
  // its lane groups (packRowLanes) and their sa transposed beside it, 0 past
  // them; a tile's rows W .. (its tail) stay in the row form. Tile t's
  // blocks start at lane tiles.first(t) (16 ceil(M / 16) lanes in all).
  const uint32_t* lanes;  // tile t: groups of [lda / 2P, width(i)] bf16 pairs from lda / 2 * tiles.first(t)
  const float* saT;       // tile t: groups of [groups, width(i)] f32 from groups * tiles.first(t)
};

// The rows of A a kernel call takes: the row-lane kernel up to
// kBf16LaneMaxM (its A pass block and promoted sums sized for L2), so larger
// M is cut into near-equal row tiles of whole zmm, each its own task for
// every run of B rows (B is then decoded once per tile: ~1.1 ns per 64 bytes
// against ~70 ns of products for 256 rows); the other dot kernels all of M.
struct RowTiles {
  int64_t rows;   // rows per tile (the row-lane kernel's: a multiple of 16; the last tile may have fewer)
  int64_t count;  // tiles
  static RowTiles forLanes(int64_t M) {
    const int64_t rows = gemmRowTileRows(M);
    return {rows, ceilDiv(M, rows)};
  }
  int64_t first(int64_t t) const { return t * rows; }
  int64_t size(int64_t t, int64_t M) const { return std::min(rows, M - t * rows); }
};

// Packs all of A (parallel over row chunks) and gathers its scales.
bool packA(const Problem& p, PackedA* out, NanFlags& nan) {
  const Bf16KernelSet& ks = kAvx512Bf16Kernels;
  const int64_t lda = ceilDiv(p.K, kBf16Group) * kBf16Group;
  const size_t aBytes = alignUp64(static_cast<size_t>(p.M * lda) * 2);
  char* scratch = static_cast<char*>(t_packedA.get(aBytes + static_cast<size_t>(p.M * p.groups) * 4));
  if (scratch == nullptr) return false;
  auto* a = reinterpret_cast<uint16_t*>(scratch);
  auto* sa = reinterpret_cast<float*>(scratch + aBytes);
  constexpr int64_t kRowsPerTask = 16;
  ThreadPool::instance().parallelFor(ceilDiv(p.M, kRowsPerTask), [&](int64_t task, int) {
    const int64_t m0 = task * kRowsPerTask, rows = std::min(kRowsPerTask, p.M - m0);
    if (ks.packA(p.a, p.aRows, m0, rows, p.K, lda, a + m0 * lda)) nan.a.store(true);
    for (int64_t m = m0; m < m0 + rows; ++m)
      std::copy_n(p.sa + p.aRow(m) * p.groups, p.groups, sa + m * p.groups);
  });
  *out = PackedA{a, lda, sa, nullptr, nullptr};
  return true;
}

// The row-lane form of a packed A, from its row form: per row tile, each
// lane group (Bf16LaneGroups) its own block, one 16 x 16 transpose per 16
// rows and 32 k, parallel over 16-row chunks (at M = 128 and K = 7168 it
// writes 1.8 MiB); with P = 2 (one tile, one lane group) an 8 x 8 qword
// transpose per 8 rows and 32 k, parallel over zmm.
bool packRowLanes(const Problem& p, PackedA* a) {
  const RowTiles tiles = RowTiles::forLanes(p.M);
  const Bf16LaneShape pairs = bf16LaneShape(p.M);
  const bool paired = pairs.phases == 2;  // then one tile (M <= kBf16PairLaneMaxM) of one lane group
  // Lanes in all: P = 1 a tile's lane l holds its row l (whole zmm of 16 rows); P = 2 16 per zmm.
  const int64_t width = paired ? 16 * Bf16LaneGroups(p.M).zmm : ceilDiv(p.M, 16) * 16;
  const size_t lanesBytes = static_cast<size_t>(a->lda / 2 / pairs.phases * width) * 4;
  char* scratch = static_cast<char*>(t_laneA.get(lanesBytes + static_cast<size_t>(p.groups * width) * 4));
  if (scratch == nullptr) return false;
  auto* lanes = reinterpret_cast<uint32_t*>(scratch);          // see PackedA
  auto* saT = reinterpret_cast<float*>(scratch + lanesBytes);  // see PackedA
  const PackedA& rowForm = *a;
  ThreadPool::instance().parallelFor(width / 16, [&](int64_t chunk, int) {
    if (paired) {
      // Rows 8 chunk .. + 7 (those below the lane rows; the rest as zeros) in lanes 16 chunk .. + 15.
      const int64_t m0 = 8 * chunk, rows = std::min<int64_t>(8, pairs.width - m0);
      kAvx512Bf16Kernels.packRowLanes(rowForm.a + m0 * rowForm.lda, rowForm.lda, std::min(rows, p.M - m0), 2, width,
                                      lanes + 16 * chunk);
      for (int64_t g = 0; g < p.groups; ++g) {
        for (int64_t l = 0; l < 16; ++l) {
          const int64_t m = m0 + l / 2;
          saT[g * width + 16 * chunk + l] = m < std::min(pairs.width, p.M) ? rowForm.sa[m * p.groups + g] : 0.0f;
        }
      }
      return;
    }
    // 16 rows from m0.
    const int64_t m0 = 16 * chunk, t = m0 / tiles.rows, t0 = tiles.first(t), tileRows = tiles.size(t, p.M);
    const Bf16LaneShape shape = bf16LaneShape(tileRows);
    const int64_t laneEnd = t0 + std::min(tileRows, shape.width);  // past the tile's lane rows
    if (m0 >= laneEnd) return;  // the tile's tail: row form
    const Bf16LaneGroups groups(tileRows);
    int gi = 0;
    while (t0 + 16 * groups.z0[gi + 1] <= m0) ++gi;
    const int64_t lane0 = t0 + 16 * groups.z0[gi], ldl = groups.width(gi);  // the group's first lane (and row), its lanes
    const int64_t at = m0 - lane0;                                            // the chunk's first lane in the group
    kAvx512Bf16Kernels.packRowLanes(rowForm.a + m0 * rowForm.lda, rowForm.lda, std::min<int64_t>(16, laneEnd - m0), 1,
                                    ldl, lanes + rowForm.lda / 2 * lane0 + at);
    float* groupSaT = saT + p.groups * lane0;
    for (int64_t g = 0; g < p.groups; ++g) {
      for (int64_t l = 0; l < 16; ++l) {
        const int64_t m = m0 + l;
        groupSaT[g * ldl + at + l] = m < laneEnd ? rowForm.sa[m * p.groups + g] : 0.0f;
      }
    }
  });
  a->lanes = lanes;
  a->saT = saT;
  return true;
}

// ---- dot kernel ---------------------------------------------------------------

Status runDot(const Problem& p, const PackedA& a, Bf16Kernel kernel, NanFlags& nan) {
  const int threads = ThreadPool::instance().numThreads();  // scratch slots: inside a region a task runs as its region's thread
  // Layer, T = 512, whole blocks inside a region against 32-row tasks, weights evicted: 0.949-0.961x the time.
  const int64_t rowsPerTask = streamRowsPerTask(p.N);
  // The row-lane kernel runs each row tile of A against each run of B rows, tile by tile (a thread's
  // next task is then the rows after its current one, which its last blocks request).
  const RowTiles tiles = kernel == Bf16Kernel::kRowLanes ? RowTiles::forLanes(p.M) : RowTiles{p.M, 1};
  const int64_t nTasks = ceilDiv(p.N, rowsPerTask);
  const size_t outBytes = p.bf16 ? alignUp64(static_cast<size_t>(tiles.rows * rowsPerTask) * 4) : 0;
  const size_t kernelBytes = kernel == Bf16Kernel::kRowLanes ? kBf16LaneScratchBytes(tiles.rows, rowsPerTask) : 0;
  const size_t scratchBytes = outBytes + kernelBytes;
  std::atomic<bool> oom{false};
  parallelForInRuns(nTasks * tiles.count, threads, [&](int64_t task, int) {
    if (nan.any() || oom.load(std::memory_order_relaxed)) return;
    const int64_t t = task / nTasks, m0 = tiles.first(t), mRows = tiles.size(t, p.M);
    const int64_t n0 = task % nTasks * rowsPerTask, rows = std::min(rowsPerTask, p.N - n0);
    // f32 output goes straight to D; bf16 is rounded from a small f32 tile [mRows, rowsPerTask].
    char* scratch = nullptr;
    if (scratchBytes > 0 && (scratch = static_cast<char*>(t_task.get(scratchBytes))) == nullptr) {
      oom.store(true);
      return;
    }
    float* out = reinterpret_cast<float*>(p.dAt(m0, n0));
    int64_t ldo = p.N;
    if (p.bf16) {
      out = reinterpret_cast<float*>(scratch);
      ldo = rowsPerTask;
    }
    const Bf16KernelSet& ks = kAvx512Bf16Kernels;
    const uint8_t* b = p.b + n0 * p.K;
    const float* sb = p.sb + (n0 / kWeightBlock) * p.groups;
    // The rows after the task's: in a run, the task this thread takes next.
    const int64_t rowsAfter = p.N - n0 - rows;
    bool sawNan;
    if (kernel == Bf16Kernel::kRowLanes)
      sawNan = ks.laneRows(a.lanes + a.lda / 2 * m0, a.saT + p.groups * m0, a.a + m0 * a.lda, a.sa + m0 * p.groups,
                           p.groups, a.lda, mRows, b, p.K, rows, rowsAfter, sb, out, ldo, scratch + outBytes);
    else
      sawNan = ks.dotRows(a.a, a.lda, p.M, a.sa, p.groups, b, p.K, rows, sb, out, ldo);
    if (sawNan) nan.b.store(true);
    if (p.bf16) kAvx512Kernels.storeTile(out, ldo, mRows, rows, p.dAt(m0, n0), p.N, true);
  });
  return oom.load() ? outOfMemory() : Status::ok();
}

// ---- panel kernel ---------------------------------------------------------------

// A panel's decode and transpose cost about 10 rows of VDPBF16PS per B
// column; A rows are read in place.
constexpr TileCosts kPanelTileCosts{kMcMax, kNcMax, 10.0, 0.0};

// Where the panel of block column j (a multiple of 32) starts in the B block:
// panels of [kc / 2, 32] dwords, one after another.
int64_t panelOffset(int64_t j, int64_t kc) { return (j / kBf16Nr) * (kc / 2) * kBf16Nr; }

// One tile D[m0 .. m0 + mEff, n0 .. n0 + nEff) over all of K. Rows are cut
// into near-equal micro-panels of <= kBf16Mr rows, columns into pairs of
// panels (64 columns); the A micro-panel stays in L1 while the block's B
// panels stream from L2. An odd last panel is run for two micro-panels at a
// time (micro32 takes up to 2 kBf16Mr rows), as soon as the second of them
// is reached. On the last K block the microkernels write D directly, except a
// last micro-tile that is ragged (N tail): it goes through c.
void runPanelTile(const Problem& p, const PackedA& a, const TilePlan& plan, int64_t tile, uint32_t* bBlock, float* c,
                  NanFlags& nan) {
  const Bf16KernelSet& ks = kAvx512Bf16Kernels;
  const int64_t m0 = (tile / plan.nTiles) * plan.mc, n0 = (tile % plan.nTiles) * plan.nc;
  const int64_t mEff = std::min(plan.mc, p.M - m0), nEff = std::min(plan.nc, p.N - n0);
  const int64_t nPanels = ceilDiv(nEff, kBf16Nr), ldc = nPanels * kBf16Nr;
  const int64_t microPanels = ceilDiv(mEff, kBf16Mr);
  const TileOut direct = p.bf16 ? TileOut::kBf16 : TileOut::kF32;
  const int64_t lastJ0 = (nPanels - 1) / 2 * 2 * kBf16Nr;  // the last micro-tile's first column
  const int64_t directCols = ldc > nEff ? lastJ0 : nEff;     // columns the microkernels write to D
  const int64_t pairs = nPanels / 2;                          // micro-tiles of two panels per micro-panel
  const int64_t oddJ0 = nPanels % 2 == 1 ? pairs * 2 * kBf16Nr : -1;  // the odd last panel's first column
  for (int64_t k0 = 0; k0 < a.lda; k0 += kBf16Kc) {
    if (nan.any()) return;
    const int64_t kc = std::min(kBf16Kc, a.lda - k0), g0 = k0 / kBf16Group;
    const bool accumulate = k0 > 0, lastK = k0 + kc == a.lda;
    for (int64_t j = 0; j < nEff; j += kBf16Nr) {
      if (ks.packB(p.b + (n0 + j) * p.K, p.K, std::min<int64_t>(kBf16Nr, nEff - j), k0, kc, bBlock + panelOffset(j, kc)))
        nan.b.store(true);
    }
    // Rows [i0, i0 + h) against the panels from column j0 (one or two of them).
    const auto run = [&](int64_t i0, int64_t h, int64_t j0, bool pair) {
      const bool toD = lastK && j0 < directCols;
      // A panel never crosses a 128-row scale block; the two of a pair may.
      const float* sb0 = p.sb + ((n0 + j0) / kWeightBlock) * p.groups + g0;
      const float* sb1 = pair ? p.sb + ((n0 + j0 + kBf16Nr) / kWeightBlock) * p.groups + g0 : sb0;
      (pair ? ks.micro : ks.micro32)[h](kc, a.a + (m0 + i0) * a.lda + k0, a.lda, bBlock + panelOffset(j0, kc),
                                        a.sa + (m0 + i0) * p.groups + g0, p.groups, sb0, sb1, c + i0 * ldc + j0, ldc,
                                        accumulate, toD ? direct : TileOut::kAccumulator, p.dAt(m0 + i0, n0 + j0), p.N);
    };
    int64_t oddFrom = 0;  // the first row the odd panel has not yet covered
    for (int64_t ip = 0; ip < microPanels; ++ip) {
      const int64_t i0 = mEff * ip / microPanels, i1 = mEff * (ip + 1) / microPanels;
      for (int64_t jp = 0; jp < pairs; ++jp) run(i0, i1 - i0, jp * 2 * kBf16Nr, true);
      if (oddJ0 >= 0 && (ip % 2 == 1 || ip + 1 == microPanels)) {
        run(oddFrom, i1 - oddFrom, oddJ0, false);
        oddFrom = i1;
      }
    }
  }
  if (directCols < nEff)
    kAvx512Kernels.storeTile(c + directCols, ldc, mEff, nEff - directCols, p.dAt(m0, n0 + directCols), p.N, p.bf16);
}

Status runPanels(const Problem& p, const PackedA& a, NanFlags& nan) {
  ThreadPool& pool = ThreadPool::instance();
  const TilePlan plan = planTiles(p.M, p.N, kBf16Nr, pool.numThreads(), kPanelTileCosts);
  const int64_t ncPad = ceilDiv(plan.nc, kBf16Nr) * kBf16Nr;
  const size_t bBytes = alignUp64(static_cast<size_t>(ncPad * kBf16Kc) * 2);
  const size_t cBytes = static_cast<size_t>(plan.mc * ncPad) * 4;
  std::atomic<bool> oom{false};
  pool.parallelFor(plan.mTiles * plan.nTiles, [&](int64_t tile, int) {
    if (nan.any() || oom.load(std::memory_order_relaxed)) return;
    char* scratch = static_cast<char*>(t_task.get(bBytes + cBytes));
    if (scratch == nullptr) {
      oom.store(true);
      return;
    }
    runPanelTile(p, a, plan, tile, reinterpret_cast<uint32_t*>(scratch), reinterpret_cast<float*>(scratch + bBytes), nan);
  });
  return oom.load() ? outOfMemory() : Status::ok();
}

}  // namespace

Status gemmBf16(const Problem& p, Bf16Kernel kernel) {
  NanFlags nan;
  PackedA a{};
  if (!packA(p, &a, nan) || (kernel == Bf16Kernel::kRowLanes && !packRowLanes(p, &a))) return outOfMemory();
  Status status = Status::ok();
  if (!nan.any()) status = kernel == Bf16Kernel::kPanel ? runPanels(p, a, nan) : runDot(p, a, kernel, nan);
  t_packedA.trim();
  t_laneA.trim();
  t_task.trim();
  if (!status.isOk()) return status;
  return finish(nan);
}

}  // namespace moe::cpu::fp8gemm
