/**
 * combine (SPEC.md): out[t] = sum over slots j with ids[t, j] >= 0 of
 * w[t, j] * y[slotRow[t, j]], summed in f32 in slot order (no atomics:
 * bitwise deterministic), plus an optional shared-expert term.
 */
import { MoeError } from '../errors';
import { native } from '../native';
import { Tensor, empty } from '../tensor';
import { expectDtype, expectFinite, expectOneOf, expectOptions, expectShape, expectTensor } from '../validate';
import { DispatchLayout, expectLayout } from './dispatch-layout';
import { asRows } from './rows';
import { rowsShape } from './dispatch';
import { PreparedCall, twin } from './twin';

export interface CombineOptions {
  /** [T, H] f32 or bf16: the shared experts' output, added to every token. */
  shared?: Tensor;
  /** Output dtype: 'bf16' (default) or 'f32'. */
  out?: 'bf16' | 'f32';
  into?: Tensor;
}

const combineTwin = twin((y: Tensor, layout: DispatchLayout, weights: Tensor, options?: CombineOptions): PreparedCall<Tensor> => {
  const opts = expectOptions(options, ['shared', 'out', 'into'], 'combine: options');
  expectLayout(layout, 'combine: layout');
  expectTensor(y, 'combine: y');
  expectDtype(y, ['f32', 'bf16'], 'combine: y');
  const hidden = y.shape[y.shape.length - 1];
  expectShape(y, rowsShape(layout, hidden), 'combine: y');
  expectTensor(weights, 'combine: weights');
  expectDtype(weights, ['f32'], 'combine: weights');
  expectShape(weights, [layout.numTokens, layout.topK], 'combine: weights');
  expectFinite(weights as Tensor<'f32'>, 'combine: weights');
  let shared: Tensor | undefined;
  if (opts.shared !== undefined) {
    shared = expectTensor(opts.shared, 'combine: options.shared');
    expectDtype(shared, ['f32', 'bf16'], 'combine: options.shared');
    expectShape(shared, [layout.numTokens, hidden], 'combine: options.shared');
  }
  const outDtype = expectOneOf(opts.out ?? 'bf16', ['bf16', 'f32'] as const, 'combine: options.out');
  let out: Tensor;
  if (opts.into !== undefined) {
    out = expectTensor(opts.into, 'combine: options.into');
    expectDtype(out, [outDtype], 'combine: options.into');
    expectShape(out, [layout.numTokens, hidden], 'combine: options.into');
  } else {
    out = empty([layout.numTokens, hidden], outDtype, y.device);
  }
  if (hidden === 0) throw new MoeError('ERR_MOE_SHAPE', 'combine: y: hidden size must be positive');
  const args = { y: asRows(y), slotRow: layout.slotRow, weights, shared, out };
  return { run: (async) => (layout.numTokens === 0 ? undefined : native().combine(args, async)), result: out };
});

/** [T, H] from the expert outputs y in the layout's rows and the routing weights [T, k]. */
export const combine = combineTwin.async;
export const combineSync = combineTwin.sync;
