// The router projection on AMX-BF16 tiles (router_logits_amx.cpp; call only
// when gemmUsesAmx()). bf16 x bf16 products are exact in f32 and the tiles
// accumulate them in f32, so this is an f32-accumulated dot product like the
// vector path, at tile speed: at T = 4096 the vector path spent more time on
// the router than on the whole shared expert.
#pragma once

#include <cstdint>

namespace moe::cpu {

constexpr int64_t kAmxRouterTokens = 32;  // tokens per block (two 16-row tiles)
constexpr int64_t kAmxRouterExperts = 16; // expert granularity (one tile of rows)

// Scratch words amxRouterBlock needs for `hidden` (a multiple of 32).
constexpr int64_t amxRouterScratchWords(int64_t hidden) { return hidden / 32 * 2 * 256 + 4 * 256; }

// logits[t, e] = sum_k x[t, k] * w[e, k] for t < tokens, e0 <= e < e1.
//   x: [tokens, hidden] bf16 (tokens <= 32); w: [E, hidden] bf16;
//   logits: [tokens, ldLogits] f32 (column e at offset e);
//   scratch: amxRouterScratchWords(hidden) words, 64-byte aligned.
// hidden % 32 == 0; e0 and e1 are multiples of 16.
void amxRouterBlock(const uint16_t* x, int64_t tokens, const uint16_t* w, int64_t e0, int64_t e1,
                    int64_t hidden, float* logits, int64_t ldLogits, uint32_t* scratch);

}  // namespace moe::cpu
