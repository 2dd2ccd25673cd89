import { describe, expect, it } from 'vitest';
import {
  QuantizedTensor,
  dispatchLayoutSync,
  dispatchSync,
  empty,
  groupedGemmFp8,
  groupedGemmFp8Masked,
  groupedGemmFp8MaskedSync,
  groupedGemmFp8Sync,
  quantizeActivationsSync,
  quantizeWeightsSync,
  routeSync,
  tensor,
} from '../lib/index';
import type { Tensor } from '../lib/index';
import { calcDiff, referenceGemm } from './helpers/reference';
import { randomActivations, randomFloats, rng, seedNote } from './helpers/random';
import { expectMoeError } from './helpers/errors';

const random = rng();


/** Stacked expert weights [G, N, K] quantized 128x128 per expert (SPEC.md: stacked experts are supported). */
function expertWeights(groups: number, n: number, k: number) {
  const w = randomFloats(groups * n * k, random, 0.05);
  const b = quantizeWeightsSync(tensor(w, [groups, n, k]));
  expect(b.data.shape).toEqual([groups, n, k]);
  expect(b.scales.shape).toEqual([groups, Math.ceil(n / 128), Math.ceil(k / 128)]);
  return { w, b };
}

/** Rows [r0, r1) of a [*, K] fp8 operand with its per-row scales. */
function rowsOf(a: QuantizedTensor, r0: number, r1: number, k: number) {
  const groups = Math.ceil(k / 128);
  return { q: a.data.data.subarray(r0 * k, r1 * k), s: a.scales.data.subarray(r0 * groups, r1 * groups) };
}

/** Expert g's [N, K] slice of stacked weights. */
function expertOf(b: QuantizedTensor, g: number, n: number, k: number) {
  const blocks = Math.ceil(n / 128) * Math.ceil(k / 128);
  return { q: b.data.data.subarray(g * n * k, (g + 1) * n * k), s: b.scales.data.subarray(g * blocks, (g + 1) * blocks) };
}

/**
 * The float64 reference of the contiguous grouped GEMM: for each run of rows
 * with one groupIndex g >= 0, referenceGemm against expert g; -1 rows zero.
 */
function referenceGrouped(a: QuantizedTensor, b: QuantizedTensor, groupIndex: Int32Array, n: number, k: number): Float64Array {
  const rows = groupIndex.length;
  const d = new Float64Array(rows * n);
  for (let start = 0; start < rows;) {
    let end = start + 1;
    while (end < rows && groupIndex[end] === groupIndex[start]) end++;
    const g = groupIndex[start];
    if (g >= 0) {
      const A = rowsOf(a, start, end, k);
      const B = expertOf(b, g, n, k);
      d.set(referenceGemm(A.q, A.s, B.q, B.s, end - start, n, k), start * n);
    }
    start = end;
  }
  return d;
}

function poisoned(shape: number[], dtype: 'f32' | 'bf16'): Tensor {
  const t = empty(shape, dtype);
  if (dtype === 'f32') (t.data as Float32Array).fill(NaN);
  else (t.data as Uint16Array).fill(0x7fc1);
  return t;
}

/** Checks D [R, N] against the reference: diff < 1e-5 over computed rows, padding rows exactly +0. */
function expectGrouped(d: Float32Array, want: Float64Array, groupIndex: ArrayLike<number>, n: number, label: string) {
  const computed: number[] = [];
  const reference: number[] = [];
  for (let r = 0; r < groupIndex.length; r++) {
    const row = d.subarray(r * n, (r + 1) * n);
    if (groupIndex[r] < 0) {
      if (!row.every((v) => Object.is(v, 0))) expect.fail(`${label}: padding row ${r} is not zero ${seedNote}`);
    } else {
      if (!row.every(Number.isFinite)) expect.fail(`${label}: row ${r} has a non-finite value ${seedNote}`);
      computed.push(...row);
      reference.push(...want.subarray(r * n, (r + 1) * n));
    }
  }
  expect(calcDiff(computed, reference), `${label} ${seedNote}`).toBeLessThan(1e-5);
}

describe('groupedGemmFp8 (contiguous): route -> dispatchLayout -> dispatch(fp8) -> grouped GEMM', () => {
  const cases: Array<[number, number, number, number, number]> = [
    // T, k, E, N, K
    [32, 4, 8, 300, 272],
    [24, 2, 4, 130, 1040],
    [1, 8, 16, 257, 144],
    [40, 6, 16, 64, 48],
  ];
  for (const [T, k, E, N, K] of cases) {
    for (const align of [128, 1]) {
      it(`T=${T} k=${k} E=${E} N=${N} K=${K} align ${align}`, async () => {
        const x = randomActivations(T, K, random);
        const { ids } = routeSync(tensor(randomFloats(T * E, random, 2), [T, E]), { topK: k });
        for (let i = 0; i < ids.data.length; i++) if (random() < 0.1) ids.data[i] = -1;
        const layout = dispatchLayoutSync(ids, E, { align });
        const a = dispatchSync(tensor(x, [T, K]), layout, { quantize: 'fp8' });
        const { w, b } = expertWeights(E, N, K);
        const want = referenceGrouped(a, b, layout.groupIndex.data, N, K);

        const into = poisoned([layout.numRows, N], 'f32');
        const d = groupedGemmFp8Sync(a, b, layout, { out: 'f32', into });
        expect(d).toBe(into);
        expect(d.shape).toEqual([layout.numRows, N]);
        expectGrouped(d.data as Float32Array, want, layout.groupIndex.data, N, 'f32 out');

        // bf16 out (default), async, the layout's groupIndex passed as a tensor.
        const intoB = poisoned([layout.numRows, N], 'bf16');
        const dB = await groupedGemmFp8(a, b, layout.groupIndex, { into: intoB });
        expect(dB).toBe(intoB);
        expect(dB.dtype).toBe('bf16');
        expectGrouped(dB.toFloat32Array(), want, layout.groupIndex.data, N, 'bf16 out');

        // Against the unquantized product x[token] * w[expert]^T (SPEC: diff < 1e-3).
        const exact: number[] = [];
        const got: number[] = [];
        for (let r = 0; r < layout.numRows; r++) {
          const t = layout.rowToken.data[r];
          const g = layout.groupIndex.data[r];
          if (t < 0) continue;
          for (let j = 0; j < N; j++) {
            let sum = 0;
            for (let c = 0; c < K; c++) sum += x[t * K + c] * w[(g * N + j) * K + c];
            exact.push(sum);
            got.push((d.data as Float32Array)[r * N + j]);
          }
        }
        if (exact.length >= 100) expect(calcDiff(got, exact), `vs unquantized ${seedNote}`).toBeLessThan(1e-3);
      });
    }
  }

  it('a hand-made groupIndex: unsorted groups, -1 runs between and at both ends, a group used twice', async () => {
    const [G, N, K] = [3, 200, 400];
    // 5 padding, 7 rows of expert 2, 3 padding, 130 rows of expert 0, 1 row of expert 1, 2 padding, 4 rows of expert 2
    const runs: Array<[number, number]> = [[-1, 5], [2, 7], [-1, 3], [0, 130], [1, 1], [-1, 2], [2, 4]];
    const groupIndex = Int32Array.from(runs.flatMap(([g, n]) => new Array(n).fill(g)));
    const R = groupIndex.length;
    const a = quantizeActivationsSync(tensor(randomActivations(R, K, random), [R, K]));
    const { b } = expertWeights(G, N, K);
    const want = referenceGrouped(a, b, groupIndex, N, K);
    const into = poisoned([R, N], 'f32');
    const d = groupedGemmFp8Sync(a, b, tensor(groupIndex, [R]), { out: 'f32', into });
    expectGrouped(d.data as Float32Array, want, groupIndex, N, 'hand-made groupIndex');
    // Async equals sync bit for bit.
    const dAsync = await groupedGemmFp8(a, b, tensor(groupIndex, [R]), { out: 'f32' });
    expect(Buffer.compare(Buffer.from(dAsync.data.buffer), Buffer.from(d.data.buffer))).toBe(0);
  });

  it('all rows padding gives all zeros; zero rows give an empty result', () => {
    const [N, K] = [130, 48];
    const { b } = expertWeights(2, N, K);
    const a = quantizeActivationsSync(tensor(randomActivations(9, K, random), [9, K]));
    const d = groupedGemmFp8Sync(a, b, tensor(new Int32Array(9).fill(-1), [9]), { out: 'f32', into: poisoned([9, N], 'f32') });
    expect((d.data as Float32Array).every((v) => Object.is(v, 0))).toBe(true);
    const none = quantizeActivationsSync(tensor(new Float32Array(0), [0, K]));
    expect(groupedGemmFp8Sync(none, b, tensor(new Int32Array(0), [0])).shape).toEqual([0, N]);
  });
});

describe('groupedGemmFp8Masked', () => {
  it('via the pipeline: masked layout -> dispatch(fp8) [E, Mmax, K] -> masked GEMM', async () => {
    const [T, k, E, N, K] = [12, 4, 8, 300, 272];
    const x = randomActivations(T, K, random);
    const { ids } = routeSync(tensor(randomFloats(T * E, random, 2), [T, E]), { topK: k });
    const layout = dispatchLayoutSync(ids, E, { layout: 'masked' });
    const a = dispatchSync(tensor(x, [T, K]), layout, { quantize: 'fp8' });
    expect(a.data.shape).toEqual([E, T, K]);
    const { b } = expertWeights(E, N, K);
    const into = poisoned([E, T, N], 'f32');
    const d = await groupedGemmFp8Masked(a, b, layout, { out: 'f32', into });
    expect(d).toBe(into);
    checkMasked(d.data as Float32Array, a, b, Array.from(layout.tokensPerExpert.data), T, N, K, 'pipeline');
  });

  for (const [G, M, N, K] of [[4, 9, 257, 144], [3, 130, 64, 1040], [2, 1, 16, 16]] as const) {
    it(`hand-made maskedM: G=${G} Mmax=${M} N=${N} K=${K}, bf16 and f32 out`, () => {
      const a2 = quantizeActivationsSync(tensor(randomActivations(G * M, K, random), [G * M, K]));
      const a = { data: tensor(a2.data.data, [G, M, K], 'fp8_e4m3'), scales: tensor(a2.scales.data, [G, M, Math.ceil(K / 128)], 'f32') };
      const { b } = expertWeights(G, N, K);
      const maskedM = Array.from({ length: G }, (_, g) => (g === 0 ? M : g === 1 ? 0 : Math.floor(random() * (M + 1))));
      const counts = tensor(Int32Array.from(maskedM), [G]);
      const d = groupedGemmFp8MaskedSync(a, b, counts, { out: 'f32', into: poisoned([G, M, N], 'f32') });
      expect(d.shape).toEqual([G, M, N]);
      checkMasked(d.data as Float32Array, a, b, maskedM, M, N, K, 'f32');
      const dB = groupedGemmFp8MaskedSync(a, b, counts, { into: poisoned([G, M, N], 'bf16') });
      checkMasked(dB.toFloat32Array(), a, b, maskedM, M, N, K, 'bf16');
    });
  }
});

/** Rows below maskedM[g] vs referenceGemm (diff < 1e-5), rows at or past it exactly +0. */
function checkMasked(d: Float32Array, a: QuantizedTensor, b: QuantizedTensor, maskedM: number[], M: number, N: number, K: number, label: string) {
  const got: number[] = [];
  const want: number[] = [];
  for (let g = 0; g < maskedM.length; g++) {
    const count = maskedM[g];
    if (count > 0) {
      const A = rowsOf(a, g * M, g * M + count, K);
      const B = expertOf(b, g, N, K);
      want.push(...referenceGemm(A.q, A.s, B.q, B.s, count, N, K));
      got.push(...d.subarray(g * M * N, (g * M + count) * N));
    }
    const rest = d.subarray((g * M + count) * N, (g + 1) * M * N);
    if (!rest.every((v) => Object.is(v, 0))) expect.fail(`${label}: group ${g}: rows at or past maskedM = ${count} are not zero ${seedNote}`);
  }
  expect(got.every(Number.isFinite), label).toBe(true);
  expect(calcDiff(got, want), `${label} ${seedNote}`).toBeLessThan(1e-5);
}

describe('grouped GEMMs: bad input', () => {
  const [G, N, K, R] = [3, 32, 64, 6];
  const setup = () => {
    const a = quantizeActivationsSync(tensor(randomActivations(R, K, random), [R, K]));
    const { b } = expertWeights(G, N, K);
    return { a, b, gi: tensor(Int32Array.from([0, 0, 1, -1, 2, 2]), [R]) };
  };

  it('groupIndex out of range (>= G or < -1) is ERR_MOE_RANGE; wrong length or dtype', async () => {
    const { a, b } = setup();
    expectMoeError(() => groupedGemmFp8Sync(a, b, tensor(Int32Array.from([0, 0, 1, -1, 3, 3]), [R])), 'ERR_MOE_RANGE');
    expectMoeError(() => groupedGemmFp8Sync(a, b, tensor(Int32Array.from([0, -2, 1, 1, 2, 2]), [R])), 'ERR_MOE_RANGE');
    await expect(groupedGemmFp8(a, b, tensor(Int32Array.from([9, 0, 0, 0, 0, 0]), [R]))).rejects.toMatchObject({ code: 'ERR_MOE_RANGE' });
    expectMoeError(() => groupedGemmFp8Sync(a, b, tensor(new Int32Array(R + 1), [R + 1])), 'ERR_MOE_SHAPE');
    expectMoeError(() => groupedGemmFp8Sync(a, b, tensor(new Float32Array(R), [R])), 'ERR_MOE_DTYPE');
  });

  it('maskedM > Mmax or < 0 is ERR_MOE_RANGE', async () => {
    const { a, b } = setup();
    const masked = { data: tensor(a.data.data, [G, 2, K], 'fp8_e4m3'), scales: tensor(a.scales.data, [G, 2, 1], 'f32') };
    expectMoeError(() => groupedGemmFp8MaskedSync(masked, b, tensor(Int32Array.from([1, 3, 0]), [G])), 'ERR_MOE_RANGE');
    expectMoeError(() => groupedGemmFp8MaskedSync(masked, b, tensor(Int32Array.from([1, -1, 0]), [G])), 'ERR_MOE_RANGE');
    await expect(groupedGemmFp8Masked(masked, b, tensor(Int32Array.from([2, 2, 5]), [G]))).rejects.toMatchObject({ code: 'ERR_MOE_RANGE' });
    expectMoeError(() => groupedGemmFp8MaskedSync(masked, b, tensor(Int32Array.from([1, 1]), [2])), 'ERR_MOE_SHAPE');
    // a not [G, Mmax, K]
    expectMoeError(() => groupedGemmFp8MaskedSync(a, b, tensor(Int32Array.from([1, 1, 1]), [G])), 'ERR_MOE_SHAPE');
  });

  it('wrong scales shapes, K mismatch, 2-D b are ERR_MOE_SHAPE', () => {
    const { a, b, gi } = setup();
    expectMoeError(() => groupedGemmFp8Sync({ data: a.data, scales: empty([R, 2], 'f32') }, b, gi), 'ERR_MOE_SHAPE');
    expectMoeError(() => groupedGemmFp8Sync(a, { data: b.data, scales: empty([G, 1, 2], 'f32') }, gi), 'ERR_MOE_SHAPE');
    expectMoeError(() => groupedGemmFp8Sync(a, { data: b.data, scales: empty([1, 1], 'f32') }, gi), 'ERR_MOE_SHAPE');
    const other = quantizeActivationsSync(tensor(randomActivations(R, 48, random), [R, 48]));
    expectMoeError(() => groupedGemmFp8Sync(other, b, gi), 'ERR_MOE_SHAPE');
    const flat = quantizeWeightsSync(tensor(randomFloats(N * K, random), [N, K]));
    expectMoeError(() => groupedGemmFp8Sync(a, flat, gi), 'ERR_MOE_SHAPE');
    expectMoeError(() => groupedGemmFp8Sync(a, b, gi, { out: 'f32', into: empty([R, N + 1], 'f32') }), 'ERR_MOE_SHAPE');
  });

  it('an fp8 NaN code (0x7F / 0xFF) in a computed row of a or in b is ERR_MOE_NONFINITE; a NaN scale too', async () => {
    const { a, b, gi } = setup();
    a.data.data[4 * K + 10] = 0x7f; // row 4: expert 2
    expectMoeError(() => groupedGemmFp8Sync(a, b, gi), 'ERR_MOE_NONFINITE', /NaN/);
    a.data.data[4 * K + 10] = 0;
    b.data.data[1 * N * K + 5 * K + 3] = 0xff; // expert 1
    await expect(groupedGemmFp8(a, b, gi)).rejects.toMatchObject({ code: 'ERR_MOE_NONFINITE' });
    b.data.data[1 * N * K + 5 * K + 3] = 0;
    const masked = { data: tensor(a.data.data, [G, 2, K], 'fp8_e4m3'), scales: tensor(a.scales.data, [G, 2, 1], 'f32') };
    masked.data.data[2 * K + 1] = 0x7f; // group 1, row 0
    expectMoeError(() => groupedGemmFp8MaskedSync(masked, b, tensor(Int32Array.from([1, 1, 1]), [G])), 'ERR_MOE_NONFINITE');
    masked.data.data[2 * K + 1] = 0;
    const nanScale = { data: a.data, scales: tensor(Float32Array.from(a.scales.data), [R, 1], 'f32') };
    nanScale.scales.data[2] = NaN;
    expectMoeError(() => groupedGemmFp8Sync(nanScale, b, gi), 'ERR_MOE_NONFINITE');
    // Restored: runs fine.
    expect(groupedGemmFp8Sync(a, b, gi, { out: 'f32' }).data.every(Number.isFinite)).toBe(true);
  });

  it('wrong dtypes and arguments', () => {
    const { a, b, gi } = setup();
    expectMoeError(() => groupedGemmFp8Sync({ data: tensor(new Float32Array(R * K), [R, K]), scales: a.scales } as never, b, gi), 'ERR_MOE_DTYPE');
    expectMoeError(() => groupedGemmFp8Sync(a, b, gi, { out: 'fp8' as never }), 'ERR_MOE_RANGE');
    expectMoeError(() => groupedGemmFp8Sync(a, b, gi, { into: empty([R, N], 'f32') }), 'ERR_MOE_DTYPE');
    expectMoeError(() => groupedGemmFp8Sync(a, null as never, gi), 'ERR_MOE_ARGUMENT');
    expectMoeError(() => groupedGemmFp8Sync(a, b, gi, { output: 'f32' } as never), 'ERR_MOE_ARGUMENT', /unknown option/);
  });
});
