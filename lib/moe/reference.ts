/**
 * A float64 reference of the MoE layer, token by token, written from SPEC.md
 * rather than from the kernels: the demo checks a sample of tokens with it
 * and the tests check whole layers.
 *
 * It mirrors the layer's quantization points (the routed and shared experts'
 * inputs and SwiGLU outputs are quantized 1x128 to fp8, weights are the fp8
 * values with their block scales); everything else is float64.
 */
import { fp8E4m3FromFloat, FP8_E4M3_VALUES } from '../numerics';
import { MoeConfig } from './config';
import { ExpertMatrices, expertSlot } from './experts';
import type { MoeWeights } from './layer';

const f32 = Math.fround;

/** x -> fp8 1x128 -> dequantized, as the layer's quantizer does it (scales and x / s in f32). */
export function fakeQuantize(x: Float64Array): Float64Array {
  const out = new Float64Array(x.length);
  for (let g = 0; g < x.length; g += 128) {
    const end = Math.min(x.length, g + 128);
    let amax = 0;
    for (let i = g; i < end; i++) amax = Math.max(amax, Math.abs(f32(x[i])));
    const s = f32(Math.max(amax, f32(1e-4)) / 448);
    for (let i = g; i < end; i++) out[i] = FP8_E4M3_VALUES[fp8E4m3FromFloat(f32(f32(x[i]) / s))] * s;
  }
  return out;
}

/** y = W_e x for expert e of `m` ([N, K] fp8 with 128x128 scales), in float64. */
function expertMatVec(m: ExpertMatrices, expert: number, x: Float64Array): Float64Array {
  const { data, scales } = expertSlot(m, expert);
  const kGroups = Math.ceil(m.k / 128);
  const y = new Float64Array(m.n);
  for (let n = 0; n < m.n; n++) {
    let total = 0;
    for (let g = 0; g < kGroups; g++) {
      let partial = 0;
      const end = Math.min(m.k, (g + 1) * 128);
      for (let k = g * 128; k < end; k++) partial += FP8_E4M3_VALUES[data[n * m.k + k]] * x[k];
      total += scales[Math.floor(n / 128) * kGroups + g] * partial;
    }
    y[n] = total;
  }
  return y;
}

/** The FP8 MLP of one expert: W2 fq(silu(gate) * up) with [gate; up] = W13 fq(x). */
function expertMlp(w13: ExpertMatrices, w2: ExpertMatrices, expert: number, xq: Float64Array): Float64Array {
  const h = expertMatVec(w13, expert, xq);
  const inner = h.length / 2;
  const act = new Float64Array(inner);
  for (let i = 0; i < inner; i++) act[i] = (h[i] / (1 + Math.exp(-h[i]))) * h[inner + i];
  return expertMatVec(w2, expert, fakeQuantize(act));
}

export interface ReferenceRouting {
  ids: number[];
  weights: number[];
  /** Selection scores of every expert (biased for sigmoid; -inf where not selectable). */
  scores: Float64Array;
  /** Unbiased scores: softmax probabilities or sigmoids. */
  probs: Float64Array;
}

/** The routing weights of `ids` (their unbiased scores, renormalized and scaled as configured). */
function routeWeights(prob: Float64Array, ids: readonly number[], c: MoeConfig): number[] {
  let weights = ids.map((i) => (i >= 0 ? prob[i] : 0));
  if (c.normTopKProb) {
    const sum = weights.reduce((a, b) => a + b, 0) + (c.scoring === 'sigmoid' ? 1e-20 : 0);
    weights = weights.map((w) => w / sum);
  }
  return weights.map((w) => w * c.routedScalingFactor);
}

/** SPEC.md's routing of one token's logits, in float64. */
export function referenceRoute(logits: Float64Array, c: MoeConfig, bias?: Float32Array): ReferenceRouting {
  const e = c.numExperts;
  const finite = (i: number) => Number.isFinite(logits[i]);
  const prob = new Float64Array(e);
  const select = new Float64Array(e).fill(-Infinity);
  if (c.scoring === 'softmax') {
    let max = -Infinity;
    for (let i = 0; i < e; i++) if (finite(i)) max = Math.max(max, logits[i]);
    let sum = 0;
    for (let i = 0; i < e; i++) sum += finite(i) ? Math.exp(logits[i] - max) : 0;
    for (let i = 0; i < e; i++) {
      prob[i] = finite(i) ? Math.exp(logits[i] - max) / sum : 0;
      if (finite(i)) select[i] = prob[i];
    }
  } else {
    for (let i = 0; i < e; i++) {
      prob[i] = 1 / (1 + Math.exp(-logits[i]));
      if (finite(i)) select[i] = prob[i] + (bias ? bias[i] : 0);
    }
    if (c.numGroups > 1) {
      const size = e / c.numGroups;
      const groupScore = Array.from({ length: c.numGroups }, (_, g) => {
        const members = Array.from({ length: size }, (_, j) => select[g * size + j]).filter((v) => v > -Infinity).sort((a, b) => b - a);
        if (members.length === 0) return -Infinity;
        return bias ? members.slice(0, 2).reduce((a, b) => a + b, 0) : members[0];
      });
      const kept = groupScore.map((score, g) => ({ score, g })).sort((a, b) => b.score - a.score || a.g - b.g).slice(0, c.topKGroups);
      const keep = new Set(kept.map((k) => k.g));
      for (let i = 0; i < e; i++) if (!keep.has(Math.floor(i / size))) select[i] = -Infinity;
    }
  }
  const order = Array.from({ length: e }, (_, i) => i)
    .filter((i) => select[i] > -Infinity)
    .sort((a, b) => select[b] - select[a] || a - b)
    .slice(0, c.topK);
  while (order.length < c.topK) order.push(-1);
  return { ids: order, weights: routeWeights(prob, order, c), scores: select, probs: prob };
}

/**
 * The layer's output for one token x [H] in float64. With `ids`, those
 * experts are used (so that a near-tie that f32 and float64 break differently
 * does not dominate a comparison); their weights are still computed here.
 */
export function referenceForwardToken(
  config: MoeConfig, weights: MoeWeights, x: Float64Array, ids?: readonly number[],
): { out: Float64Array; routing: ReferenceRouting } {
  const { hiddenSize: h, numExperts: e } = config;
  const gate = weights.gate.toFloat32Array(); // [E, H]
  const logits = new Float64Array(e);
  for (let i = 0; i < e; i++) {
    let sum = 0;
    for (let j = 0; j < h; j++) sum += x[j] * gate[i * h + j];
    logits[i] = sum;
  }
  const routing = referenceRoute(logits, config, weights.bias?.data);
  const chosen = ids ?? routing.ids;
  const chosenWeights = routeWeights(routing.probs, chosen, config);
  const xq = fakeQuantize(x);
  const out = new Float64Array(h);
  chosen.forEach((id, slot) => {
    if (id < 0) return;
    const y = expertMlp(weights.w13, weights.w2, id, xq);
    for (let j = 0; j < h; j++) out[j] += chosenWeights[slot] * y[j];
  });
  if (weights.sharedW13 && weights.sharedW2) {
    const y = expertMlp(weights.sharedW13, weights.sharedW2, 0, xq);
    for (let j = 0; j < h; j++) out[j] += y[j];
  }
  return { out, routing };
}
