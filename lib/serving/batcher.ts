/**
 * MoeBatcher: concurrent requests coalesced into one layer forward
 * (continuous batching). While a forward runs, the next batch fills; when it
 * settles, everything queued (up to maxBatchTokens) goes at once. Requests
 * are checked on their own when submitted, so a bad one fails alone; a
 * full queue rejects at once (backpressure); an aborted signal or a passed
 * deadline settles a request without touching the others.
 */
import { performance } from 'node:perf_hooks';
import { MoeError, describe } from '../errors';
import type { ForwardProfile, MoeLayer } from '../moe/layer';
import { Tensor, empty, tensor } from '../tensor';
import { expectBoolean, expectOneOf, expectOptions } from '../validate';
import { BatchWait } from './batch-wait';
import { BatchEvent, batchChannel } from './events';
import { DEFAULT_GRAPH_BUCKETS, GraphBuckets } from './graph-buckets';
import { RequestRows, RowDType, RowsInput, requestRows } from './request-rows';

export interface BatcherOptions {
  /** Most rows in one forward (default 256). A single larger request still runs, alone. */
  maxBatchTokens?: number;
  /**
   * How long an idle batcher may hold a request for company, ms. Default
   * adaptive: no wait unless requests have recently arrived much faster than
   * a forward takes (a lone client never waits). A number fixes it.
   */
  maxWaitMs?: number;
  /** Most rows queued (not yet in a forward); a submit beyond it fails with ERR_MOE_QUEUE_FULL. Default 8 * maxBatchTokens. */
  maxQueueTokens?: number;
  /** Output dtype of every request: 'bf16' (default) or 'f32'. */
  out?: 'bf16' | 'f32';
  /** A token's output bits independent of what shares its batch (see MoeLayer.forward's batchInvariant). */
  batchInvariant?: boolean;
  /** CUDA layers: batch sizes captured as CUDA graphs and replayed (default [1, 2, 4, 8, 16]; false: plain forwards). */
  graphBuckets?: readonly number[] | false;
}

export interface SubmitOptions {
  /** Aborting it settles the request with an AbortError (queued: it leaves the queue; in a batch: its rows are dropped). */
  signal?: AbortSignal;
  /** The request's time budget from submit, ms; past it the request fails with ERR_MOE_DEADLINE. */
  deadlineMs?: number;
  /** dtype of byte input (Uint8Array/Buffer): 'f32' (default) or 'bf16'. */
  dtype?: RowDType;
}

export interface BatcherStats {
  submitted: number;
  completed: number;
  /** Failed for their own reason: bad rows, a forward error. */
  failed: number;
  rejectedQueueFull: number;
  aborted: number;
  deadlineExceeded: number;
  batches: number;
  /** Rows computed in all batches (padding not counted). */
  batchedTokens: number;
  meanBatchTokens: number;
  queuedRequests: number;
  queuedTokens: number;
  inFlightBatches: number;
  closed: boolean;
}

/** A submitted request until it settles. */
interface Pending {
  readonly owner: MoeBatcher;
  readonly rows: RequestRows;
  readonly enqueuedAt: number;
  readonly resolve: (t: Tensor) => void;
  readonly reject: (e: unknown) => void;
  settled: boolean;
  queued: boolean;
  /** Its signal's unsettled requests (abortWatch), which it leaves when it settles. */
  watchers?: Set<Pending>;
  deadline?: NodeJS.Timeout;
}

/**
 * Per AbortSignal, its requests not yet settled (of any batcher), and one
 * 'abort' listener for all of them, added with the first and kept for the
 * signal's life. A signal is often shared (the example server passes one per
 * connection): a listener added and removed per request, with its two
 * closures, took ~0.8 us in a loop on the 2-vCPU EPYC (Node's EventTarget
 * makes a listener record and runs AbortSignal's hooks on each add and
 * remove), a set entry ~0.05 us. The listener holds only the set and the
 * signal, and a settled request leaves the set: a long-lived signal keeps no
 * request or batcher alive.
 */
const abortWatch = new WeakMap<AbortSignal, Set<Pending>>();

const BATCHER_OPTIONS = ['maxBatchTokens', 'maxWaitMs', 'maxQueueTokens', 'out', 'batchInvariant', 'graphBuckets'] as const;

function positiveInt(value: unknown, fallback: number, what: string): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || (value as number) < 1) throw new MoeError('ERR_MOE_RANGE', `${what} must be a positive integer, got ${describe(value)}`);
  return value as number;
}

function nonNegative(value: unknown, what: string): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw new MoeError('ERR_MOE_RANGE', `${what} must be a finite number >= 0, got ${describe(value)}`);
  return value;
}

/** The error an aborted request settles with: Node's convention (name 'AbortError', code 'ABORT_ERR'), the signal's reason as cause. */
function abortError(signal: AbortSignal): Error {
  const error = new Error('MoeBatcher.submit: the request was aborted', { cause: signal.reason });
  error.name = 'AbortError';
  (error as Error & { code: string }).code = 'ABORT_ERR';
  return error;
}

/** `O`: the output dtype of every request (options.out). */
export class MoeBatcher<O extends 'bf16' | 'f32' = 'bf16' | 'f32'> {
  readonly layer: MoeLayer;
  readonly maxBatchTokens: number;
  readonly maxQueueTokens: number;
  readonly out: O;
  readonly batchInvariant: boolean;
  private readonly hidden: number;
  private readonly wait: BatchWait;
  private readonly buckets?: GraphBuckets;
  private queue: Pending[] = [];
  private queuedTokens = 0;
  private inFlight = 0;
  private waitTimer?: NodeJS.Timeout;
  /** Set from a batch's end to the end of that turn of the event loop: the next batch starts then (see batchEnded). */
  private nextBatch?: NodeJS.Immediate;
  private closed = false;
  private drained?: { promise: Promise<void>; resolve: () => void };
  private readonly counts = { submitted: 0, completed: 0, failed: 0, rejectedQueueFull: 0, aborted: 0, deadlineExceeded: 0, batches: 0, batchedTokens: 0 };

  constructor(layer: MoeLayer, options?: BatcherOptions) {
    const opts = expectOptions(options, BATCHER_OPTIONS, 'MoeBatcher: options');
    this.layer = layer;
    this.hidden = layer.config.hiddenSize;
    this.maxBatchTokens = positiveInt(opts.maxBatchTokens, 256, 'MoeBatcher: options.maxBatchTokens');
    this.maxQueueTokens = positiveInt(opts.maxQueueTokens, 8 * this.maxBatchTokens, 'MoeBatcher: options.maxQueueTokens');
    this.wait = new BatchWait(nonNegative(opts.maxWaitMs, 'MoeBatcher: options.maxWaitMs'));
    this.out = expectOneOf(opts.out ?? 'bf16', ['bf16', 'f32'] as const, 'MoeBatcher: options.out') as O;
    this.batchInvariant = expectBoolean(opts.batchInvariant, 'MoeBatcher: options.batchInvariant') === true;
    if (this.batchInvariant && layer.device === 'cuda') {
      throw new MoeError('ERR_MOE_UNSUPPORTED', 'MoeBatcher: batchInvariant is supported on CPU layers only (the CUDA GEMM kernels are chosen by shape)');
    }
    const sizes = opts.graphBuckets ?? DEFAULT_GRAPH_BUCKETS;
    if (sizes !== false) {
      if (!Array.isArray(sizes) || sizes.length === 0) throw new MoeError('ERR_MOE_ARGUMENT', `MoeBatcher: options.graphBuckets must be a non-empty array of sizes or false, got ${describe(sizes)}`);
      sizes.forEach((s, i) => positiveInt(s, 0, `MoeBatcher: options.graphBuckets[${i}]`));
      if (layer.device === 'cuda') this.buckets = new GraphBuckets(layer, sizes, this.out);
    }
  }

  /**
   * The layer's output for one request's rows: x is a Tensor [rows, H] or
   * [H] (f32 or bf16, on the host), a Float32Array of rows * H values, or
   * their little-endian bytes (Uint8Array/Buffer at any offset; `dtype` says
   * f32 or bf16). Resolves with a [rows, H] tensor of exactly these rows.
   */
  submit(x: RowsInput, options?: SubmitOptions): Promise<Tensor<O>> {
    try {
      return this.enqueue(x, options) as Promise<Tensor<O>>;
    } catch (e) {
      return Promise.reject(e);
    }
  }

  private enqueue(x: RowsInput, options: SubmitOptions | undefined): Promise<Tensor> {
    const opts = expectOptions(options, ['signal', 'deadlineMs', 'dtype'], 'MoeBatcher.submit: options');
    if (this.closed) throw new MoeError('ERR_MOE_CLOSED', 'MoeBatcher.submit: the batcher is closed');
    const signal = opts.signal as AbortSignal | undefined;
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw new MoeError('ERR_MOE_ARGUMENT', `MoeBatcher.submit: options.signal must be an AbortSignal, got ${describe(signal)}`);
    const deadlineMs = nonNegative(opts.deadlineMs, 'MoeBatcher.submit: options.deadlineMs');
    const rows = requestRows(x, this.hidden, opts.dtype as RowDType | undefined, 'MoeBatcher.submit');
    this.counts.submitted++;
    if (signal?.aborted) {
      this.counts.aborted++;
      throw abortError(signal);
    }
    if (rows.rows === 0) {
      this.counts.completed++;
      return Promise.resolve(empty([0, this.hidden], this.out as 'bf16' | 'f32'));
    }
    if (this.queuedTokens + rows.rows > this.maxQueueTokens) {
      this.counts.rejectedQueueFull++;
      throw new MoeError('ERR_MOE_QUEUE_FULL', `MoeBatcher.submit: the queue holds ${this.queuedTokens} of at most ${this.maxQueueTokens} rows; ${rows.rows} more do not fit`);
    }
    const now = performance.now();
    this.wait.arrived(now);
    return new Promise<Tensor>((resolve, reject) => {
      const p: Pending = { owner: this, rows, enqueuedAt: now, resolve, reject, settled: false, queued: true };
      this.queue.push(p);
      this.queuedTokens += rows.rows;
      // An idle batcher starts the forward in this call: a lone request's
      // forward starts before its abort listener and deadline timer are made
      // (no event can fire in between; a forward that failed at once has
      // settled it already, and then there is nothing to watch).
      this.pump();
      if (p.settled) return;
      if (deadlineMs !== undefined) {
        p.deadline = setTimeout(() => this.drop(p, new MoeError('ERR_MOE_DEADLINE', `MoeBatcher.submit: the request's deadline of ${deadlineMs} ms passed`), 'deadlineExceeded'), deadlineMs);
      }
      if (signal !== undefined) MoeBatcher.watchAbort(p, signal);
    });
  }

  /** Adds the request to its signal's watched set (abortWatch), with the signal's listener if it is the first. */
  private static watchAbort(p: Pending, signal: AbortSignal): void {
    let watchers = abortWatch.get(signal);
    if (watchers === undefined) {
      const set = new Set<Pending>();
      signal.addEventListener('abort', () => {
        // A request settled by another's drop leaves the set; the iteration skips it.
        for (const q of set) q.owner.drop(q, abortError(signal), 'aborted');
      }, { once: true });
      abortWatch.set(signal, set);
      watchers = set;
    }
    watchers.add(p);
    p.watchers = watchers;
  }

  /** Settles a request early (abort, deadline): out of the queue if queued; a running batch drops its rows. */
  private drop(p: Pending, error: unknown, count: 'aborted' | 'deadlineExceeded'): void {
    if (p.settled) return;
    if (p.queued) {
      this.queue.splice(this.queue.indexOf(p), 1);
      this.queuedTokens -= p.rows.rows;
      p.queued = false;
    }
    this.counts[count]++;
    this.settle(p, error, false);
    this.checkDrained();
  }

  private settle(p: Pending, result: Tensor | unknown, ok: boolean): void {
    if (p.settled) return;
    p.settled = true;
    p.watchers?.delete(p);
    if (p.deadline !== undefined) clearTimeout(p.deadline);
    if (ok) {
      this.counts.completed++;
      p.resolve(result as Tensor);
    } else {
      p.reject(result);
    }
  }

  /** Starts the next batch when none is running (one at a time: see staging) and the wait policy allows. */
  private pump(): void {
    if (this.inFlight > 0 || this.nextBatch !== undefined || this.queue.length === 0) return;
    if (!this.closed && this.queuedTokens < this.maxBatchTokens) {
      if (this.waitTimer) return;
      const owed = this.wait.remaining(performance.now() - this.queue[0].enqueuedAt);
      if (owed > 0) {
        this.waitTimer = setTimeout(() => {
          this.waitTimer = undefined;
          this.pump();
        }, owed);
        return;
      }
    }
    if (this.waitTimer) {
      clearTimeout(this.waitTimer); // a full batch (or close) does not wait out the timer
      this.waitTimer = undefined;
    }
    void this.run(this.take());
  }

  /**
   * The next batch: the oldest request and every later one of its dtype that
   * fits in maxBatchTokens, in arrival order (the oldest always goes: no
   * request starves behind newer ones).
   */
  private take(): Pending[] {
    const dtype = this.queue[0].rows.dtype;
    const batch: Pending[] = [];
    const rest: Pending[] = [];
    let tokens = 0;
    for (const p of this.queue) {
      if (p.rows.dtype === dtype && (batch.length === 0 || tokens + p.rows.rows <= this.maxBatchTokens)) {
        batch.push(p);
        tokens += p.rows.rows;
        p.queued = false;
      } else {
        rest.push(p);
      }
    }
    this.queue = rest;
    this.queuedTokens -= tokens;
    return batch;
  }

  private async run(batch: Pending[]): Promise<void> {
    this.inFlight++;
    const start = performance.now();
    const h = this.hidden;
    const dtype = batch[0].rows.dtype;
    let tokens = 0;
    for (const p of batch) tokens += p.rows.rows;
    // Copied even for a batch of one: the forward pins the buffers it reads
    // (untransferable, README "Buffers and concurrency"), and a caller's own
    // buffer must stay its own.
    const data = this.staging(dtype, tokens); // [T, H]
    let row = 0;
    for (const p of batch) {
      data.set(p.rows.data, row * h);
      row += p.rows.rows;
    }
    const x = tensor(data, [tokens, h], dtype);
    const bucket = this.buckets?.bucketFor(tokens);
    // Filled in only for the batch event (expertsHit): with nobody listening the forward reports nothing.
    const profile = batchChannel.hasSubscribers ? ({} as ForwardProfile) : undefined;
    let failed = false;
    try {
      const y = bucket !== undefined ? await this.buckets!.run(x, bucket) : await this.forward(x, profile);
      this.deliver(batch, y);
    } catch {
      // Requests are checked at submit; a batch that fails anyway (out of
      // memory, a device error) is retried one request at a time, so that
      // each request gets its own outcome.
      failed = true;
      for (const p of batch) {
        if (p.settled) continue;
        try {
          this.settle(p, await this.forward(tensor(p.rows.data, [p.rows.rows, h], p.rows.dtype), undefined), true);
        } catch (e) {
          this.counts.failed++;
          this.settle(p, e, false);
        }
      }
    }
    const computeMs = performance.now() - start;
    this.wait.computed(computeMs);
    this.counts.batches++;
    this.counts.batchedTokens += tokens;
    if (batchChannel.hasSubscribers) {
      let sumWait = 0;
      let maxWait = 0;
      for (const p of batch) {
        const wait = start - p.enqueuedAt;
        sumWait += wait;
        maxWait = Math.max(maxWait, wait);
      }
      const event: BatchEvent = {
        tokens,
        paddedTokens: bucket ?? tokens,
        requests: batch.length,
        expertsHit: profile?.activeExperts ?? -1,
        queueMs: sumWait / batch.length,
        maxQueueMs: maxWait,
        computeMs,
        graph: bucket !== undefined,
        failed,
      };
      // Published after the batch's answers: the requests' continuations
      // (a server writing its answers) were queued as the batch delivered,
      // and run before the subscribers (a metrics library), not after them.
      queueMicrotask(() => batchChannel.publish(event));
    }
    this.inFlight--;
    this.batchEnded();
    this.checkDrained();
  }

  /**
   * After a batch: the next one starts at the end of this turn of the event
   * loop (setImmediate), not now. The batch's requests are answered first
   * (their continuations run before the turn ends), and every request whose
   * bytes are already here is parsed and submitted in the same turn, so it
   * joins the next batch instead of waiting for the one after it. Started
   * at once, the next forward took the CPU from those answers and left the
   * late arrivals for a batch of their own: at 64 connections of the example
   * server the mean batch was 25 of 64, 29 with the start at the turn's end
   * (+10% tokens/s). A lone client's next request arrives in a later turn,
   * to an idle batcher, and starts at once as before.
   *
   * With the queue empty at a batch's end no forward is pending: the next
   * request starts one as it is submitted, in whatever turn that is.
   */
  private batchEnded(): void {
    // Nothing queued: the next submit finds the batcher idle and starts its
    // forward itself (pump). The deferred start would cost a lone client a
    // turn of the event loop (a non-blocking epoll) on every request.
    if (this.nextBatch !== undefined || this.queue.length === 0) return;
    this.nextBatch = setImmediate(() => {
      this.nextBatch = undefined;
      this.pump();
    });
  }

  /**
   * The batch's input rows [tokens, H]: a prefix of one buffer per dtype,
   * reused by every batch (one forward runs at a time, and it has finished
   * reading its input when it settles), grown by doubling up to
   * maxBatchTokens rows (a larger lone request gets its own size). A new
   * buffer per batch was an ArrayBuffer allocation, its zeroing and its
   * sweep for every batch: per request for a lone client.
   */
  private staging(dtype: RowDType, tokens: number): Float32Array | Uint16Array {
    const h = this.hidden;
    let buffer = this.stagingBuffers[dtype];
    if (!buffer || buffer.length < tokens * h) {
      const rows = Math.max(tokens, Math.min(this.maxBatchTokens, 2 * (buffer ? buffer.length / h : 1)));
      buffer = dtype === 'f32' ? new Float32Array(rows * h) : new Uint16Array(rows * h);
      this.stagingBuffers[dtype] = buffer;
    }
    return buffer.subarray(0, tokens * h);
  }

  private readonly stagingBuffers: Partial<Record<RowDType, Float32Array | Uint16Array>> = {};

  /**
   * One plain forward on the host: output [T, H] on the host. A CPU layer's
   * own promise is handed back as it is: a lone client pays every promise
   * turn between its rows and the forward on each request.
   */
  private forward(x: Tensor, profile: ForwardProfile | undefined): Promise<Tensor> {
    const pending = this.layer.forward(x, { out: this.out, profile, batchInvariant: this.batchInvariant });
    if (this.layer.device === 'cpu') return pending;
    return pending.then((y) => {
      try {
        return y.to('cpu');
      } finally {
        y.dispose();
      }
    });
  }

  /** Each request gets a [rows, H] view of its own rows of the batch's output (no copy). */
  private deliver(batch: Pending[], y: Tensor): void {
    const h = this.hidden;
    const all = y.data as Float32Array | Uint16Array;
    if (batch.length === 1 && y.shape[0] === batch[0].rows.rows) {
      this.settle(batch[0], y, true); // the forward's own output, exactly the request's rows
      return;
    }
    let row = 0;
    for (const p of batch) {
      const rows = p.rows.rows;
      // (a view of the forward's own output, of the shape it was made for: no checks to repeat)
      if (!p.settled) this.settle(p, new Tensor(all.subarray(row * h, (row + rows) * h), [rows, h], this.out as 'bf16' | 'f32'), true);
      row += rows;
    }
  }

  /** Counters since the batcher was made, and what is queued and running now. */
  stats(): BatcherStats {
    const c = this.counts;
    return {
      ...c,
      meanBatchTokens: c.batches > 0 ? c.batchedTokens / c.batches : 0,
      queuedRequests: this.queue.length,
      queuedTokens: this.queuedTokens,
      inFlightBatches: this.inFlight,
      closed: this.closed,
    };
  }

  /**
   * Stops intake (later submits fail with ERR_MOE_CLOSED) and resolves once
   * every queued and running request has settled; queued requests go at
   * once, without waiting for company.
   */
  close(): Promise<void> {
    if (!this.drained) {
      this.closed = true;
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      this.drained = { promise, resolve };
      this.pump();
      this.checkDrained();
    }
    return this.drained.promise;
  }

  private checkDrained(): void {
    if (!this.drained || this.queue.length > 0 || this.inFlight > 0) return;
    this.buckets?.dispose();
    this.drained.resolve();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
