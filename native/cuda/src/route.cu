// route (SPEC.md "Routing"): one fused kernel, one warp per token. Per token:
// scores (sigmoid or softmax) -> group selection -> top-k -> renormalize ->
// scale, in f32, equal to the CPU backend (cpu/route.cpp): ids exactly, the
// per-element math in route_math.cuh (tested on the host).
//
// Per warp, in dynamic shared memory (so no register array is indexed at run
// time and nothing goes to local memory):
//   score [E] f32   selection score (-inf: never selected; taken experts are set to -inf)
//   weight [E] f32  unnormalized weight (softmax p / sigmoid s)
//   gscore [G] f32, gstate [G] i32 (bit 0: has a selectable expert, bit 1: kept)
// Lane l owns experts l, l + 32, ... (coalesced logit loads); group scores
// are computed by lane g % 32 serially in expert order, as the CPU does.
// Every choice (best group, best expert) is a butterfly reduction under a
// total order (route_math::pick), so every lane agrees on the winner without
// any atomics.

#include <cuda_runtime.h>

#include "common.h"
#include "moe_ops.h"
#include "route_math.cuh"

namespace moe_cuda {
namespace {

using namespace route_math;

constexpr int kWarpsPerBlock = 4;
constexpr unsigned kFull = 0xFFFFFFFFu;

__device__ __forceinline__ Cand warp_best(Cand c) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    Cand o;
    o.v = __shfl_xor_sync(kFull, c.v, off);
    o.i = __shfl_xor_sync(kFull, c.i, off);
    c = pick(c, o);
  }
  return c;
}

__device__ __forceinline__ GroupCand warp_best_group(GroupCand c) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    GroupCand o;
    o.v = __shfl_xor_sync(kFull, c.v, off);
    o.g = __shfl_xor_sync(kFull, c.g, off);
    o.any = __shfl_xor_sync(kFull, c.any, off);
    c = group_pick(c, o);
  }
  return c;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, off));
  return v;
}

__global__ void __launch_bounds__(kWarpsPerBlock * 32) route_kernel(RouteProblem p) {
  extern __shared__ float smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t E = p.experts, G = p.groups;
  float* score = smem + warp * (2 * E + 2 * G);  // [E]
  float* weight = score + E;                      // [E]
  float* gscore = weight + E;                     // [G]
  int32_t* gstate = reinterpret_cast<int32_t*>(gscore + G);  // [G]
  const bool has_bias = p.bias != nullptr;

  // Bias finiteness (the CPU rejects a non-finite bias): block 0 checks it once.
  if (has_bias && blockIdx.x == 0 && p.flag != nullptr) {
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
      if (!quant::is_finite(p.bias[e])) atomicOr(p.flag, MOE_CUDA_FLAG_NONFINITE);
    }
  }

  // Warp-uniform loop over tokens (grid-stride), so full-mask shuffles are safe.
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp; t < p.tokens;
       t += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    // ---- scores ----
    const float* lf = static_cast<const float*>(p.logits) + t * E;        // [E] f32
    const uint16_t* lb = static_cast<const uint16_t*>(p.logits) + t * E;  // [E] bf16
    if (p.sigmoid) {
      for (int64_t e = lane; e < E; e += 32) {
        const float logit = p.logits_bf16 ? quant::bf16_to_float(lb[e]) : lf[e];
        sigmoid_score(logit, has_bias, has_bias ? p.bias[e] : 0.0f, &weight[e], &score[e]);
      }
    } else {
      float m = neg_inf();
      for (int64_t e = lane; e < E; e += 32) {
        const float logit = p.logits_bf16 ? quant::bf16_to_float(lb[e]) : lf[e];
        score[e] = softmax_score(logit);
        if (selectable(score[e])) m = fmaxf(m, score[e]);
      }
      m = warp_max(m);
      // The CPU's summation order (route_math.cuh, softmax_partial): partial j
      // takes e = j, j + 16, j + 32, ... in turn, i.e. lane j's weight and
      // then lane j + 16's in every 32-wide step; lanes 0..15 keep the
      // partials. Weights past E are +0 and leave a partial's bits unchanged.
      float partial = 0.0f;
      for (int64_t base = 0; base < E; base += 32) {
        const int64_t e = base + lane;
        const float w = e < E ? softmax_unnormalized(score[e], m) : 0.0f;
        if (e < E) weight[e] = w;
        const float upper = __shfl_down_sync(kFull, w, kSoftmaxPartials);
        partial = expm::add_rn(expm::add_rn(partial, w), upper);
      }
      float sum = 0.0f;
      for (int j = 0; j < kSoftmaxPartials; ++j) sum = expm::add_rn(sum, __shfl_sync(kFull, partial, j));
      if (sum > 0.0f) {
        for (int64_t e = lane; e < E; e += 32) weight[e] = quant::div_rn(weight[e], sum);
      }
    }
    __syncwarp();

    // ---- group selection (only when it can drop a group) ----
    if (G > 1 && p.top_k_groups < G) {
      const int64_t gs = E / G;
      for (int64_t g = lane; g < G; g += 32) {
        bool any = false;
        gscore[g] = group_score(score + g * gs, gs, has_bias, &any);
        gstate[g] = any ? 1 : 0;
      }
      __syncwarp();
      for (int64_t r = 0; r < p.top_k_groups; ++r) {
        GroupCand best = no_group();
        for (int64_t g = lane; g < G; g += 32) {
          if ((gstate[g] & 2) == 0) best = group_pick(best, GroupCand{gscore[g], static_cast<int32_t>(g), gstate[g] & 1});
        }
        best = warp_best_group(best);
        if (best.g >= 0 && (best.g & 31) == lane) gstate[best.g] |= 2;  // its owner lane marks it kept
        __syncwarp();
      }
      for (int64_t e = lane; e < E; e += 32) {
        if ((gstate[e / gs] & 2) == 0) score[e] = neg_inf();
      }
      __syncwarp();
    }

    // ---- top-k: k rounds of a warp argmax; the owner lane retires the winner ----
    int32_t* ids = p.ids + t * p.top_k;        // [k] i32
    float* weights = p.weights + t * p.top_k;  // [k] f32
    int64_t chosen = 0;
    for (; chosen < p.top_k; ++chosen) {
      Cand best = no_cand();
      for (int64_t e = lane; e < E; e += 32) best = pick(best, expert(score[e], static_cast<int32_t>(e)));
      best = warp_best(best);
      if (best.i < 0) break;  // warp-uniform: fewer than k selectable experts
      if (lane == 0) {
        ids[chosen] = best.i;
        weights[chosen] = weight[best.i];
      }
      if ((best.i & 31) == lane) score[best.i] = neg_inf();
    }
    if (lane == 0) finish_token(ids, weights, chosen, p.top_k, p.renormalize, p.sigmoid, p.scale);
    __syncwarp();  // this warp's shared arrays are rewritten for its next token
  }
}

}  // namespace

size_t route_smem_per_warp(int64_t experts, int64_t groups) {
  return static_cast<size_t>(2 * experts + 2 * groups) * sizeof(float);
}

int route_run(const RouteProblem& p, cudaStream_t stream, char* err, size_t err_len) {
  if (p.tokens == 0) return MOE_CUDA_OK;
  const size_t smem = route_smem_per_warp(p.experts, p.groups) * kWarpsPerBlock;
  if (smem > 48 * 1024) {
    MOE_CUDA_CHECK(cudaFuncSetAttribute(route_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  const int64_t blocks = (p.tokens + kWarpsPerBlock - 1) / kWarpsPerBlock;
  route_kernel<<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), kWarpsPerBlock * 32, smem, stream>>>(p);
  MOE_CUDA_CHECK_LAUNCH("route_kernel");
  return MOE_CUDA_OK;
}

}  // namespace moe_cuda
