// The AVX2 path, forced on a CPU that would pick AVX-512.
process.env.MOE_CPU_ISA = 'avx2';
const { gemmSuite, rowBitsSuite } = await import('./helpers/gemm-suite');

gemmSuite('avx2');

// The streaming kernels (M <= 32: B decoded in registers up to M = 14, in
// blocks of up to 4 rows of A, into an L1 panel above) do the same
// operations per output in the same K order (32-k chunks of four 8-lane
// FMAs, a 16-k tail in lanes 0..3, one horizontal sum), so a row's bits
// depend on K alone: whatever other rows share its call, wherever it sits,
// whichever block of rows holds it, and across the switch between the two
// forms. K = 1040 has the 16-k tail and spans three of the panel form's
// 512-wide K chunks.
rowBitsSuite('avx2', [
  ['in-register form', 4, 2, 1],
  ['in-register form', 4, 1, 3],
  ['in-register form, rows in blocks', 10, 3, 5],
  ['in-register form, rows in blocks', 7, 0, 2],
  ['in-register form, rows in blocks', 14, 5, 9],
  ['in-register and panel forms', 32, 3, 5],
  ['panel form', 32, 6, 26],
  ['in-register and panel forms', 16, 2, 1],
  ['in-register and panel forms', 32, 27, 4],
]);

// K = 400 (<= 512, one K chunk, with the 16-k tail): the panel form decodes
// the next panel of B while it multiplies this one (two buffers taking
// turns), which must not move a bit either. N = 300 runs in tasks of 16 B
// rows: a panel of 12, then one of 4.
rowBitsSuite('avx2', [
  ['panel form, next panel decoded alongside', 16, 3, 13],
  ['in-register and panel forms, next panel decoded alongside', 16, 12, 4],
  ['in-register and panel forms, next panel decoded alongside', 15, 0, 1],
], 400);

export {}; // a module: top-level await
