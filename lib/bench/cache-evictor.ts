/**
 * Evicts the machine's caches between timed runs, so that every run reads its
 * weights from memory, as each layer of a model does: a model's weights are
 * far larger than any cache, but one layer timed alone would find its weights
 * still in the last-level cache from the previous run (169 MiB of experts fit
 * in the 300 MiB L3 a cloud VM reports), and decode would then beat the
 * memory roofline it is measured against.
 */
import { lastLevelCacheBytes } from './operands';

/** Eviction streams twice the cache, at most this much. */
const MAX_EVICTION_BYTES = 2 ** 30;

/**
 * Returns a function that reads one word of every cache line of a buffer
 * twice the last-level cache. Reads, not writes: a large fill may use
 * non-temporal stores, which bypass the caches and evict nothing.
 */
export function cacheEvictor(): { evict: () => number; bytes: number } {
  const bytes = Math.min(2 * lastLevelCacheBytes(), MAX_EVICTION_BYTES);
  const words = new Int32Array(bytes / 4);  // [bytes / 4] i32
  words.fill(1);  // touched, so that every page is its own (untouched pages all map the zero page)
  const WORDS_PER_LINE = 16;
  return {
    bytes,
    evict: () => {
      let sum = 0;
      for (let i = 0; i < words.length; i += WORDS_PER_LINE) sum += words[i];
      return sum;  // returned so that the loop is not dead code
    },
  };
}
