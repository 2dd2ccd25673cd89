// The AVX512_BF16 path (VDPBF16PS), forced on a CPU that would pick AMX; it
// skips with a message where the CPU lacks AVX512_BF16 or AVX512_VBMI.
process.env.MOE_CPU_ISA = 'avx512bf16';
const { gemmSuite } = await import('./helpers/gemm-suite');
const { describe, expect, it } = await import('vitest');
const { cpuInfo, gemmFp8Sync, quantizeActivationsSync, quantizeWeightsSync, tensor } = await import('../lib/index');
const { randomActivations, randomFloats, rng, seedNote } = await import('./helpers/random');

gemmSuite('avx512bf16');

// Within one kernel (dot: M <= 8; panels: M > 8) a row's K reduction order is
// fixed by K alone (gemm_fp8_kernels.h): the same row must give the same bits
// whatever other rows share its call, and wherever it sits among them.
const ran = cpuInfo().gemmIsa === 'avx512bf16';
describe.skipIf(!ran)(`gemmFp8 (avx512bf16 path): a row's bits do not depend on its batch${ran ? '' : ` (skipped: this CPU runs ${cpuInfo().gemmIsa})`}`, () => {
  const random = rng();
  const [n, k] = [300, 1040];
  const b = quantizeWeightsSync(tensor(randomFloats(n * k, random, 0.05), [n, k]));
  const x = randomActivations(130, k, random);
  const rows = (from: number, count: number) => gemmFp8Sync(quantizeActivationsSync(tensor(x.subarray(from * k, (from + count) * k), [count, k])), b, { out: 'f32' }).data as Float32Array;

  for (const [label, full, from, count] of [
    ['dot kernel', 8, 2, 1],
    ['dot kernel', 8, 3, 5],
    ['panel kernel', 130, 7, 9],
    ['panel kernel', 130, 60, 70],
  ] as Array<[string, number, number, number]>) {
    it(`${label}: rows ${from}..${from + count - 1} alone and inside M=${full}`, () => {
      const all = rows(0, full);
      const part = rows(from, count);
      const same = Buffer.compare(Buffer.from(part.buffer, part.byteOffset, part.byteLength),
        Buffer.from(all.buffer, all.byteOffset + from * n * 4, count * n * 4));
      expect(same, `rows ${from}.. of M=${full} ${seedNote}`).toBe(0);
    });
  }
});

export {}; // a module: top-level await
