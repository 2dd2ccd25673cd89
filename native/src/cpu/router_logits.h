// The router's projection logits = x * w^T in f32 (SPEC.md, "The MoE layer").
// E is small (8..512), so this is a few dot products per token; it is not
// worth a packed GEMM, but it is worth threads and vectorizable loops.
#pragma once

#include "core/ops.h"

namespace moe::cpu {

Status routerLogits(const RouterLogitsArgs& args);

// routerLogits, then x quantized 1x128 (quantizeActivations' bits): on the
// AMX path each task quantizes its block of token rows right after the
// router has read them, so x crosses memory once. The caller has checked
// args.quantize's shapes.
Status routerLogitsQuantize(const RouterQuantizeArgs& args);

}  // namespace moe::cpu
