import { describe, expect, it } from 'vitest';
import { bf16FromFloat32, cpuInfo, routerLogits, routerLogitsSync, tensor, Tensor } from '../lib/index';
import { randomActivations, randomFloats, rng, seedNote } from './helpers/random';
import { expectMoeError } from './helpers/errors';

const random = rng();

/** x [T, H] and w [E, H] in the dtype asked for, with their exact values as float64. */
function operand(rows: number, cols: number, dtype: 'f32' | 'bf16', scale: number): { t: Tensor; values: Float64Array } {
  const raw = rows === 0 ? new Float32Array(0) : randomActivations(rows, cols, random).map((v) => v * scale);
  const t = dtype === 'bf16' ? bf16FromFloat32(raw, [rows, cols]) : tensor(raw, [rows, cols]);
  return { t, values: Float64Array.from(t.toFloat32Array()) };
}

/** Every logit within f32 accumulation error of the float64 dot product. */
function expectLogits(got: Float32Array, x: Float64Array, w: Float64Array, tokens: number, experts: number, hidden: number, label: string): void {
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

describe('routerLogits', () => {
  const amx = cpuInfo().gemmIsa === 'amx';
  // Ragged token counts around the AMX path's 16- and 32-token tiles, expert
  // counts that are and are not whole 16-expert tiles, H with and without whole
  // 32-wide K steps (the vector path takes the rest).
  const shapes: [number, number, number][] = [
    [1, 256, 896],
    [5, 16, 128],
    [16, 48, 64],
    [17, 32, 256],
    [33, 64, 96],
    [70, 256, 128],
    [9, 8, 100],
    [40, 24, 64],
  ];
  for (const [tokens, experts, hidden] of shapes) {
    for (const [xd, wd] of [['bf16', 'bf16'], ['f32', 'bf16'], ['bf16', 'f32']] as const) {
      it(`T=${tokens} E=${experts} H=${hidden}, x ${xd}, w ${wd}${amx && xd === 'bf16' && wd === 'bf16' ? ' (AMX where the shape allows)' : ''}`, async () => {
        const x = operand(tokens, hidden, xd, 1);
        const w = operand(experts, hidden, wd, 1 / Math.sqrt(hidden));
        const into = tensor(new Float32Array(tokens * experts).fill(NaN), [tokens, experts]);
        await routerLogits(x.t, w.t, { into });
        expectLogits(into.data as Float32Array, x.values, w.values, tokens, experts, hidden, 'async');
        const sync = routerLogitsSync(x.t, w.t);
        expect(Array.from(sync.data as Float32Array)).toEqual(Array.from(into.data as Float32Array));
      });
    }
  }

  it('spreads a large T over threads and tiles (T=300, E=256, H=512)', () => {
    const x = operand(300, 512, 'bf16', 1);
    const w = operand(256, 512, 'bf16', 0.05);
    expectLogits(routerLogitsSync(x.t, w.t).data as Float32Array, x.values, w.values, 300, 256, 512, 'T=300');
  });

  it('returns an empty [0, E] for no tokens', () => {
    const w = operand(16, 64, 'bf16', 1);
    expect(routerLogitsSync(tensor(new Float32Array(0), [0, 64]), w.t).shape).toEqual([0, 16]);
  });

  it('rejects bad input', () => {
    const x = operand(4, 64, 'bf16', 1).t;
    const w = operand(16, 64, 'bf16', 1).t;
    expectMoeError(() => routerLogitsSync(x, operand(16, 32, 'bf16', 1).t), 'ERR_MOE_SHAPE', /w: expected \[E, 64\]/);
    expectMoeError(() => routerLogitsSync(tensor(new Float32Array(64), [64]), w), 'ERR_MOE_SHAPE', /x: expected \[T, H\]/);
    expectMoeError(() => routerLogitsSync(tensor(new Int32Array(256), [4, 64], 'i32'), w), 'ERR_MOE_DTYPE', /x/);
    const nan = new Float32Array(randomFloats(256, random));
    nan[77] = NaN;
    expectMoeError(() => routerLogitsSync(bf16FromFloat32(nan, [4, 64]), w), 'ERR_MOE_NONFINITE', /element 77 is NaN/);
    const inf = new Float32Array(randomFloats(16 * 64, random));
    inf[5] = -Infinity;
    expectMoeError(() => routerLogitsSync(x, tensor(inf, [16, 64])), 'ERR_MOE_NONFINITE', /w: element 5/);
    expectMoeError(() => routerLogitsSync(x, w, { into: tensor(new Float32Array(64), [64]) }), 'ERR_MOE_SHAPE', /into/);
  });
});
