// dispatchLayout (SPEC.md "Dispatch layout"): counts per expert, aligned
// (contiguous) or fixed (masked) segments, and the row maps, equal to the CPU
// backend's serial placement (cpu/dispatch_layout.cpp) without relying on
// the order of atomics: three small kernels, stream-ordered, no host sync.
//
//   1. count   (E blocks):  tokensPerExpert[e] = #{i : ids[i] == e}; block 0
//                           also flags ids outside [-1, E).
//   2. offsets (1 block):   offsets[e] = sum of the segments before e (a block
//                           scan), offsets[E] = R; flags overflows.
//   3. place   (E+1 blocks): block e walks ids [T*k] in order, tile by tile;
//                           a warp ballot + popc gives each match its rank
//                           among earlier matches, so (token, slot) lands at
//                           offsets[e] + rank: token order then slot order,
//                           exactly the CPU's rows. Block e then writes -1 to
//                           its segment's padding rows; block E writes -1 to
//                           the slots of ids -1 and to rows [R, capacity).
// Each block of passes 1 and 3 reads all of ids (T*k*4 bytes, from L2): about
// 2 * E * T * k * 4 bytes of L2 traffic, ~64 MB at T = 4096, k = 8, E = 256
// (a few microseconds), and nothing at decode sizes.

#include <cuda_runtime.h>

#include "common.h"
#include "layout_math.cuh"
#include "moe_ops.h"

namespace moe_cuda {
namespace {

using namespace layout_math;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kScanThreads = 256;  // more would cap registers at 64 and spill
constexpr unsigned kFull = 0xFFFFFFFFu;

__global__ void __launch_bounds__(kThreads) layout_count_kernel(LayoutProblem p) {
  __shared__ int32_t warp_count[kWarps];
  const int32_t e = static_cast<int32_t>(blockIdx.x);
  const int64_t n = p.tokens * p.slots;
  int32_t count = 0;
  bool bad = false;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const int32_t id = p.ids[i];
    count += id == e ? 1 : 0;
    bad |= id < -1 || id >= p.experts;
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) count += __shfl_xor_sync(kFull, count, off);
  if ((threadIdx.x & 31) == 0) warp_count[threadIdx.x >> 5] = count;
  if (e == 0 && bad && p.flag != nullptr) atomicOr(p.flag, kBadId);
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t total = 0;
    for (int w = 0; w < kWarps; ++w) total += warp_count[w];
    p.tokens_per_expert[e] = total;  // [E] i32
  }
}

// One block: each thread takes a contiguous run of experts, then a block scan
// of the run totals (int64, so an overflow is detected, not wrapped).
__global__ void __launch_bounds__(kScanThreads) layout_offsets_kernel(LayoutProblem p) {
  __shared__ long long run_total[kScanThreads];
  const int64_t E = p.experts;
  const int64_t per = (E + kScanThreads - 1) / kScanThreads;
  const int64_t e0 = threadIdx.x * per, e1 = e0 + per < E ? e0 + per : E;
  long long mine = 0;
  int32_t bits = 0;
  for (int64_t e = e0; e < e1; ++e) {
    const int64_t count = p.tokens_per_expert[e];
    if (p.masked && count > p.max_rows) bits |= kOverMaxRows;
    mine += segment_rows(count, p.align, p.masked, p.max_rows);
  }
  run_total[threadIdx.x] = mine;
  __syncthreads();
  // Hillis-Steele inclusive scan (256 entries, 8 steps; tiny).
  for (int off = 1; off < kScanThreads; off <<= 1) {
    const long long add = threadIdx.x >= off ? run_total[threadIdx.x - off] : 0;
    __syncthreads();
    run_total[threadIdx.x] += add;
    __syncthreads();
  }
  long long row = run_total[threadIdx.x] - mine;  // exclusive
  for (int64_t e = e0; e < e1; ++e) {
    p.offsets[e] = static_cast<int32_t>(row > 0x7FFFFFFFLL ? 0x7FFFFFFFLL : row);
    row += segment_rows(p.tokens_per_expert[e], p.align, p.masked, p.max_rows);
  }
  if (threadIdx.x == kScanThreads - 1) {
    const long long total = run_total[kScanThreads - 1];
    if (total > 0x7FFFFFFFLL) bits |= kOverI32;
    if (total > p.capacity) bits |= kOverCapacity;
    p.offsets[E] = static_cast<int32_t>(total > 0x7FFFFFFFLL ? 0x7FFFFFFFLL : total);  // [E + 1] i32
  }
  if (bits != 0 && p.flag != nullptr) atomicOr(p.flag, bits);
}

__global__ void __launch_bounds__(kThreads) layout_place_kernel(LayoutProblem p) {
  __shared__ int32_t warp_hits[kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t n = p.tokens * p.slots;
  const int64_t E = p.experts;
  const int64_t e = blockIdx.x;
  const int64_t total = p.offsets[E];

  if (e == E) {  // slots that go nowhere, and rows past the layout
    for (int64_t i = threadIdx.x; i < n; i += kThreads) {
      const int32_t id = p.ids[i];
      if (id < 0 || id >= E) p.slot_row[i] = -1;
    }
    for (int64_t r = total + threadIdx.x; r < p.capacity; r += kThreads) {
      p.row_token[r] = -1;
      p.group_index[r] = -1;
    }
    return;
  }

  const int64_t base = p.offsets[e];
  const int64_t count = p.tokens_per_expert[e];
  // Rows this expert may write: its segment, clipped to the buffers (an
  // overflowing layout has been flagged by layout_offsets_kernel).
  int64_t limit = base + segment_rows(count, p.align, p.masked, p.max_rows);
  if (limit > p.capacity) limit = p.capacity;
  int64_t seen = 0;  // matches in earlier tiles (block-uniform)
  for (int64_t t0 = 0; t0 < n; t0 += kThreads) {
    const int64_t i = t0 + threadIdx.x;
    const bool hit = i < n && p.ids[i] == e;
    const uint32_t ballot = __ballot_sync(kFull, hit);
    if (lane == 0) warp_hits[warp] = popc(ballot);
    __syncthreads();
    int64_t before = seen;
    int32_t tile = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      before += w < warp ? warp_hits[w] : 0;
      tile += warp_hits[w];
    }
    if (hit) {
      const int64_t rank = before + rank_in_warp(ballot, lane);
      const int64_t row = base + rank;
      const bool fits = row < limit && (!p.masked || rank < p.max_rows);
      p.slot_row[i] = fits ? static_cast<int32_t>(row) : -1;  // [T, k] i32
      if (fits) {
        p.row_token[row] = static_cast<int32_t>(i / p.slots);  // [capacity] i32
        p.group_index[row] = static_cast<int32_t>(e);         // [capacity] i32
      }
    }
    seen += tile;
    __syncthreads();  // warp_hits is rewritten by the next tile
  }
  // Padding rows of this segment.
  for (int64_t r = base + count + threadIdx.x; r < limit; r += kThreads) {
    p.row_token[r] = -1;
    p.group_index[r] = -1;
  }
}

}  // namespace

int dispatch_layout_run(const LayoutProblem& p, cudaStream_t stream, char* err, size_t err_len) {
  const unsigned experts = static_cast<unsigned>(p.experts);
  layout_count_kernel<<<experts, kThreads, 0, stream>>>(p);
  MOE_CUDA_CHECK_LAUNCH("layout_count_kernel");
  layout_offsets_kernel<<<1, kScanThreads, 0, stream>>>(p);
  MOE_CUDA_CHECK_LAUNCH("layout_offsets_kernel");
  layout_place_kernel<<<experts + 1, kThreads, 0, stream>>>(p);
  MOE_CUDA_CHECK_LAUNCH("layout_place_kernel");
  return MOE_CUDA_OK;
}

}  // namespace moe_cuda
