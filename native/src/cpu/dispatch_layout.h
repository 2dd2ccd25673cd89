// The dispatch layout of the CPU backend (SPEC.md, "Dispatch layout, dispatch,
// combine"): which row of the grouped GEMM input each (token, slot) goes to.
#pragma once

#include "core/ops.h"

namespace moe::cpu {

// Validates args, then writes tokensPerExpert [E], offsets [E + 1],
// rowToken / groupIndex [capacity] and slotRow [T, k] (all i32), contiguous
// (segments aligned to args.align) or masked ([E, maxRowsPerExpert] rows).
// A pure function of ids: rows of an expert follow token order, then slot order.
Status dispatchLayout(const LayoutArgs& args);

}  // namespace moe::cpu
