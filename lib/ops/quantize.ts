/**
 * fp8 quantization (SPEC.md, "Quantization"): activations per token and
 * 128-channel group (1x128), weights per 128x128 block; and dequantization.
 */
import { MoeError, describe } from '../errors';
import { native, NativeTensor } from '../native';
import { Tensor, empty } from '../tensor';
import {
  expectDtype,
  expectFinite,
  expectInnerMultipleOf16,
  expectOneOf,
  expectOptions,
  expectRank,
  expectShape,
  expectTensor,
  expectQuantized,
} from '../validate';
import { PreparedCall, twin } from './twin';

export const QUANT_GROUP = 128; // channels per scale (K direction)
export const WEIGHT_BLOCK_ROWS = 128; // rows per weight scale (N direction)

export type ScaleFormat = 'f32' | 'ue8m0';

/** fp8 values with their dequantizing scales (x = q * s). */
export interface QuantizedTensor {
  /** [M, K] fp8_e4m3, K-major */
  readonly data: Tensor<'fp8_e4m3'>;
  /** [M, ceil(K/128)] (activations) or [ceil(M/128), ceil(K/128)] (weights), f32; ue8m0 scales are stored as f32 powers of two */
  readonly scales: Tensor<'f32'>;
}

export interface QuantizeOptions {
  /** 'f32' (default) or 'ue8m0': scales rounded up to powers of two (DeepGEMM's UE8M0 recipe). */
  scaleFormat?: ScaleFormat;
  /** Write into these tensors instead of allocating new ones. */
  into?: QuantizedTensor;
}

const ceilDiv = (a: number, b: number) => Math.ceil(a / b);

/** Expert i of a [G, rows, cols] tensor as a 2-D view (zero-copy). */
function expertView(t: Tensor, expert: number): NativeTensor {
  // (CPU only: t.data of a device tensor throws ERR_MOE_DEVICE.)
  const [rows, cols] = t.shape.slice(-2);
  const size = rows * cols;
  return { data: t.data.subarray(expert * size, (expert + 1) * size), dtype: t.dtype, shape: [rows, cols] };
}

function prepareQuantize(op: 'quantizeActivations' | 'quantizeWeights', x: Tensor, options: QuantizeOptions | undefined): PreparedCall<QuantizedTensor> {
  const opts = expectOptions(options, ['scaleFormat', 'into'], `${op}: options`);
  expectTensor(x, `${op}: x`);
  expectDtype(x, ['f32', 'bf16'], `${op}: x`);
  // Weights may be stacked per expert: [G, N, K] with scales [G, ceil(N/128), ceil(K/128)].
  const stacked = op === 'quantizeWeights' && x.shape.length === 3;
  if (!stacked) expectRank(x, 2, `${op}: x`);
  const [rows, k] = x.shape.slice(-2);
  const experts = stacked ? x.shape[0] : 1;
  expectInnerMultipleOf16(k, `${op}: x`);
  const scaleFormat = expectOneOf(opts.scaleFormat ?? 'f32', ['f32', 'ue8m0'] as const, `${op}: options.scaleFormat`);
  const blockRows = op === 'quantizeWeights' ? WEIGHT_BLOCK_ROWS : 1;
  const scalesShape = [...(stacked ? [experts] : []), ceilDiv(rows, blockRows), ceilDiv(k, QUANT_GROUP)];
  let result: QuantizedTensor;
  if (opts.into !== undefined) {
    const into = expectQuantized(opts.into, `${op}: options.into`) as QuantizedTensor;
    expectDtype(into.data, ['fp8_e4m3'], `${op}: options.into.data`);
    expectShape(into.data, x.shape, `${op}: options.into.data`);
    expectDtype(into.scales, ['f32'], `${op}: options.into.scales`);
    expectShape(into.scales, scalesShape, `${op}: options.into.scales`);
    result = into;
  } else {
    result = { data: empty(x.shape, 'fp8_e4m3', x.device), scales: empty(scalesShape, 'f32', x.device) };
  }
  const calls = Array.from({ length: experts }, (_, e) => ({
    x: stacked ? expertView(x, e) : x,
    q: stacked ? expertView(result.data, e) : result.data,
    scales: stacked ? expertView(result.scales, e) : result.scales,
    scaleFormat,
  }));
  const runAsync = async () => {
    for (const args of calls) await native()[op](args, true);
  };
  const runSync = () => calls.forEach((args) => native()[op](args, false));
  return { run: (async) => (async ? runAsync() : runSync()), result };
}

const activations = twin((x: Tensor, options?: QuantizeOptions) => prepareQuantize('quantizeActivations', x, options));
const weights = twin((w: Tensor, options?: QuantizeOptions) => prepareQuantize('quantizeWeights', w, options));

/** Per-token 1x128 quantization of activations x [M, K] (f32 or bf16): data [M, K] fp8, scales [M, ceil(K/128)]. */
export const quantizeActivations = activations.async;
export const quantizeActivationsSync = activations.sync;

/**
 * 128x128 block quantization of weights w [N, K] (f32 or bf16): data [N, K] fp8, scales [ceil(N/128), ceil(K/128)].
 * Stacked expert weights [G, N, K] get scales [G, ceil(N/128), ceil(K/128)].
 */
export const quantizeWeights = weights.async;
export const quantizeWeightsSync = weights.sync;

/**
 * Validates a quantized operand and returns the rows each scale covers: 1
 * (per-token scales) or 128 (block scales), told apart by the scales' shape.
 */
export function checkQuantized(q: unknown, what: string, allowed: readonly number[] = [1, WEIGHT_BLOCK_ROWS]): number {
  if (typeof q !== 'object' || q === null) {
    throw new MoeError('ERR_MOE_ARGUMENT', `${what}: expected { data, scales }, got ${describe(q)}`);
  }
  const { data, scales } = q as QuantizedTensor;
  expectTensor(data, `${what}.data`);
  expectTensor(scales, `${what}.scales`);
  expectDtype(data, ['fp8_e4m3'], `${what}.data`);
  expectRank(data, 2, `${what}.data`);
  const [rows, k] = data.shape;
  expectInnerMultipleOf16(k, `${what}.data`);
  expectDtype(scales, ['f32'], `${what}.scales`);
  const blockRows = allowed.find((r) => scales.shape.length === 2 && scales.shape[0] === ceilDiv(rows, r)) ?? allowed[0];
  expectShape(scales, [ceilDiv(rows, blockRows), ceilDiv(k, QUANT_GROUP)], `${what}.scales`);
  expectFinite(scales, `${what}.scales`);
  return blockRows;
}

export interface DequantizeOptions {
  /** Output dtype: 'f32' (default) or 'bf16'. */
  out?: 'f32' | 'bf16';
  into?: Tensor;
}

const dequantizeTwin = twin((q: QuantizedTensor, options?: DequantizeOptions): PreparedCall<Tensor> => {
  const opts = expectOptions(options, ['out', 'into'], 'dequantize: options');
  const blockRows = checkQuantized(q, 'dequantize: q');
  const out = expectOneOf(opts.out ?? 'f32', ['f32', 'bf16'] as const, 'dequantize: options.out');
  let result: Tensor;
  if (opts.into !== undefined) {
    result = expectTensor(opts.into, 'dequantize: options.into');
    expectDtype(result, [out], 'dequantize: options.into');
    expectShape(result, q.data.shape, 'dequantize: options.into');
  } else {
    result = empty(q.data.shape, out, q.data.device);
  }
  const args = { q: q.data, scales: q.scales, blockRows, out: result };
  return { run: (async) => native().dequantize(args, async), result };
});

/** x = q * s as f32 (or bf16), for either scale layout. */
export const dequantize = dequantizeTwin.async;
export const dequantizeSync = dequantizeTwin.sync;
