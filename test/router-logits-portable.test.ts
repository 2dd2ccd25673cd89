// The router's portable vector kernels, forced on a CPU that would pick a wider path.
process.env.MOE_CPU_ISA = 'portable';
const { routerSuite } = await import('./helpers/router-suite');

routerSuite('portable');

export {}; // a module: top-level await
