// The portable C++ path, which runs where no AVX2 is.
process.env.MOE_CPU_ISA = 'portable';
const { gemmSuite } = await import('./helpers/gemm-suite');

gemmSuite('portable');

export {}; // a module: top-level await
