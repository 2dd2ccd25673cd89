/** Process-wide settings and facts: CPU threads, the SIMD path in use, backends. */
import { native, CpuInfo } from './native';
import { expectInteger } from './validate';

/** Threads the CPU kernels use (default: MOE_NUM_THREADS, else every hardware thread). */
export function getNumThreads(): number {
  return native().getNumThreads();
}

export function setNumThreads(n: number): void {
  native().setNumThreads(expectInteger(n, 1, 1024, 'setNumThreads: n'));
}

/** The CPU's SIMD features and the GEMM path chosen at run time (MOE_CPU_ISA can force a lower one). */
export function cpuInfo(): CpuInfo {
  return native().cpuInfo();
}

export type { CpuInfo };
