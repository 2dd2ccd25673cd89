/**
 * The ceilings every benchmark reports against, measured on this machine in
 * the same run, right before and right after each row (a row divides by the
 * larger of the two, so a noisy neighbour during one probe cannot flatter it):
 * the FMA peak (all threads, the widest SIMD vectors the GEMM uses), the
 * AVX512_BF16 VDPBF16PS and AMX tile peaks where the GEMM uses them, and the
 * memory read bandwidth (all threads, a buffer far larger than the L3).
 *
 * The compute ceiling of a row is the fastest instruction that computes fp8
 * products exactly which the GEMM's path may use: AMX tiles, else VDPBF16PS,
 * else FMA (fp8 values are exact in bf16 and their products exact in f32, so
 * all three compute the same products).
 */
import { cpuInfo } from '../runtime';
import { native } from '../native';

export interface Ceilings {
  /** GFLOP/s of independent FMA chains on every thread. */
  fmaPeakGflops: number;
  /** GFLOP/s of VDPBF16PS chains on every thread (0 where the GEMM does not use AVX512_BF16). */
  bf16DotPeakGflops: number;
  /** GFLOP/s of AMX bf16 tile products on every thread (0 where the GEMM does not use AMX). */
  matrixPeakGflops: number;
  /** GB/s (1e9) of streaming reads on every thread. */
  memoryGBs: number;
}

/** Seconds each probe runs: ~0.3 s for the set, small next to a row. */
export const PROBE_SECONDS = 0.1;

export function measureCeilings(seconds = PROBE_SECONDS): Ceilings {
  return {
    fmaPeakGflops: native().measureFmaPeak(seconds),
    bf16DotPeakGflops: native().measureBf16DotPeak(seconds),
    matrixPeakGflops: native().measureMatrixPeak(seconds),
    memoryGBs: native().measureMemoryBandwidth(seconds),
  };
}

/** The larger of two measurements of each ceiling (before and after a row). */
export function maxCeilings(a: Ceilings, b: Ceilings): Ceilings {
  return {
    fmaPeakGflops: Math.max(a.fmaPeakGflops, b.fmaPeakGflops),
    bf16DotPeakGflops: Math.max(a.bf16DotPeakGflops, b.bf16DotPeakGflops),
    matrixPeakGflops: Math.max(a.matrixPeakGflops, b.matrixPeakGflops),
    memoryGBs: Math.max(a.memoryGBs, b.memoryGBs),
  };
}

export interface ComputeCeiling {
  gflops: number;
  /** The instruction it was measured with. */
  instruction: string;
}

/** The fastest exact-fp8-product instruction the GEMM's path may use, and its measured peak. */
export function computeCeiling(c: Ceilings): ComputeCeiling {
  if (c.matrixPeakGflops > 0) return { gflops: c.matrixPeakGflops, instruction: 'AMX TDPBF16PS' };
  if (c.bf16DotPeakGflops > 0) return { gflops: c.bf16DotPeakGflops, instruction: 'AVX512_BF16 VDPBF16PS' };
  const isa = cpuInfo().gemmIsa;
  return { gflops: c.fmaPeakGflops, instruction: isa === 'portable' ? 'FMA (portable)' : `${isa.toUpperCase()} FMA` };
}

/**
 * Runs `row` between two ceiling measurements and returns its result with the
 * larger of them. Chain rows by passing the previous call's `after` as
 * `before`: the probe right after one row is the probe right before the next.
 */
export async function betweenCeilings<T>(
  before: Ceilings,
  row: () => Promise<T>,
): Promise<{ result: T; ceilings: Ceilings; after: Ceilings }> {
  const result = await row();
  const after = measureCeilings();
  return { result, ceilings: maxCeilings(before, after), after };
}

/** The lowest and highest value of each ceiling over a run's probes (the noise the rows saw). */
export interface CeilingRange {
  low: Ceilings;
  high: Ceilings;
}

export function ceilingRange(probes: Ceilings[]): CeilingRange {
  const pick = (f: (a: number, b: number) => number) =>
    probes.reduce((acc, p) => ({
      fmaPeakGflops: f(acc.fmaPeakGflops, p.fmaPeakGflops),
      bf16DotPeakGflops: f(acc.bf16DotPeakGflops, p.bf16DotPeakGflops),
      matrixPeakGflops: f(acc.matrixPeakGflops, p.matrixPeakGflops),
      memoryGBs: f(acc.memoryGBs, p.memoryGBs),
    }));
  return { low: pick(Math.min), high: pick(Math.max) };
}

/** One line: each ceiling's range over a run's probes. */
export function formatCeilingRange(range: CeilingRange): string {
  const span = (lo: number, hi: number, digits: number) => `${lo.toFixed(digits)}-${hi.toFixed(digits)}`;
  const { low, high } = range;
  const parts = [`FMA ${span(low.fmaPeakGflops, high.fmaPeakGflops, 0)} GFLOP/s`];
  if (high.bf16DotPeakGflops > 0) parts.push(`VDPBF16PS ${span(low.bf16DotPeakGflops, high.bf16DotPeakGflops, 0)} GFLOP/s`);
  if (high.matrixPeakGflops > 0) parts.push(`AMX ${span(low.matrixPeakGflops, high.matrixPeakGflops, 0)} GFLOP/s`);
  parts.push(`memory ${span(low.memoryGBs, high.memoryGBs, 1)} GB/s`);
  return `ceilings probed before and after every row (each row divides by the larger of its two); range over the run: ${parts.join(', ')}`;
}
