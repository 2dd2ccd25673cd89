// The AVX-512 FMA path, forced on a CPU that would pick AVX512_BF16 or AMX.
process.env.MOE_CPU_ISA = 'avx512';
const { gemmSuite } = await import('./helpers/gemm-suite');

gemmSuite('avx512');

export {}; // a module: top-level await
