/**
 * `mpirun -np N npx moe-kernels bench ep`: the expert-parallel layer across N
 * processes. For each batch size (tokens per rank): the layer's tokens/s over
 * all ranks; dispatch's and combine's GB/s next to a blocking MPI_Alltoallv
 * of the same bytes to the same ranks, measured in the same run right after
 * (the ceiling the exchanges are held to); and the bytes the fp8, once-per-
 * rank dispatch moves against a naive bf16 exchange of one row per (token,
 * expert).
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
  /** Forward wall time, ms (the slowest rank's median). */
  ms: number;
  /** All ranks' tokens per second. */
  tokensPerSecond: number;
  /** Bytes the dispatch exchange moved (all ranks, including each rank's rows to itself). */
  dispatchBytes: number;
  combineBytes: number;
  /** The naive exchange: one bf16 row per (token, expert) each way. */
  naiveBytes: number;
  /** GB/s (best run) of the whole dispatch step (packing, counts, agreement, records, unpacking), of its record exchange alone (one MPI_Ialltoallv), and of one MPI_Alltoallv on the same bytes. */
  dispatchGBs: number;
  dispatchExchangeGBs: number;
  dispatchRawGBs: number;
  combineGBs: number;
  combineExchangeGBs: number;
  combineRawGBs: number;
  /** rows/MPI from the median runs instead of the best (the spread on a shared machine). */
  dispatchMedianRatio: number;
  combineMedianRatio: number;
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
// The exchanges' times: the best of the runs (on a shared machine a rank that
// loses its core for a moment stalls every rank's exchange; the best run is
// the transport's, not the scheduler's), the same statistic for both sides.
const best = (values: number[]) => Math.min(...values);

/** The largest of every rank's `value` (a collective). */
function maxOverRanks(comm: Communicator, value: number): number {
  const all = comm.allgather(new Uint8Array(Float64Array.of(value).buffer));
  return Math.max(...all.map((b) => new Float64Array(b.slice().buffer)[0]));
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
    const iterations = Math.max(3, Math.min(200, Math.round(options.timeMs / Math.max(once, 1e-3))));
    const times: number[] = [];
    const stats: EpShardStats[] = [];
    const rawDispatch: number[] = [];
    const rawCombine: number[] = [];
    // Each forward is followed by MPI_Alltoallv on the same counts and bytes
    // (each started from a barrier, as the forward is): the ceiling is
    // measured in the same moments as the exchanges it is compared with.
    for (let i = 0; i < iterations; i++) {
      comm.barrier();
      const t0 = performance.now();
      await layer.forward(x, { into: out });
      times.push(performance.now() - t0);
      const s = native().epShardStats(handle);
      stats.push(s);
      comm.barrier();
      rawDispatch.push(native().epRawAlltoallv(handle, { rowBytes: s.dispatchRowBytes, reverse: false, iterations: 1 }));
      comm.barrier();
      rawCombine.push(native().epRawAlltoallv(handle, { rowBytes: s.combineRowBytes, reverse: true, iterations: 1 }));
    }
    const last = stats[stats.length - 1];
    const ms = maxOverRanks(comm, median(times));
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
      dispatchGBs: gbs(dispatchBytes, maxOverRanks(comm, best(stats.map((s) => s.dispatchSeconds)))),
      dispatchExchangeGBs: gbs(dispatchBytes, maxOverRanks(comm, best(stats.map((s) => s.dispatchExchangeSeconds)))),
      dispatchRawGBs: gbs(dispatchBytes, maxOverRanks(comm, best(rawDispatch))),
      combineGBs: gbs(combineBytes, maxOverRanks(comm, best(stats.map((s) => s.combineSeconds)))),
      combineExchangeGBs: gbs(combineBytes, maxOverRanks(comm, best(stats.map((s) => s.combineExchangeSeconds)))),
      combineRawGBs: gbs(combineBytes, maxOverRanks(comm, best(rawCombine))),
      dispatchMedianRatio: 0,
      combineMedianRatio: 0,
    };
    // The same ratios from each side's median run (slowest rank's): how far the typical run is from the best.
    const medianRatio = (exchange: number[], raw: number[]) => maxOverRanks(comm, median(raw)) / maxOverRanks(comm, median(exchange));
    row.dispatchMedianRatio = medianRatio(stats.map((s) => s.dispatchExchangeSeconds), rawDispatch);
    row.combineMedianRatio = medianRatio(stats.map((s) => s.combineExchangeSeconds), rawCombine);
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
    'GB/s: bytes over all ranks / the slowest rank\'s best time over the runs (statistic: best; "med" columns: the same ratio from the median runs).',
    '"step": the whole dispatch (packing, counts, agreement, records, unpacking) or combine (agreement, rows); "rows": its one MPI_Ialltoallv',
    'alone; "MPI": one blocking MPI_Alltoallv of the same bytes (same counts, same record size) between the same ranks, right after in the same run.',
    '',
  ];
  const header = ['tokens/rank', 'tokens/s', 'ms', 'moved MiB', 'naive MiB', 'saved', 'disp step', 'disp rows', 'MPI', 'rows/MPI', 'med', 'comb step', 'comb rows', 'MPI', 'rows/MPI', 'med'];
  const body = rows.map((r) => [
    String(r.tokens),
    r.tokensPerSecond.toFixed(0),
    r.ms.toFixed(2),
    mib(r.dispatchBytes + r.combineBytes),
    mib(2 * r.naiveBytes),
    `${(100 * (1 - (r.dispatchBytes + r.combineBytes) / (2 * r.naiveBytes))).toFixed(0)}%`,
    r.dispatchGBs.toFixed(2),
    r.dispatchExchangeGBs.toFixed(2),
    r.dispatchRawGBs.toFixed(2),
    (r.dispatchExchangeGBs / r.dispatchRawGBs).toFixed(2),
    r.dispatchMedianRatio.toFixed(2),
    r.combineGBs.toFixed(2),
    r.combineExchangeGBs.toFixed(2),
    r.combineRawGBs.toFixed(2),
    (r.combineExchangeGBs / r.combineRawGBs).toFixed(2),
    r.combineMedianRatio.toFixed(2),
  ]);
  return [...lines, ...formatTable(header, body)].join('\n');
}
