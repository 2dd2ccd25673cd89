/**
 * Float64 and bit-exact references, written independently of lib/ and native/.
 */
import { fp8E4m3ToFloat } from '../../lib/numerics';

/**
 * DeepGEMM's calc_diff: 1 - 2*sum(x*y) / sum(x*x + y*y), in float64. Kept
 * apart from lib/bench/diff.ts on purpose: the tests' yardstick must not be
 * the library's own code.
 */
export function calcDiff(x: ArrayLike<number>, y: ArrayLike<number>): number {
  let xy = 0;
  let xxyy = 0;
  for (let i = 0; i < x.length; i++) {
    xy += x[i] * y[i];
    xxyy += x[i] * x[i] + y[i] * y[i];
  }
  return xxyy === 0 ? 0 : 1 - (2 * xy) / xxyy;
}

/** All non-negative finite fp8 e4m3 values in code order 0x00..0x7E (increasing). */
export const FP8_POSITIVE: number[] = (() => {
  // Independent of the library's decoder: built from the format's definition.
  const values: number[] = [];
  for (let code = 0; code < 0x7f; code++) {
    const e = code >> 3;
    const m = code & 7;
    values.push(e === 0 ? m * 2 ** -9 : 2 ** (e - 7) * (1 + m / 8));
  }
  return values;
})();

/**
 * The oracle for float -> fp8 (satfinite, round to nearest even): the nearest
 * of the 127 non-negative finite values by binary search; ties go to the even
 * code; beyond 448 saturate; NaN -> 0x7F. `x` must already be an f32 value.
 */
export function fp8Oracle(x: number): number {
  if (Number.isNaN(x)) return 0x7f;
  const sign = x < 0 || Object.is(x, -0) ? 0x80 : 0;
  const a = Math.abs(x);
  if (a >= 448) return sign | 0x7e;
  let lo = 0;
  let hi = 0x7e;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (FP8_POSITIVE[mid] <= a) lo = mid;
    else hi = mid;
  }
  const dLo = a - FP8_POSITIVE[lo];
  const dHi = FP8_POSITIVE[hi] - a;
  const code = dLo < dHi ? lo : dHi < dLo ? hi : lo % 2 === 0 ? lo : hi;
  return sign | code;
}

/** The value of bf16 bits, with the infinity codes standing for 2^128 (the next value RNE would round to). */
function bf16Value(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  if ((bits & 0x7fff) === 0x7f80) return sign * 2 ** 128;
  return new Float32Array(new Uint32Array([(bits & 0xffff) << 16]).buffer)[0];
}

/**
 * The oracle for float -> bf16 of a finite f32 `x` with bits `bits`: of the
 * truncated value and the next one away from zero, the nearer; ties to even.
 */
export function bf16Oracle(x: number, bits: number): number {
  const down = bits >>> 16;
  const up = down + 1;
  const dDown = Math.abs(x - bf16Value(down));
  const dUp = Math.abs(bf16Value(up) - x);
  if (dDown < dUp) return down;
  if (dUp < dDown) return up;
  return down % 2 === 0 ? down : up;
}

const f32 = Math.fround;

/** SPEC.md's group scale in f32: max(amax, 1e-4) / 448, rounded up to 2^k for ue8m0. */
export function referenceScale(amax: number, ue8m0: boolean): number {
  const s = f32(Math.max(amax, f32(1e-4)) / 448);
  if (!ue8m0) return s;
  let e = Math.ceil(Math.log2(s));
  while (2 ** e < s) e++; // guard against log2 rounding
  while (2 ** (e - 1) >= s) e--;
  return 2 ** e;
}

export interface ReferenceQuantized {
  q: Uint8Array; // [rows, cols] fp8 codes
  scales: Float32Array; // [ceil(rows/blockRows), ceil(cols/128)]
}

/** Bit-exact reference quantizer: scales per blockRows x 128 block, q = fp8(f32(x / s)). */
export function referenceQuantize(x: Float32Array, rows: number, cols: number, blockRows: number, ue8m0: boolean): ReferenceQuantized {
  const groups = Math.ceil(cols / 128);
  const blocks = Math.ceil(rows / blockRows);
  const q = new Uint8Array(rows * cols);
  const scales = new Float32Array(blocks * groups);
  for (let b = 0; b < blocks; b++) {
    for (let g = 0; g < groups; g++) {
      const r1 = Math.min(rows, (b + 1) * blockRows);
      const c1 = Math.min(cols, (g + 1) * 128);
      let amax = 0;
      for (let r = b * blockRows; r < r1; r++) for (let c = g * 128; c < c1; c++) amax = Math.max(amax, Math.abs(x[r * cols + c]));
      const s = referenceScale(amax, ue8m0);
      scales[b * groups + g] = s;
      for (let r = b * blockRows; r < r1; r++) for (let c = g * 128; c < c1; c++) q[r * cols + c] = fp8Oracle(f32(x[r * cols + c] / s));
    }
  }
  return { q, scales };
}

/** D[m, n] = sum_g sa[m, g] * sb[n/128, g] * sum_{k in g} A[m, k] * B[n, k], all in float64. */
export function referenceGemm(
  a: Uint8Array, aScales: Float32Array, b: Uint8Array, bScales: Float32Array, m: number, n: number, k: number,
): Float64Array {
  const groups = Math.ceil(k / 128);
  const decodedA = Float64Array.from(a, fp8E4m3ToFloat);
  const decodedB = Float64Array.from(b, fp8E4m3ToFloat);
  const d = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let total = 0;
      for (let g = 0; g < groups; g++) {
        let partial = 0;
        const k1 = Math.min(k, (g + 1) * 128);
        for (let kk = g * 128; kk < k1; kk++) partial += decodedA[i * k + kk] * decodedB[j * k + kk];
        total += aScales[i * groups + g] * bScales[Math.floor(j / 128) * groups + g] * partial;
      }
      d[i * n + j] = total;
    }
  }
  return d;
}

/** The unquantized product X [m, k] * W [n, k]^T in float64. */
export function referenceMatmul(x: Float32Array, w: Float32Array, m: number, n: number, k: number): Float64Array {
  const d = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let total = 0;
      for (let kk = 0; kk < k; kk++) total += x[i * k + kk] * w[j * k + kk];
      d[i * n + j] = total;
    }
  }
  return d;
}
