/**
 * swiglu (SPEC.md): h [..., 2I] holds gate then up (the fused w13 = [w1; w3]
 * weight's output); out = silu(gate) * up in f32, optionally quantized 1x128.
 */
import { MoeError, describe } from '../errors';
import { native } from '../native';
import { Tensor } from '../tensor';
import { expectDtype, expectOptions, expectTensor } from '../validate';
import { QuantizedTensor } from './quantize';
import { Quantizing, RowOutputOptions, asRows, rowOutput } from './rows';
import { PreparedCall, twin } from './twin';

export interface SwigluOptions extends RowOutputOptions {
  into?: Tensor | QuantizedTensor;
}

const swigluTwin = twin((h: Tensor, options?: SwigluOptions): PreparedCall<Tensor | QuantizedTensor> => {
  const opts = expectOptions(options, ['quantize', 'scaleFormat', 'out', 'into'], 'swiglu: options') as SwigluOptions;
  expectTensor(h, 'swiglu: h');
  expectDtype(h, ['f32', 'bf16'], 'swiglu: h');
  const width = h.shape[h.shape.length - 1];
  if (h.shape.length < 2 || width % 2 !== 0) {
    throw new MoeError('ERR_MOE_SHAPE', `swiglu: h: expected [..., 2I] with an even last dimension, got [${h.shape.join(', ')}]`);
  }
  if (opts.quantize && opts.out !== undefined) throw new MoeError('ERR_MOE_ARGUMENT', "swiglu: options.out and quantize: 'fp8' exclude each other");
  if (opts.out !== undefined && opts.out !== 'f32' && opts.out !== 'bf16') {
    throw new MoeError('ERR_MOE_RANGE', `swiglu: options.out: expected 'f32' or 'bf16', got ${describe(opts.out)}`);
  }
  const shape = [...h.shape.slice(0, -1), width / 2];
  const output = rowOutput('swiglu', shape, opts.out ?? (h.dtype as 'f32' | 'bf16'), opts, h.device);
  const args = { h: asRows(h), out: output.out, scales: output.scales, scaleFormat: output.scaleFormat };
  const empty = output.out.shape[0] === 0; // no rows: nothing to compute
  return { run: (async) => (empty ? undefined : native().swiglu(args, async)), result: output.result };
});

type SwigluFn<Wrap> = <O extends SwigluOptions>(h: Tensor, options?: O) => Wrap extends 'promise' ? Promise<Quantizing<O>> : Quantizing<O>;

/** silu(gate) * up for h = [gate | up]; with { quantize: 'fp8' } returns { data, scales }. */
export const swiglu = swigluTwin.async as SwigluFn<'promise'>;
export const swigluSync = swigluTwin.sync as SwigluFn<'sync'>;
