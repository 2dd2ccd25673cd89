// Combine (weighted scatter-back) of the CPU backend (SPEC.md, "Dispatch layout, dispatch, combine").
#pragma once

#include "core/ops.h"

namespace moe::cpu {

// Validates args, then
//   out[t] = ((0 + w[t,0] * y[slotRow[t,0]]) + w[t,1] * y[slotRow[t,1]] + ...) + shared[t]
// in f32, slots in order 0..k-1 (those with slotRow == -1 skipped), the shared
// term added last, rounded once to out's dtype. No atomics: bitwise
// deterministic for any thread count.
Status combine(const CombineArgs& args);

}  // namespace moe::cpu
