/**
 * Grouped FP8 GEMMs (SPEC.md): the contiguous layout (MoE prefill: rows of
 * one expert contiguous, -1 rows zero) and the masked layout (decode: [G, Mmax]
 * rows, rows at or past maskedM[g] zero).
 */
import { MoeError } from '../errors';
import { native } from '../native';
import { Tensor, empty } from '../tensor';
import { expectDtype, expectFinite, expectInnerMultipleOf16, expectInteger, expectOneOf, expectOptions, expectRank, expectShape, expectTensor } from '../validate';
import { DispatchLayout } from './dispatch-layout';
import { QUANT_GROUP, QuantizedTensor, WEIGHT_BLOCK_ROWS } from './quantize';
import { PreparedCall, twin } from './twin';

export interface GroupedGemmOptions {
  /** Output dtype: 'bf16' (default) or 'f32'. */
  out?: 'bf16' | 'f32';
  into?: Tensor;
}

export interface ContiguousGemmOptions extends GroupedGemmOptions {
  /**
   * Every group's rows start at a multiple of this many rows (padding rows
   * -1): the GPU's Hopper kernel then gives whole blocks of rows one group.
   * Default: the layout's align, or 1 (nothing promised) for a bare groupIndex.
   */
  align?: number;
}

const ceilDiv = (a: number, b: number) => Math.ceil(a / b);

/** Checks b = { data [G, N, K] fp8, scales [G, ceil(N/128), ceil(K/128)] f32 } and returns [G, N, K]. */
function checkExpertWeights(b: QuantizedTensor, op: string): [number, number, number] {
  if (typeof b !== 'object' || b === null) throw new MoeError('ERR_MOE_ARGUMENT', `${op}: b: expected { data, scales }`);
  expectTensor(b.data, `${op}: b.data`);
  expectDtype(b.data, ['fp8_e4m3'], `${op}: b.data`);
  expectRank(b.data, 3, `${op}: b.data`);
  const [groups, n, k] = b.data.shape;
  expectInnerMultipleOf16(k, `${op}: b.data`);
  expectTensor(b.scales, `${op}: b.scales`);
  expectDtype(b.scales, ['f32'], `${op}: b.scales`);
  expectShape(b.scales, [groups, ceilDiv(n, WEIGHT_BLOCK_ROWS), ceilDiv(k, QUANT_GROUP)], `${op}: b.scales`);
  expectFinite(b.scales as Tensor<'f32'>, `${op}: b.scales`);
  return [groups, n, k];
}

function checkActivations(a: QuantizedTensor, leading: number[], k: number, op: string): void {
  if (typeof a !== 'object' || a === null) throw new MoeError('ERR_MOE_ARGUMENT', `${op}: a: expected { data, scales }`);
  expectTensor(a.data, `${op}: a.data`);
  expectDtype(a.data, ['fp8_e4m3'], `${op}: a.data`);
  expectShape(a.data, [...leading, k], `${op}: a.data`);
  expectTensor(a.scales, `${op}: a.scales`);
  expectDtype(a.scales, ['f32'], `${op}: a.scales`);
  expectShape(a.scales, [...leading, ceilDiv(k, QUANT_GROUP)], `${op}: a.scales`);
  expectFinite(a.scales as Tensor<'f32'>, `${op}: a.scales`);
}

function output(op: string, shape: number[], opts: Partial<Record<'out' | 'into', unknown>>, device: Tensor['device']): Tensor {
  const out = expectOneOf(opts.out ?? 'bf16', ['bf16', 'f32'] as const, `${op}: options.out`);
  if (opts.into === undefined) return empty(shape, out, device);
  const into = expectTensor(opts.into, `${op}: options.into`);
  expectDtype(into, [out], `${op}: options.into`);
  expectShape(into, shape, `${op}: options.into`);
  return into;
}

function indexTensor(value: unknown, length: number, op: string, what: string): Tensor {
  const t = expectTensor(value, `${op}: ${what}`);
  expectDtype(t, ['i32'], `${op}: ${what}`);
  expectShape(t, [length], `${op}: ${what}`);
  return t;
}

const contiguousTwin = twin(
  (a: QuantizedTensor, b: QuantizedTensor, layout: DispatchLayout | Tensor, options?: ContiguousGemmOptions): PreparedCall<Tensor> => {
    const op = 'groupedGemmFp8';
    const opts = expectOptions(options, ['out', 'into', 'align'], `${op}: options`);
    const [, n, k] = checkExpertWeights(b, op);
    if (typeof a !== 'object' || a === null || !(a.data instanceof Tensor)) throw new MoeError('ERR_MOE_ARGUMENT', `${op}: a: expected { data, scales }`);
    const rows = a.data.shape[0];
    checkActivations(a, [rows], k, op);
    const groupIndex = indexTensor(layout instanceof Tensor ? layout : layout?.groupIndex, rows, op, 'groupIndex');
    const d = output(op, [rows, n], opts, a.data.device);
    // A layout's segments start at multiples of its align (what lets a GPU
    // give each block of rows one expert); a bare groupIndex promises nothing.
    const align = expectInteger(opts.align ?? (layout instanceof Tensor ? 1 : layout.align), 1, 1 << 16, `${op}: options.align`);
    const args = { a: a.data, aScales: a.scales, b: b.data, bScales: b.scales, groupIndex, d, align };
    return { run: (async) => (rows === 0 || n === 0 ? undefined : native().groupedGemmFp8(args, async)), result: d };
  },
);

/**
 * D [R, N] = A [R, K] * B[groupIndex[r]]^T per row, zero where groupIndex is -1; `layout` is a contiguous DispatchLayout or
 * groupIndex [R] (then `options.align` may say how its segments are aligned).
 */
export const groupedGemmFp8 = contiguousTwin.async;
export const groupedGemmFp8Sync = contiguousTwin.sync;

const maskedTwin = twin(
  (a: QuantizedTensor, b: QuantizedTensor, maskedM: Tensor | DispatchLayout, options?: GroupedGemmOptions): PreparedCall<Tensor> => {
    const op = 'groupedGemmFp8Masked';
    const opts = expectOptions(options, ['out', 'into'], `${op}: options`);
    const [groups, n, k] = checkExpertWeights(b, op);
    if (typeof a !== 'object' || a === null || !(a.data instanceof Tensor)) throw new MoeError('ERR_MOE_ARGUMENT', `${op}: a: expected { data, scales }`);
    const maxRows = a.data.shape.length === 3 ? a.data.shape[1] : -1;
    checkActivations(a, [groups, maxRows], k, op);
    const counts = indexTensor(maskedM instanceof Tensor ? maskedM : maskedM?.tokensPerExpert, groups, op, 'maskedM');
    const d = output(op, [groups, maxRows, n], opts, a.data.device);
    const args = { a: a.data, aScales: a.scales, b: b.data, bScales: b.scales, maskedM: counts, d };
    return { run: (async) => (groups === 0 || n === 0 ? undefined : native().groupedGemmFp8(args, async)), result: d };
  },
);

/** D [G, Mmax, N] = A[g] * B[g]^T for rows below maskedM[g] (a masked DispatchLayout or maskedM [G] i32), zero beyond. */
export const groupedGemmFp8Masked = maskedTwin.async;
export const groupedGemmFp8MaskedSync = maskedTwin.sync;
