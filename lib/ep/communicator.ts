/**
 * Expert parallelism's communicator: MPI_COMM_WORLD of the processes that
 * `mpirun -np N node app.js` started, through the MPI plug-in. Every
 * exchange waits at most `timeoutMs`: a rank that died, hangs or skipped a
 * step makes the others fail with ERR_MOE_EP_TIMEOUT instead of hanging.
 */
import { MoeError, describe } from '../errors';
import { native } from '../native';
import { cudaBackend } from '../backends';
import { mpiTransport, ncclTransport } from './transport';

export interface ExpertParallelOptions {
  /** The longest any exchange may wait for the other ranks, ms (default MOE_EP_TIMEOUT_MS or 60000). */
  timeoutMs?: number;
  /**
   * Join an NCCL communicator of all ranks for device layers' exchanges
   * (default true; collective). Where libnccl.so.2 or the CUDA plug-in is
   * missing on any rank, device layers stage their exchanges through the host
   * over MPI, and `comm.nccl` says why.
   */
  nccl?: boolean;
}

export interface NcclStatus {
  available: boolean;
  /** Why NCCL is not used ('usable' when it is). */
  reason: string;
  /** NCCL's version code (e.g. 21903 for 2.19.3), when it is used. */
  version?: number;
}

export class Communicator {
  readonly rank: number;
  readonly size: number;
  /** MPI's thread support level (MPI_THREAD_MULTIPLE = 3 with Open MPI and MPICH). */
  readonly threadLevel: number;
  /** The MPI library's version line. */
  readonly library: string;
  readonly timeoutMs: number;
  /** Whether device layers' rows move over NCCL (set by initExpertParallel). */
  nccl: NcclStatus = { available: false, reason: 'not initialized (initExpertParallel({ nccl: false }))' };
  private queue: Promise<unknown> = Promise.resolve();

  /** @internal use initExpertParallel() */
  constructor(info: { rank: number; size: number; threadLevel: number; library: string }, timeoutMs: number) {
    this.rank = info.rank;
    this.size = info.size;
    this.threadLevel = info.threadLevel;
    this.library = info.library;
    this.timeoutMs = timeoutMs;
  }

  /** Every rank's `bytes` (the same length on every rank), in rank order. Collective. */
  allgather(bytes: Uint8Array): Uint8Array[] {
    const all = native().epAllgather(bytes);
    return Array.from({ length: this.size }, (_, r) => all.subarray(r * bytes.length, (r + 1) * bytes.length));
  }

  /** Waits for every rank (at most timeoutMs). Collective. */
  barrier(): void {
    native().epBarrier();
  }

  /**
   * Runs collective work after the work queued before it: forwards on one
   * communicator must enter their exchanges in the same order on every rank,
   * and Promise forms would otherwise race on the worker threads.
   * @internal
   */
  serialize<T>(work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(work, work);
    this.queue = run.catch(() => undefined);
    return run;
  }
}

export interface ExpertParallel {
  rank: number;
  size: number;
  comm: Communicator;
}

let world: Communicator | undefined;

/**
 * Initializes MPI (MPI_Init_thread, asking for MPI_THREAD_MULTIPLE) once per
 * process and returns this process's rank, the number of ranks and the
 * communicator; later calls return the same. MPI is finalized when the
 * process exits. Throws ERR_MOE_EP_TRANSPORT when the MPI plug-in is absent
 * (with the reason).
 */
export function initExpertParallel(options: ExpertParallelOptions = {}): ExpertParallel {
  if (world) return { rank: world.rank, size: world.size, comm: world };
  const transport = mpiTransport();
  if (!transport.available) throw new MoeError('ERR_MOE_EP_TRANSPORT', `initExpertParallel: the MPI transport is not available: ${transport.reason}`);
  const fromEnv = process.env.MOE_EP_TIMEOUT_MS ? Number(process.env.MOE_EP_TIMEOUT_MS) : undefined;
  const timeoutMs = options.timeoutMs ?? fromEnv ?? 60_000;
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new MoeError('ERR_MOE_RANGE', `initExpertParallel: timeoutMs must be a positive number of milliseconds, got ${describe(timeoutMs)}`);
  }
  const info = native().epInit({ timeoutMs });
  world = new Communicator(info, timeoutMs);
  if (options.nccl !== false) world.nccl = joinNccl();
  // MPI_Finalize at exit (the plug-in skips it after a failed exchange, which would wait forever).
  process.once('exit', () => finalizeExpertParallel());
  return { rank: world.rank, size: world.size, comm: world };
}

/** MPI_Finalize now (also done at exit); no communication is possible afterwards. */
export function finalizeExpertParallel(): void {
  if (world) native().epFinalize();
}

/** `ep.init()` is initExpertParallel(). */
export const ep = { init: initExpertParallel, finalize: finalizeExpertParallel };

/** The communicator of an `ep` option: an initExpertParallel() result or its `comm`. */
export function communicatorOf(value: unknown, what: string): Communicator {
  if (value instanceof Communicator) return value;
  if (typeof value === 'object' && value !== null && (value as ExpertParallel).comm instanceof Communicator) return (value as ExpertParallel).comm;
  throw new MoeError('ERR_MOE_ARGUMENT', `${what}: expected the result of initExpertParallel() or its comm, got ${describe(value)}`);
}

/** Collective: every rank calls epNcclInit, which tells each whether all can use NCCL. */
function joinNccl(): NcclStatus {
  if (ncclTransport().available) cudaBackend(); // loads the CUDA plug-in NCCL's exchanges run on (only where NCCL is there)
  return native().epNcclInit();
}

/**
 * Joins the NCCL communicator of every rank for exchanges between GPUs
 * (collective: rank 0 makes the unique id, MPI broadcasts it; initExpertParallel
 * does it unless `nccl: false`). Device layers made afterwards move their rows
 * over it. Where NCCL or the CUDA plug-in is missing on any rank, every rank
 * gets the reason (available: false).
 */
export function initNccl(): NcclStatus {
  if (!world) throw new MoeError('ERR_MOE_EP_TRANSPORT', 'initNccl: call initExpertParallel() first');
  world.nccl = joinNccl();
  return world.nccl;
}
