/**
 * Drops a layer's weights from every cache level before each timed forward.
 * In a model every layer reads its weights from memory (the model's weights
 * are far larger than any cache), which is what the roofline assumes; one
 * layer timed alone would find them still cached from the previous forward
 * (169 MiB of experts fit in the 300 MiB L3 a cloud VM reports), and decode
 * would beat the memory roofline. Only the weights go: code, page tables and
 * the reused workspaces stay cached, as they do in a serving loop.
 */
import type { MoeLayer } from '../moe/layer';
import { native } from '../native';

/** A function that evicts the layer's weights, or undefined where the CPU has no cache-flush instruction. */
export function weightEvictor(layer: MoeLayer): (() => void) | undefined {
  const weights = layer.hostWeights().map((t) => t.data);
  if (weights.length === 0 || !native().evictFromCaches(weights[0])) return undefined;
  return () => {
    for (const data of weights) native().evictFromCaches(data);
  };
}
