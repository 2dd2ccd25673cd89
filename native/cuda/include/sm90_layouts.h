// Hopper (sm_90a) layout arithmetic for the FP8 GEMM kernels, as constexpr
// functions usable on the host and the device.
//
// Everything the Hopper kernel computes about *where bytes live* is here, so
// that native/cuda/test/layouts_test.cpp can check it on the CPU (g++, no CUDA)
// against an independent model written from the PTX ISA's tables:
//   - the 128-byte shared-memory swizzle that TMA (CU_TENSOR_MAP_SWIZZLE_128B)
//     writes and wgmma (descriptor swizzle mode 1) reads,
//   - the wgmma matrix descriptor (PTX ISA "Matrix Descriptor Format"),
//   - the f32 accumulator fragment of wgmma.m64nNk32 (which (row, col) each
//     thread/register holds),
//   - the TMA box / shared-memory tile arithmetic and the smem budget,
//   - the persistent tile scheduler's rasterization.
//
// This header must compile with a plain C++17 compiler: no CUDA types.
#pragma once

#include <stdint.h>

// Functions below are constexpr (hence inline) and callable from host and
// device code.
#if defined(__CUDACC__)
#define MOE_HD __host__ __device__
#else
#define MOE_HD
#endif

namespace moe_cuda {
namespace sm90 {

// ---------------------------------------------------------------------------
// Hardware constants (H100/H200, compute capability 9.0)
// ---------------------------------------------------------------------------
// NOTE: 227 KB is the largest dynamic shared memory one CTA may opt into on
// sm_90 (cudaDevAttrMaxSharedMemoryPerBlockOptin = 232448).
constexpr uint32_t kMaxSmemPerBlock = 232448;
// NOTE: 64K 32-bit registers per SM; setmaxnreg counts are multiples of 8 in
// [24, 256] (PTX ISA, setmaxnreg).
constexpr uint32_t kRegistersPerSm = 65536;
constexpr uint32_t kWarpgroupThreads = 128;

// ---------------------------------------------------------------------------
// 128-byte swizzle
// ---------------------------------------------------------------------------
// A "swizzle row" is 128 bytes; the pattern repeats every 8 rows (1024 bytes).
// Within a 1024-byte aligned atom, the 16-byte chunk index (address bits [4:6])
// is XORed with the row index within the atom (address bits [7:9]). In CuTe
// terms this is Swizzle<3, 4, 3> on byte addresses.
constexpr uint32_t kSwizzleRowBytes = 128;
constexpr uint32_t kSwizzleAtomBytes = 1024;  // 8 rows x 128 B
constexpr uint32_t kSwizzleChunkBytes = 16;

// Physical byte offset of logical byte offset `x`, relative to a 1024-byte
// aligned base (the swizzle is a function of absolute shared-memory address
// bits; with a 1024-aligned base it is a function of the offset alone).
MOE_HD constexpr uint32_t swizzle_128b(uint32_t x) {
  return x ^ (((x >> 7) & 0x7u) << 4);
}

// A tile whose rows are exactly 128 bytes (e.g. [rows, 128] fp8, K-major, one
// BLOCK_K = 128 slice), as TMA writes it with SWIZZLE_128B: logical byte
// (row, col_byte) lands at this offset from the 1024-aligned tile base.
MOE_HD constexpr uint32_t sw128_offset(uint32_t row, uint32_t col_byte) {
  return swizzle_128b(row * kSwizzleRowBytes + col_byte);
}

// An output tile [rows, cols] of `elem_bytes`-sized elements stored as
// consecutive 128-byte-wide column slabs ([rows, 128 B] each, slab s holding
// columns [s * 128/elem, (s+1) * 128/elem)), each slab 128B-swizzled. This is
// the shared-memory image of one TMA store per slab with box
// {128/elem, rows} and SWIZZLE_128B.
MOE_HD constexpr uint32_t slab_cols(uint32_t elem_bytes) { return kSwizzleRowBytes / elem_bytes; }
MOE_HD constexpr uint32_t d_tile_offset(uint32_t row, uint32_t col, uint32_t rows, uint32_t elem_bytes) {
  return (col / slab_cols(elem_bytes)) * rows * kSwizzleRowBytes +
         sw128_offset(row, (col % slab_cols(elem_bytes)) * elem_bytes);
}

// ---------------------------------------------------------------------------
// wgmma matrix descriptor (PTX ISA 9.7.15.5.1.2.2 "Matrix Descriptor Format")
// ---------------------------------------------------------------------------
//   bits  0-13  encode(start address)
//   bits 16-29  encode(leading dimension byte offset)
//   bits 32-45  encode(stride dimension byte offset)
//   bits 49-51  matrix base offset (0 when the swizzle pattern starts on its
//               natural boundary: 1024 B for 128B swizzle)
//   bits 62-63  swizzle mode: 0 none, 1 128B, 2 64B, 3 32B
// where encode(x) = (x & 0x3FFFF) >> 4.
enum class DescSwizzle : uint32_t { kNone = 0, k128B = 1, k64B = 2, k32B = 3 };

MOE_HD constexpr uint64_t desc_encode(uint32_t x) { return static_cast<uint64_t>((x & 0x3FFFFu) >> 4); }

MOE_HD constexpr uint64_t make_wgmma_desc(uint32_t start_addr, uint32_t lbo_bytes, uint32_t sbo_bytes,
                                          uint32_t base_offset, DescSwizzle swizzle) {
  return desc_encode(start_addr) | (desc_encode(lbo_bytes) << 16) | (desc_encode(sbo_bytes) << 32) |
         (static_cast<uint64_t>(base_offset & 0x7u) << 49) | (static_cast<uint64_t>(swizzle) << 62);
}

// Decoders (used by the tests and by debug assertions).
MOE_HD constexpr uint32_t desc_start_addr(uint64_t d) { return static_cast<uint32_t>(d & 0x3FFFu) << 4; }
MOE_HD constexpr uint32_t desc_lbo(uint64_t d) { return static_cast<uint32_t>((d >> 16) & 0x3FFFu) << 4; }
MOE_HD constexpr uint32_t desc_sbo(uint64_t d) { return static_cast<uint32_t>((d >> 32) & 0x3FFFu) << 4; }
MOE_HD constexpr uint32_t desc_base_offset(uint64_t d) { return static_cast<uint32_t>((d >> 49) & 0x7u); }
MOE_HD constexpr uint32_t desc_swizzle(uint64_t d) { return static_cast<uint32_t>(d >> 62); }

// K-major operand with 128B swizzle whose rows are 128 bytes (BLOCK_K = 128
// fp8 values): core matrices are 8 rows x 16 B; consecutive 8-row groups are
// 1024 B apart (SBO); the leading byte offset is "not used, assumed 1" for
// swizzled K-major layouts (PTX ISA, Leading Dimension Byte Offset), so we
// encode 16 B (= 1). The tile base must be 1024-aligned (base offset 0).
// The k-th 32-element (32-byte) slice of the tile is addressed by advancing
// the start address by k * 32 bytes: the hardware applies the swizzle to the
// final address bits, exactly as TMA did when writing.
constexpr uint32_t kKMajorSw128Sbo = 8 * kSwizzleRowBytes;  // 1024
constexpr uint32_t kKMajorSw128Lbo = 16;                      // unused, encodes 1

MOE_HD constexpr uint64_t make_kmajor_sw128_desc(uint32_t smem_addr) {
  return make_wgmma_desc(smem_addr, kKMajorSw128Lbo, kKMajorSw128Sbo, 0, DescSwizzle::k128B);
}

// ---------------------------------------------------------------------------
// wgmma.m64nNk32 (e4m3 x e4m3 -> f32) accumulator fragment
// ---------------------------------------------------------------------------
// The warpgroup's 128 threads hold the 64 x N f32 tile in N/2 registers each.
// Warp w (= t / 32) owns rows [16w, 16w + 16). Lane l holds, for each 8-column
// block j (= r / 4), the pair of columns 8j + 2(l % 4) + {0, 1} in rows
// 16w + l/4 (registers 4j, 4j+1) and 16w + l/4 + 8 (registers 4j+2, 4j+3).
constexpr uint32_t kWgmmaM = 64;
constexpr uint32_t kWgmmaK = 32;  // fp8: 32 elements = 32 bytes per k-step

MOE_HD constexpr uint32_t acc_regs(uint32_t n) { return n / 2; }
MOE_HD constexpr uint32_t acc_row(uint32_t thread, uint32_t reg) {
  return ((thread >> 5) << 4) | ((thread & 31u) >> 2) | (((reg >> 1) & 1u) << 3);
}
MOE_HD constexpr uint32_t acc_col(uint32_t thread, uint32_t reg) {
  return ((reg >> 2) << 3) | ((thread & 3u) << 1) | (reg & 1u);
}

// wgmma's N must be a multiple of 8 in [8, 256] (PTX ISA, wgmma shapes).
MOE_HD constexpr bool valid_wgmma_n(uint32_t n) { return n >= 8 && n <= 256 && n % 8 == 0; }

// ---------------------------------------------------------------------------
// Kernel tile configuration and shared-memory budget
// ---------------------------------------------------------------------------
// BLOCK_K is fixed at 128: one per-128-K scale group per pipeline stage, and one
// 128-byte swizzle row per tile row.
constexpr uint32_t kBlockK = 128;
// Scales apply to 128-wide blocks of K (sa, sb) and of N (sb).
constexpr uint32_t kScaleBlock = 128;

// Two consumer warpgroups (math) + one producer warpgroup (TMA).
constexpr uint32_t kNumConsumerWarpgroups = 2;
constexpr uint32_t kNumThreads = (kNumConsumerWarpgroups + 1) * kWarpgroupThreads;  // 384
constexpr uint32_t kNumConsumerThreads = kNumConsumerWarpgroups * kWarpgroupThreads;  // 256

// Register budget: __launch_bounds__(384, 1) lets ptxas use up to
// floor(65536 / 384 / 8) * 8 = 168 registers per thread; setmaxnreg then moves
// registers from the producer (down to 40) to the consumers (up to 232).
constexpr uint32_t kLaunchRegisters = (kRegistersPerSm / kNumThreads) / 8 * 8;  // 168
constexpr uint32_t kProducerRegisters = 40;
constexpr uint32_t kConsumerRegisters = 232;

MOE_HD constexpr uint32_t align_up(uint32_t x, uint32_t a) { return (x + a - 1) / a * a; }

struct TileConfig {
  uint32_t block_m;     // 64 or 128
  uint32_t block_n;     // 128
  uint32_t out_bytes;   // 2 (bf16) or 4 (f32)
  uint32_t stages;

  // Each consumer warpgroup owns a 64 x wg_n sub-tile: with BLOCK_M = 128 the
  // two warpgroups stack along M; with BLOCK_M = 64 they split N.
  MOE_HD constexpr uint32_t wg_per_m() const { return block_m / kWgmmaM; }
  MOE_HD constexpr uint32_t wg_n() const { return block_n * wg_per_m() / kNumConsumerWarpgroups; }
  MOE_HD constexpr uint32_t wg_m_offset(uint32_t wg) const { return (wg % wg_per_m()) * kWgmmaM; }
  MOE_HD constexpr uint32_t wg_n_offset(uint32_t wg) const { return (wg / wg_per_m()) * wg_n(); }

  // One pipeline stage: an A tile [block_m, 128] and a B tile [block_n, 128],
  // both fp8, K-major, 128B-swizzled; each starts on a 1024-byte boundary.
  MOE_HD constexpr uint32_t a_stage_bytes() const { return block_m * kBlockK; }
  MOE_HD constexpr uint32_t b_stage_bytes() const { return block_n * kBlockK; }
  MOE_HD constexpr uint32_t stage_bytes() const { return a_stage_bytes() + b_stage_bytes(); }
  // Bytes the two TMA loads of one stage deliver: the mbarrier's expect_tx.
  MOE_HD constexpr uint32_t stage_tx_bytes() const { return stage_bytes(); }
  // The bf16/f32 output tile, staged for the TMA store.
  MOE_HD constexpr uint32_t d_tile_bytes() const { return block_m * block_n * out_bytes; }
  MOE_HD constexpr uint32_t d_slabs() const { return block_n * out_bytes / kSwizzleRowBytes; }

  // Shared-memory map (offsets from a 1024-aligned base):
  //   [A stages][B stages][D tile][full barriers][empty barriers]
  MOE_HD constexpr uint32_t smem_a_offset() const { return 0; }
  MOE_HD constexpr uint32_t smem_b_offset() const { return stages * a_stage_bytes(); }
  MOE_HD constexpr uint32_t smem_d_offset() const { return smem_b_offset() + stages * b_stage_bytes(); }
  MOE_HD constexpr uint32_t smem_barrier_offset() const { return smem_d_offset() + d_tile_bytes(); }
  MOE_HD constexpr uint32_t smem_used_bytes() const { return smem_barrier_offset() + 2 * stages * 8; }
  // The dynamic shared-memory base is only guaranteed 16-byte aligned: ask for
  // 1024 more bytes and align the base inside the kernel.
  MOE_HD constexpr uint32_t smem_request_bytes() const { return smem_used_bytes() + kSwizzleAtomBytes; }
};

// The largest stage count (up to 8) that fits the smem budget.
MOE_HD constexpr uint32_t max_stages(uint32_t block_m, uint32_t block_n, uint32_t out_bytes) {
  uint32_t best = 0;
  for (uint32_t s = 1; s <= 8; ++s) {
    TileConfig c{block_m, block_n, out_bytes, s};
    if (c.smem_request_bytes() <= kMaxSmemPerBlock) best = s;
  }
  return best;
}

MOE_HD constexpr bool valid_tile_config(const TileConfig& c) {
  return (c.block_m == 64 || c.block_m == 128) && c.block_n == 128 &&
         (c.out_bytes == 2 || c.out_bytes == 4) && c.stages >= 2 && c.stages <= 8 &&
         valid_wgmma_n(c.wg_n()) &&
         // every A/B stage and the D tile start on a 1024-byte boundary
         c.a_stage_bytes() % kSwizzleAtomBytes == 0 && c.b_stage_bytes() % kSwizzleAtomBytes == 0 &&
         c.smem_d_offset() % kSwizzleAtomBytes == 0 &&
         // the per-warpgroup A/B sub-tiles start on a 1024-byte boundary too
         (c.wg_m_offset(1) * kBlockK) % kSwizzleAtomBytes == 0 &&
         (c.wg_n_offset(1) * kBlockK) % kSwizzleAtomBytes == 0 &&
         // mbarriers are 8-byte objects
         c.smem_barrier_offset() % 8 == 0 &&
         // each warpgroup's column range covers whole D slabs
         (c.wg_n() * c.out_bytes) % kSwizzleRowBytes == 0 &&
         // TMA boxes: <= 256 elements per dimension; 128B swizzle needs an inner
         // box of <= 128 bytes (we use exactly 128)
         c.block_m <= 256 && c.block_n <= 256 &&
         // one sb value per tile and k-block
         kScaleBlock % c.block_n == 0 &&
         c.smem_request_bytes() <= kMaxSmemPerBlock;
}

// setmaxnreg bookkeeping: the registers the producer releases must cover what
// the consumers request (the CTA pool holds kLaunchRegisters per thread).
MOE_HD constexpr bool valid_register_split() {
  return kProducerRegisters % 8 == 0 && kConsumerRegisters % 8 == 0 && kProducerRegisters >= 24 &&
         kConsumerRegisters <= 256 && kProducerRegisters <= kLaunchRegisters &&
         kConsumerRegisters >= kLaunchRegisters &&
         kWarpgroupThreads * kProducerRegisters + kNumConsumerThreads * kConsumerRegisters <=
             kNumThreads * kLaunchRegisters;
}

// ---------------------------------------------------------------------------
// TMA (cuTensorMapEncodeTiled) argument rules, from the driver API reference.
// ---------------------------------------------------------------------------
// rank <= 5; each global dim in [1, 2^32]; strides (bytes, dims 1..rank-1)
// multiples of 16 and < 2^40; global address 16-byte aligned; box dims in
// [1, 256] with box[0] * elem a multiple of 16 bytes; with a swizzle the inner
// box extent in bytes must be <= the swizzle span (128).
struct TmaDesc3d {
  uint64_t dims[3];
  uint64_t strides[2];  // bytes, for dims 1 and 2
  uint32_t box[3];
  uint32_t elem_bytes;
  uint64_t address;
  bool swizzle_128b;
};

MOE_HD constexpr bool tma_desc_valid(const TmaDesc3d& t) {
  for (int i = 0; i < 3; ++i) {
    if (t.dims[i] == 0 || t.dims[i] > (uint64_t(1) << 32)) return false;
    if (t.box[i] == 0 || t.box[i] > 256) return false;
  }
  for (int i = 0; i < 2; ++i) {
    if (t.strides[i] % 16 != 0 || t.strides[i] >= (uint64_t(1) << 40)) return false;
  }
  if (t.address % 16 != 0) return false;
  if ((uint64_t(t.box[0]) * t.elem_bytes) % 16 != 0) return false;
  if (t.swizzle_128b && uint64_t(t.box[0]) * t.elem_bytes > kSwizzleRowBytes) return false;
  // strides must cover the previous dimension
  if (t.strides[0] < t.dims[0] * t.elem_bytes) return false;
  if (t.strides[1] < t.strides[0] * t.dims[1]) return false;
  return true;
}

// ---------------------------------------------------------------------------
// Persistent tile scheduler: rasterization for L2 reuse
// ---------------------------------------------------------------------------
// Tiles of one problem ([m_blocks x n_blocks]) are visited in bands of
// `band` n-blocks: within a band, consecutive tile ids walk down M with the
// n-block varying fastest. The CTAs of one wave therefore share a few B tiles
// (weights, the large operand in MoE) and sweep A, so the band of B stays in
// L2 while all of A streams past it.
struct TileCoord {
  uint32_t m_block;
  uint32_t n_block;
};

constexpr uint32_t kRasterBand = 8;

MOE_HD constexpr TileCoord raster_tile(uint32_t tile, uint32_t m_blocks, uint32_t n_blocks, uint32_t band) {
  const uint32_t per_band = band * m_blocks;
  const uint32_t band_idx = tile / per_band;
  const uint32_t first_n = band_idx * band;
  const uint32_t width = (n_blocks - first_n) < band ? (n_blocks - first_n) : band;
  const uint32_t in_band = tile - band_idx * per_band;
  return TileCoord{in_band / width, first_n + in_band % width};
}

// ---------------------------------------------------------------------------
// Split-K for dense problems that cannot fill the GPU
// ---------------------------------------------------------------------------
// A dense problem with few rows (decode, a small batch: M <= 128) has only
// m_blocks x ceil(N / 128) tiles, often far fewer than the SMs (N = 2112:
// 17 of 132), and each CTA must then stream its B tiles alone. Its K blocks
// are split into `splits` contiguous ranges instead: tile t of split s
// computes the partial f32 tile of K blocks [split_k_begin(s), split_k_begin(s
// + 1)) into slice s of a workspace [splits, M, N], and a reduction kernel
// adds the slices in split order (deterministic) into D.
constexpr uint32_t kMaxKSplits = 16;
constexpr uint32_t kMinKBlocksPerSplit = 4;  // fewer: the pipeline barely fills

MOE_HD constexpr uint32_t split_k_begin(uint32_t split, uint32_t k_blocks, uint32_t splits) {
  return static_cast<uint32_t>(uint64_t(split) * k_blocks / splits);
}

// Tile id -> (split, tile of the rasterized grid, its K blocks). Ids run
// split-major: the CTAs of one wave cover every tile of a split before the
// next split's.
struct SplitTile {
  uint32_t split;
  TileCoord coord;
  uint32_t kb_begin, kb_end;  // K blocks [kb_begin, kb_end)
};

MOE_HD constexpr SplitTile split_k_tile(uint32_t tile, uint32_t m_blocks, uint32_t n_blocks, uint32_t k_blocks,
                                        uint32_t splits) {
  const uint32_t per_split = m_blocks * n_blocks;
  const uint32_t split = tile / per_split;
  return SplitTile{split, raster_tile(tile - split * per_split, m_blocks, n_blocks, kRasterBand),
                   split_k_begin(split, k_blocks, splits), split_k_begin(split + 1, k_blocks, splits)};
}

// How many splits for `tiles` output tiles of `k_blocks` K blocks on
// `sm_count` SMs: 1 (no split) when the tiles already fill half the GPU;
// otherwise enough to fill it once, each split keeping at least
// kMinKBlocksPerSplit K blocks.
MOE_HD constexpr uint32_t choose_k_splits(uint64_t tiles, uint32_t k_blocks, uint32_t sm_count) {
  if (tiles == 0 || tiles * 2 > sm_count) return 1;
  uint64_t s = sm_count / tiles;
  if (s > k_blocks / kMinKBlocksPerSplit) s = k_blocks / kMinKBlocksPerSplit;
  if (s > kMaxKSplits) s = kMaxKSplits;
  return s < 2 ? 1 : static_cast<uint32_t>(s);
}

}  // namespace sm90
}  // namespace moe_cuda
