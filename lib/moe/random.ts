/**
 * A seeded generator for random layers (reproducible weights from a seed).
 * mulberry32: tiny and fast; statistical quality is ample for test weights.
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Approximately normal values (a sum of three uniforms) with standard deviation `std`. */
export function fillNormal(out: Float32Array, random: () => number, std: number): Float32Array {
  const k = std * 2; // the sum of 3 uniforms on [-0.5, 0.5] has variance 1/4
  for (let i = 0; i < out.length; i++) out[i] = (random() + random() + random() - 1.5) * k;
  return out;
}
