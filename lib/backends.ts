/**
 * The backends: the CPU one (always there) and the CUDA plug-in
 * (libmoe_cuda.so, loaded at run time when it is present), with the reason
 * when it cannot run, and the default backend (MOE_BACKEND or
 * setDefaultBackend): the device that `t.to()` moves tensors to.
 * Operations run where their tensors are.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { MoeError, describe } from './errors';
import { native, PACKAGE_ROOT } from './native';
import { mpiTransport, ncclTransport } from './ep/transport';

export type BackendName = 'cpu' | 'cuda';

export interface CudaDeviceInfo {
  name: string;
  computeCapability: string;
  multiprocessors: number;
  memoryBytes: number;
  driverVersion: number;
  runtimeVersion: number;
  /** 'hopper' (TMA + wgmma FP8 kernels) or 'simt' */
  kernels: 'hopper' | 'simt';
}

export interface BackendInfo {
  /** 'cpu' and 'cuda' run operations; 'mpi' and 'nccl' are expert parallelism's transports between processes. */
  name: BackendName | 'mpi' | 'nccl';
  available: boolean;
  /** Why it is unavailable, or which kernels it runs. */
  reason?: string;
  /** The CUDA plug-in's path, when one was found. */
  path?: string;
  device?: CudaDeviceInfo;
}

/** Where the CUDA plug-in may be: MOE_CUDA_PLUGIN, beside a prebuilt addon, or the CMake build folder. */
export function cudaPluginCandidates(): string[] {
  const candidates = [
    path.join(PACKAGE_ROOT, 'prebuilds', `${process.platform}-${process.arch}`, 'libmoe_cuda.so'),
    path.join(PACKAGE_ROOT, 'build-cuda', 'libmoe_cuda.so'),
  ];
  return process.env.MOE_CUDA_PLUGIN ? [process.env.MOE_CUDA_PLUGIN] : candidates;
}

let cuda: BackendInfo | undefined;

/**
 * Loads the plug-in and probes the driver in a child process first: a broken
 * driver or plug-in can crash the process that loads it, and that must not be
 * the user's. Only when the child comes back healthy and the GPU usable is the
 * plug-in loaded here. MOE_CUDA_PROBE=inprocess skips the child (faster start).
 */
function probeInChild(candidates: string[]): BackendInfo | undefined {
  if (process.env.MOE_CUDA_PROBE === 'inprocess' || !candidates.some((c) => fs.existsSync(c))) return undefined;
  const loader = createRequire(__filename).resolve('node-gyp-build');
  const script = `const addon = require(${JSON.stringify(loader)})(${JSON.stringify(PACKAGE_ROOT)});
    process.stdout.write(JSON.stringify(addon.cudaLoad(${JSON.stringify(candidates)})));`;
  const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
  if (child.status !== 0) {
    const how = child.signal ? `was killed by ${child.signal}` : `exited with ${child.status}`;
    return { name: 'cuda', available: false, reason: `probing the CUDA plug-in in a child process failed (it ${how}); it is not loaded here` };
  }
  const status = JSON.parse(child.stdout) as Omit<BackendInfo, 'name'>;
  return status.available ? undefined : { name: 'cuda', ...status };
}

/** The CUDA backend's status (the plug-in is probed and loaded once, on first use). */
export function cudaBackend(): BackendInfo {
  if (!cuda) {
    const candidates = cudaPluginCandidates();
    cuda = probeInChild(candidates) ?? { name: 'cuda', ...native().cudaLoad(candidates) };
  }
  return cuda;
}

/** Loads the plug-in if needed; throws ERR_MOE_DEVICE with the reason when CUDA cannot run. */
export function requireCuda(what: string): void {
  const status = cudaBackend();
  if (!status.available) throw new MoeError('ERR_MOE_DEVICE', `${what}: the CUDA backend is not available: ${status.reason}`);
}

/**
 * The backends (cpu, cuda) and expert parallelism's transports (mpi, nccl), with
 * availability and, where unavailable, the reason.
 */
export function backends(): BackendInfo[] {
  return [{ name: 'cpu', available: true }, cudaBackend(), mpiTransport(), ncclTransport()];
}

let chosen: BackendName | undefined;

function expectBackend(name: unknown, what: string): BackendName {
  if (name !== 'cpu' && name !== 'cuda') {
    throw new MoeError('ERR_MOE_RANGE', `${what}: expected 'cpu' or 'cuda', got ${describe(name)}`);
  }
  if (name === 'cuda') requireCuda(what);
  return name;
}

/** The default backend: setDefaultBackend's, else MOE_BACKEND's, else 'cpu'. */
export function getDefaultBackend(): BackendName {
  if (chosen === undefined) {
    chosen = process.env.MOE_BACKEND ? expectBackend(process.env.MOE_BACKEND, 'MOE_BACKEND') : 'cpu';
  }
  return chosen;
}

export function setDefaultBackend(name: BackendName): void {
  chosen = expectBackend(name, 'setDefaultBackend');
}

/** The device of the default backend. */
export function defaultDevice(): BackendName {
  return getDefaultBackend();
}
