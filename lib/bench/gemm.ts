/**
 * `moe-kernels bench gemm`: the FP8 GEMM at DeepSeek-V3's (N, K) pairs, as
 * time, GFLOP/s and GB/s, and as ratios to this machine's ceilings measured
 * right before and right after each row (ceilings.ts): the compute ceiling of
 * the fastest exact-fp8-product instruction the path uses (AMX, VDPBF16PS or
 * FMA; the FMA peak is printed beside it) and the memory bandwidth.
 *
 * Napkin math: a GEMM does 2*M*N*K flops and moves at least N*K weight bytes
 * (fp8) + M*K activation bytes + M*N*2 output bytes (bf16). At M = 1 it is
 * memory-bound (2 flops per weight byte); at M >= 512 compute-bound. A row's
 * roofline time is max(bytes / bandwidth, flops / compute ceiling).
 */
import { gemmFp8Sync } from '../ops/gemm';
import { empty } from '../tensor';
import { cpuInfo } from '../runtime';
import { Ceilings, CeilingRange, betweenCeilings, ceilingRange, computeCeiling, formatCeilingRange, measureCeilings } from './ceilings';
import { coldWeightCopies, randomQuantized } from './operands';
import { formatTable } from './table';
import { medianMs } from './timing';

/** DeepSeek-V3's dense GEMM (N, K) pairs, as in DeepGEMM's published table. */
export const DEEPSEEK_V3_NK: ReadonlyArray<readonly [number, number]> = [
  [2112, 7168],
  [24576, 1536],
  [32768, 512],
  [7168, 16384],
  [4096, 7168],
  [7168, 2048],
];

export const DEFAULT_MS = [1, 16, 64, 128, 1024];

export interface GemmBenchOptions {
  /** Divide N and K by this (K stays a multiple of 16). */
  scale: number;
  ms: number[];
  /** Minimum measuring time per row, ms. */
  timeMs: number;
  onRow?: (row: GemmBenchRow, index: number, total: number) => void;
}

export interface GemmBenchRow {
  m: number;
  n: number;
  k: number;
  ms: number;
  gflops: number;
  gbs: number;
  /** The larger of the ceilings measured right before and right after this row. */
  ceilings: Ceilings;
  /** The compute ceiling's instruction and GFLOP/s (of `ceilings`). */
  computeInstruction: string;
  computeGflops: number;
  /** GFLOP/s over the compute ceiling. */
  peakRatio: number;
  /** GFLOP/s over the FMA peak. */
  fmaRatio: number;
  /** GB/s over the memory bandwidth. */
  bandwidthRatio: number;
  /** time / max(bytes / bandwidth, flops / compute ceiling): 1 = at the roofline. */
  rooflineRatio: number;
}

export interface GemmBenchReport {
  isa: string;
  threads: number;
  /** The lowest and highest of each ceiling over the run's probes. */
  ceilingRange: CeilingRange;
  rows: GemmBenchRow[];
  targets: TargetCheck[];
}

export interface TargetCheck {
  name: string;
  worst: number;
  target: number;
  /** true: the worst row must be at or below the target (a time ratio); false: at or above (an efficiency). */
  atMost: boolean;
  pass: boolean;
}

export function scaledShape(n: number, k: number, scale: number): [number, number] {
  return [Math.max(1, Math.round(n / scale)), Math.max(16, Math.round(k / scale / 16) * 16)];
}

export async function benchGemm(options: GemmBenchOptions): Promise<GemmBenchReport> {
  let before = measureCeilings();
  const probes = [before];
  const rows: GemmBenchRow[] = [];
  const total = DEEPSEEK_V3_NK.length * options.ms.length;
  for (const [fullN, fullK] of DEEPSEEK_V3_NK) {
    const [n, k] = scaledShape(fullN, fullK, options.scale);
    const weights = coldWeightCopies(n, k);
    for (const m of options.ms) {
      const a = randomQuantized(m, k, 1);
      const d = empty([m, n], 'bf16');
      let next = 0;
      const timed = await betweenCeilings(before, () =>
        medianMs(
          () => {
            gemmFp8Sync(a, weights[next], { into: d });
            next = (next + 1) % weights.length;
          },
          { timeMs: options.timeMs, iterations: 5 },
        ),
      );
      before = timed.after;
      probes.push(timed.after);
      const ms = timed.result;
      const { ceilings } = timed;
      const compute = computeCeiling(ceilings);
      const flops = 2 * m * n * k;
      const bytes = n * k + m * k + m * n * 2;
      const gflops = flops / ms / 1e6;
      const gbs = bytes / ms / 1e6;
      const rooflineMs = Math.max(bytes / (ceilings.memoryGBs * 1e6), flops / (compute.gflops * 1e6));
      const row: GemmBenchRow = {
        m, n, k, ms, gflops, gbs, ceilings,
        computeInstruction: compute.instruction,
        computeGflops: compute.gflops,
        peakRatio: gflops / compute.gflops,
        fmaRatio: gflops / ceilings.fmaPeakGflops,
        bandwidthRatio: gbs / ceilings.memoryGBs,
        rooflineRatio: ms / rooflineMs,
      };
      rows.push(row);
      options.onRow?.(row, rows.length, total);
    }
  }
  const info = cpuInfo();
  return { isa: info.gemmIsa, threads: info.threads, ceilingRange: ceilingRange(probes), rows, targets: checkTargets(rows) };
}

/**
 * The targets: at M >= 512, >= 70% of the exact-instruction peak (80% where
 * that is the FMA); at M = 16..128, time <= 1.5x the roofline; at M = 1, the
 * bytes at >= 75% of the memory bandwidth.
 */
function checkTargets(rows: GemmBenchRow[]): TargetCheck[] {
  const checks: TargetCheck[] = [];
  const add = (name: string, values: number[], target: number, atMost: boolean) => {
    if (values.length === 0) return;
    const worst = atMost ? Math.max(...values) : Math.min(...values);
    checks.push({ name, worst, target, atMost, pass: atMost ? worst <= target : worst >= target });
  };
  const large = rows.filter((r) => r.m >= 512);
  const fmaOnly = large.length > 0 && large[0].computeInstruction.endsWith('FMA');
  add(`% of the ${large[0]?.computeInstruction ?? ''} peak at M >= 512`, large.map((r) => r.peakRatio), fmaOnly ? 0.8 : 0.7, false);
  add('x roofline at M = 16..128', rows.filter((r) => r.m >= 16 && r.m <= 128).map((r) => r.rooflineRatio), 1.5, true);
  add('% of memory bandwidth at M = 1', rows.filter((r) => r.m === 1).map((r) => r.bandwidthRatio), 0.75, false);
  return checks;
}

const pct = (x: number) => (100 * x).toFixed(1);

export function formatGemmReport(report: GemmBenchReport): string {
  const lines: string[] = [];
  const instruction = report.rows[0]?.computeInstruction ?? '-';
  lines.push(`FP8 GEMM (block-scaled, bf16 out), CPU path ${report.isa}, ${report.threads} threads; compute ceiling: ${instruction} (exact fp8 products)`);
  lines.push(formatCeilingRange(report.ceilingRange));
  const header = ['N', 'K', 'M', 'ms', 'GFLOP/s', 'peak GFLOP/s', '% peak', '% FMA peak', 'GB/s', 'mem GB/s', '% mem BW', 'x roofline'];
  const body = report.rows.map((r) => [
    String(r.n), String(r.k), String(r.m), r.ms.toFixed(3), r.gflops.toFixed(1), r.computeGflops.toFixed(0),
    pct(r.peakRatio), pct(r.fmaRatio), r.gbs.toFixed(2), r.ceilings.memoryGBs.toFixed(1), pct(r.bandwidthRatio),
    r.rooflineRatio.toFixed(2),
  ]);
  lines.push(...formatTable(header, body));
  for (const t of report.targets) {
    const value = t.atMost ? `${t.worst.toFixed(2)}x (target <= ${t.target}x)` : `${pct(t.worst)}% (target >= ${100 * t.target}%)`;
    lines.push(`${t.pass ? 'PASS' : 'MISS'}  ${t.name}: worst ${value}`);
  }
  lines.push('Weights rotate over copies larger than twice the last-level cache, so every run streams them from memory.');
  return lines.join('\n');
}
