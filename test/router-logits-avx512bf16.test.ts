// The router's AVX512_BF16 kernel (VDPBF16PS) and, for f32 operands, its AVX-512
// FMA kernels: forced on a CPU that would pick AMX; skips where the CPU lacks AVX512_BF16.
process.env.MOE_CPU_ISA = 'avx512bf16';
const { routerSuite } = await import('./helpers/router-suite');

routerSuite('avx512bf16');

export {}; // a module: top-level await
