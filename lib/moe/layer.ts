/**
 * The MoE layer of DeepSeek-V3 (SPEC.md, "The MoE layer"): router, routed
 * experts with FP8 weights, shared experts, as one native call per forward.
 */
import { MoeError, describe } from '../errors';
import { native } from '../native';
import type { NativeTensor } from '../native';
import { quantizeWeightsSync } from '../ops/quantize';
import { Device, Tensor, bf16FromFloat32, empty, emptyOutput, tensor } from '../tensor';
import { requireCuda } from '../backends';
import { expectBoolean, expectDtype, expectInteger, expectOneOf, expectOptions, expectRank, expectShape, expectTensor } from '../validate';
import { MoeConfig, validateConfig } from './config';
import { ExpertMatrices, allocExperts, expertSlot } from './experts';
import { fillNormal, seededRandom } from './random';
import { CUDA_ALIGN, RowLayout, Workspace } from './workspace';
import { LoadOptions, loadHuggingFaceLayer } from '../checkpoint/huggingface';
import { isMapped } from '../checkpoint/mapped';
import { ExpertParallel, Communicator, communicatorOf } from '../ep/communicator';
import { ExpertShard, checkSameLayer, expertShard } from '../ep/shard';
import { BatcherOptions, MoeBatcher } from '../serving/batcher';

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
  gemm1: number; // grouped GEMM with w13 (on the CPU also the shared experts' first GEMM, run in the same tasks)
  swiglu: number; // SwiGLU + fp8 quantization
  gemm2: number; // grouped GEMM with w2 (on the CPU also the shared experts' second GEMM)
  shared: number; // the shared experts where they run on their own (GPU, expert parallelism, MOE_FUSED_EXPERTS=0)
  combine: number;
}

/**
 * A forward's stage times, ms, from the seconds the native forward wrote
 * (native MoeStage order). One object literal of a fixed shape: stored key
 * by key through STAGES, the stores went megamorphic and took ~2 us of every
 * profiled forward's report (a batcher with a listener profiles each batch).
 */
function stageTimesMs(seconds: Float64Array): StageTimes {
  return {
    router: seconds[0] * 1e3,
    route: seconds[1] * 1e3,
    layout: seconds[2] * 1e3,
    dispatch: seconds[3] * 1e3,
    gemm1: seconds[4] * 1e3,
    swiglu: seconds[5] * 1e3,
    gemm2: seconds[6] * 1e3,
    shared: seconds[7] * 1e3,
    combine: seconds[8] * 1e3,
  };
}

/** The stages in the order the native forward runs them. */
export const STAGES = Object.keys(stageTimesMs(new Float64Array(9))) as readonly (keyof StageTimes)[];

/** What a forward did, for benchmarks and the demo. */
export interface ForwardProfile {
  /** Wall time of each stage, ms. */
  stages: StageTimes;
  /** Experts that received at least one token (expert-parallel layers: of this rank's experts). */
  activeExperts: number;
  /** Rows of the grouped GEMMs (token-expert pairs; expert-parallel layers: the tokens this rank received). */
  rows: number;
}

export interface ForwardOptions {
  /** Output dtype: 'bf16' (default) or 'f32'. */
  out?: 'bf16' | 'f32';
  into?: Tensor;
  /** Filled in with the stage times and routing statistics of this forward (CPU layers: stage times; CUDA: statistics only). */
  profile?: ForwardProfile;
  /**
   * CUDA layers: the row layout. 'contiguous' (prefill; one host sync to learn
   * the row count) or 'masked' (decode; no host sync inside the forward).
   * Default: masked for T <= 16 tokens, else contiguous.
   */
  layout?: 'contiguous' | 'masked';
  /**
   * A token's output bits independent of the other tokens of the call (CPU
   * layers): every GEMM (router, experts, shared expert) runs one kernel path
   * and reduction order per row at every batch size. Without it a token's
   * last bits may change with its batch, within SPEC.md's tolerance.
   * `bench moe --batch-invariant` prints its cost.
   */
  batchInvariant?: boolean;
}

/** CUDA layers: below this many tokens a forward uses the masked layout by default. */
export const MASKED_MAX_TOKENS = 16;

export interface CaptureOptions {
  /** Tokens per replay (the graph's fixed T); replays take 1..maxTokens tokens. */
  maxTokens: number;
  /** dtype of the hidden states fed to replays: 'bf16' (default) or 'f32'. */
  dtype?: 'bf16' | 'f32';
  /** Output dtype: 'bf16' (default) or 'f32'. */
  out?: 'bf16' | 'f32';
}

export interface RandomLayerOptions {
  seed?: number;
  onProgress?: (done: number, total: number) => void;
  /** Largest shard of expert weights in bytes (default 2 GiB; smaller values exercise sharding in tests). */
  maxShardBytes?: number;
  /** 'cuda': move the weights to the GPU once built (see MoeLayer.to). Default 'cpu'. */
  device?: Device;
  /**
   * Expert parallelism: build only this rank's experts (the same values the
   * whole layer of this seed has there); initExpertParallel()'s result or its comm.
   */
  ep?: ExpertParallel | Communicator;
}

/** Idle workspaces kept for reuse; more concurrent forwards than this allocate and drop extras. */
const MAX_IDLE_WORKSPACES = 4;

/**
 * Promise-form forwards of one layer that run at once (each holds a
 * workspace); more wait their turn in call order. With the idle ones, a layer
 * holds at most twice this many workspaces however many forwards are
 * pending. (The CPU backend runs one parallel region at a time anyway: more
 * concurrent forwards would only hold more memory.)
 */
export const MAX_CONCURRENT_FORWARDS = 4;

/**
 * A GPU forward's native options (moe_bindings.cpp): the row layout, and the
 * device words its ops report bad input into (read after it completed).
 */
interface DeviceForwardOptions {
  layout: { masked: boolean; maxRowsPerExpert: number };
  flags: Tensor;
}

/** moeForward's arguments (moe_bindings.cpp): every key present, those that do not apply undefined. */
type NativeForwardArgs = {
  x: Tensor;
  weights: PreparedWeights;
  workspace: { handle: unknown; views: Record<string, NativeTensor> };
  align: number;
  out: Tensor;
  layout: DeviceForwardOptions['layout'] | undefined;
  flags: Tensor | undefined;
  ep: { handle: unknown } | undefined;
  /** CPU forwards: the workspace's stage times, filled in. */
  stageSeconds: Float64Array | undefined;
  batchInvariant: boolean | undefined;
};

function checkExperts(m: ExpertMatrices | undefined, e: number, n: number, k: number, what: string): void {
  if (!m || m.numExperts !== e || m.n !== n || m.k !== k) {
    throw new MoeError('ERR_MOE_SHAPE', `MoeLayer: ${what}: expected [${e}, ${n}, ${k}] expert matrices, got ${m ? `[${m.numExperts}, ${m.n}, ${m.k}]` : describe(m)}`);
  }
}

export class MoeLayer {
  readonly config: Readonly<MoeConfig>;
  readonly weights: MoeWeights;
  /** Expert parallelism: this rank's experts and the communicator (weights.w13/w2 hold only those experts). */
  readonly shard?: ExpertShard;
  private epHandle?: { handle: unknown };
  private readonly idle: Workspace[] = [];
  /** Where the weights live: every forward runs there. */
  readonly device: Device;

  constructor(config: MoeConfig, weights: MoeWeights, shard?: ExpertShard) {
    validateConfig(config, 'MoeLayer: config');
    if (typeof weights !== 'object' || weights === null) throw new MoeError('ERR_MOE_ARGUMENT', `MoeLayer: weights: expected a MoeWeights object, got ${describe(weights)}`);
    const { hiddenSize: h, intermediateSize: i, numExperts: e } = config;
    const held = shard ? shard.numLocalExperts : e;
    expectTensor(weights.gate, 'MoeLayer: gate');
    expectDtype(weights.gate, ['f32', 'bf16'], 'MoeLayer: gate');
    expectShape(weights.gate, [e, h], 'MoeLayer: gate');
    if (weights.bias) {
      if (config.scoring !== 'sigmoid') throw new MoeError('ERR_MOE_RANGE', 'MoeLayer: a score-correction bias needs sigmoid scoring');
      expectShape(expectTensor(weights.bias, 'MoeLayer: bias'), [e], 'MoeLayer: bias');
    }
    checkExperts(weights.w13, held, 2 * i, h, 'w13');
    checkExperts(weights.w2, held, h, i, 'w2');
    if (config.numSharedExperts > 0) {
      const is = i * config.numSharedExperts;
      checkExperts(weights.sharedW13, 1, 2 * is, h, 'sharedW13');
      checkExperts(weights.sharedW2, 1, h, is, 'sharedW2');
    }
    this.config = Object.freeze({ ...config });
    this.weights = weights;
    this.device = weights.gate.device;
    if (shard) {
      this.shard = shard;
      this.epHandle = {
        handle: native().epCreateShard({ numExperts: e, firstExpert: shard.firstExpert, numLocalExperts: shard.numLocalExperts }),
      };
    }
    const all = [weights.gate, weights.bias, ...[weights.w13, weights.w2, weights.sharedW13, weights.sharedW2].flatMap((m) => (m ? [...m.data, ...m.scales] : []))];
    if (all.some((t) => t !== undefined && t.device !== this.device)) {
      throw new MoeError('ERR_MOE_DEVICE', 'MoeLayer: every weight must be on the same device (use MoeLayer.to)');
    }
    if (this.device === 'cuda') {
      for (const m of [weights.w13, weights.w2]) {
        if (m.data.length !== 1) throw new MoeError('ERR_MOE_UNSUPPORTED', 'MoeLayer: CUDA expert weights must be one [E, N, K] device tensor each (MoeLayer.to builds them)');
      }
    }
  }

  /**
   * This layer with its weights on `device`: itself if they are there. To
   * 'cuda': one copy of every weight to the GPU (expert shards become one
   * [E, N, K] device tensor each, which has no 4 GiB limit); the CPU layer
   * stays usable. Moving a CUDA layer back to the CPU is not supported (keep
   * the CPU layer).
   */
  to(device: Device): MoeLayer {
    if (device === this.device) return this;
    if (device !== 'cuda') throw new MoeError('ERR_MOE_UNSUPPORTED', "MoeLayer.to: a CUDA layer cannot move back to the CPU; keep the CPU layer");
    requireCuda("MoeLayer.to('cuda')");
    const w = this.weights;
    const move = (m: ExpertMatrices | undefined): ExpertMatrices | undefined => {
      if (!m) return undefined;
      const data = empty([m.numExperts, m.n, m.k], 'fp8_e4m3', 'cuda');
      const scales = empty([m.numExperts, ...m.scales[0].shape.slice(1)], 'f32', 'cuda');
      let dataOffset = 0;
      let scaleOffset = 0;
      for (let s = 0; s < m.data.length; s++) {
        native().cudaCopyToDevice(data.handle, m.data[s].data, dataOffset);
        native().cudaCopyToDevice(scales.handle, m.scales[s].data, scaleOffset);
        dataOffset += m.data[s].byteLength;
        scaleOffset += m.scales[s].byteLength;
      }
      return { numExperts: m.numExperts, n: m.n, k: m.k, data: [data], scales: [scales] };
    };
    return new MoeLayer(this.config, {
      gate: w.gate.to('cuda'),
      bias: w.bias?.to('cuda'),
      w13: move(w.w13)!,
      w2: move(w.w2)!,
      sharedW13: move(w.sharedW13),
      sharedW2: move(w.sharedW2),
    }, this.shard);  // an expert-parallel layer keeps its place (a fresh native shard, its buffers on the GPU)
  }

  /** A layer with random weights (quantized to fp8 like a real checkpoint), reproducible from `seed`. */
  static random(config: MoeConfig, randomOptions?: RandomLayerOptions): MoeLayer {
    validateConfig(config, 'MoeLayer.random: config');
    const options = expectOptions(randomOptions, ['seed', 'onProgress', 'maxShardBytes', 'device', 'ep'], 'MoeLayer.random: options') as RandomLayerOptions;
    if (options.seed !== undefined && !Number.isSafeInteger(options.seed)) {
      throw new MoeError('ERR_MOE_RANGE', `MoeLayer.random: options.seed must be an integer, got ${describe(options.seed)}`);
    }
    if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
      throw new MoeError('ERR_MOE_ARGUMENT', `MoeLayer.random: options.onProgress must be a function, got ${describe(options.onProgress)}`);
    }
    if (options.maxShardBytes !== undefined) expectInteger(options.maxShardBytes, 1, Number.MAX_SAFE_INTEGER, 'MoeLayer.random: options.maxShardBytes');
    if (options.device !== undefined) expectOneOf(options.device, ['cpu', 'cuda'] as const, 'MoeLayer.random: options.device');
    const random = seededRandom(options.seed ?? 1);
    const { hiddenSize: h, intermediateSize: i, numExperts: e, numSharedExperts: shared } = config;
    const shard = options.ep !== undefined ? expertShard(communicatorOf(options.ep, 'MoeLayer.random: options.ep'), e, 'MoeLayer.random') : undefined;
    // An expert-parallel rank draws every expert's values (the same stream as
    // the whole layer) and keeps its own.
    const first = shard ? shard.firstExpert : 0;
    const held = shard ? shard.numLocalExperts : e;
    const matrices: Array<[ExpertMatrices, number, number]> = [];
    const w13 = allocExperts(held, 2 * i, h, options.maxShardBytes);
    const w2 = allocExperts(held, h, i, options.maxShardBytes);
    matrices.push([w13, 1 / Math.sqrt(h), e], [w2, 1 / Math.sqrt(i), e]);
    let sharedW13: ExpertMatrices | undefined;
    let sharedW2: ExpertMatrices | undefined;
    if (shared > 0) {
      sharedW13 = allocExperts(1, 2 * i * shared, h);
      sharedW2 = allocExperts(1, h, i * shared);
      matrices.push([sharedW13, 1 / Math.sqrt(h), 1], [sharedW2, 1 / Math.sqrt(i * shared), 1]);
    }
    const total = matrices.reduce((n, [, , drawn]) => n + drawn, 0);
    let done = 0;
    for (const [m, std, drawn] of matrices) {
      const values = new Float32Array(m.n * m.k); // [N, K] f32, one expert at a time
      const offset = drawn === m.numExperts ? 0 : first;
      for (let drawnExpert = 0; drawnExpert < drawn; drawnExpert++) {
        const expert = drawnExpert - offset;
        if (expert < 0 || expert >= m.numExperts) {
          fillNormal(values, random, std); // another rank's expert: drawn, not kept
          options.onProgress?.(++done, total);
          continue;
        }
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
    const layer = new MoeLayer(config, { gate, bias, w13, w2, sharedW13, sharedW2 }, shard);
    if (shard) checkSameLayer(shard, config, { source: `random:${options.seed ?? 1}`, gate: gate.dtype }, 'MoeLayer.random');
    return options.device === 'cuda' ? layer.to('cuda') : layer;
  }

  /**
   * Loads layer `options.layer`'s MoE block from a Hugging Face checkpoint
   * directory (config.json + sharded safetensors) of a DeepSeek-V3, Mixtral or
   * Qwen-MoE model, reading only the tensors it needs.
   */
  static async fromSafetensors(pathOrDir: string, options: LoadOptions & { device?: Device; ep?: ExpertParallel | Communicator }): Promise<MoeLayer> {
    const { device, ep, ...load } = expectOptions(options, ['layer', 'onProgress', 'device', 'ep', 'mmap'], 'fromSafetensors: options') as LoadOptions & {
      device?: Device;
      ep?: ExpertParallel | Communicator;
    };
    if (device !== undefined) expectOneOf(device, ['cpu', 'cuda'] as const, 'fromSafetensors: options.device');
    expectBoolean(load.mmap, 'fromSafetensors: options.mmap');
    // A CUDA layer copies its weights to the device once: mapping them would only page the files in through faults.
    load.mmap ??= device !== 'cuda';
    if (ep === undefined) {
      const { config, weights } = await loadHuggingFaceLayer(pathOrDir, load as LoadOptions);
      const layer = new MoeLayer(config, weights);
      return device === 'cuda' ? layer.to('cuda') : layer;
    }
    // Expert parallelism: only this rank's experts are read (plus the router and the shared experts).
    const comm = communicatorOf(ep, 'MoeLayer.fromSafetensors: options.ep');
    const { config, weights, checkpoint } = await loadHuggingFaceLayer(pathOrDir, {
      ...(load as LoadOptions),
      experts: (numExperts) => {
        const shard = expertShard(comm, numExperts, 'MoeLayer.fromSafetensors');
        return { first: shard.firstExpert, count: shard.numLocalExperts };
      },
    });
    const shard = expertShard(comm, config.numExperts, 'MoeLayer.fromSafetensors');
    const layer = new MoeLayer(config, weights, shard);
    checkSameLayer(shard, config, { source: `checkpoint:${checkpoint}`, layer: (load as LoadOptions).layer, gate: weights.gate.dtype }, 'MoeLayer.fromSafetensors');
    return device === 'cuda' ? layer.to('cuda') : layer;
  }

  /**
   * The layer's output [T, H] for hidden states x [T, H] (f32 or bf16), off
   * the JS thread. Expert-parallel layers: collective (every rank calls
   * forward with its own tokens, T may be 0), in the same order on every rank.
   */
  forward(x: Tensor, options: ForwardOptions & { out: 'f32' }): Promise<Tensor<'f32'>>;
  forward(x: Tensor, options?: ForwardOptions & { out?: 'bf16' }): Promise<Tensor<'bf16'>>;
  forward(x: Tensor, options?: ForwardOptions): Promise<Tensor<'bf16' | 'f32'>>;
  forward(x: Tensor, options?: ForwardOptions): Promise<Tensor> {
    if (this.shard) return this.shard.comm.serialize(() => this.forwardOnce(x, options));
    // With a slot free the forward starts now, in this call (its buffers are
    // read and pinned before the caller's next statement); else it waits its
    // turn in call order.
    if (this.running < MAX_CONCURRENT_FORWARDS && this.waiting.length === 0) {
      this.running++;
      return this.runAndLeave(x, options);
    }
    return new Promise<void>((resolve) => this.waiting.push(resolve)).then(() => this.runAndLeave(x, options));
  }

  private running = 0;
  private readonly waiting: Array<() => void> = [];

  private async runAndLeave(x: Tensor, options: ForwardOptions | undefined): Promise<Tensor> {
    try {
      return await this.forwardOnce(x, options);
    } finally {
      const next = this.waiting.shift();
      if (next) next(); // the slot passes straight to the next caller
      else this.running--;
    }
  }

  private async forwardOnce(x: Tensor, options?: ForwardOptions): Promise<Tensor> {
    this.wakeThreads();
    const call = this.prepareCollective(x, options);
    if (!call.args) return call.out;
    try {
      await native().moeForward(call.args, true);
      call.report();
    } catch (e) {
      call.discard();
      throw e;
    } finally {
      this.release(call.ws);
    }
    return call.out;
  }

  forwardSync(x: Tensor, options: ForwardOptions & { out: 'f32' }): Tensor<'f32'>;
  forwardSync(x: Tensor, options?: ForwardOptions & { out?: 'bf16' }): Tensor<'bf16'>;
  forwardSync(x: Tensor, options?: ForwardOptions): Tensor<'bf16' | 'f32'>;
  forwardSync(x: Tensor, options?: ForwardOptions): Tensor {
    this.wakeThreads();
    const call = this.prepareCollective(x, options);
    if (!call.args) return call.out;
    try {
      native().moeForward(call.args, false);
      call.report();
    } catch (e) {
      call.discard();
      throw e;
    } finally {
      this.release(call.ws);
    }
    return call.out;
  }

  /**
   * A CPU layer's forward starts its first parallel region 60-260 us from
   * here (the argument checks here and in the addon): the pool threads that
   * sleep wake now and are up by then (waking a thread takes 40-80 us on a
   * virtual machine), and watch for it (cpuInfo().wakeSpinMicros), instead
   * of joining the router's region late. Meanwhile they read the weights the
   * forward reads first (the router's, the shared experts') into the caches:
   * the checks leave the memory bus idle.
   */
  private wakeThreads(): void {
    if (this.device !== 'cuda') native().wakeThreads(this.prepared?.handle);
  }

  /**
   * prepare(), and for an expert-parallel layer whose arguments fail their
   * checks here, the forward's first exchange as a failed rank: every other
   * rank's forward then fails too (ERR_MOE_EP_PEER) instead of waiting.
   */
  private prepareCollective(x: Tensor, options: ForwardOptions | undefined) {
    try {
      return this.prepare(x, options);
    } catch (e) {
      if (this.epHandle) {
        const error = e instanceof MoeError ? e : new MoeError('ERR_MOE_INTERNAL', String(e));
        native().epFailForward(this.epHandle.handle, error.code, error.message, this.config.hiddenSize, this.config.topK);
      }
      throw e;
    }
  }

  /**
   * Host memory this layer's weights take on this rank: the routed experts
   * it holds (fp8 and scales), the shared experts, the router and its bias.
   * Of these, `mappedBytes` are mapped from checkpoint files (shared with
   * every process that maps them); the rest are the process's own.
   */
  get memoryBytes(): number {
    return this.weightTensors().reduce((n, t) => n + t.byteLength, 0);
  }

  /** The part of memoryBytes mapped from checkpoint files (fromSafetensors with mmap): page cache, not private memory. */
  get mappedBytes(): number {
    return this.weightTensors().reduce((n, t) => n + (t.device === 'cpu' && isMapped(t.data) ? t.byteLength : 0), 0);
  }

  private weightTensors(): Tensor[] {
    const w = this.weights;
    const matrices = [w.w13, w.w2, w.sharedW13, w.sharedW2].flatMap((m) => (m ? [...m.data, ...m.scales] : []));
    return [w.gate, w.bias, ...matrices].filter((t): t is Tensor => t !== undefined);
  }

  /**
   * A request batcher over this layer: concurrent submits coalesce into one
   * forward (continuous batching, backpressure, cancellation; see MoeBatcher).
   */
  batcher(options: BatcherOptions & { out: 'f32' }): MoeBatcher<'f32'>;
  batcher(options?: BatcherOptions & { out?: 'bf16' }): MoeBatcher<'bf16'>;
  batcher(options?: BatcherOptions): MoeBatcher;
  batcher(options?: BatcherOptions): MoeBatcher {
    this.checkLive('MoeLayer.batcher');
    return new MoeBatcher(this, options);
  }

  /**
   * Frees what the layer holds now rather than at garbage collection: its
   * device weights (CUDA layers), its idle workspaces and the addon's view of
   * its weights. Later forwards fail with ERR_MOE_CLOSED. Also `using layer = ...`
   * (Symbol.dispose).
   */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const ws of this.idle.splice(0)) ws.dispose();
    this.prepared = undefined;
    if (this.device === 'cuda') {
      const w = this.weights;
      for (const t of [w.gate, w.bias, ...[w.w13, w.w2, w.sharedW13, w.sharedW2].flatMap((m) => (m ? [...m.data, ...m.scales] : []))]) t?.dispose();
    }
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  private disposed = false;

  private checkLive(what: string): void {
    if (this.disposed) throw new MoeError('ERR_MOE_CLOSED', `${what}: the layer was disposed`);
  }

  /** Bytes of the expert weights (routed and shared). */
  get weightBytes(): number {
    const { w13, w2, sharedW13, sharedW2 } = this.weights;
    return [w13, w2, sharedW13, sharedW2].reduce((n, m) => n + (m ? m.numExperts * m.n * m.k : 0), 0);
  }

  private prepare(x: Tensor, options: ForwardOptions | undefined) {
    this.checkLive('MoeLayer.forward');
    const opts = expectOptions(options, ['out', 'into', 'profile', 'layout', 'batchInvariant'], 'MoeLayer.forward: options');
    expectTensor(x, 'MoeLayer.forward: x');
    const cuda = this.device === 'cuda';
    if (opts.layout !== undefined && !cuda) throw new MoeError('ERR_MOE_ARGUMENT', 'MoeLayer.forward: options.layout applies to CUDA layers only');
    expectDtype(x, ['f32', 'bf16'], 'MoeLayer.forward: x');
    expectRank(x, 2, 'MoeLayer.forward: x');
    const [tokens, hidden] = x.shape;
    if (hidden !== this.config.hiddenSize) {
      throw new MoeError('ERR_MOE_SHAPE', `MoeLayer.forward: x: expected [T, ${this.config.hiddenSize}], got [${x.shape.join(', ')}]`);
    }
    const outDtype = expectOneOf(opts.out ?? 'bf16', ['bf16', 'f32'] as const, 'MoeLayer.forward: options.out');
    const batchInvariant = expectBoolean(opts.batchInvariant, 'MoeLayer.forward: options.batchInvariant') === true;
    if (batchInvariant && cuda) {
      throw new MoeError('ERR_MOE_UNSUPPORTED', 'MoeLayer.forward: batchInvariant is supported on CPU layers only (the CUDA GEMM kernels are chosen by shape)');
    }
    let out: Tensor;
    if (opts.into !== undefined) {
      out = expectTensor(opts.into, 'MoeLayer.forward: options.into');
      expectDtype(out, [outDtype], 'MoeLayer.forward: options.into');
      expectShape(out, [tokens, hidden], 'MoeLayer.forward: options.into');
      if (out.device !== this.device) throw new MoeError('ERR_MOE_DEVICE', `MoeLayer.forward: options.into must be on the layer's device (${this.device})`);
    } else {
      out = emptyOutput([tokens, hidden], outDtype, this.device); // every row is written
    }
    if (opts.profile !== undefined && (typeof opts.profile !== 'object' || opts.profile === null || Object.isFrozen(opts.profile))) {
      throw new MoeError('ERR_MOE_ARGUMENT', `MoeLayer.forward: options.profile must be a writable object to fill in, got ${describe(opts.profile)}`);
    }
    const profile = opts.profile as ForwardProfile | undefined;
    const none = { out, ws: undefined, args: undefined, report() {}, discard() {} };
    if (tokens === 0 && !this.shard) return none; // an expert-parallel rank with no tokens still takes every exchange
    // CUDA layers take host or device x; host x is copied to the device once.
    if (cuda && x.device !== 'cuda') x = x.to('cuda');
    if (!cuda && x.device !== 'cpu') throw new MoeError('ERR_MOE_DEVICE', 'MoeLayer.forward: x is on the GPU but the layer is on the CPU (MoeLayer.to)');
    if (this.shard && opts.layout === 'masked') throw new MoeError('ERR_MOE_UNSUPPORTED', "MoeLayer.forward: expert-parallel layers use the contiguous layout, not 'masked'");
    const rowLayout: RowLayout = !cuda
      ? (this.shard ? 'ep' : 'cpu')
      : this.shard
        ? 'contiguous'
        : expectOneOf(opts.layout ?? (tokens <= MASKED_MAX_TOKENS ? 'masked' : 'contiguous'), ['contiguous', 'masked'] as const, 'MoeLayer.forward: options.layout');
    const ws = this.acquire(tokens, rowLayout);
    const c = this.config;
    const args = this.nativeArgs(
      x,
      out,
      ws,
      tokens,
      // The CPU kernels gain nothing from 128-aligned expert segments; padding rows would only cost time.
      // The GPU's Hopper grouped GEMM needs them.
      cuda ? CUDA_ALIGN : 1,
      cuda ? { layout: { masked: rowLayout === 'masked', maxRowsPerExpert: rowLayout === 'masked' ? tokens : 0 }, flags: ws.tensor('flags') } : undefined,
    );
    args.stageSeconds = ws.stageSeconds;
    args.batchInvariant = batchInvariant;
    const report = () => {
      if (cuda) {
        // The forward has completed: its device error flags (NaN in x, ...) are 8 ints away.
        native().moeCheckFlags(ws.tensor('flags').to('cpu').data as Int32Array);
        if (!profile || this.shard) return;
        profile.stages = Object.fromEntries(STAGES.map((stage) => [stage, 0])) as unknown as StageTimes;
        const counts = ws.tensor('tokensPerExpert').to('cpu').data as Int32Array;
        profile.activeExperts = counts.subarray(0, c.numExperts).reduce((n, v) => n + (v > 0 ? 1 : 0), 0);
        profile.rows = (ws.tensor('offsets').to('cpu').data as Int32Array)[c.numExperts];
        return;
      }
      if (!profile) return;
      // Plain loops: a decode step's forward is ~1 ms, and this runs after every one that asks.
      profile.stages = stageTimesMs(ws.stageSeconds);
      if (this.epHandle) {
        // The routed experts ran on the rows this rank received: their layout is the shard's (native).
        const stats = native().epShardStats(this.epHandle.handle);
        profile.activeExperts = stats.activeExperts;
        profile.rows = stats.rowsReceived;
        return;
      }
      const counts = args.workspace.views.tokensPerExpert.data as Int32Array;
      let active = 0;
      for (let e = 0; e < counts.length; e++) active += counts[e] > 0 ? 1 : 0;
      profile.activeExperts = active;
      profile.rows = (args.workspace.views.offsets.data as Int32Array)[c.numExperts];
    };
    // A failed forward's output is not returned; free a device output at once.
    const discard = () => {
      if (cuda && opts.into === undefined) out.dispose();
    };
    return { out, ws, args, report, discard };
  }

  /**
   * Records the decode forward of a CUDA layer (masked layout, no host sync)
   * into a CUDA graph for `maxTokens` tokens, with its own input, output and
   * workspace on the device; `replay(x)` runs it for 1..maxTokens tokens.
   */
  capture(options: CaptureOptions): CapturedForward {
    const opts = expectOptions(options, ['maxTokens', 'dtype', 'out'], 'MoeLayer.capture: options');
    this.checkLive('MoeLayer.capture');
    if (this.device !== 'cuda') throw new MoeError('ERR_MOE_DEVICE', "MoeLayer.capture: CUDA graphs need a CUDA layer (MoeLayer.to('cuda'))");
    const tokens = opts.maxTokens as number;
    if (!Number.isInteger(tokens) || tokens < 1 || tokens > 4096) {
      throw new MoeError('ERR_MOE_RANGE', `MoeLayer.capture: options.maxTokens must be an integer in [1, 4096], got ${describe(tokens)}`);
    }
    const dtype = expectOneOf(opts.dtype ?? 'bf16', ['bf16', 'f32'] as const, 'MoeLayer.capture: options.dtype');
    const out = expectOneOf(opts.out ?? 'bf16', ['bf16', 'f32'] as const, 'MoeLayer.capture: options.out');
    return new CapturedForward(this, tokens, dtype, out);
  }

  /** @internal The native forward arguments for CapturedForward. */
  captureArgs(x: Tensor, out: Tensor, ws: Workspace): Record<string, unknown> {
    const tokens = x.shape[0];
    // The masked layout gives each expert maxRowsPerExpert rows: align plays no part.
    return this.nativeArgs(x, out, ws, tokens, 1, { layout: { masked: true, maxRowsPerExpert: tokens }, flags: ws.tensor('flags') });
  }

  /**
   * The native forward's arguments that forward() and captureArgs() share:
   * x, out, the layer's weights and routing, the workspace's views for
   * `tokens` rows, the expert segments' row alignment and the GPU options.
   */
  private nativeArgs(x: Tensor, out: Tensor, ws: Workspace, tokens: number, align: number, device: DeviceForwardOptions | undefined): NativeForwardArgs {
    const weights = this.preparedWeights();
    // The addon read the weights once; a buffer detached since then must be
    // an error here, not a read of freed memory.
    for (let i = 0; i < weights.host.length; i++) {
      const t = weights.host[i];
      if (t.data.byteLength === 0 && t.numel > 0) throw new MoeError('ERR_MOE_DETACHED', `MoeLayer.forward: a weight's buffer is detached (${t})`);
    }
    // One object literal with every key (no spread): a decode forward builds
    // it with the caches cold, where copying properties costs ~45 us.
    return {
      x,
      weights,
      workspace: ws.prepared(tokens),
      align,
      out,
      layout: device?.layout,
      flags: device?.flags,
      ep: this.epHandle,
      stageSeconds: undefined,
      batchInvariant: undefined,
    };
  }

  /**
   * The weights and routing options read by the addon once (moePrepareWeights)
   * rather than on every forward; the holder also keeps the tensors alive
   * while an async forward runs.
   */
  private preparedWeights(): PreparedWeights {
    if (this.prepared) return this.prepared;
    const c = this.config;
    const w = this.weights;
    const shards = (m: ExpertMatrices | undefined) => (m ? { data: m.data, scales: m.scales } : undefined);
    const args = {
      gate: w.gate,  // as given: the CPU kernels read bf16 in place
      bias: w.bias,
      routing: {
        scoring: c.scoring,
        topK: c.topK,
        numGroups: c.numGroups,
        topKGroups: c.topKGroups,
        renormalize: c.normTopKProb,
        scale: c.routedScalingFactor,
      },
      w13: shards(w.w13),
      w2: shards(w.w2),
      sharedW13: shards(w.sharedW13),
      sharedW2: shards(w.sharedW2),
    };
    this.prepared = { handle: native().moePrepareWeights(args), tensors: args, host: this.hostWeights() };
    return this.prepared;
  }

  private prepared?: PreparedWeights;

  /** The host tensors a forward reads as weights: the router's, the bias, the experts' data and scales. */
  hostWeights(): Tensor[] {
    const w = this.weights;
    const all = [w.gate, w.bias, ...[w.w13, w.w2, w.sharedW13, w.sharedW2].flatMap((m) => (m ? [...m.data, ...m.scales] : []))];
    return all.filter((t): t is Tensor => t !== undefined && t.device === 'cpu');
  }

  private acquire(tokens: number, rowLayout: RowLayout = 'cpu'): Workspace {
    let best = -1;
    for (let i = 0; i < this.idle.length; i++) {
      const ws = this.idle[i];
      if (ws.rowLayout === rowLayout && ws.capacity >= tokens && (best < 0 || ws.capacity < this.idle[best].capacity)) best = i;
    }
    if (best >= 0) return this.idle.splice(best, 1)[0];
    return new Workspace(this.config, tokens, rowLayout);
  }

  private release(ws: Workspace | undefined): void {
    if (!ws) return;
    this.idle.push(ws);
    if (this.idle.length > MAX_IDLE_WORKSPACES) {
      this.idle.sort((a, b) => b.capacity - a.capacity);
      for (const dropped of this.idle.splice(MAX_IDLE_WORKSPACES)) dropped.dispose(); // keep the largest: they serve every smaller call
    }
  }
}

/**
 * A CUDA layer's decode forward recorded once into a CUDA graph (see
 * MoeLayer.capture): the graph owns fixed device buffers (input [T, H],
 * output, workspace) and replays the same kernels on them; a replay of t < T
 * tokens zero-pads the input (the padding tokens' rows are computed and
 * dropped). No host synchronization inside a replay; the result is read
 * back only for the error flags after it completed.
 */
export class CapturedForward {
  readonly maxTokens: number;
  /** Held so that the weights the graph reads stay alive as long as the graph. */
  readonly layer: MoeLayer;
  private readonly x: Tensor;
  private readonly zeros: Tensor;
  private readonly out: Tensor;
  private readonly ws: Workspace;
  private readonly graph: unknown;
  private readonly hidden: number;
  private disposed = false;

  constructor(layer: MoeLayer, tokens: number, dtype: 'bf16' | 'f32', out: 'bf16' | 'f32') {
    this.layer = layer;
    this.maxTokens = tokens;
    this.hidden = layer.config.hiddenSize;
    this.x = empty([tokens, this.hidden], dtype, 'cuda');
    this.zeros = tensor(dtype === 'bf16' ? new Uint16Array(tokens * this.hidden) : new Float32Array(tokens * this.hidden), [tokens, this.hidden], dtype).to('cuda');
    native().cudaCopyDeviceToDevice(this.x.handle, this.zeros.handle, this.x.byteLength);
    this.out = empty([tokens, this.hidden], out, 'cuda');
    this.ws = new Workspace(layer.config, tokens, 'masked');
    this.graph = native().moeCapture(layer.captureArgs(this.x, this.out, this.ws), false);
  }

  private stage(x: Tensor): number {
    if (this.disposed) throw new MoeError('ERR_MOE_DETACHED', 'CapturedForward.replay: the captured forward was disposed');
    expectTensor(x, 'CapturedForward.replay: x');
    expectDtype(x, [this.x.dtype], 'CapturedForward.replay: x');
    expectRank(x, 2, 'CapturedForward.replay: x');
    const [t, h] = x.shape;
    if (h !== this.hidden || t < 1 || t > this.maxTokens) {
      throw new MoeError('ERR_MOE_SHAPE', `CapturedForward.replay: x: expected [1..${this.maxTokens}, ${this.hidden}], got [${x.shape.join(', ')}]`);
    }
    if (t < this.maxTokens) native().cudaCopyDeviceToDevice(this.x.handle, this.zeros.handle, this.x.byteLength);
    if (x.device === 'cuda') native().cudaCopyDeviceToDevice(this.x.handle, x.handle, x.byteLength);
    else native().cudaCopyToDevice(this.x.handle, x.data!);
    return t;
  }

  // Copies this replay's output rows [t, H] and error flags out of the graph's
  // buffers, enqueued right behind the replay: a replay started before this
  // one has been awaited overwrites those buffers, and stream order then
  // still hands each caller its own result.
  private snapshot(t: number): { out: Tensor; flags: Tensor } {
    const flags = this.ws.tensor('flags');
    const flagsCopy = empty(flags.shape, flags.dtype, 'cuda');
    native().cudaCopyDeviceToDevice(flagsCopy.handle, flags.handle, flags.byteLength);
    const out = empty([t, this.hidden], this.out.dtype, 'cuda');
    native().cudaCopyDeviceToDevice(out.handle, this.out.handle, out.byteLength);
    return { out, flags: flagsCopy };
  }

  private finish(snapshot: { out: Tensor; flags: Tensor }): Tensor {
    const bits = snapshot.flags.to('cpu').data as Int32Array;
    snapshot.flags.dispose();
    try {
      native().moeCheckFlags(bits);
    } catch (e) {
      snapshot.out.dispose();
      throw e;
    }
    return snapshot.out;
  }

  /** The layer's output [t, H] on the GPU for x [t, H] (t <= maxTokens; host or device). */
  async replay(x: Tensor): Promise<Tensor> {
    const t = this.stage(x);
    const done = native().moeReplay(this.graph, true);
    let snapshot: { out: Tensor; flags: Tensor };
    try {
      snapshot = this.snapshot(t);
    } catch (e) {
      await done.catch(() => undefined); // settle the replay's Promise before reporting the first error
      throw e;
    }
    try {
      await done;
    } catch (e) {
      snapshot.out.dispose();
      snapshot.flags.dispose();
      throw e;
    }
    return this.finish(snapshot);
  }

  replaySync(x: Tensor): Tensor {
    const t = this.stage(x);
    native().moeReplay(this.graph, false);
    return this.finish(this.snapshot(t));
  }

  /** Frees the graph's device buffers now (the graph itself goes with this object). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const t of [this.x, this.zeros, this.out]) t.dispose();
    this.ws.dispose();
  }
}

/** A layer's weights as read once by the addon, with the tensors it points into. */
interface PreparedWeights {
  handle: unknown;
  tensors: unknown;
  /** The host tensors among them (checked for detached buffers before each forward). */
  host: Tensor[];
}
