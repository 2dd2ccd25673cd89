/**
 * The scratch memory of one forward, allocated for a token capacity and
 * reused: views of the exact sizes a call needs are cut from it per call.
 */
import { native } from '../native';
import type { NativeTensor } from '../native';
import { Tensor, allocateLongLived, empty } from '../tensor';
import { QUANT_GROUP } from '../ops/quantize';
import { DType, Storage } from '../dtype';
import type { MoeConfig } from './config';

/**
 * How a forward lays out its rows. The CPU uses the contiguous layout without
 * padding (R = T * k). The GPU's contiguous layout aligns each expert's
 * segment to 128 rows for the Hopper grouped GEMM, so it is sized for the
 * worst case R = T * k + E * 127 (the real R is read back after the layout);
 * its masked layout (decode) has E * T rows ([E, Mmax = T]).
 */
export type RowLayout = 'cpu' | 'contiguous' | 'masked' | 'ep';

/** The GPU's contiguous segment alignment (the Hopper grouped GEMM's block rows). */
export const CUDA_ALIGN = 128;

export function rowsFor(c: MoeConfig, tokens: number, layout: RowLayout): number {
  if (layout === 'masked') return c.numExperts * tokens;
  if (layout === 'contiguous') return tokens * c.topK + c.numExperts * (CUDA_ALIGN - 1);
  // Expert parallelism: the routed experts' rows live in the rank's exchange
  // buffers (native EpShard); here xq holds the T tokens quantized once.
  if (layout === 'ep') return tokens;
  return tokens * c.topK;
}

/** Buffers and their shapes as functions of T (and R rows). */
function layoutOf(c: MoeConfig, tokens: number, rows = tokens * c.topK) {
  const h = c.hiddenSize;
  const i = c.intermediateSize;
  const is = c.intermediateSize * c.numSharedExperts;
  const groups = (n: number) => Math.ceil(n / QUANT_GROUP);
  const buffers: Record<string, [DType, number[]]> = {
    logits: ['f32', [tokens, c.numExperts]],
    ids: ['i32', [tokens, c.topK]],
    weights: ['f32', [tokens, c.topK]],
    tokensPerExpert: ['i32', [c.numExperts]],
    offsets: ['i32', [c.numExperts + 1]],
    rowToken: ['i32', [rows]],
    groupIndex: ['i32', [rows]],
    slotRow: ['i32', [tokens, c.topK]],
    xq: ['fp8_e4m3', [rows, h]],
    xqScales: ['f32', [rows, groups(h)]],
    h: ['bf16', [rows, 2 * i]],
    hq: ['fp8_e4m3', [rows, i]],
    hqScales: ['f32', [rows, groups(i)]],
    y: ['bf16', [rows, h]],
    // [8] i32: the GPU forward's device error flags (one word per stage).
    flags: ['i32', [8]],
  };
  if (c.numSharedExperts > 0) {
    Object.assign(buffers, {
      sharedXq: ['fp8_e4m3', [tokens, h]],
      sharedXqScales: ['f32', [tokens, groups(h)]],
      sharedH: ['bf16', [tokens, 2 * is]],
      sharedHq: ['fp8_e4m3', [tokens, is]],
      sharedHqScales: ['f32', [tokens, groups(is)]],
      // bf16 like the routed experts' y (and DeepSeek-V3's own inference code):
      // half the bytes for the shared GEMM to write and for combine to read.
      sharedOut: ['bf16', [tokens, h]],
    });
  }
  return buffers;
}

const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** Token counts whose prepared views a workspace keeps (~6 KB each: ~20 views and their native descriptors). */
export const PREPARED_SIZES = 64;

export class Workspace {
  readonly capacity: number;
  /** Where the buffers live, and the row layout they are sized for. */
  readonly device: 'cpu' | 'cuda';
  readonly rowLayout: RowLayout;
  /** Wall time of each stage of the last forward, seconds. */
  readonly stageSeconds = new Float64Array(9);
  private readonly storage: Record<string, Storage>;
  /** CUDA: one device tensor per buffer, allocated once. */
  private readonly deviceStorage: Record<string, Tensor>;
  private readonly config: MoeConfig;

  constructor(config: MoeConfig, capacity: number, rowLayout: RowLayout = 'cpu') {
    this.config = config;
    this.capacity = capacity;
    this.rowLayout = rowLayout;
    this.device = rowLayout === 'cpu' || rowLayout === 'ep' ? 'cpu' : 'cuda';
    this.storage = {};
    this.deviceStorage = {};
    for (const [name, [dtype, shape]] of Object.entries(layoutOf(config, capacity, rowsFor(config, capacity, rowLayout)))) {
      if (this.device === 'cuda') this.deviceStorage[name] = empty(shape, dtype, 'cuda');
      else this.storage[name] = allocateLongLived(dtype, numel(shape));
    }
  }

  get bytes(): number {
    if (this.device === 'cuda') return Object.values(this.deviceStorage).reduce((sum, t) => sum + t.byteLength, 0);
    return Object.values(this.storage).reduce((sum, s) => sum + s.byteLength, 0);
  }

  /** The device buffer `name` (CUDA workspaces). */
  tensor(name: string): Tensor {
    return this.deviceStorage[name];
  }

  /** Frees the device buffers now (CUDA workspaces; the GC would otherwise). */
  dispose(): void {
    for (const t of Object.values(this.deviceStorage)) t.dispose();
  }

  /**
   * Views of exactly the sizes a forward of `tokens` tokens needs (prefixes of
   * the buffers), read by the addon once (moePrepareWorkspace) for every
   * moeForward of that size; the holder keeps the views alive while a forward
   * runs. The most recently used PREPARED_SIZES token counts are kept: a
   * decode loop asks for the same T at every step, and a batcher under load
   * for T spread over tens of sizes (20-40 at 64 clients), where reading the
   * views anew took ~130 us of the JS thread per forward.
   */
  prepared(tokens: number): { handle: unknown; views: Record<string, NativeTensor> } {
    // A decode loop's every step: no Map operations (each costs ~3-5 us with the caches cold).
    if (this.lastPrepared?.tokens === tokens) return this.lastPrepared.prepared;
    const cached = this.preparedCache.get(tokens);
    if (cached) {
      this.preparedCache.delete(tokens); // most recently used last
      this.preparedCache.set(tokens, cached);
      this.lastPrepared = { tokens, prepared: cached };
      return cached;
    }
    const views = this.buildViews(tokens);
    const prepared = { handle: native().moePrepareWorkspace({ ws: views }), views };
    if (this.preparedCache.size >= PREPARED_SIZES) this.preparedCache.delete(this.preparedCache.keys().next().value as number);
    this.preparedCache.set(tokens, prepared);
    this.lastPrepared = { tokens, prepared };
    return prepared;
  }

  /** Token counts with prepared views, least recently used first. */
  private readonly preparedCache = new Map<number, { handle: unknown; views: Record<string, NativeTensor> }>();
  /** The most recently used of them (the Map's last entry). */
  private lastPrepared?: { tokens: number; prepared: { handle: unknown; views: Record<string, NativeTensor> } };

  private buildViews(tokens: number): Record<string, NativeTensor> {
    const views: Record<string, NativeTensor> = {};
    for (const [name, [dtype, shape]] of Object.entries(layoutOf(this.config, tokens, rowsFor(this.config, tokens, this.rowLayout)))) {
      views[name] = this.device === 'cuda'
        ? ({ device: 'cuda', handle: this.deviceStorage[name].handle, dtype, shape } as NativeTensor)
        : { data: this.storage[name].subarray(0, numel(shape)), dtype, shape };
    }
    return views;
  }
}
