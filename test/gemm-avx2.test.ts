// The AVX2 path, forced on a CPU that would pick AVX-512.
process.env.MOE_CPU_ISA = 'avx2';
const { gemmSuite, rowBitsSuite } = await import('./helpers/gemm-suite');

gemmSuite('avx2');

// The streaming kernels (M <= 32: B decoded in registers up to M = 4, into an
// L1 panel above) do the same operations per output in the same K order
// (32-k chunks of four 8-lane FMAs, a 16-k tail in lanes 0..3, one
// horizontal sum), so a row's bits depend on K alone: whatever other rows
// share its call, wherever it sits, and across the switch between the two
// forms. K = 1040 has the 16-k tail and spans three of the panel form's
// 512-wide K chunks.
rowBitsSuite('avx2', [
  ['in-register form', 4, 2, 1],
  ['in-register form', 4, 1, 3],
  ['panel form', 32, 3, 5],
  ['panel form', 32, 6, 26],
  ['in-register and panel forms', 9, 2, 1],
  ['in-register and panel forms', 32, 27, 4],
]);

export {}; // a module: top-level await
