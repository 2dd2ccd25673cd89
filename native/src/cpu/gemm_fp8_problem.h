// Internal to the fp8 GEMM's drivers (gemm_fp8.cpp: the FMA and AMX paths and
// the choice among all paths; gemm_fp8_bf16.cpp: the AVX512_BF16 path): one
// call's operands, its NaN bookkeeping and its failure statuses.
#pragma once

#include <atomic>
#include <cstdint>

#include "core/status.h"

namespace moe::cpu::fp8gemm {

constexpr int64_t kWeightBlock = 128;  // rows of B per scale row (SPEC)

// Rows of B per task on the paths that stream B task by task (the FMA paths'
// streaming, the AVX512_BF16 dot and row-lane kernels): a divisor of 128 (a
// task stays inside one scale block), as large as possible while leaving
// >= 16 tasks per thread for balance (the pool hands tasks out one at a time:
// with 8, N = 2112 made 17 tasks of 128 rows for 2 threads, one thread
// streaming the last alone). Inside a region (the layer runs one expert per
// task) the call's tasks all run on its thread, which has nothing to balance:
// whole blocks, as each task restarts its B stream and its kernel's first
// block (tasks sized for two threads, 32 rows at the layer's shapes, took
// 1.02-1.05x the time, see the kernels' drivers).
int64_t streamRowsPerTask(int64_t N);

struct Problem {
  const uint8_t* a;   // [M, K] fp8, or [*, K] with aRows
  const float* sa;    // [M, groups], or [*, groups] with aRows
  const int32_t* aRows = nullptr;  // [M]: row m of A is row aRows[m] of a (AMX and AVX512_BF16 paths only)
  const uint8_t* b;   // [N, K] fp8
  const float* sb;    // [ceil(N/128), groups]
  char* d;            // [M, N] f32 or bf16
  bool bf16;
  int64_t M, N, K, groups;

  int64_t dElemSize() const { return bf16 ? 2 : 4; }
  char* dAt(int64_t m, int64_t n) const { return d + (m * N + n) * dElemSize(); }
  int64_t aRow(int64_t m) const { return aRows != nullptr ? aRows[m] : m; }
};

// NaN codes seen, set from any thread; tasks stop early once one is seen.
struct NanFlags {
  std::atomic<bool> a{false};
  std::atomic<bool> b{false};
  bool any() const { return a.load(std::memory_order_relaxed) || b.load(std::memory_order_relaxed); }
};

inline Status finish(const NanFlags& nan) {
  if (nan.a.load()) return Status(Code::kNonFinite, "gemmFp8: a contains an fp8 NaN code (0x7F/0xFF)");
  if (nan.b.load()) return Status(Code::kNonFinite, "gemmFp8: b contains an fp8 NaN code (0x7F/0xFF)");
  return Status::ok();
}

inline Status outOfMemory() { return Status(Code::kInternal, "gemmFp8: out of memory for scratch buffers"); }

// The AVX512_BF16 path (gemm_fp8_bf16.cpp; only when gemmUsesAvx512Bf16())
// with the kernel chooseGemmKernel picked (gemm_fp8_kernels.h describes them).
enum class Bf16Kernel { kDot, kRowLanes, kPanel };
Status gemmBf16(const Problem& p, Bf16Kernel kernel);

}  // namespace moe::cpu::fp8gemm
