// The router's avx512 vector kernels, forced on a CPU that would pick a wider path.
process.env.MOE_CPU_ISA = 'avx512';
const { routerSuite } = await import('./helpers/router-suite');

routerSuite('avx512');

export {}; // a module: top-level await
