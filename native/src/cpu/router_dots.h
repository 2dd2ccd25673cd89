// The router projection's vector kernels (everything but AMX tiles): the
// logits of a block of <= kRouterBlockTokens tokens against a run of experts.
// A few experts' rows of w at a time are read from memory once for the whole
// block and kept in L1 while the block's tokens pass a few at a time (its
// rows, 224 KB of bf16 at H = 1792, stay in L2), so w crosses memory once per
// block rather than once per few tokens.
//
// Every logit is computed the same way whatever the block holds: one SIMD
// accumulator walks H in order, then one fixed tree adds its lanes (an H tail
// that fills no vector is added last, in order). A token's logits are
// therefore the same bits at any T, any blocking and any thread count, which
// is what batchInvariant asks of the router.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace moe::cpu {

constexpr int64_t kRouterBlockTokens = 64;

struct RouterBlock {
  // [count, hidden]: the block's token rows in the kernel's row type
  // (RouterKernel::bf16Rows), count <= kRouterBlockTokens.
  const void* rows;
  int64_t count;
  const void* w;  // [E, hidden] f32 or bf16 (RouterKernel's choice)
  int64_t hidden;
  float* logits;  // [count, ldLogits] f32: the block's first token's logits at column 0
  int64_t ldLogits;
};

struct RouterKernel {
  // Rows are bf16 (x as given) rather than f32 (x widened, or as given).
  bool bf16Rows = false;
  // logits[t, e] for t < block.count and e0 <= e < e1.
  void (*run)(const RouterBlock& block, int64_t e0, int64_t e1) = nullptr;
  const char* name = "";
};

// The kernel for x and w of these dtypes (f32 or bf16) on this CPU
// (cpuFeatures(), so MOE_CPU_ISA): VDPBF16PS where both are bf16 and the CPU
// has AVX512_BF16 (bf16 products are exact in f32), else f32 FMAs with w
// widened in registers (AVX-512, AVX2), else portable C++.
RouterKernel selectRouterKernel(DType x, DType w);

}  // namespace moe::cpu
