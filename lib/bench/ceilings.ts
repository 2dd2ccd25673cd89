/**
 * The two ceilings every benchmark reports against, measured on this machine
 * in the same run: the FMA peak (all threads, the widest SIMD the GEMM uses)
 * and the memory read bandwidth (all threads, a buffer far larger than the L3).
 */
import { native } from '../native';

export interface Ceilings {
  /** GFLOP/s of independent FMA chains on every thread. */
  fmaPeakGflops: number;
  /** GB/s (1e9) of streaming reads on every thread. */
  memoryGBs: number;
}

export function measureCeilings(seconds = 0.5): Ceilings {
  return {
    fmaPeakGflops: native().measureFmaPeak(seconds),
    memoryGBs: native().measureMemoryBandwidth(seconds),
  };
}
