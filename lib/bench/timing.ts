/** Median wall time of a function, through tinybench. */
export interface TimingOptions {
  /** Minimum total measuring time, ms. */
  timeMs: number;
  /** Minimum number of measured runs. */
  iterations: number;
}

export async function medianMs(fn: () => unknown, options: TimingOptions): Promise<number> {
  const { Bench } = await import('tinybench');
  const bench = new Bench({ time: options.timeMs, iterations: options.iterations, warmupIterations: 1, warmupTime: 0 });
  bench.add('run', fn);
  await bench.run();
  const result = bench.tasks[0].result;
  if (result.state !== 'completed') throw new Error(`benchmark did not complete: ${result.state}`);
  return result.latency.p50;
}
