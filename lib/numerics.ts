/**
 * Scalar number formats of SPEC.md in TypeScript: OCP fp8 E4M3FN and bf16.
 *
 * `fp8E4m3FromFloat` is bit for bit CUDA's
 * `__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3)`: the input is first
 * rounded to f32 (as CUDA's float argument would be), then rounded to nearest
 * even; finite overflow and infinities saturate to +-448; every NaN becomes
 * 0x7F (CUDA canonicalizes NaN to a positive quiet NaN first). The native
 * addon has the same functions in native/src/core/numerics.h.
 */

import { MoeError, describe } from './errors';

/** The scalar helpers take numbers only (a Symbol or BigInt would be a TypeError inside them). */
function expectNumber(x: unknown, what: string): void {
  if (typeof x !== 'number') throw new MoeError('ERR_MOE_ARGUMENT', `${what}: expected a number, got ${describe(x)}`);
}

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

function floatBits(x: number): number {
  scratchF32[0] = x;
  return scratchU32[0];
}

function floatFromBits(bits: number): number {
  scratchU32[0] = bits;
  return scratchF32[0];
}

export const FP8_E4M3_MAX = 448;
export const FP8_E4M3_NAN = 0x7f;

export function fp8E4m3FromFloat(x: number): number {
  expectNumber(x, 'fp8E4m3FromFloat');
  const bits = floatBits(x);
  const sign = (bits >>> 24) & 0x80;
  const abs = bits & 0x7fffffff;
  if (abs > 0x7f800000) return FP8_E4M3_NAN;
  if (abs > 0x43e80000) return sign | 0x7e; // beyond 448 + half an ulp (464): saturate
  if (abs <= 0x3a800000) return sign; // at most half the smallest subnormal (2^-10): zero
  const exponent = (abs >>> 23) - 127 + 7; // e4m3 biased exponent
  const significand = (abs & 0x7fffff) | 0x800000; // 1.m, 24 bits
  const dropped = exponent >= 1 ? 20 : 20 + (1 - exponent);
  let result = significand >>> dropped;
  if (exponent >= 1) result = (exponent << 3) | (result & 7);
  const remainder = significand & ((1 << dropped) - 1);
  const half = 1 << (dropped - 1);
  if (remainder > half || (remainder === half && (result & 1) === 1)) result += 1; // carries into the exponent
  return sign | result;
}

export function fp8E4m3ToFloat(v: number): number {
  expectNumber(v, 'fp8E4m3ToFloat');
  const exponent = (v >>> 3) & 0xf;
  const mantissa = v & 7;
  let magnitude: number;
  if (exponent === 0xf && mantissa === 7) magnitude = NaN;
  else if (exponent === 0) magnitude = mantissa / 512; // m * 2^-9
  else magnitude = (1 + mantissa / 8) * 2 ** (exponent - 7);
  return v & 0x80 ? -magnitude : magnitude;
}

export function bf16FromFloat(x: number): number {
  expectNumber(x, 'bf16FromFloat');
  const bits = floatBits(x);
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x40) & 0xffff; // quiet NaN, sign kept
  const roundingBias = 0x7fff + ((bits >>> 16) & 1);
  return ((bits + roundingBias) >>> 16) & 0xffff;
}

export function bf16ToFloat(v: number): number {
  expectNumber(v, 'bf16ToFloat');
  return floatFromBits((v & 0xffff) << 16);
}

/** All 256 fp8 codes decoded, for table lookups. */
export const FP8_E4M3_VALUES: Float32Array = Float32Array.from({ length: 256 }, (_, code) => fp8E4m3ToFloat(code));

/** Decodes raw fp8 codes or bf16 bits into a new Float32Array. */
export function decodeToFloat32(data: Uint8Array | Uint16Array, format: 'fp8_e4m3' | 'bf16'): Float32Array {
  const out = new Float32Array(data.length);
  if (format === 'fp8_e4m3') {
    for (let i = 0; i < data.length; i++) out[i] = FP8_E4M3_VALUES[data[i]];
  } else {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < data.length; i++) bits[i] = data[i] << 16;
  }
  return out;
}
