/**
 * CUDA layers: small batches padded up to a few captured CUDA-graph sizes
 * and replayed, instead of launched kernel by kernel. One graph per (size,
 * input dtype), captured the first time a batch needs it.
 */
import type { CapturedForward, MoeLayer } from '../moe/layer';
import { Tensor } from '../tensor';
import type { RowDType } from './request-rows';

/** Default bucket sizes: the decode sizes whose masked forward is capturable (MASKED_MAX_TOKENS = 16). */
export const DEFAULT_GRAPH_BUCKETS: readonly number[] = [1, 2, 4, 8, 16];

export class GraphBuckets {
  private readonly graphs = new Map<string, CapturedForward>();
  readonly sizes: readonly number[];

  constructor(
    private readonly layer: MoeLayer,
    sizes: readonly number[],
    private readonly out: 'bf16' | 'f32',
  ) {
    this.sizes = [...sizes].sort((a, b) => a - b);
  }

  /** The bucket that `tokens` rows are padded to, or undefined when the batch is too large for any. */
  bucketFor(tokens: number): number | undefined {
    return this.sizes.find((size) => size >= tokens);
  }

  /** The layer's output [t, H] on the host for x [t, H] on the host, replayed in the bucket `size`. */
  async run(x: Tensor, size: number): Promise<Tensor> {
    const dtype = x.dtype as RowDType;
    const key = `${dtype}:${size}`;
    let graph = this.graphs.get(key);
    if (!graph) {
      graph = this.layer.capture({ maxTokens: size, dtype, out: this.out });
      this.graphs.set(key, graph);
    }
    const device = await graph.replay(x);
    try {
      return device.to('cpu');
    } finally {
      device.dispose();
    }
  }

  dispose(): void {
    for (const graph of this.graphs.values()) graph.dispose();
    this.graphs.clear();
  }
}
