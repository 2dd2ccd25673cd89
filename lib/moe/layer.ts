/**
 * The MoE layer of DeepSeek-V3 (SPEC.md, "The MoE layer"): router, routed
 * experts with FP8 weights, shared experts, as one native call per forward.
 */
import { MoeError, describe } from '../errors';
import { native } from '../native';
import { cpuInfo } from '../runtime';
import { quantizeWeightsSync } from '../ops/quantize';
import { Tensor, bf16FromFloat32, empty, tensor } from '../tensor';
import { expectDtype, expectOneOf, expectOptions, expectRank, expectShape, expectTensor } from '../validate';
import { MoeConfig, validateConfig } from './config';
import { ExpertMatrices, allocExperts, expertSlot } from './experts';
import { fillNormal, seededRandom } from './random';
import { Workspace } from './workspace';
import { LoadOptions, loadDeepSeekLayer } from '../checkpoint/deepseek';

export interface MoeWeights {
  /** [E, H] f32 or bf16: mlp.gate.weight */
  readonly gate: Tensor;
  /** [E] f32: mlp.gate.e_score_correction_bias (sigmoid routing only) */
  readonly bias?: Tensor<'f32'>;
  /** [E, 2I, H]: gate_proj then up_proj of every routed expert */
  readonly w13: ExpertMatrices;
  /** [E, H, I]: down_proj of every routed expert */
  readonly w2: ExpertMatrices;
  /** [1, 2Is, H] and [1, H, Is] (Is = I * n_shared_experts): the shared experts */
  readonly sharedW13?: ExpertMatrices;
  readonly sharedW2?: ExpertMatrices;
}

/** Wall time of each stage of a forward, milliseconds. */
export interface StageTimes {
  router: number; // the router's projection x * Wgate^T (a small f32 GEMM)
  route: number; // scoring and top-k selection
  layout: number;
  dispatch: number; // gather + fp8 quantization
  gemm1: number; // grouped GEMM with w13
  swiglu: number; // SwiGLU + fp8 quantization
  gemm2: number; // grouped GEMM with w2
  shared: number; // the shared experts
  combine: number;
}

export const STAGES: readonly (keyof StageTimes)[] = ['router', 'route', 'layout', 'dispatch', 'gemm1', 'swiglu', 'gemm2', 'shared', 'combine'];

/** What a forward did, for benchmarks and the demo. */
export interface ForwardProfile {
  /** Wall time of each stage, ms. */
  stages: StageTimes;
  /** Experts that received at least one token. */
  activeExperts: number;
  /** Rows of the grouped GEMMs (token-expert pairs). */
  rows: number;
}

export interface ForwardOptions {
  /** Output dtype: 'bf16' (default) or 'f32'. */
  out?: 'bf16' | 'f32';
  into?: Tensor;
  /** Filled in with the stage times and routing statistics of this forward. */
  profile?: ForwardProfile;
}

export interface RandomLayerOptions {
  seed?: number;
  onProgress?: (done: number, total: number) => void;
  /** Largest shard of expert weights in bytes (default 2 GiB; smaller values exercise sharding in tests). */
  maxShardBytes?: number;
}

/** Idle workspaces kept for reuse; more concurrent forwards than this allocate and drop extras. */
const MAX_IDLE_WORKSPACES = 4;

function checkExperts(m: ExpertMatrices | undefined, e: number, n: number, k: number, what: string): void {
  if (!m || m.numExperts !== e || m.n !== n || m.k !== k) {
    throw new MoeError('ERR_MOE_SHAPE', `MoeLayer: ${what}: expected [${e}, ${n}, ${k}] expert matrices, got ${m ? `[${m.numExperts}, ${m.n}, ${m.k}]` : describe(m)}`);
  }
}

export class MoeLayer {
  readonly config: Readonly<MoeConfig>;
  readonly weights: MoeWeights;
  private readonly idle: Workspace[] = [];
  /** [E, H] the router weight: bf16 as given where the router runs on AMX, else widened to f32 once. */
  private readonly routerWeight: Tensor<'f32' | 'bf16'>;

  constructor(config: MoeConfig, weights: MoeWeights) {
    validateConfig(config, 'MoeLayer: config');
    const { hiddenSize: h, intermediateSize: i, numExperts: e } = config;
    expectTensor(weights.gate, 'MoeLayer: gate');
    expectDtype(weights.gate, ['f32', 'bf16'], 'MoeLayer: gate');
    expectShape(weights.gate, [e, h], 'MoeLayer: gate');
    if (weights.bias) {
      if (config.scoring !== 'sigmoid') throw new MoeError('ERR_MOE_RANGE', 'MoeLayer: a score-correction bias needs sigmoid scoring');
      expectShape(expectTensor(weights.bias, 'MoeLayer: bias'), [e], 'MoeLayer: bias');
    }
    checkExperts(weights.w13, e, 2 * i, h, 'w13');
    checkExperts(weights.w2, e, h, i, 'w2');
    if (config.numSharedExperts > 0) {
      const is = i * config.numSharedExperts;
      checkExperts(weights.sharedW13, 1, 2 * is, h, 'sharedW13');
      checkExperts(weights.sharedW2, 1, h, is, 'sharedW2');
    }
    this.config = Object.freeze({ ...config });
    this.weights = weights;
    // bf16 stays bf16 where the router runs on AMX tiles (exact bf16 products);
    // elsewhere it is widened once here rather than in every forward.
    const keepBf16 = weights.gate.dtype === 'bf16' && cpuInfo().gemmIsa === 'amx';
    this.routerWeight = weights.gate.dtype === 'f32' || keepBf16 ? (weights.gate as Tensor<'f32' | 'bf16'>) : tensor(weights.gate.toFloat32Array(), [e, h], 'f32');
  }

  /** A layer with random weights (quantized to fp8 like a real checkpoint), reproducible from `seed`. */
  static random(config: MoeConfig, options: RandomLayerOptions = {}): MoeLayer {
    validateConfig(config, 'MoeLayer.random: config');
    const random = seededRandom(options.seed ?? 1);
    const { hiddenSize: h, intermediateSize: i, numExperts: e, numSharedExperts: shared } = config;
    const matrices: Array<[ExpertMatrices, number]> = [];
    const w13 = allocExperts(e, 2 * i, h, options.maxShardBytes);
    const w2 = allocExperts(e, h, i, options.maxShardBytes);
    matrices.push([w13, 1 / Math.sqrt(h)], [w2, 1 / Math.sqrt(i)]);
    let sharedW13: ExpertMatrices | undefined;
    let sharedW2: ExpertMatrices | undefined;
    if (shared > 0) {
      sharedW13 = allocExperts(1, 2 * i * shared, h);
      sharedW2 = allocExperts(1, h, i * shared);
      matrices.push([sharedW13, 1 / Math.sqrt(h)], [sharedW2, 1 / Math.sqrt(i * shared)]);
    }
    const total = matrices.reduce((n, [m]) => n + m.numExperts, 0);
    let done = 0;
    for (const [m, std] of matrices) {
      const values = new Float32Array(m.n * m.k); // [N, K] f32, one expert at a time
      for (let expert = 0; expert < m.numExperts; expert++) {
        const slot = expertSlot(m, expert);
        const into = {
          data: tensor(slot.data, [m.n, m.k], 'fp8_e4m3'),
          scales: tensor(slot.scales, [Math.ceil(m.n / 128), Math.ceil(m.k / 128)], 'f32'),
        };
        quantizeWeightsSync(tensor(fillNormal(values, random, std), [m.n, m.k]), { into });
        options.onProgress?.(++done, total);
      }
    }
    const gate = bf16FromFloat32(fillNormal(new Float32Array(e * h), random, 1 / Math.sqrt(h)), [e, h]);
    const bias = config.scoring === 'sigmoid' ? tensor(fillNormal(new Float32Array(e), random, 0.05), [e], 'f32') : undefined;
    return new MoeLayer(config, { gate, bias, w13, w2, sharedW13, sharedW2 });
  }

  /**
   * Loads layer `options.layer`'s MoE block from a DeepSeek-V3-format Hugging
   * Face checkpoint directory (config.json + sharded safetensors), reading only
   * the tensors it needs.
   */
  static async fromSafetensors(pathOrDir: string, options: LoadOptions): Promise<MoeLayer> {
    const { config, weights } = await loadDeepSeekLayer(pathOrDir, options);
    return new MoeLayer(config, weights);
  }

  /** The layer's output [T, H] for hidden states x [T, H] (f32 or bf16), off the JS thread. */
  async forward(x: Tensor, options?: ForwardOptions): Promise<Tensor> {
    const call = this.prepare(x, options);
    if (!call.args) return call.out;
    try {
      await native().moeForward(call.args, true);
      call.report();
    } finally {
      this.release(call.ws);
    }
    return call.out;
  }

  forwardSync(x: Tensor, options?: ForwardOptions): Tensor {
    const call = this.prepare(x, options);
    if (!call.args) return call.out;
    try {
      native().moeForward(call.args, false);
      call.report();
    } finally {
      this.release(call.ws);
    }
    return call.out;
  }

  /** Bytes of the expert weights (routed and shared). */
  get weightBytes(): number {
    const { w13, w2, sharedW13, sharedW2 } = this.weights;
    return [w13, w2, sharedW13, sharedW2].reduce((n, m) => n + (m ? m.numExperts * m.n * m.k : 0), 0);
  }

  private prepare(x: Tensor, options: ForwardOptions | undefined) {
    const opts = expectOptions(options, ['out', 'into', 'profile'], 'MoeLayer.forward: options');
    expectTensor(x, 'MoeLayer.forward: x');
    expectDtype(x, ['f32', 'bf16'], 'MoeLayer.forward: x');
    expectRank(x, 2, 'MoeLayer.forward: x');
    const [tokens, hidden] = x.shape;
    if (hidden !== this.config.hiddenSize) {
      throw new MoeError('ERR_MOE_SHAPE', `MoeLayer.forward: x: expected [T, ${this.config.hiddenSize}], got [${x.shape.join(', ')}]`);
    }
    const outDtype = expectOneOf(opts.out ?? 'bf16', ['bf16', 'f32'] as const, 'MoeLayer.forward: options.out');
    let out: Tensor;
    if (opts.into !== undefined) {
      out = expectTensor(opts.into, 'MoeLayer.forward: options.into');
      expectDtype(out, [outDtype], 'MoeLayer.forward: options.into');
      expectShape(out, [tokens, hidden], 'MoeLayer.forward: options.into');
    } else {
      out = empty([tokens, hidden], outDtype);
    }
    const profile = opts.profile as ForwardProfile | undefined;
    if (tokens === 0) return { out, ws: undefined, args: undefined, report() {} };
    const ws = this.acquire(tokens);
    const c = this.config;
    const w = this.weights;
    const shards = (m: ExpertMatrices | undefined) => (m ? { data: m.data, scales: m.scales } : undefined);
    const args = {
      x,
      gate: this.routerWeight,
      bias: w.bias,
      routing: {
        scoring: c.scoring,
        topK: c.topK,
        numGroups: c.numGroups,
        topKGroups: c.topKGroups,
        renormalize: c.normTopKProb,
        scale: c.routedScalingFactor,
      },
      // The CPU kernels gain nothing from 128-aligned expert segments; padding rows would only cost time.
      align: 1,
      w13: shards(w.w13),
      w2: shards(w.w2),
      sharedW13: shards(w.sharedW13),
      sharedW2: shards(w.sharedW2),
      ws: ws.views(tokens),
      out,
      stageSeconds: ws.stageSeconds,
    };
    const report = () => {
      if (!profile) return;
      profile.stages = Object.fromEntries(STAGES.map((stage, s) => [stage, ws.stageSeconds[s] * 1e3])) as unknown as StageTimes;
      const counts = args.ws.tokensPerExpert.data as Int32Array;
      profile.activeExperts = counts.reduce((n, c) => n + (c > 0 ? 1 : 0), 0);
      profile.rows = (args.ws.offsets.data as Int32Array)[c.numExperts];
    };
    return { out, ws, args, report };
  }

  private acquire(tokens: number): Workspace {
    let best = -1;
    this.idle.forEach((ws, i) => {
      if (ws.capacity >= tokens && (best < 0 || ws.capacity < this.idle[best].capacity)) best = i;
    });
    if (best >= 0) return this.idle.splice(best, 1)[0];
    return new Workspace(this.config, tokens);
  }

  private release(ws: Workspace | undefined): void {
    if (!ws) return;
    this.idle.push(ws);
    if (this.idle.length > MAX_IDLE_WORKSPACES) {
      this.idle.sort((a, b) => b.capacity - a.capacity);
      this.idle.length = MAX_IDLE_WORKSPACES; // keep the largest: they serve every smaller call
    }
  }
}
