/**
 * The router projection's vector kernels (native/src/cpu/router_dots.cpp),
 * shared by the test files that run them on each SIMD path (the path is
 * forced through MOE_CPU_ISA before the addon loads). Shapes are ragged on
 * purpose: every token count of a kernel's step (1..8), blocks of 64 tokens
 * with a few left over, expert counts that leave a remainder after the
 * kernels' runs of 2, 4 or 6, and H tails shorter than any vector (f32 and
 * bf16 lanes).
 */
import { describe, expect, it } from 'vitest';
import { Tensor, bf16FromFloat32, cpuInfo, routerLogitsSync, tensor } from '../../lib/index';
import { randomActivations, rng, seedNote } from './random';

type Dtype = 'f32' | 'bf16';

/** [rows, cols] in the dtype asked for, with its exact values as float64. */
export function routerOperand(rows: number, cols: number, dtype: Dtype, scale: number, random: () => number): { t: Tensor; values: Float64Array } {
  const raw = rows === 0 ? new Float32Array(0) : randomActivations(rows, cols, random).map((v) => v * scale);
  const t = dtype === 'bf16' ? bf16FromFloat32(raw, [rows, cols]) : tensor(raw, [rows, cols]);
  return { t, values: Float64Array.from(t.toFloat32Array()) };
}

/** Every logit (logits [tokens, experts]) within f32 accumulation error of the float64 dot product. */
export function expectLogitsNearReference(got: Float32Array, x: Float64Array, w: Float64Array, tokens: number, experts: number, hidden: number, label: string): void {
  expect(got.length).toBe(tokens * experts);
  for (let t = 0; t < tokens; t++) {
    for (let e = 0; e < experts; e++) {
      let dot = 0;
      let magnitude = 0;
      for (let k = 0; k < hidden; k++) {
        const p = x[t * hidden + k] * w[e * hidden + k];
        dot += p;
        magnitude += Math.abs(p);
      }
      const tolerance = 2 ** -24 * Math.sqrt(hidden) * 4 * magnitude + 1e-30;
      const value = got[t * experts + e];
      if (!(Math.abs(value - dot) <= tolerance)) {
        expect.fail(`${label}: logits[${t}, ${e}] = ${value}, want ${dot} (tolerance ${tolerance}) ${seedNote}`);
      }
    }
  }
}

const SHAPES: Array<[number, number, number]> = [
  // [T, E, H]
  [1, 256, 1792],
  [1, 5, 7],
  [2, 7, 33],
  [3, 9, 100],
  [4, 3, 15],
  [5, 6, 17],
  [6, 1, 31],
  [7, 11, 47],
  [8, 13, 129],
  [9, 258, 96],
  [17, 19, 1],
  [40, 16, 200],
  [63, 23, 65],
  [67, 29, 40],
  [130, 14, 33],
];

const DTYPES: Array<[Dtype, Dtype]> = [
  ['bf16', 'bf16'],
  ['f32', 'bf16'],
  ['bf16', 'f32'],
  ['f32', 'f32'],
];

export function routerSuite(isa: 'avx512bf16' | 'avx512' | 'avx2' | 'portable'): void {
  const random = rng();
  const info = cpuInfo();
  const title = `routerLogits (${isa} vector kernels)`;
  if (info.gemmIsa !== isa) {
    describe.skip(`${title}: this CPU cannot run the ${isa} path (it runs ${info.gemmIsa})`, () => {});
    return;
  }

  describe(title, () => {
    for (const [tokens, experts, hidden] of SHAPES) {
      for (const [xd, wd] of DTYPES) {
        it(`T=${tokens} E=${experts} H=${hidden}, x ${xd}, w ${wd}: float64 reference, every logit written`, () => {
          const x = routerOperand(tokens, hidden, xd, 1, random);
          const w = routerOperand(experts, hidden, wd, 1 / Math.sqrt(hidden), random);
          const into = tensor(new Float32Array(tokens * experts).fill(NaN), [tokens, experts]);  // poison
          routerLogitsSync(x.t, w.t, { into });
          expectLogitsNearReference(into.data as Float32Array, x.values, w.values, tokens, experts, hidden, `x ${xd}, w ${wd}`);
        });
      }
    }

    // A token's logits do not depend on its batch (what batchInvariant asks
    // of the router): the kernels give every logit the same arithmetic
    // whatever the block size, the runs of experts and the thread split.
    // (The AMX tiles, used for bf16 x bf16 where the CPU has them, are not
    // batch-invariant; the layer avoids them under batchInvariant.)
    for (const [xd, wd] of DTYPES) {
      it(`x ${xd}, w ${wd}: each token of batches of 1..20, 64, 67 and 130 has the bits it has alone ${seedNote}`, () => {
        const hidden = 200;
        const experts = 37;
        const w = routerOperand(experts, hidden, wd, 1 / Math.sqrt(hidden), random).t;
        const x = routerOperand(130, hidden, xd, 1, random).t;
        const row = (t: number) => (xd === 'bf16' ? tensor((x.data as Uint16Array).slice(t * hidden, (t + 1) * hidden), [1, hidden], 'bf16') : tensor((x.data as Float32Array).slice(t * hidden, (t + 1) * hidden), [1, hidden]));
        const alone = Array.from({ length: 130 }, (_, t) => routerLogitsSync(row(t), w).data as Float32Array);
        for (const tokens of [...Array.from({ length: 20 }, (_, i) => i + 1), 64, 67, 130]) {
          const batchX = xd === 'bf16' ? tensor((x.data as Uint16Array).slice(0, tokens * hidden), [tokens, hidden], 'bf16') : tensor((x.data as Float32Array).slice(0, tokens * hidden), [tokens, hidden]);
          const batch = routerLogitsSync(batchX, w).data as Float32Array;
          for (let t = 0; t < tokens; t++) {
            expect(Array.from(batch.subarray(t * experts, (t + 1) * experts)), `T=${tokens}, token ${t}`).toEqual(Array.from(alone[t]));
          }
        }
      });
    }
  });
}
