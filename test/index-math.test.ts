/**
 * 64-bit index math (SPEC.md: "All offsets and sizes in native code are
 * 64-bit"). Each test makes native code touch an element whose offset from
 * the start of its tensor is past 2^31, where 32-bit offset arithmetic
 * (int32 overflow, or unsigned 32-bit wrap-around) would read or write the
 * wrong place or crash.
 *
 * MEMORY: these tests allocate tensors of 2^31+ elements. Most are only read
 * at a few rows: the typed arrays are zero-filled lazily by the OS (calloc ->
 * mmap), so untouched pages take no RAM even though the virtual size is up to
 * ~4.6 GB. The dispatch test writes every row of a 2.15 GB fp8 output: it is
 * the one that really needs ~2.3 GB of RAM.
 */
import { describe, expect, it } from 'vitest';
import {
  combineSync,
  dispatchLayoutSync,
  dispatchSync,
  empty,
  groupedGemmFp8MaskedSync,
  groupedGemmFp8Sync,
  quantizeActivationsSync,
  quantizeWeightsSync,
  tensor,
} from '../lib/index';
import { bf16BitsToNumber } from './helpers/moe-reference';
import { calcDiff, referenceGemm, referenceQuantize } from './helpers/reference';
import { randomActivations, randomFloats, rng, seedNote } from './helpers/random';

const random = rng();
const TWO_31 = 2 ** 31;

describe('64-bit offsets in native code (element offsets past 2^31)', () => {
  it('combine reads y rows whose element offset is past 2^31 (masked layout, bf16 y of 2.29e9 elements, lazily allocated)', () => {
    // Masked layout, E = 16 experts of Mmax rows: expert 15's rows start at 15 * Mmax * H > 2^31.
    const [E, M, H] = [16, 34960, 4096];
    expect(15 * M * H).toBeGreaterThan(TWO_31);
    // token 0 -> [15, 0], token 1 -> [15, 3], token 2 -> [-1, 15]
    const ids = tensor(Int32Array.from([15, 0, 15, 3, -1, 15]), [3, 2]);
    const layout = dispatchLayoutSync(ids, E, { layout: 'masked', maxTokensPerExpert: M });
    expect(Array.from(layout.slotRow.data)).toEqual([15 * M, 0, 15 * M + 1, 3 * M, -1, 15 * M + 2]);
    const y = empty([E, M, H], 'bf16'); // 4.6 GB virtual, zero pages until written
    const rowValues = (row: number) => {
      const values = randomFloats(H, random);
      y.data.set(bf16Encode(values), row * H);
      return Array.from(y.data.subarray(row * H, (row + 1) * H), bf16BitsToNumber);
    };
    const r15a = rowValues(15 * M);
    const r0 = rowValues(0);
    const r15b = rowValues(15 * M + 1);
    const r3 = rowValues(3 * M);
    const r15c = rowValues(15 * M + 2);
    const weights = tensor(Float32Array.from([0.75, 0.25, 0.5, 2, 7, 1.5]), [3, 2]);
    const out = combineSync(y, layout, weights, { out: 'f32' }).data as Float32Array;
    for (let c = 0; c < H; c++) {
      const terms = [[0.75 * r15a[c], 0.25 * r0[c]], [0.5 * r15b[c], 2 * r3[c]], [1.5 * r15c[c]]];
      for (let t = 0; t < 3; t++) {
        const want = terms[t].reduce((a, v) => a + v, 0);
        const bound = 2 ** -22 * terms[t].reduce((a, v) => a + Math.abs(v), 0); // f32 rounding of <= 2 terms
        const got = out[t * H + c];
        if (!(Math.abs(got - want) <= bound)) expect.fail(`token ${t} column ${c}: got ${got}, want ${want} ${seedNote}`);
      }
    }
  });

  it('groupedGemmFp8 reads A rows whose element offset is past 2^31 (A [131076, 16384] fp8, only a few rows filled)', () => {
    const [R, K, N, G] = [131076, 16384, 48, 2];
    expect((R - 3) * K).toBeGreaterThan(TWO_31);
    const aData = empty([R, K], 'fp8_e4m3'); // 2.15 GB virtual, lazily zero
    const aScales = empty([R, K / 128], 'f32'); // zero scales for the padding rows
    // Rows R-3 .. R-1 (past 2^31): expert 1, 0, 1; everything else is padding.
    const used = [R - 3, R - 2, R - 1];
    const groupIndex = new Int32Array(R).fill(-1);
    groupIndex[R - 3] = 1;
    groupIndex[R - 2] = 0;
    groupIndex[R - 1] = 1;
    // Also row 1 (expert 0): a 32-bit wrap of row R-2's offset would land near row 1's data.
    groupIndex[1] = 0;
    const rowsQ = quantizeActivationsSync(tensor(randomActivations(4, K, random), [4, K]));
    for (const [i, r] of [1, ...used].entries()) {
      aData.data.set(rowsQ.data.data.subarray(i * K, (i + 1) * K), r * K);
      aScales.data.set(rowsQ.scales.data.subarray(i * (K / 128), (i + 1) * (K / 128)), r * (K / 128));
    }
    const b = quantizeWeightsSync(tensor(randomFloats(G * N * K, random, 0.05), [G, N, K]));
    const d = groupedGemmFp8Sync({ data: aData, scales: aScales }, b, tensor(groupIndex, [R]), { out: 'f32' }).data as Float32Array;
    for (const [i, r] of [1, ...used].entries()) {
      const g = groupIndex[r];
      const blocks = Math.ceil(N / 128) * (K / 128);
      const want = referenceGemm(
        rowsQ.data.data.subarray(i * K, (i + 1) * K), rowsQ.scales.data.subarray(i * (K / 128), (i + 1) * (K / 128)),
        b.data.data.subarray(g * N * K, (g + 1) * N * K), b.scales.data.subarray(g * blocks, (g + 1) * blocks), 1, N, K,
      );
      expect(calcDiff(d.subarray(r * N, (r + 1) * N), want), `row ${r} ${seedNote}`).toBeLessThan(1e-5);
    }
    expect(d.subarray(0, N).every((v) => v === 0)).toBe(true);
    expect(d.subarray((R - 4) * N, (R - 3) * N).every((v) => v === 0)).toBe(true);
  });

  it('groupedGemmFp8Masked reads and writes group 2 past 2^31 (A [3, 65537, 16384] fp8 = 3.2 GB virtual, lazily allocated)', () => {
    const [G, M, K, N] = [3, 65537, 16384, 32];
    expect(2 * M * K).toBeGreaterThan(TWO_31); // group 2's first row
    const aData = empty([G, M, K], 'fp8_e4m3'); // zero pages until written; zero scales elsewhere are fine
    const aScales = empty([G, M, K / 128], 'f32');
    const filled = quantizeActivationsSync(tensor(randomActivations(3, K, random), [3, K]));
    // Group 2's first two rows, and group 0's first row.
    const rows = [2 * M, 2 * M + 1, 0];
    rows.forEach((r, i) => {
      aData.data.set(filled.data.data.subarray(i * K, (i + 1) * K), r * K);
      aScales.data.set(filled.scales.data.subarray(i * (K / 128), (i + 1) * (K / 128)), r * (K / 128));
    });
    const b = quantizeWeightsSync(tensor(randomFloats(G * N * K, random, 0.05), [G, N, K]));
    const blocks = K / 128; // ceil(N/128) = 1 block row per expert
    const into = empty([G, M, N], 'f32');
    into.data.fill(NaN, 0, 4 * N); // poison group 0's first rows ...
    into.data.fill(NaN, (2 * M - 2) * N); // ... and everything from the end of group 1 on
    const d = groupedGemmFp8MaskedSync({ data: aData, scales: aScales }, b, tensor(Int32Array.from([1, 0, 2]), [G]), { out: 'f32', into }).data as Float32Array;
    const want2 = referenceGemm(filled.data.data.subarray(0, 2 * K), filled.scales.data.subarray(0, 2 * blocks),
      b.data.data.subarray(2 * N * K), b.scales.data.subarray(2 * blocks), 2, N, K);
    expect(calcDiff(d.subarray(2 * M * N, (2 * M + 2) * N), want2), `group 2 ${seedNote}`).toBeLessThan(1e-5);
    const want0 = referenceGemm(filled.data.data.subarray(2 * K), filled.scales.data.subarray(2 * blocks),
      b.data.data.subarray(0, N * K), b.scales.data.subarray(0, blocks), 1, N, K);
    expect(calcDiff(d.subarray(0, N), want0), `group 0 ${seedNote}`).toBeLessThan(1e-5);
    // Rows at or past maskedM are zero: group 0 rows 1.., group 1 entirely, group 2 rows 2..
    expect(d.subarray(N, 4 * N).every((v) => Object.is(v, 0))).toBe(true);
    expect(d.subarray((2 * M - 2) * N, 2 * M * N).every((v) => Object.is(v, 0))).toBe(true);
    expect(d.subarray((2 * M + 2) * N).every((v) => Object.is(v, 0))).toBe(true);
  });

  it('dispatch with fp8 quantization writes rows past 2^31 (out [131074, 16384] fp8 = 2.15 GB, really written)', () => {
    // T = 2 tokens, k = 65537 slots each, all to expert 0 (repeats): R = 131074 rows,
    // token 1 in rows 65537 .. 131073; rows >= 131072 start past 2^31 bytes.
    const [T, k, H] = [2, 65537, 16384];
    const R = T * k;
    expect((R - 2) * H).toBeGreaterThanOrEqual(TWO_31);
    const layout = dispatchLayoutSync(tensor(new Int32Array(T * k), [T, k]), 1, { align: 1 });
    expect(layout.numRows).toBe(R);
    const x = randomActivations(T, H, random);
    x[H + 7] = 300; // token 1 has a much larger amax than token 0: distinct scales
    const out = dispatchSync(tensor(x, [T, H]), layout, { quantize: 'fp8' });
    expect(out.data.shape).toEqual([R, H]);
    const want = referenceQuantize(x, T, H, 1, false);
    const groups = H / 128;
    const expectRow = (r: number, t: number) => {
      const q = out.data.data.subarray(r * H, (r + 1) * H);
      expect(Buffer.compare(Buffer.from(q), Buffer.from(want.q.subarray(t * H, (t + 1) * H))), `row ${r} (token ${t}) q ${seedNote}`).toBe(0);
      expect(Array.from(out.scales.data.subarray(r * groups, (r + 1) * groups)), `row ${r} scales`).toEqual(Array.from(want.scales.subarray(t * groups, (t + 1) * groups)));
    };
    for (const r of [0, 1, 65535, 65536]) expectRow(r, 0);
    for (const r of [65537, 131071, 131072, 131073]) expectRow(r, 1);
  });
});

/** f32 -> bf16 bits, nearest even (test inputs only: finite values). */
function bf16Encode(values: Float32Array): Uint16Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const down = bits[i] >>> 16;
    const rest = bits[i] & 0xffff;
    out[i] = rest > 0x8000 || (rest === 0x8000 && (down & 1) === 1) ? down + 1 : down;
  }
  return out;
}
