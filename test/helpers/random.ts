/**
 * Fresh random inputs for every run, from a seed that is printed with any
 * failure so that the run can be repeated (MOE_TEST_SEED=...).
 */
export const SEED = Number(process.env.MOE_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31));

/** mulberry32: a small, fast, seedable generator (test inputs only). */
export function rng(seed = SEED): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
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
