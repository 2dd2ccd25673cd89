// Index math of the dispatch-layout kernels (dispatch_layout.cu), host and
// device; test/moe_math_test.cu replays the kernels' passes with these on
// the host and compares with the CPU backend (cpu/dispatch_layout.cpp).
//
// The row of (token t, slot j) with expert e is
//   offsets[e] + #{ (t', j') before (t, j) in row-major [T, k] order : ids[t', j'] == e }
// which is the CPU's serial placement (token order, then slot order). The
// kernel counts that rank with warp ballots over tiles of the flattened ids
// (one block per expert), so no atomics and no ordering of threads is involved.
#pragma once

#include <stdint.h>

#include "quantize_math.cuh"

namespace moe_cuda {
namespace layout_math {

MOE_QUANT_HD int popc(uint32_t x) {
#if defined(__CUDA_ARCH__)
  return __popc(x);
#else
  return __builtin_popcount(x);
#endif
}

// Lanes below `lane` whose bit is set in a warp's ballot.
MOE_QUANT_HD int rank_in_warp(uint32_t ballot, int lane) {
  return popc(ballot & ((lane == 0) ? 0u : (0xFFFFFFFFu >> (32 - lane))));
}

// Rows an expert's segment spans: roundUp(count, align) (contiguous) or
// max_rows (masked). count and align are in [0, 2^31) (checked on the host),
// so the division is a 32-bit one (a 64-bit division is a call that spills
// in the scan kernel).
MOE_QUANT_HD int64_t segment_rows(int64_t count, int64_t align, bool masked, int64_t max_rows) {
  if (masked) return max_rows;
  const uint32_t c = static_cast<uint32_t>(count), a = static_cast<uint32_t>(align);
  uint32_t q = c / a;
  if (static_cast<uint64_t>(q) * a < c) ++q;
  return static_cast<int64_t>(q) * a;
}

// Error bits the layout kernels report through their device flag.
// (the values of MOE_CUDA_FLAG_* in moe_cuda_api.h).
constexpr int32_t kBadId = 1;          // an id outside [-1, E)
constexpr int32_t kOverCapacity = 4;   // the layout needs more rows than rowToken holds
constexpr int32_t kOverMaxRows = 8;    // masked: an expert got more than max_rows
constexpr int32_t kOverI32 = 16;       // more than 2^31 - 1 rows

}  // namespace layout_math
}  // namespace moe_cuda
