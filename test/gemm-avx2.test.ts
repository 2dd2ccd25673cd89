// The AVX2 path, forced on a CPU that would pick AVX-512.
process.env.MOE_CPU_ISA = 'avx2';
const { gemmSuite } = await import('./helpers/gemm-suite');
const { describe, expect, it } = await import('vitest');
const { cpuInfo, gemmFp8Sync, quantizeActivationsSync, quantizeWeightsSync, tensor } = await import('../lib/index');
const { randomActivations, randomFloats, rng, seedNote } = await import('./helpers/random');

gemmSuite('avx2');

// The streaming kernels (M <= 32: B decoded in registers up to M = 4, into an
// L1 panel above) do the same operations per output in the same K order
// (32-k chunks of four 8-lane FMAs, a 16-k tail in lanes 0..3, one
// horizontal sum), so a row's bits depend on K alone: whatever other rows
// share its call, wherever it sits, and across the switch between the two
// forms. K = 1040 has the 16-k tail and spans three of the panel form's
// 512-wide K chunks.
const ran = cpuInfo().gemmIsa === 'avx2';
describe.skipIf(!ran)(`gemmFp8 (avx2 path): a streamed row's bits do not depend on its batch${ran ? '' : ` (skipped: this CPU runs ${cpuInfo().gemmIsa})`}`, () => {
  const random = rng();
  const [n, k] = [300, 1040];
  const b = quantizeWeightsSync(tensor(randomFloats(n * k, random, 0.05), [n, k]));
  const x = randomActivations(32, k, random);
  const rows = (from: number, count: number) => gemmFp8Sync(quantizeActivationsSync(tensor(x.subarray(from * k, (from + count) * k), [count, k])), b, { out: 'f32' }).data as Float32Array;

  for (const [label, full, from, count] of [
    ['in-register form', 4, 2, 1],
    ['in-register form', 4, 1, 3],
    ['panel form', 32, 3, 5],
    ['panel form', 32, 6, 26],
    ['in-register and panel forms', 9, 2, 1],
    ['in-register and panel forms', 32, 27, 4],
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
