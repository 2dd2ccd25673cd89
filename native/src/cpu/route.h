// Top-k expert routing of the CPU backend (SPEC.md, "Routing").
#pragma once

#include "core/ops.h"

namespace moe::cpu {

// Validates args, then writes ids [T, topK] i32 and weights [T, topK] f32.
// Softmax or sigmoid ("noaux_tc") scoring, optional group-limited selection,
// ties to the lower index, non-finite logits never selected (id -1, weight 0).
Status route(const RouteArgs& args);

}  // namespace moe::cpu
