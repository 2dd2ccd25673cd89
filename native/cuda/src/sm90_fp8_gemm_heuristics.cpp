// Config heuristics for the Hopper FP8 GEMM (see the header).
#include "sm90_fp8_gemm_heuristics.h"

#include <stdio.h>

#include <initializer_list>

namespace moe_cuda {
namespace {

bool say(char* why, size_t len, const char* msg, long long v) {
  if (why != nullptr && len > 0) snprintf(why, len, msg, v);
  return false;
}

constexpr uint64_t kTmaMaxStride = uint64_t(1) << 40;

}  // namespace

bool sm90_fp8_gemm_eligible(const GemmProblem& p, char* why, size_t len) {
  if (p.k % 128 != 0) return say(why, len, "K = %lld is not a multiple of 128", static_cast<long long>(p.k));
  if (p.n % 8 != 0) return say(why, len, "N = %lld is not a multiple of 8", static_cast<long long>(p.n));
  const uintptr_t misaligned = (reinterpret_cast<uintptr_t>(p.a) | reinterpret_cast<uintptr_t>(p.b) |
                                reinterpret_cast<uintptr_t>(p.d)) & 15u;
  if (misaligned != 0) return say(why, len, "A, B and D must be 16-byte aligned (offset %lld)", static_cast<long long>(misaligned));
  if (p.rows > 0x7FFFFFFF || p.n > 0x7FFFFFFF || p.k > 0x7FFFFFFF || p.groups > 0x7FFFFFFF) {
    return say(why, len, "an extent exceeds 2^31 - 1 (rows %lld)", static_cast<long long>(p.rows));
  }
  const uint64_t out_bytes = p.d_f32 ? 4 : 2;
  const uint64_t rows = uint64_t(p.rows), n = uint64_t(p.n), k = uint64_t(p.k);
  if (rows * k >= kTmaMaxStride || n * k >= kTmaMaxStride || rows * n * out_bytes >= kTmaMaxStride) {
    return say(why, len, "a TMA byte stride reaches 2^40 (rows %lld)", static_cast<long long>(p.rows));
  }
  const uint64_t tiles = uint64_t(p.a_groups()) * ((rows + 63) / 64) * ((n + 127) / 128);
  if (tiles > 0x7FFFFFFFu) return say(why, len, "%lld tiles exceed the scheduler's range", static_cast<long long>(tiles));
  if (p.layout == GemmLayout::kContiguous && p.group_index == nullptr) {
    return say(why, len, "the contiguous layout needs group_index (got %lld)", 0);
  }
  // The kernel gives a whole block of rows the group of its first row: only
  // segments aligned to a block (64 rows at least) keep every row's group.
  if (p.layout == GemmLayout::kContiguous && (p.segment_align < 1 || p.segment_align % 64 != 0)) {
    return say(why, len, "the contiguous layout's segments are aligned to %lld rows, not to a multiple of 64",
               static_cast<long long>(p.segment_align));
  }
  if (p.layout == GemmLayout::kMasked && p.masked_m == nullptr) {
    return say(why, len, "the masked layout needs masked_m (got %lld)", 0);
  }
  return true;
}

Sm90Choice sm90_fp8_gemm_choose(const GemmProblem& p, int sm_count) {
  if (sm_count < 1) sm_count = 1;
  // Contiguous: tiles must not straddle groups, so BLOCK_M divides the
  // segments' alignment (eligible: a multiple of 64); 128 where it can.
  if (p.layout == GemmLayout::kContiguous) return Sm90Choice{p.segment_align % 128 == 0 ? 128u : 64u};
  int64_t m = p.rows;
  if (p.layout == GemmLayout::kMasked && p.expected_m > 0 && p.expected_m < p.rows) m = p.expected_m;
  if (m <= 64) return Sm90Choice{64};
  const int64_t groups = p.a_groups();
  const int64_t n_blocks = (p.n + 127) / 128;
  double best_util = -1.0;
  uint32_t best = 128;
  for (uint32_t bm : {128u, 64u}) {
    const int64_t tiles = groups * ((m + bm - 1) / bm) * n_blocks;
    const int64_t waves = (tiles + sm_count - 1) / sm_count;
    // useful output area / area the persistent waves could have computed
    const double util = double(groups * m * p.n) / (double(waves) * sm_count * bm * 128.0);
    if (util > best_util * 1.05) {  // 64 must win clearly to displace 128
      best_util = util;
      best = bm;
    }
  }
  return Sm90Choice{best};
}

}  // namespace moe_cuda
