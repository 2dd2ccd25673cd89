/**
 * `moe-kernels bench moe --backend cuda`: the MoE layer on the GPU at
 * DeepSeek-V3's full shape (H = 7168, I = 2048, E = 256, k = 8, one shared
 * expert): GPU time per forward (CUDA events, L2 flushed before each run,
 * median), tokens/s, and the ratio of the layer's time to the sum of its
 * FP8 GEMMs' times (the same GEMMs timed alone, with a balanced routing of
 * T * k rows over the experts). The target: <= 1.2 at T >= 1024.
 * Decode sizes (T <= 16) use the masked layout (no host sync), larger T the
 * contiguous one (one host sync to learn the row count).
 */
import { requireCuda } from '../backends';
import { native } from '../native';
import { MoeConfig } from '../moe/config';
import { ExpertMatrices } from '../moe/experts';
import { MASKED_MAX_TOKENS, MoeLayer } from '../moe/layer';
import { CUDA_ALIGN } from '../moe/workspace';
import { gemmFp8 } from '../ops/gemm';
import { groupedGemmFp8, groupedGemmFp8Masked } from '../ops/grouped-gemm';
import { QUANT_GROUP, QuantizedTensor } from '../ops/quantize';
import { Tensor, bf16FromFloat32, empty, tensor } from '../tensor';
import { formatTable } from './table';
import { randomQuantized } from './operands';

export const CUDA_DEFAULT_TOKENS = [1, 16, 128, 1024, 4096];
const RUNS = 20;

/**
 * A layer with random fp8 weights built on the GPU for timing: one random
 * expert matrix uploaded into every expert's slot (each expert still has its
 * own memory, so the HBM traffic is the real one), random router and bias.
 */
export function randomDeviceLayer(config: MoeConfig): MoeLayer {
  requireCuda('bench moe --backend cuda');
  const { hiddenSize: h, intermediateSize: i, numExperts: e } = config;
  const matrices = (experts: number, n: number, k: number): ExpertMatrices => {
    const one = randomQuantized(n, k, 128);
    const data = empty([experts, n, k], 'fp8_e4m3', 'cuda');
    const scales = empty([experts, ...one.scales.shape], 'f32', 'cuda');
    for (let x = 0; x < experts; x++) {
      native().cudaCopyToDevice(data.handle, one.data.data!, x * one.data.byteLength);
      native().cudaCopyToDevice(scales.handle, one.scales.data!, x * one.scales.byteLength);
    }
    return { numExperts: experts, n, k, data: [data as Tensor<'fp8_e4m3'>], scales: [scales as Tensor<'f32'>] };
  };
  const gateValues = new Float32Array(e * h);
  for (let j = 0; j < gateValues.length; j++) gateValues[j] = (Math.random() - 0.5) * 2 / Math.sqrt(h);
  const biasValues = Float32Array.from({ length: e }, () => (Math.random() - 0.5) * 0.1);
  const is = i * config.numSharedExperts;
  return new MoeLayer(config, {
    gate: bf16FromFloat32(gateValues, [e, h]).to('cuda'),
    bias: config.scoring === 'sigmoid' ? tensor(biasValues, [e], 'f32').to('cuda') : undefined,
    w13: matrices(e, 2 * i, h),
    w2: matrices(e, h, i),
    sharedW13: is > 0 ? matrices(1, 2 * is, h) : undefined,
    sharedW2: is > 0 ? matrices(1, h, is) : undefined,
  });
}

/**
 * Median GPU time of `run` in ms: CUDA events around the work it enqueues
 * (the Promise forms enqueue before they return, so the stop event follows
 * the work without a host round trip), L2 flushed before each run.
 */
export async function gpuMedianMs(run: () => unknown, runs = RUNS): Promise<number> {
  const times: number[] = [];
  for (let r = 0; r < runs + 2; r++) {
    native().cudaFlushL2();
    native().cudaTimerStart();
    const done = run();
    const ms = native().cudaTimerStop();
    await done;
    if (r >= 2) times.push(ms);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

const onDevice = (q: QuantizedTensor): QuantizedTensor => ({ data: q.data.to('cuda'), scales: q.scales.to('cuda') });
const weightsOf = (m: ExpertMatrices): QuantizedTensor => ({ data: m.data[0], scales: m.scales[0] });

/** The layer's FP8 GEMMs alone for T tokens spread evenly over the experts, ms (summed). */
export async function layerGemmsMs(layer: MoeLayer, tokens: number): Promise<number> {
  const c = layer.config;
  const { hiddenSize: h, intermediateSize: i, numExperts: e, topK: k } = c;
  const w = layer.weights;
  const counts = Array.from({ length: e }, (_, x) => Math.floor((tokens * k) / e) + (x < (tokens * k) % e ? 1 : 0));
  let ms = 0;
  if (tokens <= MASKED_MAX_TOKENS) {
    const mmax = tokens;
    const maskedM = tensor(Int32Array.from(counts), [e], 'i32').to('cuda');
    const a1 = onDevice(randomQuantized(e * mmax, h, 1));
    const a1v = { data: reshape(a1.data, [e, mmax, h]), scales: reshape(a1.scales, [e, mmax, Math.ceil(h / QUANT_GROUP)]) };
    const a2 = onDevice(randomQuantized(e * mmax, i, 1));
    const a2v = { data: reshape(a2.data, [e, mmax, i]), scales: reshape(a2.scales, [e, mmax, Math.ceil(i / QUANT_GROUP)]) };
    const d1 = empty([e, mmax, 2 * i], 'bf16', 'cuda');
    const d2 = empty([e, mmax, h], 'bf16', 'cuda');
    ms += await gpuMedianMs(() => groupedGemmFp8Masked(a1v as QuantizedTensor, weightsOf(w.w13), maskedM, { into: d1 }));
    ms += await gpuMedianMs(() => groupedGemmFp8Masked(a2v as QuantizedTensor, weightsOf(w.w2), maskedM, { into: d2 }));
  } else {
    const groupIndex: number[] = [];
    counts.forEach((n, x) => {
      const span = Math.ceil(n / CUDA_ALIGN) * CUDA_ALIGN;
      for (let r = 0; r < span; r++) groupIndex.push(r < n ? x : -1);
    });
    const rows = groupIndex.length;
    const gi = tensor(Int32Array.from(groupIndex), [rows], 'i32').to('cuda');
    const a1 = onDevice(randomQuantized(rows, h, 1));
    const a2 = onDevice(randomQuantized(rows, i, 1));
    const d1 = empty([rows, 2 * i], 'bf16', 'cuda');
    const d2 = empty([rows, h], 'bf16', 'cuda');
    ms += await gpuMedianMs(() => groupedGemmFp8(a1, weightsOf(w.w13), gi, { into: d1, align: CUDA_ALIGN }));
    ms += await gpuMedianMs(() => groupedGemmFp8(a2, weightsOf(w.w2), gi, { into: d2, align: CUDA_ALIGN }));
  }
  const sharedW13 = w.sharedW13, sharedW2 = w.sharedW2;
  if (sharedW13 && sharedW2) {
    const is = sharedW2.k;
    const single = (m: ExpertMatrices): QuantizedTensor => ({ data: reshape(m.data[0], [m.n, m.k]), scales: reshape(m.scales[0], m.scales[0].shape.slice(1)) });
    const a1 = onDevice(randomQuantized(tokens, h, 1));
    const a2 = onDevice(randomQuantized(tokens, is, 1));
    const d1 = empty([tokens, 2 * is], 'bf16', 'cuda');
    const d2 = empty([tokens, h], 'f32', 'cuda');
    ms += await gpuMedianMs(() => gemmFp8(a1, single(sharedW13), { into: d1 }));
    ms += await gpuMedianMs(() => gemmFp8(a2, single(sharedW2), { into: d2, out: 'f32' }));
  }
  return ms;
}

/** The same device memory seen with another shape of the same element count. */
function reshape<T extends Tensor>(t: T, shape: readonly number[]): T {
  return new Tensor(undefined, shape, t.dtype, 'cuda', t.handle) as T;
}

export interface MoeCudaBenchRow {
  tokens: number;
  layout: 'masked' | 'contiguous';
  ms: number;
  tokensPerSecond: number;
  gemmMs: number;
  /** layer time / sum of its GEMMs' times (target <= 1.2 at T >= 1024) */
  ratio: number;
  /** Decode sizes: one replay of the forward captured into a CUDA graph, ms. */
  graphMs?: number;
}

export async function benchMoeCuda(layer: MoeLayer, tokensList: number[], onRow?: (row: MoeCudaBenchRow) => void): Promise<MoeCudaBenchRow[]> {
  requireCuda('bench moe --backend cuda');
  const rows: MoeCudaBenchRow[] = [];
  const h = layer.config.hiddenSize;
  for (const tokens of tokensList) {
    const values = new Float32Array(tokens * h);
    for (let j = 0; j < values.length; j++) values[j] = Math.random() * 2 - 1;
    const x = bf16FromFloat32(values, [tokens, h]).to('cuda');
    const out = empty([tokens, h], 'bf16', 'cuda');
    const layout = tokens <= MASKED_MAX_TOKENS ? 'masked' : 'contiguous';
    const ms = await gpuMedianMs(() => layer.forward(x, { into: out, layout }));
    const gemmMs = await layerGemmsMs(layer, tokens);
    const row = { tokens, layout, ms, tokensPerSecond: tokens / (ms / 1e3), gemmMs, ratio: ms / gemmMs } as MoeCudaBenchRow;
    if (layout === 'masked') {
      const graph = layer.capture({ maxTokens: tokens });
      row.graphMs = await gpuMedianMs(() => graph.replay(x));
      graph.dispose();
    }
    rows.push(row);
    onRow?.(row);
    x.dispose();
    out.dispose();
  }
  return rows;
}

export function formatMoeCudaReport(rows: MoeCudaBenchRow[], config: MoeConfig): string {
  const head = `MoE layer on the GPU: H=${config.hiddenSize} I=${config.intermediateSize} E=${config.numExperts} k=${config.topK} shared=${config.numSharedExperts}`;
  const body = rows.map((r) => [String(r.tokens), r.layout, r.ms.toFixed(3), r.tokensPerSecond.toFixed(0), r.gemmMs.toFixed(3), r.ratio.toFixed(2), r.graphMs?.toFixed(3) ?? '-']);
  return [head, ...formatTable(['T', 'layout', 'ms', 'tokens/s', 'GEMMs ms', 'layer/GEMMs', 'graph ms'], body)].join('\n');
}
