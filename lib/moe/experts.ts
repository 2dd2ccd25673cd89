/**
 * Per-expert FP8 weight matrices, stacked [E, N, K] but stored in shards of
 * whole experts: a JS typed array holds at most 4 GiB and DeepSeek-V3's w13
 * alone is 7.5 GB. Native code takes the list of shards.
 */
import { MoeError } from '../errors';
import { QUANT_GROUP, WEIGHT_BLOCK_ROWS } from '../ops/quantize';
import { Tensor, allocateLongLived, empty, tensor } from '../tensor';

export interface ExpertMatrices {
  readonly numExperts: number; // E
  readonly n: number; // N: output features
  readonly k: number; // K: input features
  /** Shards in expert order, each [Gs, N, K] fp8_e4m3. */
  readonly data: Tensor<'fp8_e4m3'>[];
  /** Shards in expert order, each [Gs, ceil(N/128), ceil(K/128)] f32 (dequantizing scales). */
  readonly scales: Tensor<'f32'>[];
}

/** Shards of at most 2 GiB keep well under the typed-array limit. */
export const MAX_SHARD_BYTES = 2 ** 31;

export function allocExperts(numExperts: number, n: number, k: number, maxShardBytes = MAX_SHARD_BYTES): ExpertMatrices {
  const perShard = Math.max(1, Math.floor(maxShardBytes / (n * k)));
  const scaleRows = Math.ceil(n / WEIGHT_BLOCK_ROWS);
  const scaleCols = Math.ceil(k / QUANT_GROUP);
  const data: Tensor<'fp8_e4m3'>[] = [];
  const scales: Tensor<'f32'>[] = [];
  for (let first = 0; first < numExperts; first += perShard) {
    const count = Math.min(perShard, numExperts - first);
    data.push(tensor(allocateLongLived('fp8_e4m3', count * n * k), [count, n, k], 'fp8_e4m3'));
    scales.push(empty([count, scaleRows, scaleCols], 'f32'));
  }
  return { numExperts, n, k, data, scales };
}

/** Expert e's matrix [N, K] fp8 and its scales [ceil(N/128), ceil(K/128)], as views into the shards. */
export function expertSlot(m: ExpertMatrices, expert: number): { data: Uint8Array; scales: Float32Array } {
  if (!Number.isInteger(expert) || expert < 0 || expert >= m.numExperts) {
    throw new MoeError('ERR_MOE_RANGE', `expert ${expert} is not in [0, ${m.numExperts})`);
  }
  const perShard = m.data[0].shape[0];
  const shard = Math.floor(expert / perShard);
  const local = expert - shard * perShard;
  const size = m.n * m.k;
  const scaleSize = m.scales[0].shape[1] * m.scales[0].shape[2];
  return {
    data: m.data[shard].data.subarray(local * size, (local + 1) * size),
    scales: m.scales[shard].data.subarray(local * scaleSize, (local + 1) * scaleSize),
  };
}

export function expertBytes(m: ExpertMatrices): number {
  return m.numExperts * m.n * m.k;
}
