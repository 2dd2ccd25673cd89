/**
 * dispatch (SPEC.md): row r of the grouped GEMM input receives x[rowToken[r]]
 * (padding rows zero), optionally quantized 1x128 to fp8 in the same pass.
 */
import { MoeError } from '../errors';
import { native } from '../native';
import { Tensor } from '../tensor';
import { expectDtype, expectOptions, expectRank, expectTensor } from '../validate';
import { DispatchLayout, expectLayout } from './dispatch-layout';
import { QuantizedTensor } from './quantize';
import { Quantizing, RowOutputOptions, rowOutput } from './rows';
import { PreparedCall, twin } from './twin';

export interface DispatchOptions extends Omit<RowOutputOptions, 'out'> {
  into?: Tensor | QuantizedTensor;
}

/** The rows' shape: [R, H] for the contiguous layout, [E, Mmax, H] for the masked one. */
export function rowsShape(layout: DispatchLayout, cols: number): number[] {
  return layout.kind === 'masked' ? [layout.numExperts, layout.maxRowsPerExpert, cols] : [layout.numRows, cols];
}

const dispatchTwin = twin((x: Tensor, layout: DispatchLayout, options?: DispatchOptions): PreparedCall<Tensor | QuantizedTensor> => {
  const opts = expectOptions(options, ['quantize', 'scaleFormat', 'into'], 'dispatch: options');
  expectTensor(x, 'dispatch: x');
  expectDtype(x, ['f32', 'bf16'], 'dispatch: x');
  expectRank(x, 2, 'dispatch: x');
  expectLayout(layout, 'dispatch: layout');
  if (x.shape[0] !== layout.numTokens) {
    throw new MoeError('ERR_MOE_SHAPE', `dispatch: x has ${x.shape[0]} tokens, the layout was made for ${layout.numTokens}`);
  }
  const output = rowOutput('dispatch', rowsShape(layout, x.shape[1]), x.dtype as 'f32' | 'bf16', opts as DispatchOptions, x.device);
  const args = { x, rowToken: layout.rowToken, out: output.out, scales: output.scales, scaleFormat: output.scaleFormat };
  // No rows (no token routed anywhere): nothing to gather, and native code would see empty outputs.
  const empty = output.out.shape[0] === 0;
  return { run: (async) => (empty ? undefined : native().dispatch(args, async)), result: output.result };
});

type DispatchFn<Wrap> = <O extends DispatchOptions>(x: Tensor, layout: DispatchLayout, options?: O) => Wrap extends 'promise' ? Promise<Quantizing<O>> : Quantizing<O>;

/** Gathers x [T, H] into the layout's rows; with { quantize: 'fp8' } returns { data, scales }. */
export const dispatch = dispatchTwin.async as DispatchFn<'promise'>;
export const dispatchSync = dispatchTwin.sync as DispatchFn<'sync'>;

