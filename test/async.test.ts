import { describe, expect, it } from 'vitest';
import { gemmFp8, getNumThreads, quantizeActivationsSync, quantizeWeightsSync, setNumThreads, tensor } from '../lib/index';
import { randomFloats, rng } from './helpers/random';

describe('async operations run off the JS thread', () => {
  it('a long gemmFp8 leaves the event loop free', async () => {
    const random = rng();
    const [m, n, k] = [2048, 4096, 4096]; // ~69 GFLOP: over 50 ms even with AMX
    const a = quantizeActivationsSync(tensor(randomFloats(m * k, random), [m, k]));
    const b = quantizeWeightsSync(tensor(randomFloats(n * k, random), [n, k]));
    let ticks = 0;
    let worstGap = 0;
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      worstGap = Math.max(worstGap, now - last);
      last = now;
      ticks++;
    }, 2);
    // One compute thread leaves the JS thread a core on a 2-core machine (see
    // moe-layer.test.ts): a GEMM run on the JS thread would show a gap as
    // long as the GEMM itself.
    const threads = getNumThreads();
    setNumThreads(1);
    const started = performance.now();
    try {
      await gemmFp8(a, b);
    } finally {
      setNumThreads(threads);
    }
    const elapsed = performance.now() - started;
    clearInterval(timer);
    expect(elapsed).toBeGreaterThan(50);
    expect(ticks).toBeGreaterThan(5);
    expect(worstGap, `worst timer gap over a ${elapsed.toFixed(0)} ms GEMM`).toBeLessThan(Math.max(50, elapsed / 10));
  });

  it('thread count is settable', () => {
    const before = getNumThreads();
    setNumThreads(1);
    expect(getNumThreads()).toBe(1);
    setNumThreads(before);
    expect(getNumThreads()).toBe(before);
  });
});
