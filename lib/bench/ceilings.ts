/**
 * The ceilings every benchmark reports against, measured on this machine in
 * the same run: the FMA peak (all threads, the widest SIMD vectors the GEMM
 * uses), the memory read bandwidth (all threads, a buffer far larger than the
 * L3), and, where the GEMM uses AMX tiles, their bf16 peak.
 */
import { native } from '../native';

export interface Ceilings {
  /** GFLOP/s of independent FMA chains on every thread. */
  fmaPeakGflops: number;
  /** GFLOP/s of AMX bf16 tile products on every thread (0 where the GEMM does not use AMX). */
  matrixPeakGflops: number;
  /** GB/s (1e9) of streaming reads on every thread. */
  memoryGBs: number;
}

export function measureCeilings(seconds = 0.5): Ceilings {
  return {
    fmaPeakGflops: native().measureFmaPeak(seconds),
    matrixPeakGflops: native().measureMatrixPeak(seconds),
    memoryGBs: native().measureMemoryBandwidth(seconds),
  };
}
