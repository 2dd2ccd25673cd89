// The router's avx2 vector kernels, forced on a CPU that would pick a wider path.
process.env.MOE_CPU_ISA = 'avx2';
const { routerSuite } = await import('./helpers/router-suite');

routerSuite('avx2');

export {}; // a module: top-level await
