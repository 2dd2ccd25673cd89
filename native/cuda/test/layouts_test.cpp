// CPU test of include/sm90_layouts.h (and the Hopper config heuristics) and
// of include/mma_m16n8k16.h (the tensor-core router's fragments)
// against an independent model of the hardware layouts, written from the PTX
// ISA's tables and figures and the driver API's TMA rules. g++ only, no CUDA:
//
//   g++ -std=c++17 -O1 -Inative/cuda/include -Inative/cuda/src
//       native/cuda/test/layouts_test.cpp native/cuda/src/sm90_fp8_gemm_heuristics.cpp -o layouts_test
//
// Exits 0 when every check passes, 1 otherwise (printing each mismatch).
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <set>
#include <utility>
#include <vector>

#include "mma_m16n8k16.h"
#include "sm90_fp8_gemm_heuristics.h"
#include "sm90_layouts.h"

using namespace moe_cuda;
using namespace moe_cuda::sm90;

// Compile-time checks: the header's functions are constexpr.
static_assert(swizzle_128b(0x80) == 0x90, "row 1 moves chunk 0 to chunk 1");
static_assert(kLaunchRegisters == 168, "384 threads, 1 CTA/SM: 168 registers");
static_assert(valid_register_split(), "setmaxnreg 40/232 fits the pool");
static_assert(valid_tile_config(TileConfig{128, 128, 2, max_stages(128, 128, 2)}), "BM128 bf16");
static_assert(valid_tile_config(TileConfig{128, 128, 4, max_stages(128, 128, 4)}), "BM128 f32");
static_assert(valid_tile_config(TileConfig{64, 128, 2, max_stages(64, 128, 2)}), "BM64 bf16");
static_assert(valid_tile_config(TileConfig{64, 128, 4, max_stages(64, 128, 4)}), "BM64 f32");

static int g_failures = 0;
static int g_checks = 0;

#define CHECK(cond, ...)                                   \
  do {                                                     \
    ++g_checks;                                            \
    if (!(cond)) {                                         \
      if (g_failures < 40) {                               \
        printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
        printf(__VA_ARGS__);                               \
        printf("\n");                                      \
      }                                                    \
      ++g_failures;                                        \
    }                                                      \
  } while (0)

// ===========================================================================
// Independent model
// ===========================================================================

// (1) The 128B swizzle as the TMA / PTX ISA figures draw it: a 1024-byte
// pattern of 8 rows x 8 chunks of 16 bytes; in row r, logical chunk c is
// stored at physical chunk c XOR r.
static uint32_t model_tma_sw128(uint32_t tile_row, uint32_t col_byte) {
  const uint32_t atom = tile_row / 8, r = tile_row % 8;
  const uint32_t chunk = col_byte / 16, within = col_byte % 16;
  static const uint8_t kPhysChunk[8][8] = {
      {0, 1, 2, 3, 4, 5, 6, 7}, {1, 0, 3, 2, 5, 4, 7, 6}, {2, 3, 0, 1, 6, 7, 4, 5}, {3, 2, 1, 0, 7, 6, 5, 4},
      {4, 5, 6, 7, 0, 1, 2, 3}, {5, 4, 7, 6, 1, 0, 3, 2}, {6, 7, 4, 5, 2, 3, 0, 1}, {7, 6, 5, 4, 3, 2, 1, 0}};
  return atom * 1024 + r * 128 + kPhysChunk[r][chunk] * 16 + within;
}

// (2) CuTe's Swizzle<B, M, S> (the PTX ISA's canonical layouts use
// Swizzle<3, 4, 3> for 128B): x ^ ((x & (((1 << B) - 1) << (M + S))) >> S).
static uint32_t model_cute_swizzle(uint32_t x, uint32_t b, uint32_t m, uint32_t s) {
  const uint32_t mask = ((1u << b) - 1u) << (m + s);
  return x ^ ((x & mask) >> s);
}

// (3) The shared-memory byte a wgmma reads for element (i, j) of a K-major
// operand (i: row in M or N, j: k index, 0 <= j < 32 for fp8 k32), from the
// canonical layout table: K-major, 128B swizzling:
//   Swizzle<3,4,3> o ((8, m), (T, 2k)) : ((8T, SBO), (1, T)),  T = 128 / 8 = 16
// in units of elements (1 byte for fp8), starting at the descriptor's start
// address; the swizzle acts on absolute addresses (base offset 0 means the
// pattern is anchored at 1024-byte boundaries).
static uint32_t model_wgmma_read(uint64_t desc, uint32_t i, uint32_t j) {
  // decode the descriptor with the table's bit positions
  uint32_t start = 0, sbo = 0, mode = 0;
  for (int bit = 0; bit < 14; ++bit) start |= uint32_t((desc >> bit) & 1u) << (bit + 4);
  for (int bit = 0; bit < 14; ++bit) sbo |= uint32_t((desc >> (32 + bit)) & 1u) << (bit + 4);
  mode = uint32_t((desc >> 62) & 3u);
  if (mode != 1) return 0xFFFFFFFFu;  // only 128B swizzle is modelled
  const uint32_t T = 16;
  const uint32_t offset = (i % 8) * (8 * T) + (i / 8) * sbo + (j % T) * 1 + (j / T) * T;
  return model_cute_swizzle(start + offset, 3, 4, 3);
}

// (4) The wgmma .m64nNk32 f32 accumulator (PTX ISA figure "WGMMA .m64nNk32
// register fragment layout for accumulator matrix D"): the 64 rows are four
// 16-row slices, one per warp; within a slice the figure repeats, for every 8
// columns, the m16n8 pattern: lane = 4 * groupID + threadID_in_group holds
// (groupID, 2 t), (groupID, 2 t + 1), (groupID + 8, 2 t), (groupID + 8, 2 t + 1)
// as its next four registers d[4j .. 4j+3].
struct RC {
  uint32_t row, col;
};
static std::vector<std::vector<RC>> model_accumulator(uint32_t n) {
  std::vector<std::vector<RC>> table(128, std::vector<RC>(n / 2));
  for (uint32_t warp = 0; warp < 4; ++warp) {
    for (uint32_t lane = 0; lane < 32; ++lane) {
      const uint32_t group_id = lane / 4, tig = lane % 4;
      const uint32_t thread = warp * 32 + lane;
      uint32_t reg = 0;
      for (uint32_t block = 0; block < n / 8; ++block) {
        table[thread][reg++] = RC{warp * 16 + group_id, block * 8 + tig * 2};
        table[thread][reg++] = RC{warp * 16 + group_id, block * 8 + tig * 2 + 1};
        table[thread][reg++] = RC{warp * 16 + group_id + 8, block * 8 + tig * 2};
        table[thread][reg++] = RC{warp * 16 + group_id + 8, block * 8 + tig * 2 + 1};
      }
    }
  }
  return table;
}

// ===========================================================================
// Tests
// ===========================================================================

static void test_swizzle() {
  for (uint32_t row = 0; row < 256; ++row) {
    for (uint32_t col = 0; col < 128; ++col) {
      const uint32_t got = sw128_offset(row, col), want = model_tma_sw128(row, col);
      CHECK(got == want, "sw128_offset(%u, %u) = %u, model %u", row, col, got, want);
      CHECK(model_cute_swizzle(row * 128 + col, 3, 4, 3) == want, "CuTe Swizzle<3,4,3> disagrees with the TMA table");
    }
  }
  // bijection and involution on one atom
  std::set<uint32_t> seen;
  for (uint32_t x = 0; x < 1024; ++x) {
    seen.insert(swizzle_128b(x));
    CHECK(swizzle_128b(swizzle_128b(x)) == x, "swizzle is an involution (x = %u)", x);
  }
  CHECK(seen.size() == 1024 && *seen.rbegin() == 1023, "swizzle permutes [0, 1024)");
}

static void test_descriptor() {
  // field packing against the table, bit by bit
  const uint32_t addrs[] = {0, 1024, 0x8000, 0x1C400, 0x3FC00 + 0x3F0};
  for (uint32_t addr : addrs) {
    const uint64_t d = make_kmajor_sw128_desc(addr);
    uint64_t want = 0;
    const uint64_t start_field = (addr & 0x3FFFF) >> 4;  // matrix-descriptor-encode
    const uint64_t lbo_field = 1;                         // "not used, assumed to be 1"
    const uint64_t sbo_field = 1024 >> 4;                 // 8 rows x 128 B
    for (int b = 0; b < 14; ++b) want |= ((start_field >> b) & 1u) << b;
    for (int b = 0; b < 14; ++b) want |= ((lbo_field >> b) & 1u) << (16 + b);
    for (int b = 0; b < 14; ++b) want |= ((sbo_field >> b) & 1u) << (32 + b);
    want |= uint64_t(1) << 62;  // bits 63-62 = 01: 128-Byte swizzle
    CHECK(d == want, "descriptor for 0x%x: 0x%016llx, model 0x%016llx", addr, (unsigned long long)d,
          (unsigned long long)want);
    CHECK(desc_start_addr(d) == (addr & 0x3FFF0), "start decode");
    CHECK(desc_sbo(d) == 1024 && desc_lbo(d) == 16 && desc_base_offset(d) == 0 && desc_swizzle(d) == 1, "field decode");
  }
  // generic encoder round trip, other swizzle modes
  const uint64_t g = make_wgmma_desc(0x2340, 0x100, 0x200, 5, DescSwizzle::k32B);
  CHECK(desc_start_addr(g) == 0x2340 && desc_lbo(g) == 0x100 && desc_sbo(g) == 0x200 && desc_base_offset(g) == 5 &&
            desc_swizzle(g) == 3,
        "generic descriptor round trip");
  CHECK(((g >> 14) & 3u) == 0 && ((g >> 30) & 3u) == 0 && ((g >> 46) & 7u) == 0 && ((g >> 52) & 0x3FFu) == 0,
        "reserved bits stay zero");
}

// What the kernel does: TMA writes an [rows, 128] fp8 tile with SWIZZLE_128B at
// a 1024-aligned base; warpgroup w's wgmma k-step kk reads its 64-row (A) or
// wg_n-row (B) slice through make_kmajor_sw128_desc(base + row0 * 128 + 32 kk).
// Every element must be read from exactly where TMA wrote it.
static void test_wgmma_reads_tma_tile() {
  const uint32_t bases[] = {0, 1024, 7 * 1024, 200 * 1024};
  for (uint32_t base : bases) {
    for (uint32_t cfg = 0; cfg < 2; ++cfg) {
      const TileConfig c{cfg == 0 ? 128u : 64u, 128, 2, 4};
      for (uint32_t wg = 0; wg < kNumConsumerWarpgroups; ++wg) {
        struct Operand {
          uint32_t row0, rows;
        } ops[2] = {{c.wg_m_offset(wg), kWgmmaM}, {c.wg_n_offset(wg), c.wg_n()}};
        for (const Operand& op : ops) {
          for (uint32_t kk = 0; kk < kBlockK / kWgmmaK; ++kk) {
            const uint64_t desc = make_kmajor_sw128_desc(base + op.row0 * kBlockK + kk * kWgmmaK);
            for (uint32_t i = 0; i < op.rows; ++i) {
              for (uint32_t j = 0; j < kWgmmaK; ++j) {
                const uint32_t read = model_wgmma_read(desc, i, j);
                const uint32_t written = base + model_tma_sw128(op.row0 + i, kk * kWgmmaK + j);
                CHECK(read == written, "BM %u wg %u row0 %u kk %u (%u, %u): wgmma reads %u, TMA wrote %u", c.block_m, wg,
                      op.row0, kk, i, j, read, written);
              }
            }
          }
        }
      }
    }
  }
}

static void test_accumulator() {
  for (uint32_t n = 8; n <= 256; n += 8) {
    const auto model = model_accumulator(n);
    std::set<std::pair<uint32_t, uint32_t>> covered;
    for (uint32_t t = 0; t < 128; ++t) {
      for (uint32_t r = 0; r < acc_regs(n); ++r) {
        CHECK(acc_row(t, r) == model[t][r].row && acc_col(t, r) == model[t][r].col,
              "n %u thread %u reg %u: (%u, %u), model (%u, %u)", n, t, r, acc_row(t, r), acc_col(t, r), model[t][r].row,
              model[t][r].col);
        covered.insert({acc_row(t, r), acc_col(t, r)});
      }
    }
    CHECK(covered.size() == 64u * n, "n %u: the fragment covers the 64 x N tile once", n);
  }
}

// The epilogue's staging tile: bijective, pairs contiguous, and the warp-wide
// stores of one register pair are bank-conflict free for bf16 (one 4-byte
// bf16x2 per lane: 8 rows x 4 words, the swizzle spreads the 8 rows over 8
// chunks) and at most 2-way conflicted for f32 (one float2 per lane, a
// half-warp of 4 rows x 4 lanes meets only 4 distinct chunks).
static void test_d_tile() {
  for (uint32_t eb : {2u, 4u}) {
    for (uint32_t bm : {64u, 128u}) {
      const uint32_t bn = 128;
      std::set<uint32_t> offs;
      for (uint32_t row = 0; row < bm; ++row) {
        for (uint32_t col = 0; col < bn; ++col) {
          const uint32_t o = d_tile_offset(row, col, bm, eb);
          // model: slab s = col / (128 / eb) of [bm, 128 B], TMA-swizzled
          const uint32_t per = 128 / eb;
          const uint32_t want = (col / per) * bm * 128 + model_tma_sw128(row, (col % per) * eb);
          CHECK(o == want, "d_tile_offset(%u, %u, %u, %u) = %u, model %u", row, col, bm, eb, o, want);
          CHECK(o % eb == 0 && o + eb <= bm * bn * eb, "in range and aligned");
          offs.insert(o);
          if (col % 2 == 0) CHECK(d_tile_offset(row, col + 1, bm, eb) == o + eb, "pair (%u, %u) contiguous", row, col);
        }
      }
      CHECK(offs.size() == bm * bn, "eb %u bm %u: bijective", eb, bm);
      // bank conflicts: warp w of warpgroup 0, register pair r
      const TileConfig c{bm, bn, eb, 2};
      for (uint32_t wg = 0; wg < 2; ++wg) {
        for (uint32_t warp = 0; warp < 4; ++warp) {
          for (uint32_t r = 0; r < acc_regs(c.wg_n()); r += 2) {
            // a 4-byte (bf16x2) store is one wavefront for 32 lanes; an 8-byte
            // (float2) store is two, one per half-warp
            const uint32_t lanes_per_wave = eb == 2 ? 32 : 16;
            for (uint32_t wave = 0; wave < 32 / lanes_per_wave; ++wave) {
              std::vector<uint32_t> bank_hits(32, 0);
              uint32_t words = 0;
              for (uint32_t l = wave * lanes_per_wave; l < (wave + 1) * lanes_per_wave; ++l) {
                const uint32_t t = warp * 32 + l;
                const uint32_t row = c.wg_m_offset(wg) + acc_row(t, r), col = c.wg_n_offset(wg) + acc_col(t, r);
                const uint32_t o = d_tile_offset(row, col, bm, eb);
                for (uint32_t w = 0; w < 2 * eb / 4; ++w, ++words) ++bank_hits[(o / 4 + w) % 32];
              }
              uint32_t worst = 0;
              for (uint32_t h : bank_hits) worst = h > worst ? h : worst;
              const uint32_t allowed = eb == 2 ? 1 : 2;
              CHECK(worst <= allowed && words == 32, "eb %u bm %u wg %u warp %u reg %u: %u-way bank conflict", eb, bm, wg,
                    warp, r, worst);
            }
          }
        }
      }
    }
  }
}

static void test_tile_configs() {
  const uint32_t bms[] = {64, 128}, ebs[] = {2, 4};
  for (uint32_t bm : bms) {
    for (uint32_t eb : ebs) {
      const uint32_t stages = max_stages(bm, 128, eb);
      const TileConfig c{bm, 128, eb, stages};
      CHECK(stages >= 4, "bm %u eb %u: %u stages (want >= 4 to hide TMA latency)", bm, eb, stages);
      CHECK(valid_tile_config(c), "bm %u eb %u stages %u valid", bm, eb, stages);
      CHECK(c.smem_request_bytes() <= 232448, "smem %u <= 227 KB", c.smem_request_bytes());
      CHECK(!valid_tile_config(TileConfig{bm, 128, eb, stages + 1}) || stages == 8, "max_stages is maximal");
      CHECK(c.stage_tx_bytes() == (bm + 128) * 128, "expect_tx = both boxes' bytes");
      CHECK(c.wg_n() == (bm == 128 ? 128u : 64u), "warpgroup N");
      printf("  config BLOCK_M %3u BLOCK_N 128 out %s: %u stages, %6u B smem, wgmma m64n%uk32\n", bm,
             eb == 2 ? "bf16" : "f32 ", stages, c.smem_request_bytes(), c.wg_n());
    }
  }
  CHECK(!valid_tile_config(TileConfig{96, 128, 2, 4}), "BLOCK_M 96 is rejected");
  CHECK(!valid_tile_config(TileConfig{128, 256, 2, 2}), "BLOCK_N 256 is rejected (one sb per tile)");
  CHECK(!valid_tile_config(TileConfig{128, 128, 2, 7}), "7 stages of BM128 bf16 exceed 227 KB");
}

static void test_tma_rules() {
  // A [M=100, K=7168] fp8, box {128, 128}, 128B swizzle: valid
  TmaDesc3d a{{7168, 100, 1}, {7168, 7168 * 100}, {128, 128, 1}, 1, 0x10000, true};
  CHECK(tma_desc_valid(a), "A descriptor");
  TmaDesc3d t = a;
  t.box[0] = 256;  // 256 B inner box > 128 B swizzle span
  CHECK(!tma_desc_valid(t), "inner box beyond the swizzle span");
  t = a;
  t.strides[0] = 7160;  // not a multiple of 16
  CHECK(!tma_desc_valid(t), "stride multiple of 16");
  t = a;
  t.address = 0x10008;
  CHECK(!tma_desc_valid(t), "16-byte aligned address");
  t = a;
  t.box[1] = 257;
  CHECK(!tma_desc_valid(t), "box <= 256");
  t = a;
  t.dims[1] = 0;
  CHECK(!tma_desc_valid(t), "non-zero dims");
  // D [G=4, Mmax=48, N=4096] bf16: box {64, 64}
  TmaDesc3d d{{4096, 48, 4}, {8192, 8192 * 48}, {64, 64, 1}, 2, 0x20000, true};
  CHECK(tma_desc_valid(d), "D descriptor");
  d.box[0] = 72;  // 144 B
  CHECK(!tma_desc_valid(d), "D inner box beyond 128 B");
}

static void test_raster() {
  const uint32_t shapes[][2] = {{1, 1}, {1, 57}, {57, 1}, {7, 8}, {8, 9}, {33, 56}, {128, 17}};
  for (const auto& s : shapes) {
    const uint32_t mb = s[0], nb = s[1];
    std::set<std::pair<uint32_t, uint32_t>> seen;
    for (uint32_t t = 0; t < mb * nb; ++t) {
      const TileCoord c = raster_tile(t, mb, nb, kRasterBand);
      CHECK(c.m_block < mb && c.n_block < nb, "tile %u of %ux%u in range (%u, %u)", t, mb, nb, c.m_block, c.n_block);
      // consecutive tiles stay inside one band of kRasterBand n-blocks
      CHECK(c.n_block / kRasterBand == t / (kRasterBand * mb), "tile %u in band %u", t, t / (kRasterBand * mb));
      seen.insert({c.m_block, c.n_block});
    }
    CHECK(seen.size() == mb * nb, "%ux%u: every tile exactly once", mb, nb);
  }
}

// Split-K: every (m-block, n-block, K block) of the problem is summed by
// exactly one tile id, each split keeps >= kMinKBlocksPerSplit K blocks, and
// the splits fill at most the GPU once.
static void test_split_k() {
  for (uint32_t sms : {132u, 114u, 78u}) {
    CHECK(choose_k_splits(sms, 56, sms) == 1 && choose_k_splits(sms / 2 + 1, 56, sms) == 1, "no split once half the SMs have a tile");
    for (uint32_t tiles : {1u, 2u, 17u, 33u, 56u, 65u}) {
      for (uint32_t k_blocks : {1u, 4u, 7u, 8u, 16u, 56u, 128u}) {
        const uint32_t splits = choose_k_splits(tiles, k_blocks, sms);
        CHECK(splits >= 1 && splits <= kMaxKSplits, "splits %u in range", splits);
        if (splits > 1) {
          CHECK(uint64_t(splits) * tiles <= sms, "%u tiles x %u splits fill %u SMs at most once", tiles, splits, sms);
          for (uint32_t s = 0; s < splits; ++s) {
            const uint32_t len = split_k_begin(s + 1, k_blocks, splits) - split_k_begin(s, k_blocks, splits);
            CHECK(len >= kMinKBlocksPerSplit, "split %u of %u over %u K blocks has %u", s, splits, k_blocks, len);
          }
        }
        if (tiles * 2 <= sms && k_blocks >= 2 * kMinKBlocksPerSplit) CHECK(splits > 1, "%u tiles of %u K blocks on %u SMs split", tiles, k_blocks, sms);
      }
    }
  }
  for (uint32_t mb : {1u, 2u}) {
    for (uint32_t nb : {1u, 17u, 56u}) {
      for (uint32_t k_blocks : {8u, 56u, 57u}) {
        const uint32_t splits = choose_k_splits(uint64_t(mb) * nb, k_blocks, 132);
        std::vector<int> covered(size_t(mb) * nb * k_blocks, 0);
        for (uint32_t t = 0; t < mb * nb * splits; ++t) {
          const SplitTile st = split_k_tile(t, mb, nb, k_blocks, splits);
          CHECK(st.split < splits && st.coord.m_block < mb && st.coord.n_block < nb, "tile %u in range", t);
          for (uint32_t kb = st.kb_begin; kb < st.kb_end; ++kb) ++covered[(size_t(st.coord.m_block) * nb + st.coord.n_block) * k_blocks + kb];
        }
        bool once = true;
        for (int c : covered) once = once && c == 1;
        CHECK(once, "%ux%u tiles, %u K blocks, %u splits: every K block of every tile summed once", mb, nb, k_blocks, splits);
      }
    }
  }
}

static void test_heuristics() {
  alignas(16) static uint8_t buf[64];
  GemmProblem p{};
  p.layout = GemmLayout::kDense;
  p.a = buf;
  p.b = buf;
  p.d = buf;
  p.sa = nullptr;
  p.sb = nullptr;
  p.rows = 4096;
  p.n = 7168;
  p.k = 2048;
  p.groups = 1;
  char why[256];
  CHECK(sm90_fp8_gemm_eligible(p, why, sizeof(why)), "DeepSeek shape eligible");
  GemmProblem q = p;
  q.k = 2000;
  CHECK(!sm90_fp8_gemm_eligible(q, why, sizeof(why)), "K %% 128 != 0 goes to SIMT");
  q = p;
  q.n = 100;
  CHECK(!sm90_fp8_gemm_eligible(q, why, sizeof(why)), "N %% 8 != 0 goes to SIMT");
  q = p;
  q.a = buf + 8;
  CHECK(!sm90_fp8_gemm_eligible(q, why, sizeof(why)), "misaligned A goes to SIMT");
  CHECK(sm90_fp8_gemm_choose(p, 132).block_m == 128, "large M: BLOCK_M 128");
  q = p;
  q.rows = 32;
  CHECK(sm90_fp8_gemm_choose(q, 132).block_m == 64, "M <= 64: BLOCK_M 64");
  q = p;
  q.layout = GemmLayout::kMasked;
  q.groups = 32;
  q.rows = 256;
  q.expected_m = 8;
  q.masked_m = reinterpret_cast<const int32_t*>(buf);
  CHECK(sm90_fp8_gemm_choose(q, 132).block_m == 64, "decode (expected_m 8): BLOCK_M 64");
  q.layout = GemmLayout::kContiguous;
  q.group_index = reinterpret_cast<const int32_t*>(buf);
  q.segment_align = 128;
  CHECK(sm90_fp8_gemm_eligible(q, why, sizeof(why)), "contiguous, segments aligned to 128: Hopper");
  CHECK(sm90_fp8_gemm_choose(q, 132).block_m == 128, "contiguous, align 128: BLOCK_M 128");
  q.segment_align = 64;
  CHECK(sm90_fp8_gemm_eligible(q, why, sizeof(why)) && sm90_fp8_gemm_choose(q, 132).block_m == 64,
        "contiguous, align 64: BLOCK_M 64 (a 128-row block could hold two groups)");
  for (int64_t align : {1, 7, 32, 96}) {
    q.segment_align = align;
    CHECK(!sm90_fp8_gemm_eligible(q, why, sizeof(why)), "contiguous, align %lld: SIMT (a block could hold two groups)",
          static_cast<long long>(align));
  }
}

// ===========================================================================
// mma.sync m16n8k16 (bf16 in, f32 accumulate): the router's fragments
// ===========================================================================

// The PTX ISA's tables for .bf16 m16n8k16, element by element: groupID =
// laneid >> 2, threadID_in_group = laneid % 4; A elements a0..a7, B b0..b3,
// C c0..c3 (two bf16 elements per 32-bit register, the first in the low half).
struct Coord {
  int row, col;
};
static Coord model_a(int lane, int i) {
  const int group = lane >> 2, tig = lane % 4;
  const int row = (i < 2 || (i >= 4 && i < 6)) ? group : group + 8;
  const int col = (i < 4) ? tig * 2 + (i & 1) : tig * 2 + (i & 1) + 8;
  return {row, col};
}
static Coord model_b(int lane, int i) {  // row = k, col = n
  const int group = lane >> 2, tig = lane % 4;
  return {(i < 2) ? tig * 2 + (i & 1) : tig * 2 + (i & 1) + 8, group};
}
static Coord model_c(int lane, int i) {
  const int group = lane >> 2, tig = lane % 4;
  return {(i < 2) ? group : group + 8, tig * 2 + (i & 1)};
}

static void test_mma16816_fragments() {
  using namespace mma16816;
  std::set<std::pair<int, int>> a_seen, b_seen, c_seen;
  for (int lane = 0; lane < 32; ++lane) {
    for (int r = 0; r < 4; ++r) {
      for (int half = 0; half < 2; ++half) {
        const Coord m = model_a(lane, 2 * r + half);
        CHECK(a_row(lane, r) == m.row && a_col(lane, r) + half == m.col, "A lane %d reg %d half %d", lane, r, half);
        a_seen.insert({m.row, m.col});
      }
      const Coord m = model_c(lane, r);
      CHECK(c_row(lane, r) == m.row && c_col(lane, r) == m.col, "C lane %d c%d", lane, r);
      c_seen.insert({m.row, m.col});
    }
    for (int r = 0; r < 2; ++r) {
      for (int half = 0; half < 2; ++half) {
        const Coord m = model_b(lane, 2 * r + half);
        CHECK(b_k(lane, r) + half == m.row && b_n(lane) == m.col, "B lane %d reg %d half %d", lane, r, half);
        b_seen.insert({m.row, m.col});
      }
    }
  }
  CHECK(a_seen.size() == 16 * 16 && b_seen.size() == 16 * 8 && c_seen.size() == 16 * 8, "every element held once");
}

// The router kernel's warp tile (router_logits.cu, router_logits_mma_kernel),
// emulated: x [64][32] and w [64][32] staged as bf16 pairs in rows of
// kRowWords words, each warp's fragments gathered with the kernel's index
// expressions, each mma evaluated by the PTX model (A and B rebuilt from the
// 32 lanes' registers, D scattered back), the results stored as the kernel
// stores them; against x * w^T. Small integers: exact in bf16 and f32.
static void test_router_mma_tile() {
  using namespace mma16816;
  constexpr int kTile = 64, kKStep = 32, kRowWords = kKStep / 2 + 4;
  uint16_t x[kTile][kKStep], w[kTile][kKStep];
  uint32_t xs[kTile][kRowWords] = {}, ws[kTile][kRowWords] = {};
  uint32_t state = 12345;
  auto next = [&] { state = state * 1664525u + 1013904223u; return static_cast<int>(state >> 28) - 8; };  // -8..7
  auto bf16 = [](int v) {
    float f = static_cast<float>(v);
    uint32_t bits;
    memcpy(&bits, &f, 4);
    return static_cast<uint16_t>(bits >> 16);
  };
  auto value = [](uint32_t word, int half) {
    const uint32_t bits = (half ? word >> 16 : word & 0xFFFFu) << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
  };
  int xv[kTile][kKStep], wv[kTile][kKStep];
  for (int r = 0; r < kTile; ++r) {
    for (int k = 0; k < kKStep; ++k) {
      xv[r][k] = next();
      wv[r][k] = next();
      x[r][k] = bf16(xv[r][k]);
      w[r][k] = bf16(wv[r][k]);
    }
    for (int k = 0; k < kKStep; k += 2) {
      xs[r][k / 2] = x[r][k] | (static_cast<uint32_t>(x[r][k + 1]) << 16);
      ws[r][k / 2] = w[r][k] | (static_cast<uint32_t>(w[r][k + 1]) << 16);
    }
  }
  float out[kTile][kTile];
  for (int warp = 0; warp < 4; ++warp) {
    const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
    float acc[32][2][4][4] = {};  // [lane][mi][ni][c]
    for (int kk = 0; kk < kKStep; kk += kK) {
      uint32_t a[32][2][4], b[32][4][2];
      for (int lane = 0; lane < 32; ++lane) {
        for (int mi = 0; mi < 2; ++mi)
          for (int r = 0; r < 4; ++r) a[lane][mi][r] = xs[wm + mi * kM + a_row(lane, r)][(kk + a_col(lane, r)) / 2];
        for (int ni = 0; ni < 4; ++ni)
          for (int r = 0; r < 2; ++r) b[lane][ni][r] = ws[wn + ni * kN + b_n(lane)][(kk + b_k(lane, r)) / 2];
      }
      for (int mi = 0; mi < 2; ++mi) {
        for (int ni = 0; ni < 4; ++ni) {
          float am[16][16], bm[16][8];
          for (int lane = 0; lane < 32; ++lane) {
            for (int i = 0; i < 8; ++i) am[model_a(lane, i).row][model_a(lane, i).col] = value(a[lane][mi][i / 2], i & 1);
            for (int i = 0; i < 4; ++i) bm[model_b(lane, i).row][model_b(lane, i).col] = value(b[lane][ni][i / 2], i & 1);
          }
          for (int lane = 0; lane < 32; ++lane) {
            for (int i = 0; i < 4; ++i) {
              const Coord c = model_c(lane, i);
              float sum = 0;
              for (int k = 0; k < 16; ++k) sum += am[c.row][k] * bm[k][c.col];
              acc[lane][mi][ni][i] += sum;
            }
          }
        }
      }
    }
    for (int lane = 0; lane < 32; ++lane)
      for (int mi = 0; mi < 2; ++mi)
        for (int ni = 0; ni < 4; ++ni)
          for (int c = 0; c < 4; ++c) out[wm + mi * kM + c_row(lane, c)][wn + ni * kN + c_col(lane, c)] = acc[lane][mi][ni][c];
  }
  int bad = 0;
  for (int t = 0; t < kTile; ++t) {
    for (int e = 0; e < kTile; ++e) {
      int want = 0;
      for (int k = 0; k < kKStep; ++k) want += xv[t][k] * wv[e][k];
      if (out[t][e] != static_cast<float>(want)) ++bad;
    }
  }
  CHECK(bad == 0, "router tile: %d of 4096 logits differ from x * w^T", bad);
}

int main() {
  printf("sm90 layout checks against the PTX ISA model\n");
  test_mma16816_fragments();
  test_router_mma_tile();
  test_swizzle();
  test_descriptor();
  test_wgmma_reads_tma_tile();
  test_accumulator();
  test_d_tile();
  test_tile_configs();
  test_tma_rules();
  test_raster();
  test_split_k();
  test_heuristics();
  printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
