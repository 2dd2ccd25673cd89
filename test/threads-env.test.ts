// MOE_NUM_THREADS sizes the pool when the addon first loads.
process.env.MOE_NUM_THREADS = '3';
const { getNumThreads } = await import('../lib/index');
const { expect, it } = await import('vitest');

it('MOE_NUM_THREADS sets the CPU thread count', () => {
  expect(getNumThreads()).toBe(3);
});

export {}; // a module: top-level await
