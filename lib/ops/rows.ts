/**
 * Helpers for the row-wise MoE ops (dispatch, swiglu, combine, grouped GEMM):
 * viewing [G, M, C] tensors as [G*M, C] rows for native code, and allocating
 * a plain or fp8-quantized output.
 */
import { MoeError } from '../errors';
import type { NativeTensor } from '../native';
import { Device, Tensor, empty } from '../tensor';
import { expectDtype, expectOneOf, expectQuantized, expectShape, expectTensor } from '../validate';
import { QUANT_GROUP, QuantizedTensor, ScaleFormat } from './quantize';

/** The same memory as [rows, cols], rows being every leading dimension flattened. */
export function asRows(t: Tensor): NativeTensor {
  const cols = t.shape[t.shape.length - 1];
  const shape = [t.numel / Math.max(cols, 1), cols];
  if (t.device === 'cuda') return { device: 'cuda', handle: t.handle, dtype: t.dtype, shape } as NativeTensor;
  return { data: t.data, dtype: t.dtype, shape };
}

export interface RowOutputOptions {
  /** Quantize the output to fp8 with 1x128 scales. */
  quantize?: 'fp8';
  scaleFormat?: ScaleFormat;
  /** Output dtype when not quantizing. */
  out?: 'f32' | 'bf16';
}

export type Quantizing<O> = O extends { quantize: 'fp8' } ? QuantizedTensor : Tensor;

export interface RowOutput {
  result: Tensor | QuantizedTensor;
  out: NativeTensor;
  scales?: NativeTensor;
  scaleFormat: ScaleFormat;
}

/** Allocates (or checks `into`) an output of `shape`, plain in `plainDtype` or quantized to fp8. */
export function rowOutput(
  op: string, shape: number[], plainDtype: 'f32' | 'bf16', opts: RowOutputOptions & { into?: unknown }, device: Device = 'cpu',
): RowOutput {
  const quantize = opts.quantize === undefined ? undefined : expectOneOf(opts.quantize, ['fp8'] as const, `${op}: options.quantize`);
  const scaleFormat = expectOneOf(opts.scaleFormat ?? 'f32', ['f32', 'ue8m0'] as const, `${op}: options.scaleFormat`);
  if (!quantize && opts.scaleFormat !== undefined) {
    throw new MoeError('ERR_MOE_ARGUMENT', `${op}: options.scaleFormat needs quantize: 'fp8'`);
  }
  const scalesShape = [...shape.slice(0, -1), Math.ceil(shape[shape.length - 1] / QUANT_GROUP)];
  if (quantize) {
    let q: QuantizedTensor;
    if (opts.into !== undefined) {
      q = expectQuantized(opts.into, `${op}: options.into`) as QuantizedTensor;
      expectDtype(q.data, ['fp8_e4m3'], `${op}: options.into.data`);
      expectShape(q.data, shape, `${op}: options.into.data`);
      expectDtype(q.scales, ['f32'], `${op}: options.into.scales`);
      expectShape(q.scales, scalesShape, `${op}: options.into.scales`);
    } else {
      q = { data: empty(shape, 'fp8_e4m3', device), scales: empty(scalesShape, 'f32', device) };
    }
    return { result: q, out: asRows(q.data), scales: asRows(q.scales), scaleFormat };
  }
  let t: Tensor;
  if (opts.into !== undefined) {
    t = expectTensor(opts.into, `${op}: options.into`);
    expectDtype(t, [plainDtype], `${op}: options.into`);
    expectShape(t, shape, `${op}: options.into`);
  } else {
    t = empty(shape, plainDtype, device);
  }
  return { result: t, out: asRows(t), scaleFormat };
}
