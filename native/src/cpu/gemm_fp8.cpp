// The fp8 GEMM driver: path choice (chooseGemmKernel, by M and the ISA),
// cache blocking, threading, dispatch to the per-ISA kernels
// (gemm_fp8_kernels.h). AMX (below) and AVX512_BF16 (gemm_fp8_bf16.cpp) have
// paths of their own; on other CPUs the FMA kernels run one of two paths:
//
// * Packed (M > KernelSet::streamMaxM), GotoBLAS/BLIS style. D is cut into
//   tiles of mc x nc, one task each, handed out dynamically over the pool. A
//   task walks K in blocks of kKc = 256: it decodes + scales its A block into
//   [mc, kKc] f32 (~mc KiB, L2), then for each of its nc/nr B panels decodes
//   + scales the panel into [kKc, nr] f32 (16-32 KiB, L1) and runs the
//   register-blocked microkernel over every (<= mr rows) x (nr columns)
//   micro-tile of that panel while it is in L1, accumulating in a private f32
//   tile [mc, nc]; the last K block writes D (f32 or bf16).
//   Packing cost is ~1/mc (B) and ~1/nc (A) of the FMA work, so tiles are kept
//   large and their shape is chosen to balance the threads (planTiles).
//
// * Streaming (M <= KernelSet::streamMaxM: 8 rows, 32 on AVX2): A is small
//   and B is read once. A is decoded and scaled once ([M, K] f32); each task
//   takes a run of B rows inside one 128-row scale block (each thread a
//   contiguous share of the tasks in order: parallelForInRuns), folds that block's
//   scales into a private copy of A, and streams the fp8 rows straight from
//   memory through the ISA's decode + FMA kernel (streamRows). No B packing:
//   at M = 1 the run time is B's bytes over the memory bandwidth, or the
//   decode's cost where that is higher.
#include "cpu/gemm_fp8.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "cpu/cpu_features.h"
#include "cpu/gemm_fp8_kernels.h"
#include "cpu/tile_plan.h"
#include "cpu/gemm_fp8_problem.h"
#include "cpu/task_runs.h"
#include "cpu/thread_pool.h"
#include "cpu/thread_scratch.h"

namespace moe::cpu {

namespace fp8gemm {

const KernelSet& selectedKernels() {
  switch (gemmIsa()) {
    case GemmIsa::kAvx512: return kAvx512Kernels;  // also under AMX (small M, peaks)
    case GemmIsa::kAvx2: return kAvx2Kernels;
    case GemmIsa::kPortable: break;
  }
  return kPortableKernels;
}

int64_t streamRowsPerTask(int64_t N) {
  const int threads = ThreadPool::insideRegion() ? 1 : ThreadPool::instance().numThreads();
  int64_t rows = kWeightBlock;
  if (threads == 1) return rows;
  while (rows > 16 && ceilDiv(N, rows) < 16 * threads) rows /= 2;
  return rows;
}

}  // namespace fp8gemm

namespace {

using fp8gemm::finish;
using fp8gemm::KernelSet;
using fp8gemm::kKc;
using fp8gemm::NanFlags;
using fp8gemm::outOfMemory;
using fp8gemm::kWeightBlock;
using fp8gemm::Problem;
using fp8gemm::streamRowsPerTask;

// Tile limits of the packed path. The A block [mc, kKc] f32 = mc KiB lives in
// L2 (1 MiB per core on Zen 4/5); B is used one L1-resident panel at a time,
// so nc bounds only the C tile [mc, nc] f32, which is touched once per K
// block and prefetched by the microkernel. (With the whole B block packed
// first, nc KiB had to fit in L2 too: on this Zen 5 it did not, and every A
// micro-panel streamed it from L3; packing per panel made M = 64..1024 run
// in 0.88-0.97x the time.)
constexpr int64_t kMcMax = 512;
constexpr int64_t kNcMax = 1536;

// 64-byte aligned float scratch; no exceptions (allocation failure -> false).
class FloatBuffer {
 public:
  FloatBuffer() = default;
  FloatBuffer(const FloatBuffer&) = delete;
  FloatBuffer& operator=(const FloatBuffer&) = delete;
  ~FloatBuffer() { std::free(data_); }

  bool allocate(int64_t count) {
    std::free(data_);
    data_ = nullptr;
    void* p = nullptr;
    const size_t bytes = static_cast<size_t>(std::max<int64_t>(count, 16)) * sizeof(float);
    if (posix_memalign(&p, 64, bytes) != 0) return false;
    data_ = static_cast<float*>(p);
    return true;
  }
  float* data() const { return data_; }

 private:
  float* data_ = nullptr;
};

// ---- packed path --------------------------------------------------------------

// Packing costs ~11 multiply-adds per B element and ~5 per A element
// (decode, transpose, store).
constexpr TileCosts kPackedTileCosts{kMcMax, kNcMax, 11.0, 5.0};

// Per thread, kept between calls (the layer calls once per expert):
// [mc, kKc] packed A rows | one [kKc, nr] B panel | the [mc, ncPad] C tile.
thread_local ThreadScratch t_packed;

struct PackedBuffers {
  float* a;       // [mc, kKc] packed A rows, row stride kKc
  float* bPanel;  // [kc, nr] one packed B panel, nr-interleaved
  float* c;       // [mc, ldc] f32 accumulator tile
};

// Asks for the fp8 bytes B[n .. n + rows) x [k0, k0 + kc) to be brought into
// L2. A panel's rows are K bytes apart and each contributes only kc bytes
// per K block: too short a stream for the hardware prefetchers to pick up.
void prefetchBPanel(const Problem& p, int64_t n, int64_t rows, int64_t k0, int64_t kc) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* first = p.b + (n + r) * p.K + k0;
    for (const uint8_t* line = first; line < first + kc; line += 64) __builtin_prefetch(line, 0, 2);
    __builtin_prefetch(first + kc - 1, 0, 2);  // a row not starting on a line ends on one more
  }
}

// One tile D[m0 .. m0 + mEff, n0 .. n0 + nEff) over all of K. Per K block
// the A block is packed once ([mEff, kKc] f32, L2); then each B panel is
// packed into an L1 buffer and every micro-panel of A (near-equal runs of <=
// mr rows, so that no run is left with a row or two) multiplies it while it
// is hot. The A micro-panels stream from L2 (mr floats per k against the
// 2 x nr of B), and the packed B block never has to sit in L2 at all.
// The next panel's fp8 bytes are prefetched while this one is multiplied.
// On the last K block, full-width panels write D directly; a ragged last
// panel (N tail) still goes to the C tile, for storeTile to clip.
void runPackedTile(const KernelSet& ks, const Problem& p, const TilePlan& plan, int64_t tile,
                   const PackedBuffers& buf, NanFlags& nan) {
  const int64_t m0 = (tile / plan.nTiles) * plan.mc;
  const int64_t n0 = (tile % plan.nTiles) * plan.nc;
  const int64_t mEff = std::min(plan.mc, p.M - m0);
  const int64_t nEff = std::min(plan.nc, p.N - n0);
  const int64_t nPanels = ceilDiv(nEff, ks.nr);
  const int64_t ldc = nPanels * ks.nr;
  const int64_t microPanels = ceilDiv(mEff, ks.mr);
  const fp8gemm::TileOut direct = p.bf16 ? fp8gemm::TileOut::kBf16 : fp8gemm::TileOut::kF32;
  for (int64_t k0 = 0; k0 < p.K; k0 += kKc) {
    if (nan.any()) return;
    const int64_t kc = std::min(kKc, p.K - k0);
    const bool lastK = k0 + kc == p.K;
    if (ks.packA(p.a + m0 * p.K, p.K, p.sa + m0 * p.groups, p.groups, mEff, k0, kc, buf.a, kKc)) nan.a.store(true);
    for (int64_t jp = 0; jp < nPanels; ++jp) {
      const int64_t j0 = jp * ks.nr;
      const int64_t cols = std::min<int64_t>(ks.nr, nEff - j0);
      if (jp + 1 < nPanels) {
        prefetchBPanel(p, n0 + j0 + ks.nr, std::min<int64_t>(ks.nr, nEff - j0 - ks.nr), k0, kc);
      } else if (!lastK) {
        prefetchBPanel(p, n0, std::min<int64_t>(ks.nr, nEff), k0 + kc, std::min(kKc, p.K - k0 - kc));
      }
      const float* scaleRow = p.sb + ((n0 + j0) / kWeightBlock) * p.groups;  // a panel never crosses a 128-row block
      if (ks.packB(p.b + (n0 + j0) * p.K, p.K, scaleRow, cols, k0, kc, buf.bPanel)) nan.b.store(true);
      const fp8gemm::TileOut out = lastK && cols == ks.nr ? direct : fp8gemm::TileOut::kAccumulator;
      for (int64_t ip = 0; ip < microPanels; ++ip) {
        const int64_t i0 = mEff * ip / microPanels;
        const int64_t h = mEff * (ip + 1) / microPanels - i0;
        ks.micro[h](kc, buf.a + i0 * kKc, buf.bPanel, buf.c + i0 * ldc + j0, ldc, k0 > 0, out,
                    p.dAt(m0 + i0, n0 + j0), p.N);
      }
    }
  }
  const int64_t fullCols = nEff / ks.nr * ks.nr;  // written by the microkernels already
  if (fullCols < nEff)
    ks.storeTile(buf.c + fullCols, ldc, mEff, nEff - fullCols, p.dAt(m0, n0 + fullCols), p.N, p.bf16);
}

Status gemmPacked(const KernelSet& ks, const Problem& p) {
  ThreadPool& pool = ThreadPool::instance();
  // Inside a region (the layer runs one expert per task) the tiles run on
  // this thread alone: plan for one thread, i.e. the fewest, largest tiles.
  const int threads = ThreadPool::insideRegion() ? 1 : pool.numThreads();
  const TilePlan plan = planTiles(p.M, p.N, ks.nr, threads, kPackedTileCosts);
  const int64_t ncPad = ceilDiv(plan.nc, ks.nr) * ks.nr;
  const int64_t aFloats = plan.mc * kKc, bFloats = kKc * ks.nr;  // both keep 64-byte alignment
  const size_t bytes = static_cast<size_t>(aFloats + bFloats + plan.mc * ncPad) * sizeof(float);
  NanFlags nan;
  std::atomic<bool> oom{false};
  pool.parallelFor(plan.mTiles * plan.nTiles, [&](int64_t tile, int) {
    if (oom.load(std::memory_order_relaxed)) return;
    auto* scratch = static_cast<float*>(t_packed.get(bytes));
    if (scratch == nullptr) {
      oom.store(true);
      return;
    }
    runPackedTile(ks, p, plan, tile, PackedBuffers{scratch, scratch + aFloats, scratch + aFloats + bFloats}, nan);
  }, threads);
  if (oom.load()) return outOfMemory();
  return finish(nan);
}

// ---- streaming path ---------------------------------------------------------

struct StreamScratch {
  FloatBuffer a;          // [M, K] A with this thread's current B scale row folded in
  FloatBuffer out;        // [M, rowsPerTask] f32 results before the bf16 store
  int64_t scaleBlock = -1;  // which 128-row block of B `a` is scaled for
};

Status gemmStreaming(const KernelSet& ks, const Problem& p) {
  ThreadPool& pool = ThreadPool::instance();
  const int threads = pool.numThreads();  // scratch slots: inside a region a task runs as its region's thread
  // Each task starts its B stream and its decoded form's panels afresh: one
  // thread, 1024 x 1792 and 1792 x 512 from memory, tasks of 128 rows against
  // 32 (what a layer's expert got with two pool threads): M = 1..4 0.97-1.01x
  // the time, M = 5..32 0.95-0.98x.
  const int64_t rowsPerTask = streamRowsPerTask(p.N);

  NanFlags nan;
  FloatBuffer aDecoded;  // [M, K] fp8(A) * sa
  if (!aDecoded.allocate(p.M * p.K)) return outOfMemory();
  if (ks.packA(p.a, p.K, p.sa, p.groups, p.M, 0, p.K, aDecoded.data(), p.K)) nan.a.store(true);
  if (nan.any()) return finish(nan);

  std::vector<StreamScratch> scratch(static_cast<size_t>(threads));
  for (auto& s : scratch)
    if (!s.a.allocate(p.M * p.K) || !s.out.allocate(p.M * rowsPerTask)) return outOfMemory();

  parallelForInRuns(ceilDiv(p.N, rowsPerTask), threads, [&](int64_t task, int thread) {
    if (nan.any()) return;
    StreamScratch& s = scratch[static_cast<size_t>(thread)];
    const int64_t n0 = task * rowsPerTask;
    const int64_t rows = std::min(rowsPerTask, p.N - n0);
    const int64_t block = n0 / kWeightBlock;
    if (s.scaleBlock != block) {
      ks.scaleForStream(aDecoded.data(), p.M, p.K, p.K, p.sb + block * p.groups, s.a.data());
      s.scaleBlock = block;
    }
    // f32 output goes straight to D; bf16 is rounded from a small f32 tile.
    float* out = p.bf16 ? s.out.data() : reinterpret_cast<float*>(p.dAt(0, n0));
    const int64_t ldo = p.bf16 ? rowsPerTask : p.N;
    if (ks.streamRows(s.a.data(), p.K, p.M, p.b + n0 * p.K, p.K, rows, p.K, out, ldo)) nan.b.store(true);
    if (p.bf16) ks.storeTile(out, ldo, p.M, rows, p.dAt(0, n0), p.N, true);
  });
  return finish(nan);
}

// ---- AMX path ----------------------------------------------------------------
//
// Blocks of D (mc x nc, one task each, handed out over the pool like the
// packed path's tiles). A is packed once per call into bf16 VNNI tiles
// (amxPackA, parallel over 16-row tiles) and its scales transposed; each block
// then walks K one 128-wide scale group at a time, decoding its nc rows of B
// to bf16 (overlapped with the previous group's tile work) and promoting the
// tiles into an f32 accumulator (gemm_fp8_amx.cpp). For M <= 32 (one or two
// m-tiles) the tasks instead walk runs of 32-row strips of B over all of K
// (amxRunStrips): 32 sequential, prefetched row streams per thread, no per
// block planning, and the decode pipelined against the tiles step by step.

// AMX from this many rows of A on, i.e. it replaces the packed AVX-512 path
// and small M keeps streaming (memory-bound: B's bytes over the bandwidth).
// Measured on the dev VM (Sapphire Rapids, 2 threads, noisy: best of runs),
// GFLOP/s AMX vs AVX-512 packed: M = 9: 98-157 vs 38-92; M = 12: 104-208 vs
// 48-107; M = 16: 190-370 vs 57-120 over the five benchmark (N, K) shapes.
//
// With the strip walk (M <= 32, amxRunStrips: B streamed as 32-row strips
// over all of K, its decode overlapped with the tiles) AMX is bound by B's
// bytes over the memory bandwidth from M = 3 on; interleaved A/B runs on the
// dev VM (1 and 2 threads, cold weights), time strips / AVX-512 streaming:
// M = 3: 0.55-0.65, M = 4: 0.6-0.7, M = 8: 0.4-0.6, M = 16 (strips / AMX
// blocks): 0.4-0.7. At M = 2 the two are even (both memory-bound) and at M = 1
// AMX would waste 15/16 of each tile, so M <= 2 keeps streaming (through the
// AVX512_BF16 dot kernel where the CPU has it, as Sapphire Rapids does).
constexpr int64_t kAmxMinM = 3;

// Per-thread: the caller's packed A (+ transposed scales) and each pool
// thread's block scratch. Separate objects, as the caller is pool thread 0.
thread_local ThreadScratch t_amxA;
thread_local ThreadScratch t_amxBlock;
thread_local ThreadScratch t_gatheredA;  // gemmFp8Rows off the AMX path: the gathered rows

struct AmxPlan {
  int64_t mc = 0, nc = 0;  // block extents: mc % 16 == 0, nc % 32 == 0
  int64_t mBlocks = 0, nBlocks = 0;
};

// Smallest estimated makespan on `threads` threads, in cycles: per block and
// k, the tile work (mc x nc MACs at 512 per cycle, padded to whole tiles) plus
// decoding nc rows of B (~0.15 cycle per element); per block, writing it out
// and fixed costs.
AmxPlan planAmx(int64_t M, int64_t N, int64_t K, int threads) {
  AmxPlan best;
  double bestCost = 0.0;
  const int64_t mMin = ceilDiv(M, fp8gemm::kAmxMcMax), nMin = ceilDiv(N, fp8gemm::kAmxNcMax);
  for (int64_t mt = mMin; mt <= std::min(ceilDiv(M, 16), mMin + 8); ++mt) {
    const int64_t mc = ceilDiv(ceilDiv(M, mt), 16) * 16;
    const int64_t mBlocks = ceilDiv(M, mc);
    for (int64_t want = nMin; want <= std::min(ceilDiv(N, 32), nMin + 16); ++want) {
      const int64_t nc = ceilDiv(ceilDiv(N, want), 32) * 32;
      const int64_t nBlocks = ceilDiv(N, nc);
      const double rounds = static_cast<double>(ceilDiv(mBlocks * nBlocks, threads));
      const double mcPad = static_cast<double>(ceilDiv(mc, 32) * 32);
      const double block = static_cast<double>(K) * (mcPad * nc / 512.0 + 0.15 * nc) + 0.5 * mc * nc + 5000.0;
      const double cost = rounds * block;
      if (best.mc == 0 || cost < bestCost * 0.999) {
        best = AmxPlan{mc, nc, mBlocks, nBlocks};
        bestCost = cost;
      }
    }
  }
  return best;
}

size_t alignUp64(size_t bytes) { return (bytes + 63) / 64 * 64; }

Status gemmAmx(const Problem& p) {
  ThreadPool& pool = ThreadPool::instance();
  const int threads = pool.numThreads();
  const int64_t mTiles = ceilDiv(p.M, 16);
  const bool useStrips = mTiles <= 2;
  const AmxPlan plan = useStrips ? AmxPlan{} : planAmx(p.M, p.N, p.K, threads);
  const int64_t ldSaT = mTiles * 16;

  // A once for all blocks: bf16 VNNI tiles, and its scales transposed.
  const size_t actBytes = alignUp64(static_cast<size_t>(p.groups * mTiles * 4 * fp8gemm::kAmxTileWords) * 4);
  char* aScratch = static_cast<char*>(t_amxA.get(actBytes + static_cast<size_t>(p.groups * ldSaT) * 4));
  if (aScratch == nullptr) return outOfMemory();
  uint32_t* act = reinterpret_cast<uint32_t*>(aScratch);
  float* saT = reinterpret_cast<float*>(aScratch + actBytes);

  NanFlags nan;
  pool.parallelFor(mTiles, [&](int64_t tile, int) {
    if (fp8gemm::amxPackA(p.a, p.aRows, p.M, p.K, tile, mTiles, act)) nan.a.store(true);
  });
  if (nan.any()) {
    t_amxA.trim();
    return finish(nan);
  }
  for (int64_t g = 0; g < p.groups; ++g) {
    float* row = saT + g * ldSaT;
    for (int64_t m = 0; m < ldSaT; ++m) row[m] = m < p.M ? p.sa[(p.aRows != nullptr ? p.aRows[m] : m) * p.groups + g] : 0.0f;
  }

  const fp8gemm::AmxOperands operands{p.b, p.sb, act, saT, ldSaT, p.N, p.K, p.groups, mTiles, p.d, p.bf16};
  if (useStrips) {
    const int64_t strips = ceilDiv(p.N, fp8gemm::kAmxStripRows);
    const int64_t perTask = std::max<int64_t>(1, strips / (8 * threads));
    std::atomic<bool> oom{false};
    pool.parallelFor(ceilDiv(strips, perTask), [&](int64_t task, int) {
      if (nan.any() || oom.load(std::memory_order_relaxed)) return;
      char* scratch = static_cast<char*>(t_amxBlock.get(fp8gemm::kAmxStripScratchBytes));
      if (scratch == nullptr) {
        oom.store(true);
        return;
      }
      fp8gemm::AmxStripJob job;
      static_cast<fp8gemm::AmxOperands&>(job) = operands;
      job.M = p.M;
      job.n0 = task * perTask * fp8gemm::kAmxStripRows;
      job.n1 = std::min(p.N, job.n0 + perTask * fp8gemm::kAmxStripRows);
      job.wbuf = reinterpret_cast<uint16_t*>(scratch);
      job.cbuf = reinterpret_cast<float*>(scratch + 2 * 32 * 128 * 2);
      job.acc = job.cbuf + 2 * 4 * 256;
      if (fp8gemm::amxRunStrips(job)) nan.b.store(true);
    });
    t_amxA.trim();
    if (oom.load()) return outOfMemory();
    return finish(nan);
  }

  const int64_t ncPad = ceilDiv(plan.nc, 32) * 32, mcPad = ceilDiv(plan.mc, 16) * 16;
  const size_t wbufBytes = static_cast<size_t>(2 * ncPad * 128) * 2;
  const size_t cbufBytes = 2 * 4 * 256 * 4;
  const size_t accBytes = static_cast<size_t>(ncPad * mcPad) * 4;
  std::atomic<bool> oom{false};
  pool.parallelFor(plan.mBlocks * plan.nBlocks, [&](int64_t block, int) {
    if (nan.any() || oom.load(std::memory_order_relaxed)) return;
    char* scratch = static_cast<char*>(t_amxBlock.get(wbufBytes + cbufBytes + accBytes));
    if (scratch == nullptr) {
      oom.store(true);
      return;
    }
    fp8gemm::AmxBlockJob job;
    static_cast<fp8gemm::AmxOperands&>(job) = operands;
    job.m0 = (block / plan.nBlocks) * plan.mc;
    job.mEff = std::min(plan.mc, p.M - job.m0);
    job.n0 = (block % plan.nBlocks) * plan.nc;
    job.nEff = std::min(plan.nc, p.N - job.n0);
    job.wbuf = reinterpret_cast<uint16_t*>(scratch);
    job.cbuf = reinterpret_cast<float*>(scratch + wbufBytes);
    job.acc = reinterpret_cast<float*>(scratch + wbufBytes + cbufBytes);
    if (fp8gemm::amxRunBlock(job)) nan.b.store(true);
  });
  t_amxA.trim();
  if (oom.load()) return outOfMemory();
  return finish(nan);
}

// ---- the choice of kernel ------------------------------------------------------

enum class GemmKernel {
  kFmaStream,  // FMA kernels (AVX-512 / AVX2 / portable), B streamed: M <= KernelSet::streamMaxM
  kFmaPacked,  // FMA kernels, B packed to f32 panels
  kBf16Dot,    // AVX512_BF16, B streamed: M <= kBf16DotMaxM (GEMV and small batches)
  kBf16RowLanes,    // AVX512_BF16, A's rows in the lanes, B decoded per block of rows: the larger M
  kBf16Panel,  // AVX512_BF16, B decoded to bf16 panels once per K block: batchInvariant
  kAmx,        // AMX tiles: M >= kAmxMinM
};

// The one place a kernel is chosen, by M and the ISA (cpuFeatures(), so
// MOE_CPU_ISA). Within the AVX512_BF16 kernels and the FMA kernels a row's
// bits depend only on K (their K order is fixed by K, not by the M or N
// blocking or the thread count; see gemm_fp8_kernels.h), so pinning this
// choice for every M makes those paths batch-invariant; the switch between
// two kernels at a threshold of M is what changes a row's bits.
//
// batchInvariant (GemmFp8Args) pins one kernel for every M: the panel kernel
// on AVX512_BF16 (its lanes run along N, so that a single row fills them:
// the row-lane kernel's run along M and would do 16 rows' products for a
// decode step's one), the streaming FMA kernel otherwise (both take any M),
// never AMX.
GemmKernel chooseGemmKernel(int64_t M, bool batchInvariant) {
  if (batchInvariant) return gemmUsesAvx512Bf16() ? GemmKernel::kBf16Panel : GemmKernel::kFmaStream;
  if (gemmUsesAmx() && M >= kAmxMinM) return GemmKernel::kAmx;
  if (gemmUsesAvx512Bf16()) {
    return M <= fp8gemm::kBf16DotMaxM ? GemmKernel::kBf16Dot : GemmKernel::kBf16RowLanes;
  }
  return M <= fp8gemm::selectedKernels().streamMaxM ? GemmKernel::kFmaStream : GemmKernel::kFmaPacked;
}

void zeroOutput(const Problem& p) {
  std::memset(p.d, 0, static_cast<size_t>(p.M * p.N * p.dElemSize()));
}

// D = A * B^T with A's rows gathered through aRows (null: A as it is; M is
// then a's row count, else `rows`).
Status gemmFp8Impl(const GemmFp8Args& args, const int32_t* aRows, int64_t rows) {
  Problem p;
  p.a = args.a.as<const uint8_t>();
  p.sa = args.aScales.as<const float>();
  p.b = args.b.as<const uint8_t>();
  p.sb = args.bScales.as<const float>();
  p.d = args.d.as<char>();
  p.bf16 = args.d.dtype == DType::kBF16;
  p.M = aRows != nullptr ? rows : args.a.dim(0);
  p.K = args.a.dim(1);
  p.N = args.b.dim(0);
  p.groups = ceilDiv(p.K, kQuantGroup);
  if (p.M == 0 || p.N == 0) return Status::ok();
  if (p.K == 0) {  // empty sum
    zeroOutput(p);
    return Status::ok();
  }
  const GemmKernel kernel = chooseGemmKernel(p.M, args.batchInvariant);
  if (kernel == GemmKernel::kAmx) {
    p.aRows = aRows;  // the AMX packing reads the rows in place
    return gemmAmx(p);
  }
  if (kernel == GemmKernel::kBf16Dot || kernel == GemmKernel::kBf16RowLanes || kernel == GemmKernel::kBf16Panel) {
    p.aRows = aRows;  // so does the AVX512_BF16 packing
    using fp8gemm::Bf16Kernel;
    return fp8gemm::gemmBf16(p, kernel == GemmKernel::kBf16Dot          ? Bf16Kernel::kDot
                                : kernel == GemmKernel::kBf16RowLanes   ? Bf16Kernel::kRowLanes
                                                                        : Bf16Kernel::kPanel);
  }
  const KernelSet& ks = fp8gemm::selectedKernels();
  if (aRows != nullptr) {
    // The other paths read A as one matrix: gather its rows first (a few
    // rows per expert at most on the paths that matter here).
    const size_t rowBytes = static_cast<size_t>(p.K), scaleBytes = static_cast<size_t>(p.groups) * 4;
    const size_t scalesAt = (static_cast<size_t>(p.M) * rowBytes + 63) / 64 * 64;
    auto* gathered = static_cast<uint8_t*>(t_gatheredA.get(scalesAt + static_cast<size_t>(p.M) * scaleBytes));
    if (gathered == nullptr) return outOfMemory();
    auto* scales = reinterpret_cast<float*>(gathered + scalesAt);
    for (int64_t m = 0; m < p.M; ++m) {
      std::memcpy(gathered + m * p.K, p.a + aRows[m] * p.K, rowBytes);
      std::memcpy(scales + m * p.groups, p.sa + aRows[m] * p.groups, scaleBytes);
    }
    p.a = gathered;
    p.sa = scales;
  }
  return kernel == GemmKernel::kFmaStream ? gemmStreaming(ks, p) : gemmPacked(ks, p);
}

}  // namespace

Status gemmFp8(const GemmFp8Args& args) { return gemmFp8Rows(args, nullptr, 0); }

int64_t gemmRowTileRows(int64_t M) {
  // Near-equal tiles of whole zmm of rows, at most kBf16LaneMaxM each.
  return ceilDiv(ceilDiv(M, ceilDiv(M, fp8gemm::kBf16LaneMaxM)), 16) * 16;
}

Status gemmFp8Rows(const GemmFp8Args& args, const int32_t* aRows, int64_t rows) {
  try {
    return gemmFp8Impl(args, aRows, rows);
  } catch (const std::bad_alloc&) {
    return outOfMemory();
  } catch (...) {
    return Status(Code::kInternal, "gemmFp8: unexpected exception");
  }
}

}  // namespace moe::cpu
