/**
 * Float64 references for the MoE ops (routing, dispatch layout, dispatch,
 * swiglu, combine), written from SPEC.md ("Routing", "Dispatch layout,
 * dispatch, combine") independently of lib/ and native/.
 */
import { expect } from 'vitest';

// ---------------------------------------------------------------- numbers

/** The f32 value of bf16 bits (exact widening: the bits become the high half). */
export function bf16BitsToNumber(bits: number): number {
  const scratch = new Uint32Array([(bits & 0xffff) << 16]);
  return new Float32Array(scratch.buffer)[0];
}

/** Decodes a Uint16Array of bf16 bits to float64 values. */
export function decodeBf16(bits: Uint16Array): Float64Array {
  const u32 = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) u32[i] = bits[i] << 16;
  return Float64Array.from(new Float32Array(u32.buffer));
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

// ---------------------------------------------------------------- routing

export interface RouteRefOptions {
  scoring?: 'softmax' | 'sigmoid';
  topK: number;
  numGroups?: number;
  topKGroups?: number;
  bias?: ArrayLike<number>;
  renormalize?: boolean;
  scale?: number;
}

export interface RouteRefRow {
  /** [k]: selected experts, descending selection score, ties to the lower index; -1 padding */
  ids: number[];
  /** [k]: weights, 0 for padding */
  weights: number[];
  /** [E]: each expert's selection score (p for softmax, s + bias for sigmoid); -Infinity where not selectable at all (non-finite logit) */
  score: Float64Array;
  /** [E]: the value the weight is taken from (p or s); 0 for a non-finite logit */
  gate: Float64Array;
  /** [E]: whether the expert survived group selection and has a finite logit */
  eligible: boolean[];
  /** The group scores (sigmoid with numGroups > 1), -Infinity for a group without selectable experts */
  groupScores?: number[];
  /** Whether the kept groups are ambiguous: the last kept group's score is within 1e-6 of the best dropped one */
  groupTie: boolean;
}

/** Indices of `values` sorted by descending value, ties to the lower index (stable). */
function rankDescending(values: ArrayLike<number>, candidates: number[]): number[] {
  return [...candidates].sort((a, b) => (values[b] !== values[a] ? values[b] - values[a] : a - b));
}

/** One token's routing from its logits row (already the f32 / widened bf16 values). */
export function referenceRouteRow(logits: ArrayLike<number>, opts: RouteRefOptions): RouteRefRow {
  const E = logits.length;
  const k = opts.topK;
  const scoring = opts.scoring ?? 'softmax';
  const numGroups = opts.numGroups ?? 1;
  const topKGroups = opts.topKGroups ?? numGroups;
  const scale = opts.scale ?? 1;
  const finite = Array.from({ length: E }, (_, e) => Number.isFinite(logits[e]));
  const score = new Float64Array(E).fill(-Infinity);
  const gate = new Float64Array(E);

  if (scoring === 'softmax') {
    let max = -Infinity;
    for (let e = 0; e < E; e++) if (finite[e]) max = Math.max(max, logits[e]);
    let sum = 0;
    for (let e = 0; e < E; e++) if (finite[e]) sum += Math.exp(logits[e] - max);
    for (let e = 0; e < E; e++) {
      if (!finite[e]) continue;
      gate[e] = Math.exp(logits[e] - max) / sum;
      score[e] = gate[e];
    }
  } else {
    for (let e = 0; e < E; e++) {
      if (!finite[e]) continue;
      gate[e] = sigmoid(logits[e]);
      score[e] = gate[e] + (opts.bias ? opts.bias[e] : 0);
    }
  }

  const eligible = [...finite];
  let groupScores: number[] | undefined;
  let groupTie = false;
  if (numGroups > 1) {
    const size = E / numGroups;
    groupScores = [];
    for (let g = 0; g < numGroups; g++) {
      const members = Array.from({ length: size }, (_, i) => g * size + i).filter((e) => finite[e]);
      if (members.length === 0) {
        groupScores.push(-Infinity);
      } else if (opts.bias) {
        const top = rankDescending(score, members).slice(0, 2);
        groupScores.push(top.reduce((acc, e) => acc + score[e], 0));
      } else {
        groupScores.push(Math.max(...members.map((e) => gate[e])));
      }
    }
    const order = rankDescending(groupScores, Array.from({ length: numGroups }, (_, g) => g));
    const kept = new Set(order.slice(0, topKGroups));
    if (topKGroups < numGroups) {
      const last = groupScores[order[topKGroups - 1]];
      const next = groupScores[order[topKGroups]];
      groupTie = Number.isFinite(last) && Number.isFinite(next) && last - next < 1e-6;
    }
    for (let e = 0; e < E; e++) if (!kept.has(Math.floor(e / size))) eligible[e] = false;
  }

  const candidates = Array.from({ length: E }, (_, e) => e).filter((e) => eligible[e]);
  const chosen = rankDescending(score, candidates).slice(0, k);
  const ids = [...chosen, ...new Array(k - chosen.length).fill(-1)];
  let weights = chosen.map((e) => gate[e]);
  if (opts.renormalize) {
    const sum = weights.reduce((a, b) => a + b, 0);
    const denominator = scoring === 'sigmoid' ? sum + 1e-20 : sum;
    weights = weights.map((w) => w / denominator);
  }
  weights = weights.map((w) => w * scale);
  while (weights.length < k) weights.push(0);
  return { ids, weights, score, gate, eligible, groupScores, groupTie };
}

/** Every row of logits [T, E] (a flat array). */
export function referenceRoute(logits: ArrayLike<number>, tokens: number, experts: number, opts: RouteRefOptions): RouteRefRow[] {
  const rows: RouteRefRow[] = [];
  for (let t = 0; t < tokens; t++) {
    const row = new Float64Array(experts);
    for (let e = 0; e < experts; e++) row[e] = logits[t * experts + e];
    rows.push(referenceRouteRow(row, opts));
  }
  return rows;
}

const TIE = 1e-6;

/**
 * Checks a routing ([T, k] ids and weights) against the reference, following
 * SPEC.md's tolerance: ids equal, except that experts whose selection scores
 * tie within 1e-6 may trade places (exactly equal scores still go to the lower
 * index); weights within 1e-5 relative of the reference weights of the ids
 * that were chosen.
 */
export function expectRouting(
  ids: Int32Array, weights: Float32Array, ref: RouteRefRow[], opts: RouteRefOptions, note: string,
): void {
  const k = opts.topK;
  const scoring = opts.scoring ?? 'softmax';
  const scale = opts.scale ?? 1;
  expect(ids.length, `ids length ${note}`).toBe(ref.length * k);
  expect(weights.length, `weights length ${note}`).toBe(ref.length * k);
  for (let t = 0; t < ref.length; t++) {
    const want = ref[t];
    const got = Array.from(ids.subarray(t * k, (t + 1) * k));
    const gotW = Array.from(weights.subarray(t * k, (t + 1) * k));
    const where = `token ${t}: got ids [${got}], want [${want.ids}] ${note}`;
    const selected = got.filter((e) => e >= 0);
    const wanted = want.ids.filter((e) => e >= 0);
    // Same count of selected experts, all first, all distinct.
    expect(selected.length, `selected count, ${where}`).toBe(wanted.length);
    expect(got.slice(0, selected.length), `-1 padding only at the end, ${where}`).toEqual(selected);
    expect(new Set(selected).size, `distinct ids, ${where}`).toBe(selected.length);
    for (let j = selected.length; j < k; j++) expect(gotW[j], `weight of a -1 slot, ${where}`).toBe(0);

    if (want.groupTie) {
      // The kept groups themselves tie within 1e-6: only check that every id has a
      // finite logit and lies in a group scoring within 1e-6 of the kept ones.
      const size = want.score.length / (opts.numGroups ?? 1);
      const sorted = [...(want.groupScores ?? [])].sort((a, b) => b - a);
      const cutoff = sorted[(opts.topKGroups ?? 1) - 1];
      for (const e of selected) {
        expect(Number.isFinite(want.score[e]), `id ${e} has a finite score, ${where}`).toBe(true);
        expect(want.groupScores![Math.floor(e / size)], `group of id ${e}, ${where}`).toBeGreaterThanOrEqual(cutoff - TIE);
      }
    } else {
      for (let j = 0; j < selected.length; j++) {
        const e = selected[j];
        expect(e, `id in range, ${where}`).toBeLessThan(want.score.length);
        expect(want.eligible[e], `id ${e} at slot ${j} is selectable, ${where}`).toBe(true);
        // The id at slot j scores like the reference's slot j (exact unless tied within 1e-6).
        const diff = Math.abs(want.score[e] - want.score[wanted[j]]);
        expect(diff, `slot ${j}: score of ${e} vs ${wanted[j]}, ${where}`).toBeLessThan(TIE);
        // Exactly equal scores: the lower index first.
        if (j > 0 && want.score[selected[j - 1]] === want.score[e]) {
          expect(selected[j - 1], `exact tie order at slot ${j}, ${where}`).toBeLessThan(e);
        }
      }
      // An unselected expert with exactly the score of a selected one must have a higher index.
      const chosen = new Set(selected);
      for (let e = 0; e < want.score.length; e++) {
        if (chosen.has(e) || !want.eligible[e]) continue;
        for (const s of selected) {
          if (want.score[s] === want.score[e]) expect(s, `exact tie at the cut: ${s} chosen over ${e}, ${where}`).toBeLessThan(e);
        }
      }
    }

    // Weights: the reference formula on the ids that were actually chosen.
    let expected = selected.map((e) => want.gate[e]);
    if (opts.renormalize) {
      const sum = expected.reduce((a, b) => a + b, 0);
      const denominator = scoring === 'sigmoid' ? sum + 1e-20 : sum;
      expected = expected.map((w) => w / denominator);
    }
    expected = expected.map((w) => w * scale);
    for (let j = 0; j < selected.length; j++) {
      const tolerance = 1e-5 * Math.abs(expected[j]) + 1e-30;
      if (!(Math.abs(gotW[j] - expected[j]) <= tolerance)) {
        expect.fail(`weight at slot ${j} (expert ${selected[j]}): got ${gotW[j]}, want ${expected[j]}, ${where}`);
      }
    }
  }
}

// ---------------------------------------------------------------- layout

export interface LayoutRef {
  tokensPerExpert: number[];
  offsets: number[];
  rowToken: number[];
  groupIndex: number[];
  slotRow: number[];
  numRows: number;
}

/** The contiguous layout of ids [T, k] (flat) with alignment `align`, or the masked one ([E, maxRows]). */
export function referenceLayout(
  ids: ArrayLike<number>, tokens: number, topK: number, experts: number,
  options: { masked: false; align: number } | { masked: true; maxRows: number },
): LayoutRef {
  const counts = new Array(experts).fill(0);
  for (let i = 0; i < tokens * topK; i++) if (ids[i] >= 0) counts[ids[i]]++;
  const offsets = [0];
  for (let e = 0; e < experts; e++) {
    const span = options.masked ? options.maxRows : Math.ceil(counts[e] / options.align) * options.align;
    offsets.push(offsets[e] + span);
  }
  const numRows = offsets[experts];
  const rowToken = new Array(numRows).fill(-1);
  const groupIndex = new Array(numRows).fill(-1);
  const slotRow = new Array(tokens * topK).fill(-1);
  const next = offsets.slice(0, experts);
  // Token order, then slot order.
  for (let t = 0; t < tokens; t++) {
    for (let j = 0; j < topK; j++) {
      const e = ids[t * topK + j];
      if (e < 0) continue;
      const row = next[e]++;
      rowToken[row] = t;
      groupIndex[row] = e;
      slotRow[t * topK + j] = row;
    }
  }
  return { tokensPerExpert: counts, offsets, rowToken, groupIndex, slotRow, numRows };
}

// ---------------------------------------------------------------- dispatch, swiglu, combine

/** Rows [R, H] with row r = x[rowToken[r]], zeros for -1 (f32 values; exact for f32 or widened bf16 x). */
export function referenceDispatch(x: ArrayLike<number>, hidden: number, rowToken: ArrayLike<number>): Float32Array {
  const out = new Float32Array(rowToken.length * hidden);
  for (let r = 0; r < rowToken.length; r++) {
    const t = rowToken[r];
    if (t < 0) continue;
    for (let c = 0; c < hidden; c++) out[r * hidden + c] = x[t * hidden + c];
  }
  return out;
}

/** silu(gate) * up in float64 for h [rows, 2I] (flat): out [rows, I]. */
export function referenceSwiglu(h: ArrayLike<number>, rows: number, inter: number): Float64Array {
  const out = new Float64Array(rows * inter);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < inter; c++) {
      const g = h[r * 2 * inter + c];
      const u = h[r * 2 * inter + inter + c];
      out[r * inter + c] = (g / (1 + Math.exp(-g))) * u;
    }
  }
  return out;
}

export interface CombineRef {
  /** [T, H] float64 result */
  out: Float64Array;
  /** [T, H] sum of the absolute values of the terms (for rounding-error bounds) */
  magnitude: Float64Array;
}

/**
 * out[t] = sum over slots j with slotRow[t, j] >= 0 of w[t, j] * y[slotRow[t, j]] (+ shared[t]), float64.
 */
export function referenceCombine(
  y: ArrayLike<number>, hidden: number, slotRow: ArrayLike<number>, weights: ArrayLike<number>,
  tokens: number, topK: number, shared?: ArrayLike<number>,
): CombineRef {
  const out = new Float64Array(tokens * hidden);
  const magnitude = new Float64Array(tokens * hidden);
  for (let t = 0; t < tokens; t++) {
    for (let j = 0; j < topK; j++) {
      const row = slotRow[t * topK + j];
      if (row < 0) continue;
      const w = weights[t * topK + j];
      for (let c = 0; c < hidden; c++) {
        const term = w * y[row * hidden + c];
        out[t * hidden + c] += term;
        magnitude[t * hidden + c] += Math.abs(term);
      }
    }
    if (shared) {
      for (let c = 0; c < hidden; c++) {
        out[t * hidden + c] += shared[t * hidden + c];
        magnitude[t * hidden + c] += Math.abs(shared[t * hidden + c]);
      }
    }
  }
  return { out, magnitude };
}
