// Grouped FP8 GEMMs on the CPU (SPEC.md, "Grouped, contiguous layout" and
// "Grouped, masked layout"), built from the dense kernel: each group's rows
// are one dense GEMM against that group's weights, so every group gets the
// dense path that suits its row count (streaming for a few decode rows,
// packed for prefill-sized segments).
#pragma once

#include "core/ops.h"

namespace moe::cpu {

// Validates and runs either layout (groupIndex set: contiguous; maskedM set: masked).
Status groupedGemmFp8(const GroupedGemmFp8Args& args);

}  // namespace moe::cpu
