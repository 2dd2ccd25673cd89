// The AVX512_BF16 path (VDPBF16PS), forced on a CPU that would pick AMX; it
// skips with a message where the CPU lacks AVX512_BF16 or AVX512_VBMI.
process.env.MOE_CPU_ISA = 'avx512bf16';
const { gemmSuite, rowBitsSuite } = await import('./helpers/gemm-suite');
const { describe, expect, it } = await import('vitest');
const { cpuInfo, empty, gemmFp8Sync, quantizeActivationsSync, quantizeWeightsSync, tensor } = await import('../lib/index');
const { randomActivations, randomFloats, rng, seedNote } = await import('./helpers/random');
const { calcDiff, referenceGemm } = await import('./helpers/reference');

gemmSuite('avx512bf16');

// Kernels: dot M <= 4; row lanes above (8 rows of two k-pairs in one zmm to
// M = 11, two such zmm to M = 16, one zmm of 16 rows and a tail at M = 17..20,
// three zmm of 8 rows of two k-pairs at M = 21..26, up to three zmm of 16
// rows to 48, then lane groups of 2 or
// 3 zmm (four zmm as 2 + 2), above 256 rows near-equal row tiles, each its own call; each lane's
// operations the same, and at K = 1040 from M = 129 K is walked in two
// passes, one below; up to 8 rows past a call's last whole zmm, the tail, as
// the dot kernel computes them: M = 9..11 is 8 rows and a tail, 17..20 one
// zmm and a tail, 25, 26 three zmm of 8 rows and a tail, 27..32 two zmm,
// 33..37 two zmm and a tail, 38..48 three zmm); with batchInvariant, panels
// at every M.
// The row-lane kernel's tail rows do the dot kernel's operations in the same
// order, so a row's bits also survive the switch between them.
rowBitsSuite('avx512bf16', [
  ['dot kernel', 4, 2, 1],
  ['dot kernel', 4, 1, 3],
  ['row-lane kernel, 8 rows in one zmm', 8, 3, 5],
  ['row-lane kernel, 8 rows in one zmm with and without a tail', 11, 0, 8],
  ['row-lane kernel\'s tail past 8 rows and the dot kernel', 11, 8, 3],
  ['row-lane kernel', 16, 0, 12],
  ['row-lane kernel', 16, 2, 14],
  ['row-lane kernel', 13, 1, 12],
  ['row-lane kernel, one and two zmm of 8 rows of two k-pairs', 16, 3, 8],
  ['row-lane kernel, two and three zmm of 8 rows of two k-pairs', 24, 0, 16],
  ['row-lane kernel, one zmm of rows and a tail of 1 and of 4', 20, 0, 17],
  ['row-lane kernel\'s tail and the dot kernel', 20, 16, 4],
  ['row-lane kernel, 8 rows of two k-pairs in one zmm and in three', 24, 0, 8],
  ['row-lane kernel, 8 rows of two k-pairs in the last of three zmm and in one', 24, 16, 8],
  ['row-lane kernel, three zmm of 8 rows of two k-pairs, full and not', 24, 2, 21],
  ['row-lane kernel, 8 rows of two k-pairs in one zmm and in three with a tail', 26, 8, 8],
  ['row-lane kernel\'s tail past three zmm of two k-pairs and the dot kernel', 26, 24, 2],
  ['row-lane kernel, two zmm of rows, full and not', 32, 1, 27],
  ['row-lane kernel, two zmm of rows with and without a tail', 37, 0, 32],
  ['row-lane kernel\'s tail past two zmm and the dot kernel', 37, 32, 4],
  ['row-lane kernel, two and three zmm of rows', 40, 3, 27],
  ['row-lane kernel, two and four zmm of rows', 64, 7, 27],
  ['row-lane kernel, three and four zmm of rows', 64, 20, 41],
  ['row-lane kernel\'s tail past three zmm and the dot kernel', 51, 48, 3],
  ['row-lane kernel, lane groups of 3 + 2 zmm and one group of 3', 80, 5, 48],
  ['row-lane kernel, lane groups of 3 + 3 + 3 zmm and 3 + 2', 144, 7, 80],
  ['row-lane kernel, lane groups of 3 + 3 + 3 zmm and 3 + 3', 144, 40, 96],
  ['row-lane kernel\'s tail past lane groups and the dot kernel', 132, 128, 4],
  ['row-lane kernel, six lane groups and one of 2 zmm', 256, 60, 32],
  ['row-lane kernel, row tiles of 160 + 140 and of 144 + 128', 300, 7, 272],
  ['row-lane kernel, row tiles of 160 + 140 and one of 256', 300, 20, 256],
  ['row-lane kernel, a row tile\'s tail and the dot kernel', 260, 256, 4],
]);

rowBitsSuite('avx512bf16', [
  ['panel kernel, one row', 300, 5, 1],
  ['panel kernel, four rows', 300, 0, 4],
  ['panel kernel, rows of two micro-panels cut 3 and 4', 300, 17, 7],
  ['panel kernel', 130, 60, 70],
  ['panel kernel', 300, 20, 280],
], 1040, true);

const ran = cpuInfo().gemmIsa === 'avx512bf16';

// Each kernel finds an fp8 NaN code in B while it decodes, wherever it sits:
// the last byte of the last row (ragged K and N tails).
describe.skipIf(!ran)(`gemmFp8 (avx512bf16 path): a NaN code in b${ran ? '' : ` (skipped: this CPU runs ${cpuInfo().gemmIsa})`}`, () => {
  const random = rng();
  const [n, k] = [139, 400];
  for (const m of [1, 4, 5, 11, 12, 16, 17, 21, 24, 33, 49, 64, 65, 72, 80, 136, 256, 257, 264]) {
    it(`M=${m}: ERR_MOE_NONFINITE`, () => {
      const b = quantizeWeightsSync(tensor(randomFloats(n * k, random, 0.05), [n, k]));
      b.data.data[n * k - 1] = 0xff;
      const a = quantizeActivationsSync(tensor(randomActivations(m, k, random), [m, k]));
      expect(() => gemmFp8Sync(a, b)).toThrow(expect.objectContaining({ code: 'ERR_MOE_NONFINITE' }));
      if ([1, 65, 257].includes(m)) {
        expect(() => gemmFp8Sync(a, b, { batchInvariant: true }), 'the panel kernel').toThrow(expect.objectContaining({ code: 'ERR_MOE_NONFINITE' }));
      }
    });
  }
});

type Quantized = ReturnType<typeof quantizeActivationsSync>;

// a * b^T as f32 (into an output poisoned with NaN, every element of which
// must be written) and as bf16, beside the float64 reference; with
// batchInvariant, from the one kernel it pins (the panel kernel).
function poisonedProducts(a: Quantized, b: Quantized, m: number, n: number, k: number, batchInvariant = false) {
  const exact = referenceGemm(a.data.data, a.scales.data, b.data.data, b.scales.data, m, n, k);
  const into = empty([m, n], 'f32');
  into.data.fill(NaN);
  const d = gemmFp8Sync(a, b, { out: 'f32', into, batchInvariant }).data as Float32Array;
  const dBf16 = gemmFp8Sync(a, b, { batchInvariant }).toFloat32Array();
  expect(d.every(Number.isFinite)).toBe(true);
  return { exact, d, dBf16 };
}

// The row-lane kernel's tail (rows past its last whole zmm of rows, up to
// 8, dotted against the B block decoded for the lanes): every tail length
// around 8 rows of two k-pairs per zmm, three such zmm (M = 25, 26) and
// one, two and three zmm of 16, next to the counts that take one more zmm
// instead (M = 21..24: three zmm of 8 rows, no tail; 27: two zmm; 38, 40:
// three zmm), and past four zmm, past lane groups (136) and past
// the last row tile (264: tiles of 144 and 112 + 8); K with a last lane K block of 128 (1040) and of 256 (400); N with a
// last block of B rows short of the kernel's (139). Checked against the
// float64 reference, lanes and tail on their own, f32 and bf16 out, the
// outputs poisoned first.
describe.skipIf(!ran)(`gemmFp8 (avx512bf16 path): the row-lane kernel's tail rows${ran ? '' : ` (skipped: this CPU runs ${cpuInfo().gemmIsa})`}`, () => {
  const random = rng();
  const n = 139;
  for (const k of [1040, 400]) {
    const b = quantizeWeightsSync(tensor(randomFloats(n * k, random, 0.05), [n, k]));
    for (const m of [5, 8, 9, 11, 12, 17, 18, 20, 21, 23, 24, 25, 26, 27, 33, 37, 38, 40, 41, 49, 56, 57, 65, 72, 136, 264]) {
      it(`M=${m} N=${n} K=${k}: lanes and tail match the float64 reference`, () => {
        const a = quantizeActivationsSync(tensor(randomActivations(m, k, random), [m, k]));
        const { exact, d, dBf16 } = poisonedProducts(a, b, m, n, k);
        const tailMax = m >= 32 && m < 48 ? 5 : 8;
        const lanes = m <= 11 ? Math.min(m, 8) : m >= 21 && m <= 26 ? Math.min(m, 24) : m >= 16 && m % 16 <= tailMax ? m - (m % 16) : m;
        for (const [from, to] of [[0, lanes], [lanes, m]].filter(([from, to]) => to > from)) {
          const part = (x: ArrayLike<number>) => Array.prototype.slice.call(x, from * n, to * n) as number[];
          expect(calcDiff(part(d), part(exact)), `rows ${from}..${to - 1} (f32 out) ${seedNote}`).toBeLessThan(1e-5);
          expect(calcDiff(part(dBf16), part(exact)), `rows ${from}..${to - 1} (bf16 out) ${seedNote}`).toBeLessThan(1e-5);
        }
      });
    }
  }
});

// The panel kernel (batchInvariant) runs a tile's odd last panel (32 columns) for two
// micro-panels of rows at a time: an even and an odd count of micro-panels
// (the last one then alone), rows cut 3 and 4, the odd panel written to D
// directly (N a multiple of 32) or through the accumulator tile (N tail),
// one and several K blocks of 512. Every 32-column slab is checked on its
// own against the float64 reference, so a wrong or missing panel shows.
describe.skipIf(!ran)(`gemmFp8 (avx512bf16 path): the panel kernel's odd last panel${ran ? '' : ` (skipped: this CPU runs ${cpuInfo().gemmIsa})`}`, () => {
  const random = rng();
  const shapes: Array<[number, number, number]> = [
    [72, 96, 1040],
    [69, 160, 400],
    [131, 95, 656],
    [77, 352, 2064],
  ];
  for (const [m, n, k] of shapes) {
    it(`M=${m} N=${n} K=${k}: every 32-column slab matches the float64 reference`, () => {
      const a = quantizeActivationsSync(tensor(randomActivations(m, k, random), [m, k]));
      const b = quantizeWeightsSync(tensor(randomFloats(n * k, random, 0.05), [n, k]));
      const { exact, d, dBf16 } = poisonedProducts(a, b, m, n, k, true);
      for (let j0 = 0; j0 < n; j0 += 32) {
        const cols = Math.min(32, n - j0);
        const slab = (x: ArrayLike<number>) => Array.from({ length: m * cols }, (_, e) => x[Math.floor(e / cols) * n + j0 + (e % cols)]);
        expect(calcDiff(slab(d), slab(exact)), `columns ${j0}.. (f32 out) ${seedNote}`).toBeLessThan(1e-5);
        expect(calcDiff(slab(dBf16), slab(exact)), `columns ${j0}.. (bf16 out) ${seedNote}`).toBeLessThan(1e-5);
      }
    });
  }
});

export {}; // a module: top-level await
