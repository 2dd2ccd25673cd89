/**
 * The FP8 GEMM checks, shared by the test files that run them on each SIMD
 * path (the path is forced through MOE_CPU_ISA before the addon loads).
 */
import { describe, expect, it } from 'vitest';
import { cpuInfo, empty, gemmFp8, gemmFp8Sync, quantizeActivationsSync, quantizeWeightsSync, setNumThreads, tensor } from '../../lib/index';
import { calcDiff, referenceGemm, referenceMatmul } from './reference';
import { randomActivations, randomFloats, rng, seedNote } from './random';

// Ragged shapes: M = 1, 7, 129 and a large-M one; N off multiples of 16 and
// 128; K = 16 x odd, and K > 8192.
export const GEMM_SHAPES: Array<[number, number, number]> = [
  [1, 257, 8208],
  [1, 1, 16],
  [7, 130, 1040],
  [2, 17, 48],
  [33, 200, 528],
  [129, 300, 144],
  [129, 257, 8208],
  [520, 143, 272],
];

export function gemmSuite(isa: 'avx512' | 'avx2' | 'portable' | 'default'): void {
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

        // Quantization error is a statistical bound: a handful of outputs can
        // land on a cancellation, so it is checked where there are many.
        if (m * n < 100) return;
        const unquantized = referenceMatmul(x, w, m, n, k);
        expect(calcDiff(d, unquantized), `vs the unquantized product ${seedNote}`).toBeLessThan(1e-3);
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
