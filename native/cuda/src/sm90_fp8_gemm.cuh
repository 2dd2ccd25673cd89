// Hopper (sm_90a) block-scaled FP8 GEMM: one kernel template serving the
// dense, grouped-contiguous and grouped-masked layouts through a scheduler
// type. Included by sm90_fp8_gemm_{dense,grouped,masked}.cu only.
//
// Structure (after DeepGEMM's sm90 FP8 GEMM; our own code):
//   - 3 warpgroups per CTA: warpgroups 0 and 1 are consumers (wgmma + scale
//     promotion + epilogue), warpgroup 2 is the producer (one thread issues
//     TMA loads). setmaxnreg moves registers from the producer to the
//     consumers.
//   - A kStages-deep ring of shared-memory stages, each holding an A tile
//     [BLOCK_M, 128] and a B tile [BLOCK_N, 128] of fp8, K-major, 128B-swizzled
//     by TMA. Two mbarriers per stage: `full` (producer -> consumers: the TMA
//     bytes landed; count 1 + transaction bytes) and `empty` (consumers ->
//     producer: every consumer warp finished reading; count 8).
//   - Per 128-wide K block, each consumer warpgroup issues 4 wgmma.m64nNk32
//     (e4m3 x e4m3 -> f32) into a partial accumulator, waits for them, and
//     promotes: acc += sa[row, kb] * sb[n/128, kb] * partial. This both applies
//     the block scales and keeps the long K sum in full fp32 (the tensor
//     core's fp8 accumulation is limited in precision).
//   - Persistent grid: min(#SMs, #tiles) CTAs walk the tile list with stride
//     gridDim.x; the rasterization (sm90_layouts.h, raster_tile) keeps a band
//     of B tiles hot in L2.
//   - Epilogue: registers -> 128B-swizzled shared memory (bank-conflict free)
//     -> TMA store (bf16 or f32), rows outside the problem clipped by TMA,
//     padding / masked rows written as zeros.
//
// Layouts and all index arithmetic live in include/sm90_layouts.h and are
// unit-tested on the CPU (native/cuda/test/layouts_test.cpp).
#pragma once

#include <cuda.h>  // CUtensorMap (type only)
#include <cuda/ptx>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "common.h"
#include "gemm_problem.h"
#include "sm90_layouts.h"
#include "sm90_wgmma.cuh"
#include "tensor_map.h"

namespace moe_cuda {
namespace sm90 {

// ---------------------------------------------------------------------------
// Kernel parameters and schedulers
// ---------------------------------------------------------------------------

struct KernelParams {
  const float* sa;             // [a_groups * rows, k_blocks] f32
  const float* sb;             // [groups, n_scale_blocks, k_blocks] f32
  const int32_t* group_index;  // contiguous: [rows] int32
  const int32_t* masked_m;     // masked: [groups] int32
  int32_t rows;                // rows per A/D group: dense M, contiguous R, masked Mmax
  int32_t n;
  int32_t k_blocks;            // K / 128
  int32_t n_scale_blocks;      // ceil(N / 128)
  int32_t groups;              // groups of B
  int32_t m_blocks;            // ceil(rows / BLOCK_M)
  int32_t n_blocks;            // ceil(N / BLOCK_N)
  int32_t k_splits;            // dense split-K: slices of K (1: none; sm90_layouts.h)
  uint64_t hang_trap_ns;       // a pipeline wait longer than this traps; 0: wait forever
};

struct Tile {
  int32_t m_block;
  int32_t n_block;
  int32_t a_group;     // outermost TMA coordinate of A (masked: g, else 0)
  int32_t b_group;     // group of B and sb
  int32_t d_group;     // outermost TMA coordinate of D (masked: g; split-K: the split; else 0)
  int32_t kb_begin;    // the K blocks [kb_begin, kb_end) this tile sums
  int32_t kb_end;
  int32_t valid_rows;  // masked: rows [0, valid_rows) of the group are computed
  bool compute;        // false: the whole tile is padding / masked: store zeros only
};

// Producer and consumers call the same scheduler functions on the same
// read-only inputs, so they agree on the tile sequence and on which tiles
// skip the main loop (the pipeline counters stay in lock step).

// Split-K (k_splits > 1): tile ids run split-major, each split over the
// whole rasterized tile grid, and a tile's partial sum lands in slice `split`
// of the f32 workspace D [k_splits, M, N].
template <uint32_t kBlockM>
struct DenseScheduler {
  __device__ static int32_t num_tiles(const KernelParams& p) { return p.m_blocks * p.n_blocks * p.k_splits; }
  __device__ static Tile get(const KernelParams& p, int32_t tile) {
    const SplitTile s = split_k_tile(tile, p.m_blocks, p.n_blocks, p.k_blocks, p.k_splits);
    return Tile{int32_t(s.coord.m_block), int32_t(s.coord.n_block), 0, 0, int32_t(s.split), int32_t(s.kb_begin),
                int32_t(s.kb_end), p.rows, true};
  }
  // Rows past M are clipped by the TMA store.
  __device__ static bool row_valid(const KernelParams&, const Tile&, int64_t) { return true; }
};

template <uint32_t kBlockM>
struct ContiguousScheduler {
  // NOTE: groups start at multiples of 128 rows and BLOCK_M divides 128, so a
  // BLOCK_M block belongs to one group (or is all padding, which can only
  // trail a segment): the block's group is its first row's.
  static_assert(128 % kBlockM == 0, "a BLOCK_M block must not straddle two 128-aligned group segments");
  __device__ static int32_t num_tiles(const KernelParams& p) { return p.m_blocks * p.n_blocks; }
  __device__ static Tile get(const KernelParams& p, int32_t tile) {
    const TileCoord c = raster_tile(tile, p.m_blocks, p.n_blocks, kRasterBand);
    const int32_t g = __ldg(p.group_index + int64_t(c.m_block) * kBlockM);
    const bool compute = g >= 0 && g < p.groups;
    return Tile{int32_t(c.m_block), int32_t(c.n_block), 0, compute ? g : 0, 0, 0, p.k_blocks, p.rows, compute};
  }
  // Padding rows (-1) and, out of contract, rows of another group: zeros.
  __device__ static bool row_valid(const KernelParams& p, const Tile& t, int64_t row) {
    return t.compute && row < p.rows && __ldg(p.group_index + row) == t.b_group;
  }
};

template <uint32_t kBlockM>
struct MaskedScheduler {
  __device__ static int32_t num_tiles(const KernelParams& p) { return p.groups * p.m_blocks * p.n_blocks; }
  __device__ static Tile get(const KernelParams& p, int32_t tile) {
    const int32_t per_group = p.m_blocks * p.n_blocks;
    const int32_t g = tile / per_group;
    const TileCoord c = raster_tile(tile - g * per_group, p.m_blocks, p.n_blocks, kRasterBand);
    int32_t valid = __ldg(p.masked_m + g);
    valid = valid < 0 ? 0 : (valid > p.rows ? p.rows : valid);
    const bool compute = int64_t(c.m_block) * kBlockM < valid;
    return Tile{int32_t(c.m_block), int32_t(c.n_block), g, g, g, 0, p.k_blocks, valid, compute};
  }
  __device__ static bool row_valid(const KernelParams&, const Tile& t, int64_t row) { return row < t.valid_rows; }
};

// ---------------------------------------------------------------------------
// Device helpers (inline PTX where CCCL's cuda::ptx has no wrapper)
// ---------------------------------------------------------------------------

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// A pipeline wait that gives up: when a barrier phase has not completed
// after `limit_ns` of wall time the kernel traps, so a protocol bug or a TMA
// load that never lands fails the launch with a CUDA error instead of hanging
// the GPU and the process for good. No legitimate wait comes near the default
// 10 s (a stage turns over in microseconds); tools that slow kernels down a
// thousandfold (compute-sanitizer, a debugger) set MOE_CUDA_HANG_TRAP_S=0.
// The clock is read only after the first try_wait fails, and try_wait itself
// suspends the thread for a while.
__device__ __forceinline__ uint64_t global_timer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t));
  return t;
}

__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity, uint64_t limit_ns) {
  if (cuda::ptx::mbarrier_try_wait_parity(bar, parity)) return;
  const uint64_t start = global_timer_ns();
  while (!cuda::ptx::mbarrier_try_wait_parity(bar, parity)) {
    if (limit_ns != 0 && global_timer_ns() - start > limit_ns) __trap();
  }
}

template <uint32_t kRegs>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
template <uint32_t kRegs>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// Tells the compiler the register may be read/written here, so it neither
// moves accesses across the async wgmma window nor spills the accumulator.
__device__ __forceinline__ void fence_operand(float& r) { asm volatile("" : "+f"(r)::"memory"); }

// Named barrier 1 over the consumer warpgroups only (barrier 0 is
// __syncthreads; the producer warpgroup never takes part).
__device__ __forceinline__ void consumer_bar_sync() {
  asm volatile("bar.sync 1, %0;\n" ::"n"(kNumConsumerThreads) : "memory");
}

__device__ __forceinline__ void prefetch_tensor_map(const CUtensorMap* m) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(m)) : "memory");
}

template <uint32_t kN>
struct WgmmaFor;
template <>
struct WgmmaFor<64> {
  using type = WgmmaM64N64K32E4M3;
};
template <>
struct WgmmaFor<128> {
  using type = WgmmaM64N128K32E4M3;
};

template <class OutT>
__device__ __forceinline__ void store_pair(uint8_t* dst, float v0, float v1);
template <>
__device__ __forceinline__ void store_pair<__nv_bfloat16>(uint8_t* dst, float v0, float v1) {
  *reinterpret_cast<__nv_bfloat162*>(dst) = __floats2bfloat162_rn(v0, v1);  // round to nearest even
}
template <>
__device__ __forceinline__ void store_pair<float>(uint8_t* dst, float v0, float v1) {
  *reinterpret_cast<float2*>(dst) = make_float2(v0, v1);
}

// ---------------------------------------------------------------------------
// The kernel
// ---------------------------------------------------------------------------

// tmap_a: A as {K, rows, a_groups} fp8, box {128, BLOCK_M, 1}, 128B swizzle
// tmap_b: B as {K, N, groups} fp8, box {128, BLOCK_N, 1}, 128B swizzle
// tmap_d: D as {N, rows, d_groups} bf16/f32, box {128 B / elem, BLOCK_M, 1}, 128B swizzle
template <uint32_t kBlockM, uint32_t kBlockN, uint32_t kStages, class OutT, class Sched>
__global__ void __launch_bounds__(kNumThreads, 1)
    sm90_fp8_gemm_kernel(const __grid_constant__ CUtensorMap tmap_a, const __grid_constant__ CUtensorMap tmap_b,
                         const __grid_constant__ CUtensorMap tmap_d, const KernelParams p) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr TileConfig kCfg{kBlockM, kBlockN, uint32_t(sizeof(OutT)), kStages};
  static_assert(valid_tile_config(kCfg), "tile configuration breaks a hardware or layout invariant");
  static_assert(valid_register_split(), "setmaxnreg split exceeds the CTA's register pool");
  // NOTE: one 128-byte swizzle row per tile row: BLOCK_K fp8 values = 128 B.
  static_assert(kBlockK * sizeof(uint8_t) == kSwizzleRowBytes, "BLOCK_K must fill exactly one 128B swizzle row");
  static_assert(kBlockK % kWgmmaK == 0, "BLOCK_K must be a whole number of wgmma k-steps");
  using Mma = typename WgmmaFor<kCfg.wg_n()>::type;
  constexpr uint32_t kAccRegs = Mma::kRegs;
  static_assert(kAccRegs == acc_regs(kCfg.wg_n()), "accumulator fragment size");
  // NOTE: consumers hold two accumulators (partial + promoted) of N/2 f32 each;
  // leave room for addresses and scales under the setmaxnreg budget.
  static_assert(2 * kAccRegs + 48 <= kConsumerRegisters, "consumer accumulators exceed the register budget");

  extern __shared__ uint8_t smem_raw[];
  // Align the working area to 1024 bytes: the 128B swizzle pattern (TMA and
  // wgmma descriptors with base offset 0) is anchored to 1024-byte boundaries.
  uint8_t* smem = smem_raw + ((kSwizzleAtomBytes - (smem_u32(smem_raw) % kSwizzleAtomBytes)) % kSwizzleAtomBytes);
  uint8_t* smem_a = smem + kCfg.smem_a_offset();  // kStages x [BLOCK_M, 128] fp8, swizzled
  uint8_t* smem_b = smem + kCfg.smem_b_offset();  // kStages x [BLOCK_N, 128] fp8, swizzled
  uint8_t* smem_d = smem + kCfg.smem_d_offset();  // [BLOCK_M, BLOCK_N] out, as 128-byte slabs, swizzled
  uint64_t* full_bar = reinterpret_cast<uint64_t*>(smem + kCfg.smem_barrier_offset());  // [kStages]
  uint64_t* empty_bar = full_bar + kStages;                                               // [kStages]

  const uint32_t warpgroup = threadIdx.x / kWarpgroupThreads;

  if (threadIdx.x == 0) {
    for (uint32_t s = 0; s < kStages; ++s) {
      cuda::ptx::mbarrier_init(&full_bar[s], 1);                             // the producer's arrive.expect_tx
      cuda::ptx::mbarrier_init(&empty_bar[s], kNumConsumerThreads / 32);  // one arrive per consumer warp
    }
    // Make the initialized barriers visible to the async proxy (TMA).
    cuda::ptx::fence_mbarrier_init(cuda::ptx::sem_release, cuda::ptx::scope_cluster);
  }
  if (threadIdx.x == kNumConsumerThreads) {
    prefetch_tensor_map(&tmap_a);
    prefetch_tensor_map(&tmap_b);
    prefetch_tensor_map(&tmap_d);
  }
  __syncthreads();

  const int32_t num_tiles = Sched::num_tiles(p);

  if (warpgroup == kNumConsumerWarpgroups) {
    // ======================= producer warpgroup =======================
    setmaxnreg_dec<kProducerRegisters>();
    if (threadIdx.x == kNumConsumerThreads) {
      uint32_t it = 0;  // pipeline iteration: stage = it % kStages, phase = (it / kStages) & 1
      for (int32_t tile = blockIdx.x; tile < num_tiles; tile += gridDim.x) {
        const Tile t = Sched::get(p, tile);
        if (!t.compute) continue;
        for (int32_t kb = t.kb_begin; kb < t.kb_end; ++kb, ++it) {
          const uint32_t stage = it % kStages;
          const uint32_t phase = (it / kStages) & 1u;
          // Wait until the consumers released this stage. On the first pass the
          // barrier is fresh and waiting for the parity of the "previous" phase
          // (phase ^ 1 = 1) returns at once.
          mbar_wait(&empty_bar[stage], phase ^ 1u, p.hang_trap_ns);
          cuda::ptx::mbarrier_arrive_expect_tx(cuda::ptx::sem_release, cuda::ptx::scope_cta, cuda::ptx::space_shared,
                                               &full_bar[stage], kCfg.stage_tx_bytes());
          const int32_t ca[3] = {kb * int32_t(kBlockK), t.m_block * int32_t(kBlockM), t.a_group};
          cuda::ptx::cp_async_bulk_tensor(cuda::ptx::space_cluster, cuda::ptx::space_global,
                                          smem_a + stage * kCfg.a_stage_bytes(), &tmap_a, ca, &full_bar[stage]);
          const int32_t cb[3] = {kb * int32_t(kBlockK), t.n_block * int32_t(kBlockN), t.b_group};
          cuda::ptx::cp_async_bulk_tensor(cuda::ptx::space_cluster, cuda::ptx::space_global,
                                          smem_b + stage * kCfg.b_stage_bytes(), &tmap_b, cb, &full_bar[stage]);
        }
      }
    }
    // The producer warpgroup is done; the consumers keep the CTA (and its
    // shared memory) alive until every stage issued here has been consumed.
    return;
  }

  // ======================= consumer warpgroups =======================
  setmaxnreg_inc<kConsumerRegisters>();

  const uint32_t wg = warpgroup;                      // 0 or 1
  const uint32_t tid = threadIdx.x % kWarpgroupThreads;  // thread within the warpgroup
  const uint32_t lane = tid % 32;
  const uint32_t wg_m0 = kCfg.wg_m_offset(wg);  // this warpgroup's sub-tile [64, wg_n] within the CTA tile
  const uint32_t wg_n0 = kCfg.wg_n_offset(wg);
  // Tile rows of this thread's accumulator registers: acc_row(tid, r) is r_lo
  // for registers with (r >> 1) & 1 == 0 and r_lo + 8 otherwise.
  const uint32_t r_lo = wg_m0 + acc_row(tid, 0);
  const uint32_t r_hi = wg_m0 + acc_row(tid, 2);

  float acc[kAccRegs];   // promoted, scaled fp32 accumulator of the tile
  float part[kAccRegs];  // one 128-K block's raw tensor-core sum
#pragma unroll
  for (uint32_t i = 0; i < kAccRegs; ++i) part[i] = 0.0f;

  uint32_t it = 0;
  for (int32_t tile = blockIdx.x; tile < num_tiles; tile += gridDim.x) {
    const Tile t = Sched::get(p, tile);
    const int64_t row0 = int64_t(t.m_block) * kBlockM;  // first tile row within its A/D group
#pragma unroll
    for (uint32_t i = 0; i < kAccRegs; ++i) acc[i] = 0.0f;

    if (t.compute) {
      const int64_t row_lo = row0 + r_lo;
      const int64_t row_hi = row0 + r_hi;
      const bool lo_in = row_lo < p.rows;
      const bool hi_in = row_hi < p.rows;
      const int64_t a_base_row = int64_t(t.a_group) * p.rows;
      const float* sa_lo = p.sa + (a_base_row + (lo_in ? row_lo : 0)) * p.k_blocks;  // [k_blocks]
      const float* sa_hi = p.sa + (a_base_row + (hi_in ? row_hi : 0)) * p.k_blocks;  // [k_blocks]
      // NOTE: BLOCK_N divides 128, so the whole tile shares one sb row.
      const float* sb_row =
          p.sb + (int64_t(t.b_group) * p.n_scale_blocks + (int64_t(t.n_block) * kBlockN) / kScaleBlock) * p.k_blocks;

      for (int32_t kb = t.kb_begin; kb < t.kb_end; ++kb, ++it) {
        const uint32_t stage = it % kStages;
        const uint32_t phase = (it / kStages) & 1u;
        // Scales first: their global loads overlap the barrier wait.
        const float s_b = __ldg(sb_row + kb);
        const float s_lo = lo_in ? __ldg(sa_lo + kb) * s_b : 0.0f;
        const float s_hi = hi_in ? __ldg(sa_hi + kb) * s_b : 0.0f;

        mbar_wait(&full_bar[stage], phase, p.hang_trap_ns);

        const uint32_t a_tile = smem_u32(smem_a + stage * kCfg.a_stage_bytes() + wg_m0 * kBlockK);
        const uint32_t b_tile = smem_u32(smem_b + stage * kCfg.b_stage_bytes() + wg_n0 * kBlockK);
#pragma unroll
        for (uint32_t i = 0; i < kAccRegs; ++i) fence_operand(part[i]);
        wgmma_fence();  // order our earlier register reads of `part` before the async MMAs
#pragma unroll
        for (uint32_t kk = 0; kk < kBlockK / kWgmmaK; ++kk) {
          // k-step kk reads bytes [32 kk, 32 kk + 32) of every tile row: advance the
          // descriptors' start address; the hardware swizzles the final address.
          Mma::mma(part, make_kmajor_sw128_desc(a_tile + kk * kWgmmaK), make_kmajor_sw128_desc(b_tile + kk * kWgmmaK),
                   kk == 0 ? 0u : 1u);
        }
        wgmma_commit();
#pragma unroll
        for (uint32_t i = 0; i < kAccRegs; ++i) fence_operand(part[i]);
        wgmma_wait<0>();
#pragma unroll
        for (uint32_t i = 0; i < kAccRegs; ++i) fence_operand(part[i]);

        // This warp's MMAs have completed: it no longer reads the stage.
        __syncwarp();
        if (lane == 0) cuda::ptx::mbarrier_arrive(&empty_bar[stage]);

        // Promotion: acc += sa * sb * partial, per accumulator row.
#pragma unroll
        for (uint32_t i = 0; i < kAccRegs; ++i) acc[i] = fmaf(((i >> 1) & 1u) ? s_hi : s_lo, part[i], acc[i]);
      }
    }

    // ---- epilogue: registers -> swizzled smem -> TMA store ----
    // (1) smem_d is free once the previous tile's TMA store has read it.
    if (threadIdx.x == 0) cuda::ptx::cp_async_bulk_wait_group_read(cuda::ptx::n32_t<0>());
    consumer_bar_sync();
    // (2) Each thread writes its column pairs; padding / masked rows become 0.
    const bool lo_ok = Sched::row_valid(p, t, row0 + r_lo);
    const bool hi_ok = Sched::row_valid(p, t, row0 + r_hi);
#pragma unroll
    for (uint32_t r = 0; r < kAccRegs; r += 2) {
      const bool ok = ((r >> 1) & 1u) ? hi_ok : lo_ok;
      const uint32_t row = wg_m0 + acc_row(tid, r);
      const uint32_t col = wg_n0 + acc_col(tid, r);  // even: (col, col + 1) share a 16-byte chunk
      store_pair<OutT>(smem_d + d_tile_offset(row, col, kBlockM, sizeof(OutT)), ok ? acc[r] : 0.0f,
                       ok ? acc[r + 1] : 0.0f);
    }
    // (3) Generic-proxy writes -> visible to the async proxy (TMA), then sync.
    cuda::ptx::fence_proxy_async(cuda::ptx::space_shared);
    consumer_bar_sync();
    // (4) One thread stores the tile, one 128-byte-wide slab at a time; TMA
    // clips rows past the group's extent and columns past N.
    if (threadIdx.x == 0) {
#pragma unroll
      for (uint32_t s = 0; s < kCfg.d_slabs(); ++s) {
        const int32_t col0 = t.n_block * int32_t(kBlockN) + int32_t(s * slab_cols(sizeof(OutT)));
        if (col0 < p.n) {
          const int32_t cd[3] = {col0, t.m_block * int32_t(kBlockM), t.d_group};
          cuda::ptx::cp_async_bulk_tensor(cuda::ptx::space_global, cuda::ptx::space_shared, &tmap_d, cd,
                                          smem_d + s * kBlockM * kSwizzleRowBytes);
        }
      }
      cuda::ptx::cp_async_bulk_commit_group();
    }
  }
  // Outstanding stores must finish before the CTA's shared memory goes away.
  if (threadIdx.x == 0) cuda::ptx::cp_async_bulk_wait_group(cuda::ptx::n32_t<0>());
#endif
}

// ---------------------------------------------------------------------------
// Launcher
// ---------------------------------------------------------------------------

template <class OutT>
constexpr CUtensorMapDataType out_tma_dtype() {
  return sizeof(OutT) == 4 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT32 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
}

// Shapes were checked by sm90_fp8_gemm_eligible (sm90_fp8_gemm_heuristics.cpp).
template <uint32_t kBlockM, class OutT, template <uint32_t> class Sched>
int sm90_fp8_gemm_launch(const GemmProblem& pr, int sm_count, cudaStream_t stream, char* err, size_t err_len) {
  constexpr uint32_t kBlockN = 128;
  constexpr uint32_t kStages = max_stages(kBlockM, kBlockN, sizeof(OutT));
  constexpr TileConfig kCfg{kBlockM, kBlockN, uint32_t(sizeof(OutT)), kStages};
  static_assert(valid_tile_config(kCfg), "tile configuration breaks a hardware or layout invariant");

  const uint64_t k = uint64_t(pr.k), n = uint64_t(pr.n), rows = uint64_t(pr.rows);
  const uint64_t a_groups = uint64_t(pr.a_groups()), d_groups = uint64_t(pr.d_groups()), groups = uint64_t(pr.groups);
  constexpr uint64_t eb = sizeof(OutT);

  CUtensorMap tmap_a, tmap_b, tmap_d;
  {
    const uint64_t dims[3] = {k, rows, a_groups};  // A: [a_groups, rows, K] fp8
    const uint64_t strides[2] = {k, rows * k};
    const uint32_t box[3] = {kBlockK, kBlockM, 1};
    const int rc = encode_tensor_map_3d(&tmap_a, CU_TENSOR_MAP_DATA_TYPE_UINT8, 1, pr.a, dims, strides, box, err, err_len);
    if (rc != MOE_CUDA_OK) return rc;
  }
  {
    const uint64_t dims[3] = {k, n, groups};  // B: [groups, N, K] fp8
    const uint64_t strides[2] = {k, n * k};
    const uint32_t box[3] = {kBlockK, kBlockN, 1};
    const int rc = encode_tensor_map_3d(&tmap_b, CU_TENSOR_MAP_DATA_TYPE_UINT8, 1, pr.b, dims, strides, box, err, err_len);
    if (rc != MOE_CUDA_OK) return rc;
  }
  {
    const uint64_t dims[3] = {n, rows, d_groups};  // D: [d_groups, rows, N] bf16/f32 (split-K: f32 slices)
    const uint64_t strides[2] = {n * eb, rows * n * eb};
    const uint32_t box[3] = {slab_cols(eb), kBlockM, 1};
    const int rc = encode_tensor_map_3d(&tmap_d, out_tma_dtype<OutT>(), uint32_t(eb), pr.d, dims, strides, box, err, err_len);
    if (rc != MOE_CUDA_OK) return rc;
  }

  KernelParams kp;
  kp.sa = pr.sa;
  kp.sb = pr.sb;
  kp.group_index = pr.group_index;
  kp.masked_m = pr.masked_m;
  kp.rows = int32_t(pr.rows);
  kp.n = int32_t(pr.n);
  kp.k_blocks = int32_t(pr.k / kBlockK);
  kp.n_scale_blocks = int32_t(pr.n_scale_blocks());
  kp.groups = int32_t(pr.groups);
  kp.m_blocks = int32_t((pr.rows + kBlockM - 1) / kBlockM);
  kp.n_blocks = int32_t((pr.n + kBlockN - 1) / kBlockN);
  kp.k_splits = pr.k_splits > 1 ? pr.k_splits : 1;
  kp.hang_trap_ns = pr.hang_trap_ns;

  const int64_t num_tiles = int64_t(pr.d_groups()) * kp.m_blocks * kp.n_blocks;  // a_groups or splits
  if (num_tiles == 0) return MOE_CUDA_OK;
  if (num_tiles > 0x7FFFFFFF) {
    return fail(MOE_CUDA_ERR_RANGE, err, err_len, "Hopper FP8 GEMM: %lld tiles exceed the scheduler's int32 range",
                static_cast<long long>(num_tiles));
  }
  const unsigned grid = static_cast<unsigned>(num_tiles < sm_count ? num_tiles : sm_count);

  auto kernel = sm90_fp8_gemm_kernel<kBlockM, kBlockN, kStages, OutT, Sched<kBlockM>>;
  MOE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kCfg.smem_request_bytes())));
  kernel<<<grid, kNumThreads, kCfg.smem_request_bytes(), stream>>>(tmap_a, tmap_b, tmap_d, kp);
  MOE_CUDA_CHECK_LAUNCH("sm90_fp8_gemm_kernel");
  return MOE_CUDA_OK;
}

// Instantiates the four (BLOCK_M, out dtype) variants of one layout.
template <template <uint32_t> class Sched>
int sm90_fp8_gemm_dispatch(const GemmProblem& pr, uint32_t block_m, int sm_count, cudaStream_t stream, char* err,
                           size_t err_len) {
  if (block_m == 64) {
    return pr.d_f32 ? sm90_fp8_gemm_launch<64, float, Sched>(pr, sm_count, stream, err, err_len)
                    : sm90_fp8_gemm_launch<64, __nv_bfloat16, Sched>(pr, sm_count, stream, err, err_len);
  }
  if (block_m == 128) {
    return pr.d_f32 ? sm90_fp8_gemm_launch<128, float, Sched>(pr, sm_count, stream, err, err_len)
                    : sm90_fp8_gemm_launch<128, __nv_bfloat16, Sched>(pr, sm_count, stream, err, err_len);
  }
  return fail(MOE_CUDA_ERR_INTERNAL, err, err_len, "Hopper FP8 GEMM: no kernel for BLOCK_M = %u", block_m);
}

}  // namespace sm90
}  // namespace moe_cuda
