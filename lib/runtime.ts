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

export interface BackendInfo {
  name: 'cpu' | 'cuda';
  available: boolean;
  reason?: string;
}

/** The backends this build knows, with why one is unavailable. */
export function backends(): BackendInfo[] {
  native();
  return [
    { name: 'cpu', available: true },
    { name: 'cuda', available: false, reason: 'the CUDA plug-in is not part of this build yet' },
  ];
}

export type { CpuInfo };
