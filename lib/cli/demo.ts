/**
 * `moe-kernels demo`: a DeepSeek-V3-routed MoE layer end to end on the best
 * available backend: the config, a check of sampled tokens against a float64
 * reference of the same layer, tokens/s and the time per stage.
 */
import { Command } from 'commander';
import { calcDiff } from '../bench/diff';
import { formatTable } from '../bench/table';
import { fillNormal, seededRandom } from '../moe/random';
import { ForwardProfile, MoeLayer, STAGES } from '../moe/layer';
import { referenceForwardToken } from '../moe/reference';
import { cpuInfo, setNumThreads } from '../runtime';
import { Tensor, bf16FromFloat32 } from '../tensor';
import { LayerSourceOptions, addLayerSourceOptions, loadLayer } from './layer-source';
import { parsePositiveInt } from './parse';
import { progressBar } from './progress';

/** SPEC.md's tolerance for the whole layer. */
const LAYER_TOLERANCE = 2e-3;

interface DemoOptions extends LayerSourceOptions {
  tokens: number;
  check: number;
  json?: boolean;
}

/** Evenly spaced token indices, `count` of them. */
function sampleTokens(tokens: number, count: number): number[] {
  const n = Math.min(tokens, count);
  return Array.from({ length: n }, (_, i) => Math.floor((i * tokens) / n));
}

function checkTokens(layer: MoeLayer, x: Tensor, out: Tensor, sample: number[], onToken: (done: number) => void) {
  const h = layer.config.hiddenSize;
  const xs = x.toFloat32Array();
  const ys = out.toFloat32Array();
  const got: number[] = [];
  const want: number[] = [];
  let worst = 0;
  sample.forEach((t, i) => {
    const ref = referenceForwardToken(layer.config, layer.weights, Float64Array.from(xs.subarray(t * h, (t + 1) * h))).out;
    const row = ys.subarray(t * h, (t + 1) * h);
    worst = Math.max(worst, calcDiff(row, ref));
    got.push(...row);
    want.push(...ref);
    onToken(i + 1);
  });
  return { diff: calcDiff(got, want), worstTokenDiff: worst };
}

async function runDemo(opts: DemoOptions): Promise<void> {
  if (opts.threads) setNumThreads(opts.threads);
  const human = !opts.json;
  const layer = await loadLayer(opts, human);
  const c = layer.config;
  const info = cpuInfo();
  const random = seededRandom(opts.seed + 1);
  const x = bf16FromFloat32(fillNormal(new Float32Array(opts.tokens * c.hiddenSize), random, 1), [opts.tokens, c.hiddenSize]);

  await layer.forward(x); // warm-up: allocates the workspace
  const profile = {} as ForwardProfile;
  const started = performance.now();
  const out = await layer.forward(x, { profile });
  const ms = performance.now() - started;

  const progress = progressBar(human);
  const sample = sampleTokens(opts.tokens, opts.check);
  const check = checkTokens(layer, x, out, sample, (done) => progress.update(done, sample.length, 'float64 reference'));
  progress.stop();
  const pass = check.diff < LAYER_TOLERANCE;
  const result = {
    config: c,
    backend: { name: 'cpu', isa: info.gemmIsa, threads: info.threads },
    weightBytes: layer.weightBytes,
    tokens: opts.tokens,
    ms,
    tokensPerSecond: (opts.tokens / ms) * 1e3,
    activeExperts: profile.activeExperts,
    stages: profile.stages,
    check: { tokens: sample.length, ...check, tolerance: LAYER_TOLERANCE, pass },
  };
  if (!pass) process.exitCode = 1;
  if (opts.json) {
    console.log(JSON.stringify(result, null, 2));
    return;
  }
  const total = STAGES.reduce((t, s) => t + profile.stages[s], 0);
  console.log(
    [
      `MoE layer (DeepSeek-V3 routing): H=${c.hiddenSize} I=${c.intermediateSize} E=${c.numExperts} top-${c.topK}, ` +
        `${c.numGroups} groups of which ${c.topKGroups} kept, ${c.scoring} scoring, scale ${c.routedScalingFactor}, ` +
        `${c.numSharedExperts} shared expert(s); fp8 expert weights ${(layer.weightBytes / 2 ** 20).toFixed(0)} MiB`,
      `backend: cpu (${info.gemmIsa}, ${info.threads} threads)`,
      `check: ${sample.length} sampled tokens vs a float64 reference of the same layer: diff ${check.diff.toExponential(2)} ` +
        `(worst token ${check.worstTokenDiff.toExponential(2)}; tolerance ${LAYER_TOLERANCE}) ${pass ? 'PASS' : 'FAIL'}`,
      `forward: ${opts.tokens} tokens in ${ms.toFixed(2)} ms = ${result.tokensPerSecond.toFixed(1)} tokens/s; ${profile.activeExperts} experts hit`,
      ...formatTable(['stage', 'ms', '%'], STAGES.map((s) => [s, profile.stages[s].toFixed(3), ((100 * profile.stages[s]) / total).toFixed(1)])),
    ].join('\n'),
  );
}

export function registerDemoCommand(program: Command): void {
  addLayerSourceOptions(
    program
      .command('demo')
      .description('run a DeepSeek-V3-routed MoE layer, check sampled tokens against a float64 reference, and time each stage'),
    8,
  )
    .option('--tokens <n>', 'tokens in the batch', parsePositiveInt, 256)
    .option('--check <n>', 'tokens checked against the float64 reference', parsePositiveInt, 8)
    .option('--json', 'print JSON')
    .action(runDemo);
}
