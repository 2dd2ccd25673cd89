/** Median wall time of a function, through tinybench. */
export interface TimingOptions {
  /** Minimum total measuring time, ms. */
  timeMs: number;
  /** Minimum number of measured runs. */
  iterations: number;
  /**
   * Runs before every measured call, outside the timed window (evicting the
   * caches). The measuring time is then capped at MAX_RUNS_WITH_SETUP times
   * one call's, so that the untimed setup cannot dominate the wall time.
   */
  beforeEach?: () => unknown;
}

const MAX_RUNS_WITH_SETUP = 30;

export async function medianMs(fn: () => unknown, options: TimingOptions): Promise<number> {
  const { Bench } = await import('tinybench');
  let timeMs = options.timeMs;
  if (options.beforeEach) {
    options.beforeEach();
    const start = performance.now();
    fn();  // the warm-up, timed to size the measuring time
    timeMs = Math.min(timeMs, MAX_RUNS_WITH_SETUP * (performance.now() - start));
  }
  const bench = new Bench({ time: timeMs, iterations: options.iterations, warmupIterations: options.beforeEach ? 0 : 1, warmupTime: 0 });
  const beforeEach = options.beforeEach;
  bench.add('run', fn, beforeEach ? { beforeEach: () => void beforeEach() } : {});
  await bench.run();
  const result = bench.tasks[0].result;
  if (result.state !== 'completed') throw new Error(`benchmark did not complete: ${result.state}`);
  return result.latency.p50;
}
