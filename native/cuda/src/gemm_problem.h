// One description of an FP8 GEMM problem shared by the SIMT and Hopper
// kernels and the dispatch heuristics. Plain data; shapes already checked by
// gemm_entry.cpp (positive extents, K % 16 == 0, sizes < 2^31).
#pragma once

#include <stdint.h>

namespace moe_cuda {

enum class GemmLayout : int32_t {
  kDense = 0,       // A [M, K], B [N, K], D [M, N]
  kContiguous = 1,  // A [R, K], B [G, N, K], group_index [R], D [R, N]
  kMasked = 2,      // A [G, Mmax, K], B [G, N, K], masked_m [G], D [G, Mmax, N]
};

struct GemmProblem {
  GemmLayout layout;
  const uint8_t* a;   // fp8 e4m3 bytes, K-major
  const float* sa;    // [rows_total, ceil(K/128)]
  const uint8_t* b;   // fp8 e4m3 bytes, K-major, [groups, N, K]
  const float* sb;    // [groups, ceil(N/128), ceil(K/128)]
  void* d;            // bf16 or f32, [rows_total, N]
  bool d_f32;
  // rows: dense M; contiguous R; masked Mmax (rows per group).
  int64_t rows;
  int64_t n, k;
  // groups of B: dense 1; contiguous and masked G.
  int64_t groups;
  const int32_t* group_index;  // contiguous only
  int64_t segment_align;       // contiguous only: groups start at multiples of it (1: unknown)
  const int32_t* masked_m;     // masked only
  int64_t expected_m;          // masked only: a hint, 0 = unknown
  uint64_t hang_trap_ns;       // Hopper: a pipeline wait longer than this traps (0: never)
  // Dense Hopper split-K (sm90_layouts.h): k_splits > 1 slices of K, each
  // written as f32 into split_workspace [k_splits, M, N]; 0 or 1: no split.
  int32_t k_splits;
  float* split_workspace;

  int64_t k_blocks() const { return (k + 127) / 128; }
  int64_t n_scale_blocks() const { return (n + 127) / 128; }
  // groups of A/D along the outermost dimension (masked: G; else 1)
  int64_t a_groups() const { return layout == GemmLayout::kMasked ? groups : 1; }
  // groups of D along the outermost dimension (split-K: the workspace's slices)
  int64_t d_groups() const { return k_splits > 1 ? k_splits : a_groups(); }
};

}  // namespace moe_cuda
