import { describe, expect, it } from 'vitest';
import {
  MoeError,
  dequantize,
  dequantizeSync,
  empty,
  gemmFp8,
  gemmFp8Sync,
  quantizeActivations,
  quantizeActivationsSync,
  quantizeWeightsSync,
  routeSync,
  setNumThreads,
  swigluSync,
  tensor,
} from '../lib/index';
import { native } from '../lib/native';
import { randomFloats, rng } from './helpers/random';
import { expectMoeError } from './helpers/errors';

const random = rng();


function detachedTensor() {
  const data = randomFloats(32, random);
  const t = tensor(data, [2, 16]);
  structuredClone(data.buffer, { transfer: [data.buffer as ArrayBuffer] });
  return t;
}

const x = () => tensor(randomFloats(4 * 64, random), [4, 64]);
const quantA = () => quantizeActivationsSync(x());
const quantB = () => quantizeWeightsSync(tensor(randomFloats(3 * 64, random), [3, 64]));

describe('quantizeActivations / quantizeWeights reject bad input', () => {
  for (const quantize of [quantizeActivationsSync, quantizeWeightsSync]) {
    it(`${quantize.name || 'quantize'}`, () => {
      expectMoeError(() => quantize(new Float32Array(4) as never), 'ERR_MOE_ARGUMENT', /x: expected a Tensor/);
      expectMoeError(() => quantize(tensor(new Int32Array(32), [2, 16])), 'ERR_MOE_DTYPE', /x: expected dtype f32 or bf16, got i32/);
      expectMoeError(() => quantize(tensor(new Float32Array(32), [32])), 'ERR_MOE_SHAPE', /2-D/);
      expectMoeError(() => quantize(tensor(new Float32Array(40), [2, 20])), 'ERR_MOE_SHAPE', /multiple of 16, got 20/);
      expectMoeError(() => quantize(x(), { scaleFormat: 'e8m0' as never }), 'ERR_MOE_RANGE', /scaleFormat.*'f32' or 'ue8m0'.*'e8m0'/);
      expectMoeError(() => quantize(x(), { scalefmt: 'f32' } as never), 'ERR_MOE_ARGUMENT', /unknown option 'scalefmt'/);
      expectMoeError(() => quantize(x(), { into: { data: empty([4, 32], 'fp8_e4m3'), scales: empty([4, 1], 'f32') } }), 'ERR_MOE_SHAPE', /into.data/);
      expectMoeError(() => quantize(detachedTensor()), 'ERR_MOE_DETACHED', /detached/);
      const withNaN = x();
      withNaN.data[77] = NaN;
      expectMoeError(() => quantize(withNaN), 'ERR_MOE_NONFINITE', /NaN or infinity/);
      const withInf = x();
      withInf.data[3] = -Infinity;
      expectMoeError(() => quantize(withInf), 'ERR_MOE_NONFINITE');
    });
  }

  it('the async form rejects instead of throwing', async () => {
    const promise = quantizeActivations(tensor(new Float32Array(40), [2, 20]));
    await expect(promise).rejects.toBeInstanceOf(MoeError);
    const withNaN = x();
    withNaN.data[0] = NaN;
    await expect(quantizeActivations(withNaN)).rejects.toMatchObject({ code: 'ERR_MOE_NONFINITE' });
  });
});

describe('dequantize rejects bad input', () => {
  it('wrong scales, dtype, non-finite scales, bad options', async () => {
    const q = quantA();
    expectMoeError(() => dequantizeSync({ data: q.data } as never), 'ERR_MOE_ARGUMENT', /q.scales: expected a Tensor/);
    expectMoeError(() => dequantizeSync({ data: q.data, scales: empty([2, 1], 'f32') }), 'ERR_MOE_SHAPE', /q.scales: expected shape \[4, 1\], got \[2, 1\]/);
    expectMoeError(() => dequantizeSync({ data: x() as never, scales: q.scales }), 'ERR_MOE_DTYPE', /q.data: expected dtype fp8_e4m3, got f32/);
    const nanScales = { data: q.data, scales: tensor(Float32Array.from(q.scales.data, (v, i) => (i === 1 ? NaN : v)), q.scales.shape) };
    expectMoeError(() => dequantizeSync(nanScales), 'ERR_MOE_NONFINITE', /q.scales: element 1 is NaN/);
    expectMoeError(() => dequantizeSync(q, { out: 'f16' as never }), 'ERR_MOE_RANGE');
    expectMoeError(() => dequantizeSync(q, { into: empty([4, 64], 'bf16') }), 'ERR_MOE_DTYPE');
    await expect(dequantize(nanScales)).rejects.toMatchObject({ code: 'ERR_MOE_NONFINITE' });
  });
});

describe('gemmFp8 rejects bad input', () => {
  it('shapes, dtypes, scale layouts, NaN codes, options, detached buffers', async () => {
    const a = quantA();
    const b = quantB();
    expect(gemmFp8Sync(a, b).shape).toEqual([4, 3]);
    const bOtherK = quantizeWeightsSync(tensor(randomFloats(3 * 48, random), [3, 48]));
    expectMoeError(() => gemmFp8Sync(a, bOtherK), 'ERR_MOE_SHAPE', /b.data must be \[N, 64\].*got \[3, 48\]/);
    expectMoeError(() => gemmFp8Sync(a, { data: b.data, scales: empty([3, 1], 'f32') }), 'ERR_MOE_SHAPE', /b.scales: expected shape \[1, 1\]/);
    expectMoeError(() => gemmFp8Sync({ data: a.data, scales: empty([1, 1], 'f32') }, b), 'ERR_MOE_SHAPE', /a.scales: expected shape \[4, 1\]/);
    expectMoeError(() => gemmFp8Sync(a, b.data as never), 'ERR_MOE_ARGUMENT');
    expectMoeError(() => gemmFp8Sync(a, b, { out: 'f16' as never }), 'ERR_MOE_RANGE', /options.out/);
    expectMoeError(() => gemmFp8Sync(a, b, { batchInvariant: 1 as never }), 'ERR_MOE_ARGUMENT', /options.batchInvariant/);
    expectMoeError(() => gemmFp8Sync(a, b, { into: empty([3, 4], 'bf16') }), 'ERR_MOE_SHAPE', /into: expected shape \[4, 3\]/);
    expectMoeError(() => gemmFp8Sync(a, b, { into: empty([4, 3], 'f32') }), 'ERR_MOE_DTYPE');
    const infScales = { data: b.data, scales: tensor(new Float32Array([Infinity]), [1, 1]) };
    expectMoeError(() => gemmFp8Sync(a, infScales), 'ERR_MOE_NONFINITE', /b.scales/);

    // An fp8 NaN code (0x7F / 0xFF) is found by the kernel while it decodes.
    for (const [which, code] of [['a', 0x7f], ['b', 0xff]] as const) {
      const bad = which === 'a' ? quantA() : quantB();
      bad.data.data[bad.data.data.length - 5] = code;
      const call = () => (which === 'a' ? gemmFp8Sync(bad, b) : gemmFp8Sync(a, bad));
      expectMoeError(call, 'ERR_MOE_NONFINITE', new RegExp(`${which} contains an fp8 NaN`));
    }

    const detached = tensor(new Uint8Array(64 * 4), [4, 64], 'fp8_e4m3');
    structuredClone(detached.data.buffer, { transfer: [detached.data.buffer as ArrayBuffer] });
    expectMoeError(() => gemmFp8Sync({ data: detached, scales: a.scales }, b), 'ERR_MOE_DETACHED');
    await expect(gemmFp8(a, bOtherK)).rejects.toMatchObject({ code: 'ERR_MOE_SHAPE' });
  });

  it('native code checks what it is handed, without lib/ in front of it', () => {
    const addon = native();
    const fp8 = (shape: number[], length = shape[0] * shape[1]) => ({ data: new Uint8Array(length), dtype: 'fp8_e4m3', shape });
    const f32 = (shape: number[], length = shape[0] * shape[1]) => ({ data: new Float32Array(length), dtype: 'f32', shape });
    const args = { a: fp8([2, 32]), aScales: f32([2, 1]), b: fp8([3, 32]), bScales: f32([1, 1]), d: f32([2, 3]) };
    expect(() => addon.gemmFp8(args as never, false)).not.toThrow();
    expectMoeError(() => addon.gemmFp8({ ...args, a: fp8([2, 32], 10) } as never, false), 'ERR_MOE_SHAPE');
    expectMoeError(() => addon.gemmFp8({ ...args, b: fp8([3, 16]) } as never, false), 'ERR_MOE_SHAPE');
    expectMoeError(() => addon.gemmFp8({ ...args, aScales: fp8([2, 1]) } as never, false), 'ERR_MOE_DTYPE');
    expectMoeError(() => addon.gemmFp8({ ...args, d: { data: new Uint16Array(6), dtype: 'f32', shape: [2, 3] } } as never, false), 'ERR_MOE_DTYPE');
    expectMoeError(() => addon.gemmFp8({} as never, false), 'ERR_MOE_DTYPE');
    expectMoeError(() => addon.quantizeActivations({ x: f32([2, 32]), q: fp8([2, 32]), scales: f32([2, 1]), scaleFormat: 'x' } as never, false), 'ERR_MOE_RANGE');
    expectMoeError(() => addon.dequantize({ q: fp8([2, 32]), scales: f32([2, 1]), blockRows: 7, out: f32([2, 32]) } as never, false), 'ERR_MOE_RANGE');
  });
});

describe('option values that cannot become strings', () => {
  // An object without a prototype (or with a throwing toString) in an option
  // must still give a MoeError that names it, not the TypeError of `${value}`.
  it('are described in the MoeError, not converted', () => {
    const bare = Object.create(null);
    expectMoeError(() => swigluSync(tensor(randomFloats(2 * 256, random), [2, 256]), { out: bare }), 'ERR_MOE_RANGE', /options\.out: .* got object/);
    const logits = tensor(randomFloats(2 * 8, random), [2, 8]);
    expectMoeError(() => routeSync(logits, { topK: 2, scale: bare }), 'ERR_MOE_RANGE', /options\.scale: .* got object/);
  });
});

describe('setNumThreads', () => {
  it('rejects counts that are not positive integers', () => {
    expectMoeError(() => setNumThreads(0), 'ERR_MOE_RANGE', /setNumThreads: n: expected an integer in \[1, 1024\], got 0/);
    expectMoeError(() => setNumThreads(1.5), 'ERR_MOE_RANGE');
    expectMoeError(() => setNumThreads('2' as never), 'ERR_MOE_RANGE');
  });
});
