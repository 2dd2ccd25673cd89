import { describe, expect, it } from 'vitest';
import { bf16FromFloat32, cpuInfo, routerLogits, routerLogitsSync, tensor } from '../lib/index';
import { randomFloats, rng } from './helpers/random';
import { expectMoeError } from './helpers/errors';
import { expectLogitsNearReference, routerOperand } from './helpers/router-suite';

const random = rng();

/** x [T, H] and w [E, H] in the dtype asked for, with their exact values as float64. */
const operand = (rows: number, cols: number, dtype: 'f32' | 'bf16', scale: number) => routerOperand(rows, cols, dtype, scale, random);
const expectLogits = expectLogitsNearReference;

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
