/**
 * Which experts a rank holds, and the check that every rank loaded the same
 * layer: a digest of its config and checkpoint, exchanged when the layer is
 * built.
 */
import { MoeError } from '../errors';
import type { MoeConfig } from '../moe/config';
import { Communicator } from './communicator';

export interface ExpertShard {
  comm: Communicator;
  rank: number;
  size: number;
  /** This rank's experts are [firstExpert, firstExpert + numLocalExperts). */
  firstExpert: number;
  numLocalExperts: number;
}

/** Contiguous slices of E / size experts; E not divisible by size is an error naming both. */
export function expertShard(comm: Communicator, numExperts: number, what: string): ExpertShard {
  if (numExperts % comm.size !== 0) {
    throw new MoeError('ERR_MOE_EP_CONFIG', `${what}: ${numExperts} experts cannot be split evenly over ${comm.size} ranks (E % size = ${numExperts % comm.size})`);
  }
  const numLocalExperts = numExperts / comm.size;
  return { comm, rank: comm.rank, size: comm.size, firstExpert: comm.rank * numLocalExperts, numLocalExperts };
}

const DIGEST_BYTES = 1024;

/**
 * Exchanges this rank's description of the layer (H, I, E, k, routing,
 * dtypes, checkpoint) with every rank and throws ERR_MOE_EP_CONFIG on every
 * rank, naming the field and both values, when any rank differs. Collective.
 */
export function checkSameLayer(shard: ExpertShard, config: MoeConfig, extra: Record<string, string | number>, what: string): void {
  const fields: Record<string, string | number | boolean> = { ...config, ...extra, ranks: shard.size };
  const text = JSON.stringify(fields);
  const bytes = new Uint8Array(DIGEST_BYTES);
  const encoded = new TextEncoder().encode(text);
  if (encoded.length > DIGEST_BYTES) throw new MoeError('ERR_MOE_INTERNAL', `${what}: the layer description is over ${DIGEST_BYTES} bytes`);
  bytes.set(encoded);
  const all = shard.comm.allgather(bytes);
  const decoder = new TextDecoder();
  for (let r = 0; r < shard.size; r++) {
    const theirs = JSON.parse(decoder.decode(all[r].subarray(0, all[r].indexOf(0) < 0 ? DIGEST_BYTES : all[r].indexOf(0)))) as Record<string, unknown>;
    for (const key of new Set([...Object.keys(fields), ...Object.keys(theirs)])) {
      if (theirs[key] !== fields[key]) {
        throw new MoeError('ERR_MOE_EP_CONFIG', `${what}: rank ${r} has ${key} = ${JSON.stringify(theirs[key])}, rank ${shard.rank} has ${JSON.stringify(fields[key])}: every rank must load the same layer`);
      }
    }
  }
}
