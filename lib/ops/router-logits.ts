/**
 * routerLogits (SPEC.md, "The MoE layer"): the router's projection
 * logits = x * w^T with f32 accumulation, the input of `route`. On CPUs with
 * AMX and bf16 x and w it runs on bf16 tiles (exact products, f32 sums); with
 * AVX512_BF16 and bf16 x and w on VDPBF16PS (the same); elsewhere as f32
 * dot products, bf16 widened in registers. Off the AMX tiles a token's logits
 * are the same bits in any batch.
 */
import { MoeError } from '../errors';
import { native } from '../native';
import { Tensor, empty } from '../tensor';
import { expectDtype, expectOptions, expectShape, expectTensor } from '../validate';
import { PreparedCall, twin } from './twin';

export interface RouterLogitsOptions {
  /** [T, E] f32 to write into instead of a new tensor. */
  into?: Tensor;
}

const routerLogitsTwin = twin((x: Tensor, w: Tensor, options?: RouterLogitsOptions): PreparedCall<Tensor> => {
  const opts = expectOptions(options, ['into'], 'routerLogits: options') as RouterLogitsOptions;
  expectTensor(x, 'routerLogits: x');
  expectDtype(x, ['f32', 'bf16'], 'routerLogits: x');
  expectTensor(w, 'routerLogits: w');
  expectDtype(w, ['f32', 'bf16'], 'routerLogits: w');
  if (x.shape.length !== 2) throw new MoeError('ERR_MOE_SHAPE', `routerLogits: x: expected [T, H], got [${x.shape.join(', ')}]`);
  const [tokens, hidden] = x.shape;
  if (w.shape.length !== 2 || w.shape[1] !== hidden || w.shape[0] === 0) {
    throw new MoeError('ERR_MOE_SHAPE', `routerLogits: w: expected [E, ${hidden}] with E > 0, got [${w.shape.join(', ')}]`);
  }
  // NaN and infinity in x or w: found by the addon from the logits (CPU); not checked on a GPU.
  const experts = w.shape[0];
  let logits: Tensor;
  if (opts.into !== undefined) {
    logits = expectTensor(opts.into, 'routerLogits: options.into');
    expectDtype(logits, ['f32'], 'routerLogits: options.into');
    expectShape(logits, [tokens, experts], 'routerLogits: options.into');
  } else {
    logits = empty([tokens, experts], 'f32', x.device);
  }
  const args = { x, w, logits };
  return { run: (async) => (tokens === 0 ? undefined : native().routerLogits(args, async)), result: logits };
});

/** logits [T, E] f32 = x [T, H] * w [E, H]^T, x and w f32 or bf16. */
export const routerLogits = routerLogitsTwin.async;
export const routerLogitsSync = routerLogitsTwin.sync;
