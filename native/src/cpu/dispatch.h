// Dispatch (gather) of the CPU backend (SPEC.md, "Dispatch layout, dispatch, combine").
#pragma once

#include "core/ops.h"

namespace moe::cpu {

// Validates args, then out[r] = x[rowToken[r]] (zero where rowToken[r] == -1):
// a bit-exact copy in x's dtype, or, when args.scales.data != nullptr,
// quantized 1x128 to fp8_e4m3 with quantizeRow (bit-exact with quantizeActivations).
Status dispatch(const DispatchArgs& args);

}  // namespace moe::cpu
