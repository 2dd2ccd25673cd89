// The AVX512_BF16 path (VDPBF16PS), forced on a CPU that would pick AMX; it
// skips with a message where the CPU lacks AVX512_BF16 or AVX512_VBMI.
process.env.MOE_CPU_ISA = 'avx512bf16';
const { gemmSuite } = await import('./helpers/gemm-suite');

gemmSuite('avx512bf16');

export {}; // a module: top-level await
