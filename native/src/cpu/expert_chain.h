// The routed experts' two halves in one parallel region (core/ops.h,
// ExpertChainArgs): expertUp's tasks, then the second grouped GEMM's, each
// expert's second GEMM waiting only for its own first half. A decode step
// (T = 1: 9 experts of one row on 2 threads) otherwise pays twice for waking
// the pool and for the first half's idle tail, where one thread streams the
// last expert's weights alone.
#pragma once

#include "core/ops.h"

namespace moe::cpu {

// Validates both halves (as expertUp and groupedGemmFp8) and runs them: in
// one region where both give each thread >= 4 tasks, else one op after the
// other. Same bits either way: each task runs the kernels it would alone.
Status expertChain(const ExpertChainArgs& args);

}  // namespace moe::cpu
