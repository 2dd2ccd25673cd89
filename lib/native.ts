/**
 * Loads the N-API addon (a prebuilt binary from prebuilds/, else the one
 * node-gyp built into build/) and hands it the MoeError class, so that native
 * failures surface as MoeError with the native status code.
 */
import * as path from 'node:path';
import nodeGypBuild from 'node-gyp-build';
import { markAsUntransferable } from 'node:worker_threads';
import { MoeError } from './errors';
import type { DType, Storage } from './dtype';

/** The shape of a tensor as native code reads it. */
export interface NativeTensor {
  /** CPU tensors: the elements. */
  readonly data?: Storage;
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** CUDA tensors: 'cuda' and the device memory handle. */
  readonly device?: 'cpu' | 'cuda';
  readonly handle?: unknown;
}

export interface CpuInfo {
  gemmIsa: 'amx' | 'avx512bf16' | 'avx512' | 'avx2' | 'portable';
  threads: number;
  /** How long a pool thread watches for the next parallel region before it sleeps (MOE_CPU_SPIN_US). */
  spinMicros: number;
  /** The same once a forward announced itself (MoeLayer's forwards wake the pool as they start); 0 where spinMicros is. */
  wakeSpinMicros: number;
  features: { avx2: boolean; fma: boolean; f16c: boolean; avx512f: boolean; avx512bw: boolean; avx512bf16: boolean; amx: boolean };
}

type OpResult<Async extends boolean> = Async extends true ? Promise<void> : void;

export interface NativeAddon {
  /** The MoeError class, and the function that pins a buffer a running op uses (markAsUntransferable). */
  setErrorClass(errorClass: typeof MoeError, pinBuffer: (buffer: ArrayBufferLike) => void): void;
  quantizeActivations<A extends boolean>(
    args: { x: NativeTensor; q: NativeTensor; scales: NativeTensor; scaleFormat: string },
    async: A,
  ): OpResult<A>;
  quantizeWeights<A extends boolean>(
    args: { x: NativeTensor; q: NativeTensor; scales: NativeTensor; scaleFormat: string },
    async: A,
  ): OpResult<A>;
  dequantize<A extends boolean>(
    args: { q: NativeTensor; scales: NativeTensor; blockRows: number; out: NativeTensor },
    async: A,
  ): OpResult<A>;
  gemmFp8<A extends boolean>(
    args: { a: NativeTensor; aScales: NativeTensor; b: NativeTensor; bScales: NativeTensor; d: NativeTensor; batchInvariant?: boolean },
    async: A,
  ): OpResult<A>;
  groupedGemmFp8<A extends boolean>(
    args: {
      a: NativeTensor; aScales: NativeTensor; b: NativeTensor; bScales: NativeTensor;
      groupIndex?: NativeTensor; maskedM?: NativeTensor; d: NativeTensor;
    },
    async: A,
  ): OpResult<A>;
  route<A extends boolean>(
    args: {
      logits: NativeTensor; bias?: NativeTensor; ids: NativeTensor; weights: NativeTensor; scoring: string;
      topK: number; numGroups: number; topKGroups: number; renormalize: boolean; scale: number;
    },
    async: A,
  ): OpResult<A>;
  dispatchLayout<A extends boolean>(
    args: {
      ids: NativeTensor; numExperts: number; align: number; masked: boolean; maxRowsPerExpert: number;
      tokensPerExpert: NativeTensor; offsets: NativeTensor; rowToken: NativeTensor; groupIndex: NativeTensor;
      slotRow: NativeTensor;
    },
    async: A,
  ): OpResult<A>;
  dispatch<A extends boolean>(
    args: { x: NativeTensor; rowToken: NativeTensor; out: NativeTensor; scales?: NativeTensor; scaleFormat: string },
    async: A,
  ): OpResult<A>;
  routerLogits<A extends boolean>(args: { x: NativeTensor; w: NativeTensor; logits: NativeTensor }, async: A): OpResult<A>;
  swiglu<A extends boolean>(
    args: { h: NativeTensor; out: NativeTensor; scales?: NativeTensor; scaleFormat: string },
    async: A,
  ): OpResult<A>;
  combine<A extends boolean>(
    args: { y: NativeTensor; slotRow: NativeTensor; weights: NativeTensor; shared?: NativeTensor; out: NativeTensor },
    async: A,
  ): OpResult<A>;
  moeForward<A extends boolean>(args: Record<string, unknown>, async: A): OpResult<A>;
  /** The weights and routing options of a layer, read once for every moeForward (an opaque handle). */
  moePrepareWeights(args: Record<string, unknown>): unknown;
  /** A workspace's views for one token count, read once (an opaque handle). */
  moePrepareWorkspace(args: { ws: Record<string, NativeTensor> }): unknown;
  /** Records the masked (decode) forward on the device into a CUDA graph; returns its handle. */
  moeCapture(args: Record<string, unknown>, async: false): unknown;
  moeReplay<A extends boolean>(graph: unknown, async: A): OpResult<A>;
  /** Throws the MoeError recorded in a finished GPU forward's device flags (copied to the host), if any. */
  moeCheckFlags(flags: Int32Array): void;
  cudaLoad(candidates: string[]): { available: boolean; reason: string; path?: string; device?: import('./backends').CudaDeviceInfo };
  cudaAlloc(bytes: number): unknown;
  cudaFree(handle: unknown): void;
  cudaCopyToDevice(handle: unknown, host: ArrayBufferView, byteOffset?: number): void;
  cudaCopyToHost(handle: unknown, host: ArrayBufferView, byteOffset?: number): void;
  cudaTimerStart(): void;
  cudaTimerStop(): number;
  cudaFlushL2(): void;
  cudaCopyDeviceToDevice(dst: unknown, src: unknown, bytes: number): void;
  /** Benchmarks: skip the MoE ops' per-call error-flag readback (a host sync) on the CUDA backend. */
  cudaSetDataChecks(enabled: boolean): void;
  getNumThreads(): number;
  setNumThreads(n: number): void;
  /**
   * A CPU forward is about to start: sleeping pool threads wake and watch for its first parallel region;
   * with the layer's moePrepareWeights handle they first read the weights the forward reads first into the caches.
   */
  wakeThreads(weights?: unknown): void;
  cpuInfo(): CpuInfo;
  castFromF32(src: Float32Array, dst: Uint8Array | Uint16Array, dtype: 'fp8_e4m3' | 'bf16'): void;
  /** Offers a fresh large array's memory to the kernel for 2 MiB pages; whether the advice was given. */
  adviseHugePages(array: ArrayBufferView): boolean;
  /** Writes back and drops the array's cache lines at every level (benchmarks); false where the CPU cannot. */
  evictFromCaches(array: ArrayBufferView): boolean;
  /**
   * Maps bytes [offset, offset + length) of a file whose size must still be
   * fileSize, copy-on-write (native/src/platform/mapped_file.h); the buffer
   * unmaps them when collected.
   */
  mapFileRange(path: string, offset: number, length: number, fileSize: number): ArrayBuffer;
  measureFmaPeak(seconds: number): number;
  measureMemoryBandwidth(seconds: number): number;
  measureMatrixPeak(seconds: number): number;
  measureBf16DotPeak(seconds: number): number;
  /** Expert parallelism: loads the MPI transport plug-in (first existing candidate), once. */
  epLoad(candidates: string[]): { available: boolean; reason: string; path?: string };
  epInit(options: { timeoutMs: number }): { rank: number; size: number; threadLevel: number; library: string };
  epFinalize(): void;
  /** A rank's shard of a layer (its experts' range, the exchange buffers); an opaque handle. */
  epCreateShard(options: { numExperts: number; firstExpert: number; numLocalExperts: number }): unknown;
  /** Takes a forward's first collective step as a failed rank, so that the others fail too. */
  epFailForward(shard: unknown, code: string, message: string, hidden: number, topK: number): { code: string; message: string };
  epAllgather(bytes: Uint8Array): Uint8Array;
  epBarrier(): void;
  epShardStats(shard: unknown): EpShardStats;
  /** Seconds per blocking MPI_Alltoallv of the last forward's dispatch (reverse: combine) row counts. Collective. */
  epExchangeAb(shard: unknown, options: { reverse: boolean; reps: number }): { raw: Float64Array; ours: Float64Array };
  /** Whether libnccl.so.2 loads (no communicator is made). */
  epNcclProbe(): { available: boolean; reason: string; version?: number };
  /** Joins the NCCL communicator of all ranks (collective; unique id broadcast over MPI); a reason when NCCL cannot be used. */
  epNcclInit(): { available: boolean; reason: string; version?: number };
  /** One row exchange of device tensors over NCCL (rows packed per peer in rank order). */
  epNcclExchange(args: { send: NativeTensor; recv: NativeTensor; rowBytes: number; sendRows: number[]; recvRows: number[] }): void;
}

/** What an expert-parallel layer's last forward moved (native EpShard::Stats). */
export interface EpShardStats {
  dispatchSeconds: number;
  dispatchExchangeSeconds: number;
  /** The counts exchange and the agreement before the records (with the wait for the last rank to arrive). */
  dispatchSyncSeconds: number;
  combineSeconds: number;
  combineExchangeSeconds: number;
  rowsSent: number;
  rowsReceived: number;
  dispatchRowBytes: number;
  combineRowBytes: number;
  /** This rank's experts that received rows (CPU layers). */
  activeExperts: number;
  /** The last forward's rows moved between devices (NCCL) rather than through the host. */
  deviceRows: boolean;
  sendRows: number[];
  recvRows: number[];
}

/** The package root: lib/ (sources, under vitest) and dist/ (compiled) both sit one level below it. */
export const PACKAGE_ROOT = path.resolve(__dirname, '..');

let addon: NativeAddon | undefined;

export function native(): NativeAddon {
  if (addon) return addon;
  let loaded: NativeAddon;
  try {
    loaded = nodeGypBuild(PACKAGE_ROOT) as NativeAddon;
  } catch (cause) {
    throw new MoeError(
      'ERR_MOE_NATIVE',
      `moe-kernels: could not load the native addon from ${PACKAGE_ROOT} (${(cause as Error).message}); ` +
        'run `npm rebuild moe-kernels` or `npm install --build-from-source`',
    );
  }
  loaded.setErrorClass(MoeError, markAsUntransferable);
  addon = loaded;
  return addon;
}
