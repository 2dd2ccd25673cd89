/**
 * `moe-kernels bench moe`: the MoE layer's tokens/s at several batch sizes,
 * the share of each stage, and the layer's time against its roofline on this
 * machine: for each GEMM the larger of (FLOPs / compute ceiling) and
 * (bytes / memory bandwidth), summed over the layer's GEMMs. The compute
 * ceiling is the fastest exact-fp8-product instruction the GEMM uses (AMX,
 * VDPBF16PS, else FMA); the ceilings are measured right before and right
 * after each row, which divides by the larger of the two.
 */
import type { MoeConfig } from '../moe/config';
import { ForwardProfile, MoeLayer, STAGES, StageTimes } from '../moe/layer';
import { bf16FromFloat32, empty } from '../tensor';
import { fillNormal, seededRandom } from '../moe/random';
import { weightEvictor } from './cache-evictor';
import { Ceilings, CeilingRange, betweenCeilings, ceilingRange, computeCeiling, formatCeilingRange, measureCeilings } from './ceilings';
import { formatTable } from './table';
import { medianMs } from './timing';

export const DEFAULT_TOKENS = [1, 8, 64, 512, 4096];

interface Gemm {
  name: string;
  flops: number;
  bytes: number;
}

/** The layer's GEMMs for T tokens of which `activeExperts` experts receive some. */
export function layerGemms(c: MoeConfig, tokens: number, activeExperts: number): Gemm[] {
  const { hiddenSize: h, intermediateSize: i, numExperts: e, topK: k } = c;
  const rows = tokens * k;
  const is = i * c.numSharedExperts;
  const gemms: Gemm[] = [
    { name: 'router', flops: 2 * tokens * e * h, bytes: e * h * 2 + tokens * h * 2 + tokens * e * 4 },
    { name: 'w13', flops: 2 * rows * 2 * i * h, bytes: activeExperts * 2 * i * h + rows * h + rows * 2 * i * 2 },
    { name: 'w2', flops: 2 * rows * h * i, bytes: activeExperts * h * i + rows * i + rows * h * 2 },
  ];
  if (is > 0) {
    gemms.push(
      { name: 'shared w13', flops: 2 * tokens * 2 * is * h, bytes: 2 * is * h + tokens * h + tokens * 2 * is * 2 },
      { name: 'shared w2', flops: 2 * tokens * h * is, bytes: h * is + tokens * is + tokens * h * 2 },  // out: bf16, as the routed experts' y
    );
  }
  return gemms;
}

export function rooflineMs(gemms: Gemm[], ceilings: Ceilings): number {
  const peak = computeCeiling(ceilings).gflops;
  return gemms.reduce((ms, g) => ms + Math.max(g.flops / (peak * 1e6), g.bytes / (ceilings.memoryGBs * 1e6)), 0);
}

export interface MoeBenchRow {
  tokens: number;
  ms: number;
  tokensPerSecond: number;
  rooflineMs: number;
  /** layer time / roofline time (1 = at the roofline) */
  rooflineRatio: number;
  /** share of routing, layout, dispatch, SwiGLU and combine in the layer time */
  nonGemmShare: number;
  activeExperts: number;
  stages: StageTimes;
  /** The larger of the ceilings measured right before and right after this row. */
  ceilings: Ceilings;
  /** With batchInvariant: the forward's time, ms, and its ratio to `ms` (the cost of invariance). */
  invariantMs?: number;
  invariantCost?: number;
}

export interface MoeBenchReport {
  config: MoeConfig;
  weightBytes: number;
  /** The compute ceiling's instruction. */
  computeInstruction: string;
  /** The lowest and highest of each ceiling over the run's probes. */
  ceilingRange: CeilingRange;
  /** whether the weights were evicted from the caches before every timed forward (read from memory) */
  coldCache: boolean;
  rows: MoeBenchRow[];
  targets: Array<{ name: string; worst: number; target: number; pass: boolean }>;
}

const NON_GEMM: (keyof StageTimes)[] = ['route', 'layout', 'dispatch', 'swiglu', 'combine'];

export interface MoeBenchOptions {
  tokenCounts: number[];
  /** minimum measuring time per row, ms (with cold caches, at most 30 forwards' worth) */
  timeMs: number;
  /**
   * Leave the weights cached as the previous forward left them. By default
   * they are evicted before every timed forward: in a model every layer reads
   * its weights from memory, as the roofline assumes.
   */
  warmCache?: boolean;
  /** Also time every T with batchInvariant: true (the price of pinning one kernel path per row). */
  batchInvariant?: boolean;
  onRow?: (row: MoeBenchRow, done: number, total: number) => void;
}

/**
 * How bench moe times a forward: the median of at least 3 runs over at least
 * timeMs, with `evict` (weightEvictor) run before each where it is defined.
 */
export function forwardMedianMs(forward: () => void, timeMs: number, evict: (() => void) | undefined): Promise<number> {
  return medianMs(forward, { timeMs, iterations: 3, beforeEach: evict });
}

export async function benchMoe(layer: MoeLayer, options: MoeBenchOptions): Promise<MoeBenchReport> {
  const { tokenCounts, timeMs, onRow } = options;
  let before = measureCeilings();
  const probes = [before];
  const evict = options.warmCache ? undefined : weightEvictor(layer);
  const random = seededRandom(7);
  const rows: MoeBenchRow[] = [];
  for (const tokens of tokenCounts) {
    const h = layer.config.hiddenSize;
    const x = bf16FromFloat32(fillNormal(new Float32Array(tokens * h), random, 1), [tokens, h]);
    const stageSum = Object.fromEntries(STAGES.map((s) => [s, 0])) as unknown as StageTimes;
    let runs = 0;
    const profile = {} as ForwardProfile;
    // One output for every run, as a serving loop reuses its buffers: a fresh
    // [T, H] output per forward would add the page faults of first touching it
    // (~3 ms at T = 4096, H = 896 on the development VM), charged to combine,
    // which writes it.
    const into = empty([tokens, h], 'bf16');
    const timed = await betweenCeilings(before, () =>
      forwardMedianMs(
        () => {
          layer.forwardSync(x, { profile, into });
          runs++;
          for (const s of STAGES) stageSum[s] += profile.stages[s];
        },
        timeMs,
        evict,
      ),
    );
    before = timed.after;
    probes.push(timed.after);
    const { ceilings, result: ms } = timed;
    // Timed right after the default forward, on the same input and output.
    const invariantMs = options.batchInvariant
      ? await forwardMedianMs(() => layer.forwardSync(x, { into, batchInvariant: true }), timeMs, evict)
      : undefined;
    const stages = Object.fromEntries(STAGES.map((s) => [s, stageSum[s] / runs])) as unknown as StageTimes;
    const stageTotal = STAGES.reduce((t, s) => t + stages[s], 0);
    const roof = rooflineMs(layerGemms(layer.config, tokens, profile.activeExperts), ceilings);
    const row: MoeBenchRow = {
      tokens,
      ms,
      tokensPerSecond: (tokens / ms) * 1e3,
      rooflineMs: roof,
      rooflineRatio: ms / roof,
      nonGemmShare: NON_GEMM.reduce((t, s) => t + stages[s], 0) / stageTotal,
      activeExperts: profile.activeExperts,
      stages,
      ceilings,
      ...(invariantMs !== undefined ? { invariantMs, invariantCost: invariantMs / ms } : {}),
    };
    rows.push(row);
    onRow?.(row, rows.length, tokenCounts.length);
  }
  const targets: MoeBenchReport['targets'] = [];
  const check = (name: string, values: number[], target: number, below: boolean) => {
    if (values.length === 0) return;
    const worst = below ? Math.max(...values) : Math.min(...values);
    targets.push({ name, worst, target, pass: below ? worst <= target : worst >= target });
  };
  check('routing + layout + dispatch + swiglu + combine share at T >= 64', rows.filter((r) => r.tokens >= 64).map((r) => r.nonGemmShare), 0.1, true);
  check('layer time / roofline at every T', rows.map((r) => r.rooflineRatio), 1.4, true);
  return {
    config: layer.config,
    weightBytes: layer.weightBytes,
    computeInstruction: computeCeiling(before).instruction,
    ceilingRange: ceilingRange(probes),
    coldCache: evict !== undefined,
    rows,
    targets,
  };
}

export function formatMoeReport(report: MoeBenchReport): string {
  const c = report.config;
  const invariant = report.rows.some((r) => r.invariantMs !== undefined);
  const lines = [
    `MoE layer: H=${c.hiddenSize} I=${c.intermediateSize} E=${c.numExperts} top-${c.topK} (${c.numGroups} groups, ${c.topKGroups} kept), ` +
      `${c.numSharedExperts} shared; fp8 expert weights ${(report.weightBytes / 2 ** 20).toFixed(0)} MiB`,
    `roofline: per GEMM max(bytes / memory bandwidth, flops / ${report.computeInstruction} peak), summed`,
    formatCeilingRange(report.ceilingRange),
    report.coldCache
      ? 'weights evicted from the caches before every timed forward: read from memory, as by each layer of a model'
      : 'warm caches: weights left in cache by the previous forward (faster than a model\'s layers see)',
    ...formatTable(
      ['T', 'ms', 'tokens/s', 'experts hit', 'peak GFLOP/s', 'mem GB/s', 'roofline ms', 'x roofline', 'non-GEMM %', ...STAGES.map((s) => `${s} %`), ...(invariant ? ['invariant ms', 'invariant cost'] : [])],
      report.rows.map((r) => {
        const total = STAGES.reduce((t, s) => t + r.stages[s], 0);
        return [
          String(r.tokens), r.ms.toFixed(2), r.tokensPerSecond.toFixed(1), String(r.activeExperts),
          computeCeiling(r.ceilings).gflops.toFixed(0), r.ceilings.memoryGBs.toFixed(1), r.rooflineMs.toFixed(2),
          r.rooflineRatio.toFixed(2), (100 * r.nonGemmShare).toFixed(1), ...STAGES.map((s) => ((100 * r.stages[s]) / total).toFixed(1)),
          ...(invariant ? [r.invariantMs!.toFixed(2), `${r.invariantCost!.toFixed(2)}x`] : []),
        ];
      }),
    ),
  ];
  for (const t of report.targets) {
    lines.push(`${t.pass ? 'PASS' : 'MISS'}  ${t.name}: worst ${t.worst.toFixed(3)} (target <= ${t.target})`);
  }
  return lines.join('\n');
}
