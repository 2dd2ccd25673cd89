/** `moe-kernels bench ...`: the microbenchmarks, as a table or as JSON. */
import { Command } from 'commander';
import { SingleBar, Presets } from 'cli-progress';
import { benchGemm, formatGemmReport, DEFAULT_MS } from '../bench/gemm';
import { setNumThreads } from '../runtime';
import { parseIntList, parsePositiveInt } from './parse';

/** A progress bar on stderr, only when a person is watching. */
export function progressBar(enabled: boolean): { update(done: number, total: number, label: string): void; stop(): void } {
  if (!enabled || !process.stderr.isTTY) return { update() {}, stop() {} };
  const bar = new SingleBar({ stream: process.stderr, format: ' {bar} {value}/{total} {label}' }, Presets.shades_classic);
  let started = false;
  return {
    update(done, total, label) {
      if (!started) bar.start(total, 0, { label });
      started = true;
      bar.update(done, { label });
    },
    stop() {
      if (started) bar.stop();
    },
  };
}

export function registerBenchCommands(program: Command): void {
  const bench = program.command('bench').description('run a microbenchmark against this machine\'s measured ceilings');
  bench
    .command('gemm')
    .description('FP8 GEMM at DeepSeek-V3 shapes: ms, GFLOP/s, GB/s, and ratios to the FMA peak and memory bandwidth')
    .option('--scale <n>', 'divide N and K by n to fit a small machine', parsePositiveInt, 1)
    .option('--m <list>', 'comma-separated M values', parseIntList, DEFAULT_MS)
    .option('--time <ms>', 'minimum measuring time per row, ms', parsePositiveInt, 400)
    .option('--threads <n>', 'CPU threads (default: MOE_NUM_THREADS or all)', parsePositiveInt)
    .option('--json', 'print JSON instead of a table')
    .action(async (opts: { scale: number; m: number[]; time: number; threads?: number; json?: boolean }) => {
      if (opts.threads) setNumThreads(opts.threads);
      const progress = progressBar(!opts.json);
      const report = await benchGemm({
        scale: opts.scale,
        ms: opts.m,
        timeMs: opts.time,
        onRow: (row, done, total) => progress.update(done, total, `N=${row.n} K=${row.k} M=${row.m}`),
      });
      progress.stop();
      console.log(opts.json ? JSON.stringify(report, null, 2) : formatGemmReport(report));
    });
}
