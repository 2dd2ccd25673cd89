// The router's projection logits = x * w^T in f32 (SPEC.md, "The MoE layer").
// E is small (8..512), so this is a few dot products per token: AMX tiles
// where they apply (router_logits_amx.h), else the vector kernels
// (router_dots.h), threaded over blocks of tokens and runs of experts. At a
// decode step it is a GEMV over w's E x H bf16, bound by memory bandwidth.
#pragma once

#include "core/ops.h"

namespace moe::cpu {

Status routerLogits(const RouterLogitsArgs& args);

// routerLogits, then x quantized 1x128 (quantizeActivations' bits): each
// task quantizes its block of token rows right after the router has read
// them, so x crosses memory once. The caller has checked
// args.quantize's shapes.
Status routerLogitsQuantize(const RouterQuantizeArgs& args);

}  // namespace moe::cpu
