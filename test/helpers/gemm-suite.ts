/**
 * The FP8 GEMM checks, shared by the test files that run them on each SIMD
 * path (the path is forced through MOE_CPU_ISA before the addon loads).
 */
import { describe, expect, it } from 'vitest';
import { cpuInfo, empty, fp8E4m3ToFloat, gemmFp8, gemmFp8Sync, quantizeActivationsSync, quantizeWeightsSync, setNumThreads, tensor } from '../../lib/index';
import { calcDiff, referenceGemm, referenceMatmul } from './reference';
import { randomActivations, randomFloats, rng, seedNote } from './random';

// Ragged shapes: M = 1, 7, 129 and a large-M one; N off multiples of 16 and
// 128; K = 16 x odd, and K > 8192. M = 8 / 9 sit on both sides of the
// streaming kernels' limit (4 / 5 and 16 / 17 of the AVX512_BF16 dot
// kernels', 256 / 257 of its row-lane kernel's row tiles), M = 3, 13 and 130 leave ragged
// register tiles (M = 3: 5 B rows per AVX512_BF16 dot tile, 3 on AVX2; N =
// 141 ends each on a short tile).
export const GEMM_SHAPES: Array<[number, number, number]> = [
  [1, 257, 8208],
  [1, 1, 16],
  [7, 130, 1040],
  [2, 17, 48],
  [8, 161, 400],
  [9, 161, 400],
  [3, 141, 1040],
  [4, 139, 912],
  [5, 139, 912],
  [16, 139, 912],
  [17, 139, 912],
  [13, 47, 1168],
  [33, 200, 528],
  [129, 300, 144],
  [130, 96, 656],
  [129, 257, 8208],
  [256, 139, 912],
  [257, 139, 912],
  [520, 143, 272],
];

export function gemmSuite(isa: 'avx512bf16' | 'avx512' | 'avx2' | 'portable' | 'default'): void {
  const random = rng();
  const info = cpuInfo();
  const supported = isa === 'default' || isa === info.gemmIsa;
  const title = `gemmFp8 (${isa === 'default' ? info.gemmIsa : isa} path)`;
  if (!supported) {
    describe.skip(`${title}: this CPU cannot run the ${isa} path (it runs ${info.gemmIsa})`, () => {});
    return;
  }

  describe(title, () => {
    for (const [m, n, k] of GEMM_SHAPES) {
      it(`matches the float64 reference at M=${m} N=${n} K=${k}`, () => {
        const x = randomActivations(m, k, random);
        const w = randomFloats(n * k, random, 0.05);
        const a = quantizeActivationsSync(tensor(x, [m, k]));
        const b = quantizeWeightsSync(tensor(w, [n, k]));
        const exact = referenceGemm(a.data.data, a.scales.data, b.data.data, b.scales.data, m, n, k);

        const into = empty([m, n], 'f32');
        into.data.fill(NaN); // poison: every element must be written
        const d = gemmFp8Sync(a, b, { out: 'f32', into }).data as Float32Array;
        expect(calcDiff(d, exact), `f32 out vs reference on the same fp8 values ${seedNote}`).toBeLessThan(1e-5);
        expect(d.every(Number.isFinite)).toBe(true);

        const dBf16 = gemmFp8Sync(a, b).toFloat32Array();
        expect(calcDiff(dBf16, exact), `bf16 out ${seedNote}`).toBeLessThan(1e-5);

        // batchInvariant: the one kernel it pins at every M (AVX512_BF16: panels; FMA: streaming).
        const pinned = empty([m, n], 'f32');
        pinned.data.fill(NaN);
        gemmFp8Sync(a, b, { out: 'f32', into: pinned, batchInvariant: true });
        expect(calcDiff(pinned.data as Float32Array, exact), `batchInvariant ${seedNote}`).toBeLessThan(1e-5);

        // Quantization error is a statistical bound: a handful of outputs can
        // land on a cancellation, so it is checked where there are many.
        if (m * n < 100) return;
        const unquantized = referenceMatmul(x, w, m, n, k);
        expect(calcDiff(d, unquantized), `vs the unquantized product ${seedNote}`).toBeLessThan(1e-3);
      });
    }

    // Every fp8 code in B (all 254 non-NaN bytes, subnormals and both zeros
    // included) at the M that select each kernel (streaming, AMX strips of one
    // and two tiles, AMX blocks; on AVX512_BF16 the dot kernels, row lanes in
    // one and in several lane groups, panels), checked element by element: a
    // decode error in one code must not hide in a global diff.
    for (const m of [1, 2, 5, 8, 9, 16, 32, 40, 100, 300]) {
      it(`decodes every fp8 code of b exactly (M=${m}, element-wise)`, () => {
        const codes = Array.from({ length: 256 }, (_, c) => c).filter((c) => (c & 0x7f) !== 0x7f);
        const [n, k] = [codes.length, 272];
        const bBytes = new Uint8Array(n * k);
        // Row j holds code j only, so that a wrong decode of it moves d[:, j]
        // by a large fraction of its own magnitude.
        for (let j = 0; j < n; j++) bBytes.fill(codes[j], j * k, (j + 1) * k);
        const groups = Math.ceil(k / 128);
        const bScales = Float32Array.from({ length: Math.ceil(n / 128) * groups }, () => 0.5 + random());
        const b = { data: tensor(bBytes, [n, k], 'fp8_e4m3'), scales: tensor(bScales, [Math.ceil(n / 128), groups]) };
        const a = quantizeActivationsSync(tensor(randomActivations(m, k, random), [m, k]));
        const exact = referenceGemm(a.data.data, a.scales.data, bBytes, bScales, m, n, k);
        const d = gemmFp8Sync(a, b, { out: 'f32' }).data as Float32Array;
        const decodedA = Float64Array.from(a.data.data as Uint8Array, fp8E4m3ToFloat);
        const decodedB = Float64Array.from(bBytes, fp8E4m3ToFloat);
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < n; j++) {
            let magnitude = 0; // sum of |terms|: f32 accumulation error scales with it
            for (let kk = 0; kk < k; kk++) {
              const g = Math.floor(kk / 128);
              magnitude += Math.abs(decodedA[i * k + kk] * decodedB[j * k + kk] * a.scales.data[i * groups + g] * bScales[Math.floor(j / 128) * groups + g]);
            }
            const got = d[i * n + j];
            const want = exact[i * n + j];
            // The f32 sums' worst case is k ulps of the magnitude; a wrongly
            // decoded code moves d[i, j] by a large part of the magnitude.
            if (!(Math.abs(got - want) <= k * 2 ** -24 * magnitude + 1e-30)) {
              expect.fail(`d[${i}, ${j}] = ${got}, want ${want} (b codes of row ${j}) ${seedNote}`);
            }
          }
        }
      });
    }

    it('async and sync agree bit for bit, and thread counts do not change the bits', async () => {
      const [m, n, k] = [129, 300, 1040];
      const a = quantizeActivationsSync(tensor(randomActivations(m, k, random), [m, k]));
      const b = quantizeWeightsSync(tensor(randomFloats(n * k, random), [n, k]));
      const sync = gemmFp8Sync(a, b, { out: 'f32' }).data;
      const async = (await gemmFp8(a, b, { out: 'f32' })).data;
      expect(Buffer.compare(Buffer.from(sync.buffer), Buffer.from(async.buffer))).toBe(0);
      setNumThreads(1);
      const single = gemmFp8Sync(a, b, { out: 'f32' }).data;
      setNumThreads(info.threads);
      expect(Buffer.compare(Buffer.from(sync.buffer), Buffer.from(single.buffer))).toBe(0);
    });
  });
}

/**
 * Within one kernel a row's K reduction order is fixed by K alone
 * (gemm_fp8_kernels.h): the same row must give the same bits whatever other
 * rows share its call, and wherever it sits among them. Each case is
 * [label, M of the full call, first row, rows]: rows from..from+count-1 run
 * alone and inside the full call, with N = 300 and K = k. With
 * batchInvariant every M runs the one kernel it pins, so any split holds.
 * Skips with a message where this CPU runs another path than `isa`.
 */
export function rowBitsSuite(isa: string, cases: Array<[string, number, number, number]>, k = 1040, batchInvariant = false): void {
  const ran = cpuInfo().gemmIsa === isa;
  const what = batchInvariant ? 'with batchInvariant, ' : '';
  describe.skipIf(!ran)(`gemmFp8 (${isa} path, K=${k}): ${what}a row's bits do not depend on its batch${ran ? '' : ` (skipped: this CPU runs ${cpuInfo().gemmIsa})`}`, () => {
    const random = rng();
    const n = 300;
    const b = quantizeWeightsSync(tensor(randomFloats(n * k, random, 0.05), [n, k]));
    const x = randomActivations(Math.max(...cases.map(([, full]) => full)), k, random);
    const rows = (from: number, count: number) => gemmFp8Sync(quantizeActivationsSync(tensor(x.subarray(from * k, (from + count) * k), [count, k])), b, { out: 'f32', batchInvariant }).data as Float32Array;

    for (const [label, full, from, count] of cases) {
      it(`${label}: rows ${from}..${from + count - 1} alone and inside M=${full}`, () => {
        const all = rows(0, full);
        const part = rows(from, count);
        const same = Buffer.compare(Buffer.from(part.buffer, part.byteOffset, part.byteLength),
          Buffer.from(all.buffer, all.byteOffset + from * n * 4, count * n * 4));
        expect(same, `rows ${from}.. of M=${full} ${seedNote}`).toBe(0);
      });
    }
  });
}
