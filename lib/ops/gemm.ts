/**
 * The block-scaled FP8 GEMM (SPEC.md, "FP8 GEMM"): D = A * B^T with 1x128
 * scales on A (activations) and 128x128 scales on B (weights), accumulated in
 * f32, written as bf16 (default) or f32.
 */
import { MoeError } from '../errors';
import { native } from '../native';
import { Tensor, empty } from '../tensor';
import { expectBoolean, expectDtype, expectOneOf, expectOptions, expectShape, expectTensor } from '../validate';
import { QuantizedTensor, WEIGHT_BLOCK_ROWS, checkQuantized } from './quantize';
import { PreparedCall, twin } from './twin';

export interface GemmOptions {
  /** Output dtype: 'bf16' (default) or 'f32'. */
  out?: 'bf16' | 'f32';
  /** Write into this [M, N] tensor instead of allocating one. */
  into?: Tensor;
  /**
   * One kernel and reduction order for every M (CPU): a row's bits do not
   * depend on the other rows of A, as the layer's `batchInvariant`. Off by
   * default, where the kernel is picked by M for speed.
   */
  batchInvariant?: boolean;
}

const gemm = twin((a: QuantizedTensor, b: QuantizedTensor, options?: GemmOptions): PreparedCall<Tensor> => {
  const opts = expectOptions(options, ['out', 'into', 'batchInvariant'], 'gemmFp8: options');
  checkQuantized(a, 'gemmFp8: a', [1]);
  checkQuantized(b, 'gemmFp8: b', [WEIGHT_BLOCK_ROWS]);
  const [m, k] = a.data.shape;
  const [n, kb] = b.data.shape;
  if (kb !== k) {
    throw new MoeError('ERR_MOE_SHAPE', `gemmFp8: b.data must be [N, ${k}] to match a.data [${m}, ${k}], got [${n}, ${kb}]`);
  }
  const out = expectOneOf(opts.out ?? 'bf16', ['bf16', 'f32'] as const, 'gemmFp8: options.out');
  let d: Tensor;
  if (opts.into !== undefined) {
    d = expectTensor(opts.into, 'gemmFp8: options.into');
    expectDtype(d, [out], 'gemmFp8: options.into');
    expectShape(d, [m, n], 'gemmFp8: options.into');
  } else {
    d = empty([m, n], out, a.data.device);
  }
  const batchInvariant = expectBoolean(opts.batchInvariant, 'gemmFp8: options.batchInvariant') ?? false;
  const args = { a: a.data, aScales: a.scales, b: b.data, bScales: b.scales, d, batchInvariant };
  // An empty product has nothing to compute; the kernels need M, N >= 1.
  const run = (async: boolean) => (m === 0 || n === 0 ? undefined : native().gemmFp8(args, async));
  return { run, result: d };
});

/** D [M, N] = A [M, K] * B [N, K]^T with block scales; see SPEC.md. */
export const gemmFp8 = gemm.async;
export const gemmFp8Sync = gemm.sync;
