import { describe, expect, it } from 'vitest';
import { QuantizedTensor, bf16FromFloat32, dispatch, dispatchLayoutSync, dispatchSync, empty, routeSync, tensor } from '../lib/index';
import type { DispatchLayout, Tensor } from '../lib/index';
import { referenceDispatch } from './helpers/moe-reference';
import { referenceQuantize } from './helpers/reference';
import { randomActivations, randomFloats, rng, seedNote } from './helpers/random';
import { expectMoeError } from './helpers/errors';

const random = rng();


/** A routing-derived layout: softmax top-k of random logits, with some slots dropped to -1. */
function layoutFor(tokens: number, topK: number, experts: number, options: Parameters<typeof dispatchLayoutSync>[2]): DispatchLayout {
  const { ids } = routeSync(tensor(randomFloats(tokens * experts, random, 2), [tokens, experts]), { topK });
  for (let i = 0; i < ids.data.length; i++) if (random() < 0.1) ids.data[i] = -1;
  return dispatchLayoutSync(ids, experts, options);
}

function poisonedPlain(shape: number[], dtype: 'f32' | 'bf16'): Tensor {
  const t = empty(shape, dtype);
  if (dtype === 'f32') (t.data as Float32Array).fill(NaN);
  else (t.data as Uint16Array).fill(0x7fc1); // a bf16 NaN
  return t;
}

function poisonedQuantized(shape: number[]): QuantizedTensor {
  const data = empty(shape, 'fp8_e4m3');
  data.data.fill(0x7f);
  const scales = empty([...shape.slice(0, -1), Math.ceil(shape[shape.length - 1] / 128)], 'f32');
  scales.data.fill(NaN);
  return { data, scales };
}

const SHAPES: Array<[number, number, number, number]> = [
  // T, k, E, H
  [1, 8, 256, 512],
  [37, 2, 8, 272],
  [64, 8, 64, 144],
  [16, 6, 32, 48],
];

describe('dispatch without quantization is an exact gather', () => {
  for (const [T, k, E, H] of SHAPES) {
    for (const align of [1, 128]) {
      it(`T=${T} k=${k} E=${E} H=${H} align ${align}, f32 and bf16 x`, async () => {
        const layout = layoutFor(T, k, E, { align });
        const x = randomActivations(T, H, random);
        const want = referenceDispatch(x, H, layout.rowToken.data);

        const into = poisonedPlain([layout.numRows, H], 'f32');
        const got = dispatchSync(tensor(x, [T, H]), layout, { into });
        expect(got).toBe(into);
        expect(got.dtype).toBe('f32');
        expect(got.shape).toEqual([layout.numRows, H]);
        expect(Buffer.compare(Buffer.from(got.data.buffer), Buffer.from(want.buffer)), `f32 gather ${seedNote}`).toBe(0);

        const xb = bf16FromFloat32(x, [T, H]);
        const intoB = poisonedPlain([layout.numRows, H], 'bf16');
        const gotB = await dispatch(xb, layout, { into: intoB });
        expect(gotB).toBe(intoB);
        expect(gotB.dtype).toBe('bf16');
        // Row r holds exactly the bits of x[rowToken[r]]; padding rows are +0 bits.
        const wantB = new Uint16Array(layout.numRows * H);
        for (let r = 0; r < layout.numRows; r++) {
          const t = layout.rowToken.data[r];
          if (t >= 0) wantB.set(xb.data.subarray(t * H, (t + 1) * H), r * H);
        }
        expect(Buffer.compare(Buffer.from(gotB.data.buffer), Buffer.from(wantB.buffer)), `bf16 gather ${seedNote}`).toBe(0);
      });
    }
  }

  it('masked layout: output [E, Mmax, H], rows past each expert\'s count zero', () => {
    const [T, k, E, H] = [12, 4, 16, 160];
    const layout = layoutFor(T, k, E, { layout: 'masked' });
    expect(layout.maxRowsPerExpert).toBe(T);
    const x = randomActivations(T, H, random);
    const into = poisonedPlain([E, T, H], 'f32');
    const got = dispatchSync(tensor(x, [T, H]), layout, { into });
    expect(got.shape).toEqual([E, T, H]);
    const want = referenceDispatch(x, H, layout.rowToken.data);
    expect(Buffer.compare(Buffer.from(got.data.buffer), Buffer.from(want.buffer)), seedNote).toBe(0);
    for (let e = 0; e < E; e++) {
      const count = layout.tokensPerExpert.data[e];
      for (let m = count; m < T; m++) {
        expect(got.data.subarray((e * T + m) * H, (e * T + m + 1) * H).every((v) => Object.is(v, 0))).toBe(true);
      }
    }
  });
});

describe("dispatch with { quantize: 'fp8' } is bit-exact with the reference quantizer", () => {
  for (const [T, k, E, H] of SHAPES) {
    for (const scaleFormat of ['f32', 'ue8m0'] as const) {
      it(`T=${T} k=${k} E=${E} H=${H}, ${scaleFormat} scales, f32 and bf16 x`, async () => {
        const layout = layoutFor(T, k, E, { align: 16 });
        const x = randomActivations(T, H, random);
        const rows = referenceDispatch(x, H, layout.rowToken.data);
        const want = referenceQuantize(rows, layout.numRows, H, 1, scaleFormat === 'ue8m0');

        const into = poisonedQuantized([layout.numRows, H]);
        const got = dispatchSync(tensor(x, [T, H]), layout, { quantize: 'fp8', scaleFormat, into });
        expect(got).toBe(into);
        expect(got.data.dtype).toBe('fp8_e4m3');
        expect(got.scales.shape).toEqual([layout.numRows, Math.ceil(H / 128)]);
        expect(Buffer.compare(Buffer.from(got.data.data), Buffer.from(want.q)), `q ${seedNote}`).toBe(0);
        expect(Array.from(got.scales.data), `scales ${seedNote}`).toEqual(Array.from(want.scales));

        const xb = bf16FromFloat32(x, [T, H]);
        const wantB = referenceQuantize(referenceDispatch(xb.toFloat32Array(), H, layout.rowToken.data), layout.numRows, H, 1, scaleFormat === 'ue8m0');
        const gotB = await dispatch(xb, layout, { quantize: 'fp8', scaleFormat });
        expect(Buffer.compare(Buffer.from(gotB.data.data), Buffer.from(wantB.q)), `bf16 q ${seedNote}`).toBe(0);
        expect(Array.from(gotB.scales.data), `bf16 scales ${seedNote}`).toEqual(Array.from(wantB.scales));
      });
    }
  }

  it('masked layout: data [E, Mmax, H], scales [E, Mmax, ceil(H/128)]', () => {
    const [T, k, E, H] = [9, 4, 8, 400];
    const layout = layoutFor(T, k, E, { layout: 'masked', maxTokensPerExpert: 11 });
    const x = randomActivations(T, H, random);
    const got = dispatchSync(tensor(x, [T, H]), layout, { quantize: 'fp8', into: poisonedQuantized([E, 11, H]) });
    expect(got.data.shape).toEqual([E, 11, H]);
    expect(got.scales.shape).toEqual([E, 11, 4]);
    const want = referenceQuantize(referenceDispatch(x, H, layout.rowToken.data), E * 11, H, 1, false);
    expect(Buffer.compare(Buffer.from(got.data.data), Buffer.from(want.q)), seedNote).toBe(0);
    expect(Array.from(got.scales.data)).toEqual(Array.from(want.scales));
  });
});

describe('dispatch with no rows', () => {
  it('T = 0, all ids -1, and masked Mmax = 0 give empty outputs, plain and quantized', async () => {
    const H = 64;
    const cases: Array<[string, DispatchLayout, number]> = [
      ['T = 0', dispatchLayoutSync(empty([0, 4], 'i32'), 8, { align: 16 }), 0],
      ['every slot -1', dispatchLayoutSync(tensor(new Int32Array(6).fill(-1), [3, 2]), 8, { align: 16 }), 3],
      ['masked, Mmax = 0', dispatchLayoutSync(tensor(new Int32Array(2).fill(-1), [1, 2]), 8, { layout: 'masked', maxTokensPerExpert: 0 }), 1],
    ];
    for (const [name, layout, T] of cases) {
      const x = tensor(randomFloats(T * H, random), [T, H]);
      const shape = layout.kind === 'masked' ? [8, 0, H] : [0, H];
      expect(dispatchSync(x, layout).shape, `${name}, plain`).toEqual(shape);
      // SPEC: dispatch "optionally quantized 1x128 to fp8": an empty gather quantizes to empty tensors.
      const q = dispatchSync(x, layout, { quantize: 'fp8' });
      expect(q.data.shape, `${name}, fp8 data`).toEqual(shape);
      expect(q.scales.shape, `${name}, fp8 scales`).toEqual([...shape.slice(0, -1), 1]);
      const qa = await dispatch(x, layout, { quantize: 'fp8', scaleFormat: 'ue8m0' });
      expect(qa.data.shape, `${name}, async fp8`).toEqual(shape);
    }
  });
});

describe('dispatch: bad input', () => {
  const layout = () => dispatchLayoutSync(tensor(Int32Array.from([0, 1, 1, 2, -1, 0]), [3, 2]), 4, { align: 4 });

  it('NaN or infinity in a dispatched x row with quantization is ERR_MOE_NONFINITE', async () => {
    const x = randomFloats(3 * 32, random);
    x[2 * 32 + 5] = NaN;
    expectMoeError(() => dispatchSync(tensor(x, [3, 32]), layout(), { quantize: 'fp8' }), 'ERR_MOE_NONFINITE', /x\[2\]/);
    const inf = randomFloats(3 * 32, random);
    inf[31] = -Infinity;
    await expect(dispatch(tensor(inf, [3, 32]), layout(), { quantize: 'fp8' })).rejects.toMatchObject({ code: 'ERR_MOE_NONFINITE' });
  });

  it('x with the wrong T, rank or dtype; wrong into; scaleFormat without quantize; unknown option', () => {
    const l = layout();
    expectMoeError(() => dispatchSync(tensor(randomFloats(4 * 32, random), [4, 32]), l), 'ERR_MOE_SHAPE', /4 tokens/);
    expectMoeError(() => dispatchSync(tensor(randomFloats(2 * 32, random), [2, 32]), l, { quantize: 'fp8' }), 'ERR_MOE_SHAPE');
    expectMoeError(() => dispatchSync(tensor(randomFloats(96, random), [96]), l), 'ERR_MOE_SHAPE');
    expectMoeError(() => dispatchSync(tensor(new Int32Array(96), [3, 32]), l), 'ERR_MOE_DTYPE');
    const x = tensor(randomFloats(96, random), [3, 32]);
    expectMoeError(() => dispatchSync(x, l, { into: empty([l.numRows, 32], 'bf16') }), 'ERR_MOE_DTYPE');
    expectMoeError(() => dispatchSync(x, l, { into: empty([l.numRows + 1, 32], 'f32') }), 'ERR_MOE_SHAPE');
    expectMoeError(() => dispatchSync(x, l, { scaleFormat: 'ue8m0' }), 'ERR_MOE_ARGUMENT');
    expectMoeError(() => dispatchSync(x, l, { quantize: 'int8' as never }), 'ERR_MOE_RANGE');
    expectMoeError(() => dispatchSync(x, l, { quant: 'fp8' } as never), 'ERR_MOE_ARGUMENT', /unknown option/);
    expectMoeError(() => dispatchSync(x, { kind: 'ragged' } as never), 'ERR_MOE_ARGUMENT');
    expectMoeError(() => dispatchSync(tensor(randomFloats(3 * 40, random), [3, 40]), l, { quantize: 'fp8' }), 'ERR_MOE_SHAPE', /16/);
  });
});
