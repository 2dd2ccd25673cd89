// The AVX2 path, forced on a CPU that would pick AVX-512.
process.env.MOE_CPU_ISA = 'avx2';
const { gemmSuite } = await import('./helpers/gemm-suite');

gemmSuite('avx2');

export {}; // a module: top-level await
