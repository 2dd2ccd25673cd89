import { describe, expect, it } from 'vitest';
import {
  bf16FromFloat32, combine, combineSync, dispatchLayoutSync, empty, getNumThreads, routeSync, setNumThreads, tensor,
} from '../lib/index';
import type { DispatchLayout, Tensor } from '../lib/index';
import { bf16BitsToNumber, referenceCombine } from './helpers/moe-reference';
import { calcDiff } from './helpers/reference';
import { randomActivations, randomFloats, rng, seedNote } from './helpers/random';
import { expectMoeError } from './helpers/errors';

const random = rng();


interface Case {
  layout: DispatchLayout;
  weights: Tensor<'f32'>;
  y: Float32Array; // rows of the layout, [R, H] (or [E, Mmax, H] flattened)
  ids: Int32Array;
}

/** A routing (with ~10% of slots dropped to -1), its layout and random expert outputs y in the layout's rows. */
function makeCase(T: number, k: number, E: number, H: number, options: Parameters<typeof dispatchLayoutSync>[2]): Case {
  const routing = routeSync(tensor(randomFloats(T * E, random, 2), [T, E]), { topK: k, renormalize: true, scale: 1.7 });
  const ids = routing.ids.data;
  for (let i = 0; i < ids.length; i++) if (random() < 0.1) ids[i] = -1;
  const layout = dispatchLayoutSync(routing.ids, E, options);
  const rows = layout.kind === 'masked' ? E * layout.maxRowsPerExpert : layout.numRows;
  const y = randomActivations(rows, H, random);
  // Padding rows hold garbage: combine must never read them.
  for (let r = 0; r < rows; r++) if (layout.rowToken.data[r] < 0) y.fill(NaN, r * H, (r + 1) * H);
  return { layout, weights: routing.weights, y, ids };
}

const yShape = (c: Case, H: number) => (c.layout.kind === 'masked' ? [c.layout.numExperts, c.layout.maxRowsPerExpert, H] : [c.layout.numRows, H]);

/** f32 summation of n terms: |error| <= (n + 1) * 2^-24 * sum |terms| (with margin). */
function expectWithinF32Bound(got: Float32Array, want: Float64Array, magnitude: Float64Array, terms: number, label: string) {
  for (let i = 0; i < want.length; i++) {
    const bound = 2 * (terms + 1) * 2 ** -24 * magnitude[i] + 1e-30;
    if (!(Math.abs(got[i] - want[i]) <= bound)) expect.fail(`${label}: element ${i}: got ${got[i]}, want ${want[i]} (bound ${bound}) ${seedNote}`);
  }
}

const SHAPES: Array<[number, number, number, number]> = [
  // T, k, E, H
  [1, 8, 256, 512],
  [64, 8, 64, 144],
  [37, 2, 8, 300],
  [16, 6, 32, 4100], // more than one 2048-column tile per token
  [300, 8, 64, 1800], // tasks of several tokens, the next ones' rows asked for ahead
];

describe('combine vs the float64 reference', () => {
  for (const [T, k, E, H] of SHAPES) {
    it(`T=${T} k=${k} E=${E} H=${H}: f32 y and out, with and without shared`, async () => {
      const c = makeCase(T, k, E, H, { align: 16 });
      const y = tensor(c.y, yShape(c, H));
      const want = referenceCombine(c.y, H, c.layout.slotRow.data, c.weights.data, T, k);

      const into = empty([T, H], 'f32');
      into.data.fill(NaN);
      const got = combineSync(y, c.layout, c.weights, { out: 'f32', into });
      expect(got).toBe(into);
      expect(got.shape).toEqual([T, H]);
      const d = got.data as Float32Array;
      expect(calcDiff(d, want.out), seedNote).toBeLessThan(1e-12);
      expectWithinF32Bound(d, want.out, want.magnitude, k, 'f32');

      const shared = randomActivations(T, H, random);
      const wantShared = referenceCombine(c.y, H, c.layout.slotRow.data, c.weights.data, T, k, shared);
      const gotShared = (await combine(y, c.layout, c.weights, { out: 'f32', shared: tensor(shared, [T, H]) })).data as Float32Array;
      expectWithinF32Bound(gotShared, wantShared.out, wantShared.magnitude, k + 1, 'f32 + shared');

      // Tokens whose slots are all -1 get exactly zero (or exactly the shared term).
      for (let t = 0; t < T; t++) {
        if (Array.from(c.ids.subarray(t * k, (t + 1) * k)).every((e) => e < 0)) {
          expect(d.subarray(t * H, (t + 1) * H).every((v) => v === 0)).toBe(true);
          expect(Array.from(gotShared.subarray(t * H, (t + 1) * H))).toEqual(Array.from(shared.subarray(t * H, (t + 1) * H)));
        }
      }
    });

    it(`T=${T} k=${k} E=${E} H=${H}: bf16 y, bf16 shared, bf16 out (default)`, () => {
      const c = makeCase(T, k, E, H, { align: 128 });
      const yb = bf16FromFloat32(c.y, yShape(c, H));
      const sharedB = bf16FromFloat32(randomActivations(T, H, random), [T, H]);
      const yValues = yb.toFloat32Array();
      const want = referenceCombine(yValues, H, c.layout.slotRow.data, c.weights.data, T, k, sharedB.toFloat32Array());
      const got = combineSync(yb, c.layout, c.weights, { shared: sharedB });
      expect(got.dtype).toBe('bf16');
      const bits = got.data as Uint16Array;
      for (let i = 0; i < want.out.length; i++) {
        const value = bf16BitsToNumber(bits[i]);
        const bound = 2 ** -8 * Math.abs(want.out[i]) + 2 * (k + 2) * 2 ** -24 * want.magnitude[i] * (1 + 2 ** -8) + 1e-30;
        if (!(Math.abs(value - want.out[i]) <= bound)) expect.fail(`bf16 element ${i}: got ${value}, want ${want.out[i]} ${seedNote}`);
      }
      // bf16 out is the f32 result rounded to nearest even.
      const f32 = combineSync(yb, c.layout, c.weights, { shared: sharedB, out: 'f32' }).data as Float32Array;
      const f32Bits = new Uint32Array(Float32Array.from(f32).buffer);
      for (let i = 0; i < bits.length; i++) {
        const down = f32Bits[i] >>> 16;
        const rest = f32Bits[i] & 0xffff;
        const rounded = rest > 0x8000 || (rest === 0x8000 && (down & 1) === 1) ? down + 1 : down;
        if (bits[i] !== rounded) expect.fail(`bf16 element ${i} is not the rounded f32 result ${seedNote}`);
      }
    });
  }

  // The all-bf16 case has a kernel of its own (one row at a time); its bits
  // must be those of the f32 result rounded to nearest even, NaN and
  // infinities included, with and without the shared term.
  for (const [T, k, E, H] of [[300, 8, 64, 1000], [5, 3, 8, 40], [9, 16, 32, 2100]] as const) {
    it(`T=${T} k=${k} E=${E} H=${H}: bf16 out is the f32 result rounded, with and without shared, NaN and infinities`, () => {
      const c = makeCase(T, k, E, H, { align: 8 });
      for (let t = 0; t < Math.min(T, 3); t++) {
        const row = c.layout.slotRow.data[t * k];
        if (row >= 0) c.y.fill([NaN, Infinity, -Infinity][t], row * H + 3, row * H + 5);
      }
      const yb = bf16FromFloat32(c.y, yShape(c, H));
      for (const shared of [undefined, bf16FromFloat32(randomActivations(T, H, random), [T, H])]) {
        const into = empty([T, H], 'bf16');
        (into.data as Uint16Array).fill(0xffff);
        const bits = combineSync(yb, c.layout, c.weights, { shared, into }).data as Uint16Array;
        const f32 = combineSync(yb, c.layout, c.weights, { shared, out: 'f32' }).data as Float32Array;
        const want = bf16FromFloat32(f32, [T, H]).data as Uint16Array;
        for (let i = 0; i < bits.length; i++) {
          if (bits[i] !== want[i]) expect.fail(`${shared ? 'with' : 'without'} shared, element ${i}: bits ${bits[i]}, want ${want[i]} ${seedNote}`);
        }
      }
    });
  }

  it('masked layout: y [E, Mmax, H]', () => {
    const [T, k, E, H] = [10, 4, 16, 96];
    const c = makeCase(T, k, E, H, { layout: 'masked' });
    const want = referenceCombine(c.y, H, c.layout.slotRow.data, c.weights.data, T, k);
    const got = combineSync(tensor(c.y, [E, T, H]), c.layout, c.weights, { out: 'f32' }).data as Float32Array;
    expectWithinF32Bound(got, want.out, want.magnitude, k, 'masked');
  });

  it('a hand-checked case: slot order, -1 slots ignored, repeated rows', () => {
    // T=2, k=3, E=2, H=2; token 0 -> experts [1, -1, 0], token 1 -> [0, 0, -1].
    const layout = dispatchLayoutSync(tensor(Int32Array.from([1, -1, 0, 0, 0, -1]), [2, 3]), 2, { align: 1 });
    // rows: 0 = (t0, e0), 1 = (t1, e0), 2 = (t1, e0), 3 = (t0, e1)
    expect(Array.from(layout.slotRow.data)).toEqual([3, -1, 0, 1, 2, -1]);
    const y = tensor(Float32Array.from([1, 2, 10, 20, 100, 200, 1000, 2000]), [4, 2]);
    const w = tensor(Float32Array.from([0.5, 99, 0.25, 1, 2, 7]), [2, 3]); // weights of -1 slots must be ignored
    const got = combineSync(y, layout, w, { out: 'f32' });
    expect(Array.from(got.data as Float32Array)).toEqual([0.5 * 1000 + 0.25 * 1, 0.5 * 2000 + 0.25 * 2, 10 + 200, 20 + 400]);
  });

  it('T = 0 gives an empty [0, H] result; no rows at all gives zeros', async () => {
    const layout = dispatchLayoutSync(empty([0, 2], 'i32'), 4, { align: 1 });
    const got = await combine(empty([0, 8], 'f32'), layout, empty([0, 2], 'f32'));
    expect(got.shape).toEqual([0, 8]);
    // T > 0 but every slot -1: no rows; the result is zero, or exactly the shared term.
    const dropped = dispatchLayoutSync(tensor(new Int32Array(6).fill(-1), [3, 2]), 4, { align: 16 });
    const w = tensor(Float32Array.from([1, 2, 3, 4, 5, 6]), [3, 2]);
    const zero = combineSync(empty([0, 8], 'f32'), dropped, w, { out: 'f32', into: tensor(new Float32Array(24).fill(NaN), [3, 8]) });
    expect(Array.from(zero.data as Float32Array)).toEqual(new Array(24).fill(0));
    const shared = randomFloats(24, random);
    const withShared = combineSync(empty([0, 8], 'bf16'), dropped, w, { out: 'f32', shared: tensor(shared, [3, 8]) });
    expect(Array.from(withShared.data as Float32Array)).toEqual(Array.from(shared));
  });
});

describe('combine is bitwise deterministic', () => {
  it('identical across 5 runs, across 1 vs 2 threads, and async vs sync', async () => {
    const [T, k, E, H] = [48, 8, 64, 1000];
    const c = makeCase(T, k, E, H, { align: 16 });
    const y = tensor(c.y, yShape(c, H));
    const shared = tensor(randomActivations(T, H, random), [T, H]);
    const first = Buffer.from((combineSync(y, c.layout, c.weights, { out: 'f32', shared }).data as Float32Array).buffer);
    for (let i = 0; i < 4; i++) {
      const again = combineSync(y, c.layout, c.weights, { out: 'f32', shared }).data as Float32Array;
      expect(Buffer.compare(Buffer.from(again.buffer), first), `run ${i + 2}`).toBe(0);
    }
    const async = (await combine(y, c.layout, c.weights, { out: 'f32', shared })).data as Float32Array;
    expect(Buffer.compare(Buffer.from(async.buffer), first), 'async').toBe(0);
    const threads = getNumThreads();
    try {
      for (const n of [1, 2]) {
        setNumThreads(n);
        const got = combineSync(y, c.layout, c.weights, { out: 'f32', shared }).data as Float32Array;
        expect(Buffer.compare(Buffer.from(got.buffer), first), `${n} threads`).toBe(0);
      }
      setNumThreads(1);
      const one = Buffer.from((combineSync(y, c.layout, c.weights).data as Uint16Array).buffer);
      setNumThreads(2);
      const two = Buffer.from((combineSync(y, c.layout, c.weights).data as Uint16Array).buffer);
      expect(Buffer.compare(one, two), 'bf16 out, 1 vs 2 threads').toBe(0);
    } finally {
      setNumThreads(threads);
    }
  });
});

describe('combine: bad input', () => {
  const layout = () => dispatchLayoutSync(tensor(Int32Array.from([0, 1, 1, 2]), [2, 2]), 3, { align: 1 });
  const y = () => tensor(randomFloats(4 * 16, random), [4, 16]);
  const w = () => tensor(Float32Array.from([0.5, 0.5, 0.25, 0.75]), [2, 2]);

  it('NaN or infinite weight is ERR_MOE_NONFINITE', async () => {
    const nan = w();
    nan.data[3] = NaN;
    expectMoeError(() => combineSync(y(), layout(), nan), 'ERR_MOE_NONFINITE');
    const inf = w();
    inf.data[0] = -Infinity;
    await expect(combine(y(), layout(), inf)).rejects.toMatchObject({ code: 'ERR_MOE_NONFINITE' });
  });

  it('wrong shapes are ERR_MOE_SHAPE: y rows, weights, shared, into', () => {
    expectMoeError(() => combineSync(tensor(randomFloats(5 * 16, random), [5, 16]), layout(), w()), 'ERR_MOE_SHAPE');
    expectMoeError(() => combineSync(tensor(randomFloats(4 * 16, random), [2, 2, 16]), layout(), w()), 'ERR_MOE_SHAPE');
    expectMoeError(() => combineSync(y(), layout(), tensor(new Float32Array(6), [2, 3])), 'ERR_MOE_SHAPE');
    expectMoeError(() => combineSync(y(), layout(), tensor(new Float32Array(4), [4])), 'ERR_MOE_SHAPE');
    expectMoeError(() => combineSync(y(), layout(), w(), { shared: tensor(new Float32Array(3 * 16), [3, 16]) }), 'ERR_MOE_SHAPE');
    expectMoeError(() => combineSync(y(), layout(), w(), { shared: tensor(new Float32Array(2 * 8), [2, 8]) }), 'ERR_MOE_SHAPE');
    expectMoeError(() => combineSync(y(), layout(), w(), { out: 'f32', into: empty([2, 15], 'f32') }), 'ERR_MOE_SHAPE');
  });

  it('wrong dtypes, options and layout', () => {
    expectMoeError(() => combineSync(tensor(new Int32Array(64), [4, 16]), layout(), w()), 'ERR_MOE_DTYPE');
    expectMoeError(() => combineSync(y(), layout(), bf16FromFloat32(new Float32Array(4), [2, 2])), 'ERR_MOE_DTYPE');
    expectMoeError(() => combineSync(y(), layout(), w(), { into: empty([2, 16], 'f32') }), 'ERR_MOE_DTYPE'); // default out is bf16
    expectMoeError(() => combineSync(y(), layout(), w(), { out: 'fp8' as never }), 'ERR_MOE_RANGE');
    expectMoeError(() => combineSync(y(), layout(), w(), { shard: y() } as never), 'ERR_MOE_ARGUMENT', /unknown option/);
    expectMoeError(() => combineSync(y(), {} as never, w()), 'ERR_MOE_ARGUMENT');
  });
});
