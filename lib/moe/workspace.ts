/**
 * The scratch memory of one forward, allocated for a token capacity and
 * reused: views of the exact sizes a call needs are cut from it per call.
 */
import type { NativeTensor } from '../native';
import { QUANT_GROUP } from '../ops/quantize';
import { DType, STORAGE, Storage } from '../dtype';
import type { MoeConfig } from './config';

/** Buffers and their shapes as functions of T (and R = T * k rows). */
function layoutOf(c: MoeConfig, tokens: number) {
  const rows = tokens * c.topK;
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
  };
  if (c.numSharedExperts > 0) {
    Object.assign(buffers, {
      sharedXq: ['fp8_e4m3', [tokens, h]],
      sharedXqScales: ['f32', [tokens, groups(h)]],
      sharedH: ['bf16', [tokens, 2 * is]],
      sharedHq: ['fp8_e4m3', [tokens, is]],
      sharedHqScales: ['f32', [tokens, groups(is)]],
      sharedOut: ['f32', [tokens, h]],
    });
  }
  return buffers;
}

const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

export class Workspace {
  readonly capacity: number;
  /** Wall time of each stage of the last forward, seconds. */
  readonly stageSeconds = new Float64Array(9);
  private readonly storage: Record<string, Storage>;
  private readonly config: MoeConfig;

  constructor(config: MoeConfig, capacity: number) {
    this.config = config;
    this.capacity = capacity;
    this.storage = {};
    for (const [name, [dtype, shape]] of Object.entries(layoutOf(config, capacity))) {
      this.storage[name] = new STORAGE[dtype](numel(shape));
    }
  }

  get bytes(): number {
    return Object.values(this.storage).reduce((sum, s) => sum + s.byteLength, 0);
  }

  /** Views of exactly the sizes a forward of `tokens` tokens needs. */
  views(tokens: number): Record<string, NativeTensor> {
    const views: Record<string, NativeTensor> = {};
    for (const [name, [dtype, shape]] of Object.entries(layoutOf(this.config, tokens))) {
      views[name] = { data: this.storage[name].subarray(0, numel(shape)), dtype, shape };
    }
    return views;
  }
}
