/**
 * `mpirun -np N npx moe-kernels bench ep`: the expert-parallel layer across N
 * processes. For each batch size (tokens per rank): the layer's tokens/s over
 * all ranks; dispatch's and combine's GB/s next to a blocking MPI_Alltoallv
 * of the same bytes on the same buffers (the ceiling the exchanges are held
 * to), the two interleaved rep by rep in the same run and compared by their
 * medians; and the bytes the fp8, once-per-rank dispatch moves against a
 * naive bf16 exchange of one row per (token, expert).
 */
import { MoeError } from '../errors';
import { native } from '../native';
import type { EpShardStats } from '../native';
import { MoeLayer } from '../moe/layer';
import { tensor } from '../tensor';
import { fillNormal, seededRandom } from '../moe/random';
import type { Communicator } from '../ep/communicator';
import { formatTable } from './table';

export const EP_DEFAULT_TOKENS = [64, 512];

export interface EpBenchRow {
  /** Tokens per rank. */
  tokens: number;
  ranks: number;
  /** Forward wall time, ms (median over the runs of the slowest rank's time). */
  ms: number;
  /** All ranks' tokens per second. */
  tokensPerSecond: number;
  /** Bytes the dispatch exchange moved (all ranks, including each rank's rows to itself). */
  dispatchBytes: number;
  combineBytes: number;
  /** The naive exchange: one bf16 row per (token, expert) each way. */
  naiveBytes: number;
  /**
   * GB/s: bytes over all ranks / the median over runs of the slowest rank's
   * time. "Step": the whole dispatch (packing, counts, agreement, records,
   * unpacking) or combine (agreement, rows) inside the forwards. "Exchange"
   * and "raw": the same row exchange (same buffers, counts and record size)
   * as the layer's transport does it and as one blocking MPI_Alltoallv,
   * interleaved rep by rep.
   */
  dispatchGBs: number;
  /** Of the dispatch step: ms in the counts exchange and agreement (waiting for the last rank included). */
  dispatchSyncMs: number;
  /** The row exchanges inside the forwards (after the experts' pass over their weights). */
  dispatchInForwardGBs: number;
  combineInForwardGBs: number;
  dispatchExchangeGBs: number;
  dispatchRawGBs: number;
  combineGBs: number;
  combineExchangeGBs: number;
  combineRawGBs: number;
  /** Reps of each exchange in the interleaved comparison. */
  reps: number;
}

const median = (values: ArrayLike<number>) => Array.from(values).sort((a, b) => a - b)[Math.floor(values.length / 2)];

/** The largest of every rank's `value` (a collective). */
function maxOverRanks(comm: Communicator, value: number): number {
  return maxPerRun(comm, [value])[0];
}

/** For each run i, the largest of every rank's values[i] (a collective; every rank has as many runs). */
function maxPerRun(comm: Communicator, values: ArrayLike<number>): number[] {
  const all = comm.allgather(new Uint8Array(Float64Array.from(values).buffer));
  const ranks = all.map((b) => new Float64Array(b.slice().buffer));
  return Array.from(values, (_, i) => Math.max(...ranks.map((r) => r[i])));
}

function sumOverRanks(comm: Communicator, value: number): number {
  const all = comm.allgather(new Uint8Array(Float64Array.of(value).buffer));
  return all.reduce((n, b) => n + new Float64Array(b.slice().buffer)[0], 0);
}

export async function benchEp(layer: MoeLayer, options: { tokenCounts: number[]; timeMs: number; onRow?: (row: EpBenchRow) => void }): Promise<EpBenchRow[]> {
  const shard = layer.shard;
  if (!shard) throw new MoeError('ERR_MOE_ARGUMENT', 'bench ep: the layer is not expert-parallel');
  const comm = shard.comm;
  const handle = (layer as unknown as { epHandle: { handle: unknown } }).epHandle.handle;
  const h = layer.config.hiddenSize;
  const rows: EpBenchRow[] = [];
  for (const tokens of options.tokenCounts) {
    // Each rank its own tokens (different seeds: the ranks' batches differ, as with data-parallel attention).
    const x = tensor(fillNormal(new Float32Array(tokens * h), seededRandom(1000 + shard.rank), 1), [tokens, h]);
    const out = tensor(new Uint16Array(tokens * h), [tokens, h], 'bf16');
    const start = performance.now();
    await layer.forward(x, { into: out });
    const once = maxOverRanks(comm, performance.now() - start);
    // Half the time on forwards, half on the interleaved exchanges.
    const iterations = Math.max(5, Math.min(200, Math.round(options.timeMs / 2 / Math.max(once, 1e-3))));
    const times: number[] = [];
    const stats: EpShardStats[] = [];
    for (let i = 0; i < iterations; i++) {
      comm.barrier();
      const t0 = performance.now();
      await layer.forward(x, { into: out });
      times.push(performance.now() - t0);
      stats.push(native().epShardStats(handle));
    }
    const last = stats[stats.length - 1];
    // The last forward's exchanges again, ours and MPI_Alltoallv's in turn on
    // the same buffers: as many reps as fit the other half of the time (at
    // least 100: oversubscribed ranks make single reps vary 10x).
    const calibration = performance.now();
    native().epExchangeAb(handle, { reverse: false, reps: 3 });
    native().epExchangeAb(handle, { reverse: true, reps: 3 });
    const repMs = maxOverRanks(comm, (performance.now() - calibration) / 3);
    const reps = maxOverRanks(comm, Math.max(100, Math.min(2000, Math.round(options.timeMs / 2 / repMs))));
    const dispatchAb = native().epExchangeAb(handle, { reverse: false, reps });
    const combineAb = native().epExchangeAb(handle, { reverse: true, reps });
    const slowest = (values: ArrayLike<number>) => median(maxPerRun(comm, values));
    const ms = slowest(times);
    // Bytes over all ranks; times are the slowest rank's (an exchange ends when its last rank does).
    const dispatchBytes = sumOverRanks(comm, last.rowsSent * last.dispatchRowBytes);
    const combineBytes = sumOverRanks(comm, last.rowsSent * last.combineRowBytes);
    const naiveBytes = sumOverRanks(comm, tokens * layer.config.topK * h * 2);
    const gbs = (bytes: number, seconds: number) => bytes / seconds / 1e9;
    const row: EpBenchRow = {
      tokens,
      ranks: shard.size,
      ms,
      tokensPerSecond: (tokens * shard.size) / (ms / 1e3),
      dispatchBytes,
      combineBytes,
      naiveBytes,
      dispatchGBs: gbs(dispatchBytes, slowest(stats.map((s) => s.dispatchSeconds))),
      dispatchSyncMs: 1e3 * slowest(stats.map((s) => s.dispatchSyncSeconds)),
      dispatchInForwardGBs: gbs(dispatchBytes, slowest(stats.map((s) => s.dispatchExchangeSeconds))),
      combineInForwardGBs: gbs(combineBytes, slowest(stats.map((s) => s.combineExchangeSeconds))),
      dispatchExchangeGBs: gbs(dispatchBytes, slowest(dispatchAb.ours)),
      dispatchRawGBs: gbs(dispatchBytes, slowest(dispatchAb.raw)),
      combineGBs: gbs(combineBytes, slowest(stats.map((s) => s.combineSeconds))),
      combineExchangeGBs: gbs(combineBytes, slowest(combineAb.ours)),
      combineRawGBs: gbs(combineBytes, slowest(combineAb.raw)),
      reps,
    };
    rows.push(row);
    options.onRow?.(row);
  }
  return rows;
}

export function formatEpReport(rows: EpBenchRow[], layer: MoeLayer, library: string): string {
  const c = layer.config;
  const shard = layer.shard!;
  const mib = (n: number) => (n / 2 ** 20).toFixed(2);
  const lines = [
    `expert parallelism over ${library}: ${shard.size} ranks, ${shard.numLocalExperts} of ${c.numExperts} experts each`,
    `layer H=${c.hiddenSize} I=${c.intermediateSize} E=${c.numExperts} k=${c.topK}; ${mib(layer.memoryBytes)} MiB of weights on rank ${shard.rank}`,
    'GB/s: bytes over all ranks / the median over runs of the slowest rank\'s time. "step": the whole dispatch (packing, counts, agreement,',
    'records, unpacking) or combine (agreement, rows) in the forwards, "sync": the dispatch\'s counts exchange and agreement (ms, with the',
    'wait for the last rank), "fwd": the row exchange inside the forwards; "xchg": the same exchange as the layer does it and "MPI": one',
    'blocking MPI_Alltoallv of the same bytes on the same buffers, interleaved rep by rep (each from a barrier); "/MPI": xchg over MPI.',
    '',
  ];
  const header = ['tokens/rank', 'tokens/s', 'ms', 'moved MiB', 'naive MiB', 'saved', 'disp step', 'sync', 'fwd', 'xchg', 'MPI', '/MPI', 'comb step', 'fwd', 'xchg', 'MPI', '/MPI', 'reps'];
  const body = rows.map((r) => [
    String(r.tokens),
    r.tokensPerSecond.toFixed(0),
    r.ms.toFixed(2),
    mib(r.dispatchBytes + r.combineBytes),
    mib(2 * r.naiveBytes),
    `${(100 * (1 - (r.dispatchBytes + r.combineBytes) / (2 * r.naiveBytes))).toFixed(0)}%`,
    r.dispatchGBs.toFixed(2),
    r.dispatchSyncMs.toFixed(3),
    r.dispatchInForwardGBs.toFixed(2),
    r.dispatchExchangeGBs.toFixed(2),
    r.dispatchRawGBs.toFixed(2),
    (r.dispatchExchangeGBs / r.dispatchRawGBs).toFixed(2),
    r.combineGBs.toFixed(2),
    r.combineInForwardGBs.toFixed(2),
    r.combineExchangeGBs.toFixed(2),
    r.combineRawGBs.toFixed(2),
    (r.combineExchangeGBs / r.combineRawGBs).toFixed(2),
    String(r.reps),
  ]);
  return [...lines, ...formatTable(header, body)].join('\n');
}
