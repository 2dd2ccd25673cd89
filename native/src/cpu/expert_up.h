// The routed experts' first half, fused (core/ops.h, ExpertUpArgs): gather,
// first grouped GEMM and SwiGLU + fp8 quantization per expert, in L2-sized
// per-thread scratch. At T = 4096 the separate ops wrote and re-read the
// gathered rows [R, H] and h [R, 2I] through memory, ~10% of the layer.
#pragma once

#include "core/ops.h"

namespace moe::cpu {

// Validates args (like dispatch, groupedGemmFp8 and swiglu) and runs it.
Status expertUp(const ExpertUpArgs& args);

}  // namespace moe::cpu
