// The dense Hopper GEMM's split-K workspace (sm90_layouts.h, choose_k_splits)
// and the rule for using it, free of CUDA headers so that the plug-in and its
// CPU emulation (test/emulator/) share it.
//
// The plug-in keeps ONE workspace (SMs x 128 x 128 f32, the bound of every
// split), so that a GEMM captured into a graph splits exactly like the same
// GEMM run directly. A split GEMM is two launches, the partial slices into the
// workspace and their reduction into D; another split GEMM enqueued between
// them (by another thread: Node worker threads share the plug-in's stream)
// would overwrite the partials before they are summed. So a split GEMM
// enqueues both launches while holding `lock`: on the one stream nothing can
// come between them. (Graphs are captured on a stream of their own, so a
// capture never records another thread's launches; a replay is one launch.)
#pragma once

#include <stdint.h>

#include <mutex>

#include "gemm_problem.h"
#include "sm90_layouts.h"

namespace moe_cuda {

struct SplitKWorkspace {
  std::mutex lock;
  float* data = nullptr;  // [SMs * 128 * 128] f32, or null: never split
  size_t bytes = 0;
};

// How many K slices the dense problem `p` (BLOCK_M = block_m) runs in: 1 (no
// split) unless its tiles fill under half of the SMs and the slices fit.
inline uint32_t split_k_count(const SplitKWorkspace& w, const GemmProblem& p, uint32_t block_m, int sm_count) {
  if (w.data == nullptr || p.layout != GemmLayout::kDense) return 1;
  const uint64_t tiles = uint64_t((p.rows + block_m - 1) / block_m) * uint64_t((p.n + 127) / 128);
  const uint32_t splits = sm90::choose_k_splits(tiles, uint32_t(p.k / 128), uint32_t(sm_count));
  if (splits < 2 || uint64_t(splits) * uint64_t(p.rows) * uint64_t(p.n) * sizeof(float) > w.bytes) return 1;
  return splits;
}

}  // namespace moe_cuda
