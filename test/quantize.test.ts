import { describe, expect, it } from 'vitest';
import {
  QuantizedTensor,
  bf16FromFloat32,
  dequantize,
  dequantizeSync,
  empty,
  quantizeActivations,
  quantizeActivationsSync,
  quantizeWeightsSync,
  tensor,
} from '../lib/index';
import { referenceQuantize } from './helpers/reference';
import { fp8E4m3ToFloat } from '../lib/index';
import { randomActivations, rng, seedNote } from './helpers/random';

const random = rng();

/** Output tensors filled with garbage, so that a kernel that skips an element is caught. */
function poisoned(rows: number, cols: number, blockRows: number): QuantizedTensor {
  const data = empty([rows, cols], 'fp8_e4m3');
  data.data.fill(0x7f); // NaN code
  const scales = empty([Math.ceil(rows / blockRows), Math.ceil(cols / 128)], 'f32');
  scales.data.fill(NaN);
  return { data, scales };
}

function expectBitExact(got: QuantizedTensor, want: { q: Uint8Array; scales: Float32Array }, label: string) {
  expect(Buffer.compare(Buffer.from(got.data.data), Buffer.from(want.q)), `${label} q ${seedNote}`).toBe(0);
  const gotScales = Array.from(got.scales.data);
  expect(gotScales, `${label} scales ${seedNote}`).toEqual(Array.from(want.scales));
}

const SHAPES: Array<[number, number]> = [
  [1, 16],
  [7, 48],
  [129, 144],
  [33, 1040],
  [130, 256],
  [257, 8208],
];

describe.each([
  ['activations (1x128)', 1, quantizeActivationsSync],
  ['weights (128x128)', 128, quantizeWeightsSync],
] as const)('quantize %s', (_name, blockRows, quantize) => {
  for (const [rows, cols] of SHAPES) {
    for (const scaleFormat of ['f32', 'ue8m0'] as const) {
      it(`is bit-exact with the reference at [${rows}, ${cols}], ${scaleFormat} scales, f32 and bf16 input`, () => {
        const x = randomActivations(rows, cols, random);
        const want = referenceQuantize(x, rows, cols, blockRows, scaleFormat === 'ue8m0');
        const into = poisoned(rows, cols, blockRows);
        const got = quantize(tensor(x, [rows, cols]), { scaleFormat, into });
        expect(got).toBe(into);
        expectBitExact(got, want, 'f32 input');

        const xBf16 = bf16FromFloat32(x, [rows, cols]);
        const wantBf16 = referenceQuantize(xBf16.toFloat32Array(), rows, cols, blockRows, scaleFormat === 'ue8m0');
        expectBitExact(quantize(xBf16, { scaleFormat }), wantBf16, 'bf16 input');
      });
    }
  }

  it('is bit-exact where x / scale lands within a few f32 ulps of an fp8 rounding boundary', () => {
    // The AVX-512 kernels divide by the scale only where x * (1 / scale)
    // could round to another fp8 code; these values sit on that edge.
    const rows = blockRows, cols = 256;
    const x = new Float32Array(rows * cols);
    const bits = new Int32Array(x.buffer);
    const f32 = new Float32Array(1);
    for (let r = 0; r < rows; r++) {
      for (let g = 0; g < cols / 128; g++) {
        const amax = Math.fround(2 ** (random() * 40 - 20) * (1 + random()));
        const scale = Math.fround(amax / 448); // the f32 scale format's rule, for a group whose amax is `amax`
        for (let c = g * 128; c < (g + 1) * 128; c++) {
          if (c === g * 128 && r === 0) {
            x[r * cols + c] = amax;
            continue;
          }
          // A halfway point between two neighbouring normal e4m3 values below 448, then a few ulps either way.
          const code = 8 + Math.floor(random() * (0x7e - 8));
          f32[0] = ((fp8E4m3ToFloat(code) + fp8E4m3ToFloat(code + 1)) / 2) * scale;
          x[r * cols + c] = f32[0] * (random() < 0.5 ? -1 : 1);
          bits[r * cols + c] += Math.floor(random() * 9) - 4;
          if (Math.abs(x[r * cols + c]) > amax) x[r * cols + c] = amax;
        }
      }
    }
    const want = referenceQuantize(x, rows, cols, blockRows, false);
    expectBitExact(quantize(tensor(x, [rows, cols]), { scaleFormat: 'f32', into: poisoned(rows, cols, blockRows) }), want, 'near boundaries');
  });

  it('keeps every value within half an fp8 ulp after dequantization', () => {
    const [rows, cols] = [65, 400];
    const x = randomActivations(rows, cols, random);
    const q = quantize(tensor(x, [rows, cols]));
    const back = dequantizeSync(q).data as Float32Array;
    const scales = q.scales.data;
    const groups = Math.ceil(cols / 128);
    for (let i = 0; i < x.length; i++) {
      const r = Math.floor(i / cols);
      const s = scales[Math.floor(r / blockRows) * groups + Math.floor((i % cols) / 128)];
      // e4m3 has 3 mantissa bits: relative error <= 2^-4, absolute <= 2^-10 * s in the subnormal range
      expect(Math.abs(back[i] - x[i])).toBeLessThanOrEqual(Math.abs(x[i]) / 16 + 2 ** -10 * s + 1e-30);
    }
  });
});

describe('dequantize', () => {
  it('computes x = q * s in f32 and bf16 for both scale layouts', () => {
    for (const [rows, blockRows] of [[7, 1], [200, 128]] as const) {
      const cols = 272;
      const x = randomActivations(rows, cols, random);
      const q = blockRows === 1 ? quantizeActivationsSync(tensor(x, [rows, cols])) : quantizeWeightsSync(tensor(x, [rows, cols]));
      const into = empty([rows, cols], 'f32');
      into.data.fill(NaN);
      const out = dequantizeSync(q, { into }).data as Float32Array;
      const codes = q.data.toFloat32Array();
      const groups = Math.ceil(cols / 128);
      for (let i = 0; i < out.length; i++) {
        const r = Math.floor(i / cols);
        const s = q.scales.data[Math.floor(r / blockRows) * groups + Math.floor((i % cols) / 128)];
        expect(out[i]).toBe(Math.fround(codes[i] * s));
      }
      const outBf16 = dequantizeSync(q, { out: 'bf16' });
      expect(outBf16.dtype).toBe('bf16');
      expect(Array.from(outBf16.toFloat32Array())).toEqual(Array.from(bf16FromFloat32(out, [rows, cols]).toFloat32Array()));
    }
  });
});

describe('async twins', () => {
  it('give the same bits as the sync forms', async () => {
    const x = tensor(randomActivations(129, 1040, random), [129, 1040]);
    const sync = quantizeActivationsSync(x, { scaleFormat: 'ue8m0' });
    const promise = quantizeActivations(x, { scaleFormat: 'ue8m0' });
    expect(promise).toBeInstanceOf(Promise);
    const async = await promise;
    expect(Buffer.compare(Buffer.from(async.data.data), Buffer.from(sync.data.data))).toBe(0);
    expect(Array.from(async.scales.data)).toEqual(Array.from(sync.scales.data));
    expect(Array.from((await dequantize(async)).data as Float32Array)).toEqual(Array.from(dequantizeSync(sync).data as Float32Array));
  });
});
