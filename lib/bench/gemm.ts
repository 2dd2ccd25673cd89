/**
 * `moe-kernels bench gemm`: the FP8 GEMM at DeepSeek-V3's (N, K) pairs, as
 * time, GFLOP/s and GB/s, and as ratios to this machine's FMA peak and memory
 * bandwidth measured in the same run.
 *
 * Napkin math: a GEMM does 2*M*N*K flops and moves at least N*K weight bytes
 * (fp8) + M*K activation bytes + M*N*2 output bytes (bf16). At M = 1 it is
 * memory-bound (2 flops per weight byte); at M >= 512 compute-bound.
 */
import { gemmFp8Sync } from '../ops/gemm';
import { empty } from '../tensor';
import { cpuInfo } from '../runtime';
import { Ceilings, measureCeilings } from './ceilings';
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

export const DEFAULT_MS = [1, 16, 128, 1024];

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
  /** GFLOP/s over the FMA peak. */
  peakRatio: number;
  /** GB/s over the memory bandwidth. */
  bandwidthRatio: number;
}

export interface GemmBenchReport {
  isa: string;
  threads: number;
  ceilings: Ceilings;
  rows: GemmBenchRow[];
  targets: TargetCheck[];
}

export interface TargetCheck {
  name: string;
  worst: number;
  target: number;
  pass: boolean;
}

export function scaledShape(n: number, k: number, scale: number): [number, number] {
  return [Math.max(1, Math.round(n / scale)), Math.max(16, Math.round(k / scale / 16) * 16)];
}

export async function benchGemm(options: GemmBenchOptions): Promise<GemmBenchReport> {
  const ceilings = measureCeilings();
  const rows: GemmBenchRow[] = [];
  const total = DEEPSEEK_V3_NK.length * options.ms.length;
  for (const [fullN, fullK] of DEEPSEEK_V3_NK) {
    const [n, k] = scaledShape(fullN, fullK, options.scale);
    const weights = coldWeightCopies(n, k);
    for (const m of options.ms) {
      const a = randomQuantized(m, k, 1);
      const d = empty([m, n], 'bf16');
      let next = 0;
      const ms = await medianMs(
        () => {
          gemmFp8Sync(a, weights[next], { into: d });
          next = (next + 1) % weights.length;
        },
        { timeMs: options.timeMs, iterations: 5 },
      );
      const flops = 2 * m * n * k;
      const bytes = n * k + m * k + m * n * 2;
      const gflops = flops / ms / 1e6;
      const gbs = bytes / ms / 1e6;
      const row = {
        m, n, k, ms, gflops, gbs,
        peakRatio: gflops / ceilings.fmaPeakGflops,
        bandwidthRatio: gbs / ceilings.memoryGBs,
      };
      rows.push(row);
      options.onRow?.(row, rows.length, total);
    }
  }
  const info = cpuInfo();
  return { isa: info.gemmIsa, threads: info.threads, ceilings, rows, targets: checkTargets(rows) };
}

/** The targets: >= 75% of the FMA peak at M >= 512; >= 60% of memory bandwidth at M = 1. */
function checkTargets(rows: GemmBenchRow[]): TargetCheck[] {
  const checks: TargetCheck[] = [];
  const add = (name: string, values: number[], target: number) => {
    if (values.length === 0) return;
    const worst = Math.min(...values);
    checks.push({ name, worst, target, pass: worst >= target });
  };
  add('FMA peak at M >= 512', rows.filter((r) => r.m >= 512).map((r) => r.peakRatio), 0.75);
  add('memory bandwidth at M = 1', rows.filter((r) => r.m === 1).map((r) => r.bandwidthRatio), 0.6);
  return checks;
}

export function formatGemmReport(report: GemmBenchReport): string {
  const lines: string[] = [];
  const { ceilings } = report;
  lines.push(
    `FP8 GEMM (block-scaled, bf16 out), CPU ${report.isa}, ${report.threads} threads; ` +
      `measured ceilings: FMA peak ${ceilings.fmaPeakGflops.toFixed(1)} GFLOP/s, memory ${ceilings.memoryGBs.toFixed(1)} GB/s` +
      (ceilings.matrixPeakGflops > 0 ? `, AMX bf16 peak ${ceilings.matrixPeakGflops.toFixed(0)} GFLOP/s (the GEMM uses AMX at M >= 9: ratios to the FMA peak can pass 100%)` : ''),
  );
  const header = ['N', 'K', 'M', 'ms', 'GFLOP/s', '% FMA peak', '% AMX peak', 'GB/s', '% mem BW'];
  const body = report.rows.map((r) => [
    String(r.n), String(r.k), String(r.m), r.ms.toFixed(3), r.gflops.toFixed(1),
    (100 * r.peakRatio).toFixed(1), ceilings.matrixPeakGflops > 0 ? ((100 * r.gflops) / ceilings.matrixPeakGflops).toFixed(1) : '-',
    r.gbs.toFixed(2), (100 * r.bandwidthRatio).toFixed(1),
  ]);
  lines.push(...formatTable(header, body));
  for (const t of report.targets) {
    lines.push(`${t.pass ? 'PASS' : 'MISS'}  ${t.name}: worst ${(100 * t.worst).toFixed(1)}% (target >= ${100 * t.target}%)`);
  }
  lines.push('Weights rotate over copies larger than twice the last-level cache, so every run streams them from memory.');
  return lines.join('\n');
}
