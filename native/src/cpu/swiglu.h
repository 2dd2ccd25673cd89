// The SwiGLU activation of the CPU backend (SPEC.md, "Dispatch layout, dispatch, combine").
#pragma once

#include "core/ops.h"

namespace moe::cpu {

// Validates args, then out = silu(gate) * up per row with h = [gate | up],
// in f32; stored as f32, bf16 (nearest even), or, when args.scales.data !=
// nullptr, fp8_e4m3 quantized 1x128 with quantizeRow.
Status swiglu(const SwigluArgs& args);

}  // namespace moe::cpu
