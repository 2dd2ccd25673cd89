/** `moe-kernels bench ...`: the microbenchmarks, as a table or as JSON. */
import { Command } from 'commander';
import { benchGemm, formatGemmReport, DEFAULT_MS } from '../bench/gemm';
import { setNumThreads } from '../runtime';
import { benchMoe, formatMoeReport, DEFAULT_TOKENS } from '../bench/moe';
import { CUDA_DEFAULT_TOKENS, benchMoeCuda, formatMoeCudaReport, randomDeviceLayer } from '../bench/moe-cuda';
import { DEEPSEEK_V3_CONFIG } from '../moe/config';
import { MoeError } from '../errors';
import { LayerSourceOptions, addLayerSourceOptions, loadLayer } from './layer-source';
import { parseIntList, parsePositiveInt } from './parse';
import { progressBar } from './progress';
import { EP_DEFAULT_TOKENS, benchEp, formatEpReport } from '../bench/ep';
import { initExpertParallel } from '../ep/communicator';
import { MoeLayer } from '../moe/layer';
import { scaledDeepSeekV3 } from '../moe/config';
import { benchServe, formatServeReport } from '../bench/serve';

export function registerBenchCommands(program: Command): void {
  const bench = program.command('bench').description('run a microbenchmark against this machine\'s measured ceilings');
  bench
    .command('gemm')
    .description('FP8 GEMM at DeepSeek-V3 shapes: ms, GFLOP/s, GB/s, and ratios to the compute ceiling (AMX, VDPBF16PS or FMA), the FMA peak and the memory bandwidth, probed before and after every row')
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

  // Sizes divided by 4 by default (H = 1792, I = 512; 705 MiB of fp8 experts),
  // not by 8 as in the demo: SwiGLU, combine and the routing cost per token
  // ~H + I while the GEMMs cost ~H x I, so every halving of both sizes doubles
  // the other stages' share against DeepSeek-V3's real layer. A quarter of the
  // size is the largest that runs the five batches in well under a minute on a
  // small machine; --scale 8, 2 or --full for others.
  addLayerSourceOptions(
    bench
      .command('moe')
      .description("the MoE layer: tokens/s, stage shares, and the layer's time against its roofline on this machine"),
    4,
  )
    .option('--tokens <list>', 'comma-separated token counts (cuda default: 1,16,128,1024,4096)', parseIntList)
    .option('--time <ms>', 'minimum measuring time per row, ms', parsePositiveInt, 1000)
    .option('--backend <name>', "'cpu' (default) or 'cuda': the layer on the GPU at DeepSeek-V3's full shape (or --model), time vs its GEMMs", 'cpu')
    .option('--warm-cache', "cpu: don't evict the weights from the caches before each timed forward (they stay cached from the previous one)")
    .option('--batch-invariant', 'cpu: also time each T with batchInvariant: true (columns: its ms and its cost over the default)')
    .option('--json', 'print JSON instead of a table')
    .action(async (opts: LayerSourceOptions & { tokens?: number[]; time: number; warmCache?: boolean; batchInvariant?: boolean; json?: boolean; backend: string }) => {
      if (opts.backend !== 'cpu' && opts.backend !== 'cuda') throw new MoeError('ERR_MOE_RANGE', `bench moe: --backend must be cpu or cuda, got ${opts.backend}`);
      if (opts.backend === 'cuda') {
        // Full DeepSeek-V3 shape with random weights built on the GPU, or a checkpoint's layer moved there.
        const layer = opts.model ? (await loadLayer(opts, !opts.json)).to('cuda') : randomDeviceLayer(DEEPSEEK_V3_CONFIG);
        const rows = await benchMoeCuda(layer, opts.tokens ?? CUDA_DEFAULT_TOKENS, (row) => {
          if (!opts.json) process.stderr.write(`T=${row.tokens}: ${row.ms.toFixed(3)} ms\n`);
        });
        console.log(opts.json ? JSON.stringify({ config: layer.config, rows }, null, 2) : formatMoeCudaReport(rows, layer.config));
        return;
      }
      opts.tokens = opts.tokens ?? DEFAULT_TOKENS;
      if (opts.threads) setNumThreads(opts.threads);
      const layer = await loadLayer(opts, !opts.json);
      const progress = progressBar(!opts.json);
      const report = await benchMoe(layer, {
        tokenCounts: opts.tokens,
        timeMs: opts.time,
        warmCache: opts.warmCache,
        batchInvariant: opts.batchInvariant,
        onRow: (row, done, total) => progress.update(done, total, `T=${row.tokens}`),
      });
      progress.stop();
      console.log(opts.json ? JSON.stringify(report, null, 2) : formatMoeReport(report));
    });

  // Run under mpirun: every rank runs this command; rank 0 prints.
  bench
    .command('ep')
    .description('expert parallelism (run under mpirun -np N): tokens/s, dispatch/combine GB/s next to MPI_Alltoallv of the same bytes, bytes saved')
    .option('--scale <n>', "divide DeepSeek-V3's H and I by n (E = 256, k = 8 kept)", parsePositiveInt, 8)
    .option('--tokens <list>', 'comma-separated tokens per rank', parseIntList, EP_DEFAULT_TOKENS)
    .option('--time <ms>', 'measuring time per row, ms', parsePositiveInt, 1000)
    .option('--threads <n>', 'CPU threads per rank (default: MOE_NUM_THREADS or all)', parsePositiveInt)
    .option('--json', 'print JSON instead of a table')
    .action(async (opts: { scale: number; tokens: number[]; time: number; threads?: number; json?: boolean }) => {
      if (opts.threads) setNumThreads(opts.threads);
      const ep = initExpertParallel();
      const layer = MoeLayer.random(scaledDeepSeekV3(opts.scale), { seed: 1, ep });
      const rows = await benchEp(layer, { tokenCounts: opts.tokens, timeMs: opts.time });
      if (ep.rank !== 0) return;
      console.log(opts.json ? JSON.stringify({ config: layer.config, ranks: ep.size, library: ep.comm.library, rows }, null, 2) : formatEpReport(rows, layer, ep.comm.library));
    });

  bench
    .command('serve')
    .description('examples/server under load on 127.0.0.1 (autocannon): batched vs unbatched req/s, tokens/s, mean batch, p50/p99, /health p99')
    .option('--connections <list>', 'comma-separated connection counts', parseIntList, [1, 16, 64, 256])
    .option('--duration <s>', 'seconds per run', parsePositiveInt, 5)
    .option('--scale <n>', "the server's random layer: DeepSeek-V3's H and I divided by n", parsePositiveInt, 8)
    .option('--seed <n>', "the random layer's seed", parsePositiveInt, 1)
    .option('--json', 'print JSON instead of a table')
    .action(async (opts: { connections: number[]; duration: number; scale: number; seed: number; json?: boolean }) => {
      const report = await benchServe({
        connections: opts.connections,
        durationS: opts.duration,
        scale: opts.scale,
        seed: opts.seed,
        onProgress: opts.json ? undefined : (what) => process.stderr.write(`${what}\n`),
      });
      console.log(opts.json ? JSON.stringify(report, null, 2) : formatServeReport(report));
    });
}
