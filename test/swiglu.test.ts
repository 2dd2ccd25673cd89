import { describe, expect, it } from 'vitest';
import { QuantizedTensor, bf16FromFloat32, empty, swiglu, swigluSync, tensor } from '../lib/index';
import { bf16BitsToNumber, referenceSwiglu } from './helpers/moe-reference';
import { referenceQuantize } from './helpers/reference';
import { randomFloats, rng, seedNote } from './helpers/random';
import { expectMoeError } from './helpers/errors';

const random = rng();


/** h [rows, 2I]: gates over a wide range (silu's both tails), ups around +-1, a few zeros. */
function randomH(rows: number, inter: number): Float32Array {
  const h = randomFloats(rows * 2 * inter, random, 3);
  for (let r = 0; r < rows; r++) {
    h[r * 2 * inter] = -40 + random(); // deep negative tail: silu ~ -1e-16
    if (inter > 1) h[r * 2 * inter + 1] = 30 + random(); // silu(g) ~ g
  }
  for (let i = 5; i < h.length; i += 101) h[i] = 0;
  return h;
}

/** f32 results within a few f32 ulps of the float64 reference. */
function expectCloseF32(got: Float32Array, want: Float64Array, label: string): void {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    const tolerance = 2e-6 * Math.abs(want[i]) + 1e-37;
    if (!(Math.abs(got[i] - want[i]) <= tolerance)) {
      expect.fail(`${label}: element ${i}: got ${got[i]}, want ${want[i]} ${seedNote}`);
    }
  }
}

/** bf16 results: the f32 result rounded to bf16 — within half a bf16 ulp (2^-8 relative) plus the f32 error. */
function expectCloseBf16(got: Uint16Array, want: Float64Array, label: string): void {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    const value = bf16BitsToNumber(got[i]);
    const tolerance = (2 ** -8 + 2e-6) * Math.abs(want[i]) + 1e-37;
    if (!(Math.abs(value - want[i]) <= tolerance)) {
      expect.fail(`${label}: element ${i}: got ${value}, want ${want[i]} ${seedNote}`);
    }
  }
}

const SHAPES: Array<[number, number]> = [
  // rows, I
  [1, 16],
  [7, 48],
  [64, 256],
  [33, 200],
  [5, 2048],
  [3, 1],
];

describe('swiglu: silu(gate) * up vs the float64 reference', () => {
  for (const [rows, inter] of SHAPES) {
    it(`[${rows}, 2*${inter}]: f32 in/out, bf16 in/out, f32 in -> bf16 out, bf16 in -> f32 out`, async () => {
      const h = randomH(rows, inter);
      const want = referenceSwiglu(h, rows, inter);

      const into = empty([rows, inter], 'f32');
      into.data.fill(NaN);
      const got = swigluSync(tensor(h, [rows, 2 * inter]), { into });
      expect(got).toBe(into);
      expect(got.dtype).toBe('f32');
      expect(got.shape).toEqual([rows, inter]);
      expectCloseF32(got.data as Float32Array, want, 'f32');

      const toBf16 = await swiglu(tensor(h, [rows, 2 * inter]), { out: 'bf16' });
      expect(toBf16.dtype).toBe('bf16');
      expectCloseBf16(toBf16.data as Uint16Array, want, 'f32 -> bf16');

      const hb = bf16FromFloat32(h, [rows, 2 * inter]);
      const wantB = referenceSwiglu(hb.toFloat32Array(), rows, inter);
      const gotB = swigluSync(hb);
      expect(gotB.dtype).toBe('bf16'); // defaults to h's dtype
      expectCloseBf16(gotB.data as Uint16Array, wantB, 'bf16');
      const gotBF32 = swigluSync(hb, { out: 'f32' });
      expectCloseF32(gotBF32.data as Float32Array, wantB, 'bf16 -> f32');
      // bf16 out is the f32 result rounded once (nearest even): compare with the f32 path's values.
      const f32Bits = new Uint32Array(new Float32Array(gotBF32.data as Float32Array).buffer);
      const bf16 = gotB.data as Uint16Array;
      for (let i = 0; i < bf16.length; i++) {
        const bits = f32Bits[i];
        const down = bits >>> 16;
        const rest = bits & 0xffff;
        const rounded = rest > 0x8000 || (rest === 0x8000 && (down & 1) === 1) ? down + 1 : down;
        if (bf16[i] !== rounded) expect.fail(`bf16 element ${i}: got 0x${bf16[i].toString(16)}, want 0x${rounded.toString(16)} ${seedNote}`);
      }
    });
  }

  it('3-D input [G, M, 2I] gives [G, M, I], the same as the 2-D rows', () => {
    const [G, M, I] = [4, 5, 144];
    const h = randomH(G * M, I);
    const want = referenceSwiglu(h, G * M, I);
    const got = swigluSync(tensor(h, [G, M, 2 * I]), { out: 'f32' });
    expect(got.shape).toEqual([G, M, I]);
    expectCloseF32(got.data as Float32Array, want, '3-D');
    const q = swigluSync(tensor(h, [G, M, 2 * I]), { quantize: 'fp8' });
    expect(q.data.shape).toEqual([G, M, I]);
    expect(q.scales.shape).toEqual([G, M, 2]);
    const ref = referenceQuantize(got.data as Float32Array, G * M, I, 1, false);
    expect(Buffer.compare(Buffer.from(q.data.data), Buffer.from(ref.q)), seedNote).toBe(0);
    expect(Array.from(q.scales.data)).toEqual(Array.from(ref.scales));
  });

  it('async equals sync bit for bit', async () => {
    const h = tensor(randomH(64, 256), [64, 512]);
    const a = (await swiglu(h)).data as Float32Array;
    const s = swigluSync(h).data as Float32Array;
    expect(Buffer.compare(Buffer.from(a.buffer), Buffer.from(s.buffer))).toBe(0);
  });
});

describe("swiglu with { quantize: 'fp8' } is bit-exact with the reference quantizer on its own f32 output", () => {
  for (const [rows, inter] of SHAPES.filter(([, i]) => i % 16 === 0)) {
    for (const scaleFormat of ['f32', 'ue8m0'] as const) {
      it(`[${rows}, 2*${inter}], ${scaleFormat} scales, f32 and bf16 h`, async () => {
        for (const h of [tensor(randomH(rows, inter), [rows, 2 * inter]), bf16FromFloat32(randomH(rows, inter), [rows, 2 * inter])]) {
          const act = swigluSync(h, { out: 'f32' }).data as Float32Array;
          const want = referenceQuantize(act, rows, inter, 1, scaleFormat === 'ue8m0');
          const data = empty([rows, inter], 'fp8_e4m3');
          data.data.fill(0x7f);
          const scales = empty([rows, Math.ceil(inter / 128)], 'f32');
          scales.data.fill(NaN);
          const into: QuantizedTensor = { data, scales };
          const got = h.dtype === 'f32' ? swigluSync(h, { quantize: 'fp8', scaleFormat, into }) : await swiglu(h, { quantize: 'fp8', scaleFormat, into });
          expect(got).toBe(into);
          expect(Buffer.compare(Buffer.from(got.data.data), Buffer.from(want.q)), `${h.dtype} q ${seedNote}`).toBe(0);
          expect(Array.from(got.scales.data), `${h.dtype} scales ${seedNote}`).toEqual(Array.from(want.scales));
        }
      });
    }
  }
});

describe('swiglu with no rows', () => {
  it('[0, 2I] and [G, 0, 2I] give empty outputs, plain and quantized', async () => {
    expect(swigluSync(empty([0, 64], 'f32')).shape).toEqual([0, 32]);
    expect(swigluSync(empty([0, 64], 'bf16'), { out: 'f32' }).shape).toEqual([0, 32]);
    const q = swigluSync(empty([0, 64], 'f32'), { quantize: 'fp8' });
    expect(q.data.shape).toEqual([0, 32]);
    expect(q.scales.shape).toEqual([0, 1]);
    const q3 = await swiglu(empty([4, 0, 256], 'bf16'), { quantize: 'fp8', scaleFormat: 'ue8m0' });
    expect(q3.data.shape).toEqual([4, 0, 128]);
    expect(q3.scales.shape).toEqual([4, 0, 1]);
  });
});

describe('swiglu: bad input', () => {
  it('odd last dimension or 1-D input is ERR_MOE_SHAPE', async () => {
    expectMoeError(() => swigluSync(tensor(randomFloats(3 * 33, random), [3, 33])), 'ERR_MOE_SHAPE', /even/);
    expectMoeError(() => swigluSync(tensor(randomFloats(32, random), [32])), 'ERR_MOE_SHAPE');
    await expect(swiglu(tensor(randomFloats(2 * 7, random), [2, 7]))).rejects.toMatchObject({ code: 'ERR_MOE_SHAPE' });
  });

  it('NaN / infinity in h is ERR_MOE_NONFINITE; wrong dtype, out, into, quantize with I not a multiple of 16', () => {
    const h = randomFloats(4 * 64, random);
    h[2 * 64 + 40] = NaN;
    expectMoeError(() => swigluSync(tensor(h, [4, 64])), 'ERR_MOE_NONFINITE');
    const inf = randomFloats(4 * 64, random);
    inf[7] = Infinity;
    expectMoeError(() => swigluSync(tensor(inf, [4, 64]), { quantize: 'fp8' }), 'ERR_MOE_NONFINITE');
    const ok = tensor(randomFloats(4 * 64, random), [4, 64]);
    expectMoeError(() => swigluSync(tensor(new Int32Array(8), [2, 4])), 'ERR_MOE_DTYPE');
    expectMoeError(() => swigluSync(ok, { out: 'fp16' as never }), 'ERR_MOE_RANGE');
    expectMoeError(() => swigluSync(ok, { quantize: 'fp8', out: 'f32' }), 'ERR_MOE_ARGUMENT');
    expectMoeError(() => swigluSync(ok, { into: empty([4, 64], 'f32') }), 'ERR_MOE_SHAPE');
    expectMoeError(() => swigluSync(ok, { into: empty([4, 32], 'bf16') }), 'ERR_MOE_DTYPE');
    expectMoeError(() => swigluSync(tensor(randomFloats(2 * 40, random), [2, 40]), { quantize: 'fp8' }), 'ERR_MOE_SHAPE', /16/);
    expectMoeError(() => swigluSync(ok, { quantise: 'fp8' } as never), 'ERR_MOE_ARGUMENT', /unknown option/);
  });
});
