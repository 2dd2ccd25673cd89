/**
 * Fresh random inputs for every run, from a seed that is printed with any
 * failure so that the run can be repeated (MOE_TEST_SEED=...).
 */
import { seededRandom } from '../../lib/moe/random';

export const SEED = Number(process.env.MOE_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31));

/** A seeded generator (mulberry32, the one random layers use). */
export function rng(seed = SEED): () => number {
  return seededRandom(seed);
}

/** Normal-ish values (sum of uniforms) scaled by `scale`, never all zero. */
export function randomFloats(count: number, random: () => number, scale = 1): Float32Array {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = (random() + random() + random() - 1.5) * 2 * scale;
  return out;
}

/** Activations with outliers in a few channels, as real LLM activations have. */
export function randomActivations(rows: number, cols: number, random: () => number): Float32Array {
  const out = randomFloats(rows * cols, random);
  for (let i = 0; i < out.length; i += 97) out[i] *= 30;
  return out;
}

export const seedNote = `(MOE_TEST_SEED=${SEED})`;
