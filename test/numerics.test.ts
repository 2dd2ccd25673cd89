import { describe, expect, it } from 'vitest';
import {
  bf16FromFloat,
  bf16FromFloat32,
  bf16ToFloat,
  dequantizeSync,
  fp8E4m3FromFloat,
  fp8E4m3ToFloat,
  fp8FromFloat32,
  tensor,
} from '../lib/index';
import { FP8_POSITIVE, bf16Oracle, fp8Oracle } from './helpers/reference';
import { rng, seedNote } from './helpers/random';

const random = rng();

function f32Bits(values: Float32Array): Uint32Array {
  return new Uint32Array(values.buffer, values.byteOffset, values.length);
}

function nextUp(x: number): number {
  const v = new Float32Array([x]);
  const bits = f32Bits(v);
  bits[0] += x >= 0 ? 1 : -1;
  return v[0];
}

function nextDown(x: number): number {
  const v = new Float32Array([x]);
  const bits = f32Bits(v);
  if (x === 0) return -(2 ** -149);
  bits[0] += x > 0 ? -1 : 1;
  return v[0];
}

/** >= 10^7 f32 inputs: every halfway case, the subnormal range, 448 and beyond, specials, random bits. */
function fp8EncodeInputs(): Float32Array {
  const special: number[] = [0, -0, 448, 464, 480, 1e38, Infinity, -Infinity, 2 ** -10, 2 ** -9, 2 ** -6, 2 ** -149];
  special.push(nextUp(464), nextDown(464), nextUp(448), nextDown(448), nextUp(2 ** -10), nextDown(2 ** -10));
  const points = [...FP8_POSITIVE, 480]; // 480 stands for the next value past 448 (the NaN code)
  for (let i = 0; i < points.length; i++) {
    const around = [points[i]];
    if (i + 1 < points.length) around.push((points[i] + points[i + 1]) / 2); // every halfway case
    for (const p of around) special.push(p, nextUp(p), nextDown(p));
  }
  const count = 10_000_000;
  const values = new Float32Array(count);
  const bits = f32Bits(values);
  let i = 0;
  for (const s of special) {
    values[i++] = s;
    values[i++] = -s;
  }
  // NaNs with several payloads and both signs.
  for (const nan of [0x7fc00000, 0x7f800001, 0xffc00000, 0xffffffff, 0x7fbfffff]) bits[i++] = nan;
  const subnormalEnd = i + 1_000_000;
  for (; i < subnormalEnd; i++) values[i] = (random() * 2 - 1) * 2 ** -6; // fp8 subnormals and below
  const wideEnd = i + 3_000_000;
  for (; i < wideEnd; i++) values[i] = (random() * 2 - 1) * 600; // normals, 448 and above
  const scaledEnd = i + 1_000_000;
  for (; i < scaledEnd; i++) values[i] = (random() - 0.5) * 2 ** Math.floor(random() * 24 - 12);
  for (; i < count; i++) bits[i] = Math.floor(random() * 2 ** 32); // every exponent, NaNs included
  return values;
}

describe('fp8 e4m3 decode', () => {
  it('decodes all 256 codes to the format definition', () => {
    for (let code = 0; code < 256; code++) {
      const magnitude = code & 0x7f;
      const value = fp8E4m3ToFloat(code);
      if (magnitude === 0x7f) {
        expect(value).toBeNaN();
      } else {
        const expected = (code & 0x80 ? -1 : 1) * FP8_POSITIVE[magnitude];
        expect(Object.is(value, expected), `code ${code}`).toBe(true);
      }
    }
    expect(fp8E4m3ToFloat(0x7e)).toBe(448);
    expect(fp8E4m3ToFloat(0x01)).toBe(2 ** -9);
    expect(fp8E4m3ToFloat(0x38)).toBe(1);
  });

  it('native decoding (dequantize with unit scales) agrees on all 256 codes', () => {
    const codes = Uint8Array.from({ length: 256 }, (_, c) => c);
    const out = dequantizeSync({ data: tensor(codes, [1, 256]), scales: tensor(new Float32Array([1, 1]), [1, 2]) });
    const decoded = out.data as Float32Array;
    for (let code = 0; code < 256; code++) {
      const expected = fp8E4m3ToFloat(code);
      if (Number.isNaN(expected)) expect(decoded[code]).toBeNaN();
      else expect(Object.is(decoded[code], expected), `code ${code}`).toBe(true);
    }
  });
});

describe('fp8 e4m3 encode (CUDA satfinite round-to-nearest-even)', () => {
  const inputs = fp8EncodeInputs();
  const expected = Uint8Array.from(inputs, fp8Oracle);

  it(`native bulk encoding matches the oracle on ${inputs.length} inputs ${seedNote}`, () => {
    const encoded = fp8FromFloat32(inputs, [inputs.length]).data;
    let mismatches = 0;
    let first = -1;
    for (let i = 0; i < inputs.length; i++) {
      if (encoded[i] !== expected[i]) {
        mismatches++;
        if (first < 0) first = i;
      }
    }
    expect(mismatches, first >= 0 ? `first at ${inputs[first]}: got ${encoded[first]} want ${expected[first]}` : '').toBe(0);
  });

  it(`the TypeScript encoder matches the oracle on the same inputs ${seedNote}`, () => {
    let mismatches = 0;
    for (let i = 0; i < inputs.length; i++) if (fp8E4m3FromFloat(inputs[i]) !== expected[i]) mismatches++;
    expect(mismatches).toBe(0);
  });

  it('pins the edge cases', () => {
    expect(fp8E4m3FromFloat(448)).toBe(0x7e);
    expect(fp8E4m3FromFloat(464)).toBe(0x7e); // tie between 448 and 480: even mantissa
    expect(fp8E4m3FromFloat(nextUp(464))).toBe(0x7e); // saturates, never NaN
    expect(fp8E4m3FromFloat(Infinity)).toBe(0x7e);
    expect(fp8E4m3FromFloat(-Infinity)).toBe(0xfe);
    expect(fp8E4m3FromFloat(NaN)).toBe(0x7f);
    expect(fp8E4m3FromFloat(2 ** -10)).toBe(0x00); // half the smallest subnormal ties to zero
    expect(fp8E4m3FromFloat(-(2 ** -10))).toBe(0x80);
    expect(fp8E4m3FromFloat(nextUp(2 ** -10))).toBe(0x01);
    expect(fp8E4m3FromFloat(3 * 2 ** -10)).toBe(0x02); // 1.5 * 2^-9 ties to the even subnormal
  });
});

describe('bf16', () => {
  it(`native and TypeScript encoders round to nearest even ${seedNote}`, () => {
    const count = 2_000_000;
    const values = new Float32Array(count);
    const bits = f32Bits(values);
    for (let i = 0; i < count; i++) {
      const high = Math.floor(random() * 65536);
      // half of them exactly halfway, the rest random low bits
      const low = i % 2 === 0 ? 0x8000 : Math.floor(random() * 65536);
      bits[i] = ((high << 16) | low) >>> 0;
    }
    bits[0] = 0x7f7f8000; // halfway below infinity: rounds to +inf
    bits[2] = 0x7f7f7fff;
    const native = bf16FromFloat32(values, [count]).data;
    let mismatches = 0;
    for (let i = 0; i < count; i++) {
      const x = values[i];
      const ts = bf16FromFloat(x);
      if (Number.isNaN(x)) {
        if (!Number.isNaN(bf16ToFloat(native[i])) || !Number.isNaN(bf16ToFloat(ts))) mismatches++;
        continue;
      }
      const want = bf16Oracle(x, bits[i]);
      if (native[i] !== want || ts !== want) mismatches++;
    }
    expect(mismatches).toBe(0);
    expect(bf16ToFloat(native[0])).toBe(Infinity);
  });
});
