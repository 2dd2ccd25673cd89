/**
 * The dispatch layout (SPEC.md, "Dispatch layout"): where each (token, slot)
 * of a routing lands among the grouped GEMM's rows. A pure function of ids.
 */
import { MoeError } from '../errors';
import { native } from '../native';
import { Tensor, empty, tensor } from '../tensor';
import { expectDtype, expectInteger, expectOneOf, expectOptions, expectRank, expectTensor } from '../validate';
import { PreparedCall, twin } from './twin';

export interface DispatchLayout {
  readonly kind: 'contiguous' | 'masked';
  readonly numTokens: number; // T
  readonly topK: number; // k
  readonly numExperts: number; // E
  /** Contiguous: segment alignment A. Masked: 1. */
  readonly align: number;
  /** Masked: rows per expert (Mmax). Contiguous: 0. */
  readonly maxRowsPerExpert: number;
  /** R: rows of the grouped GEMM (contiguous: sum of roundUp(count, A); masked: E * Mmax). */
  readonly numRows: number;
  /** [E] i32: tokens routed to each expert (the masked layout's maskedM) */
  readonly tokensPerExpert: Tensor<'i32'>;
  /** [E + 1] i32: each expert's first row, then R */
  readonly offsets: Tensor<'i32'>;
  /** [R] i32: the token each row holds, -1 for padding */
  readonly rowToken: Tensor<'i32'>;
  /** [R] i32: the expert of each row, -1 for padding */
  readonly groupIndex: Tensor<'i32'>;
  /** [T, k] i32: the row of each (token, slot), -1 where ids is -1 */
  readonly slotRow: Tensor<'i32'>;
}

export interface LayoutOptions {
  /** 'contiguous' (default; prefill) or 'masked' ([E, Mmax] rows; decode, fixed shapes). */
  layout?: 'contiguous' | 'masked';
  /** Contiguous: segment alignment, default 128. */
  align?: number;
  /** Masked: rows per expert; default T (enough when a token picks distinct experts). */
  maxTokensPerExpert?: number;
}

function prepareLayout(ids: Tensor, numExperts: number, options?: LayoutOptions): PreparedCall<DispatchLayout> {
  const opts = expectOptions(options, ['layout', 'align', 'maxTokensPerExpert'], 'dispatchLayout: options');
  expectTensor(ids, 'dispatchLayout: ids');
  expectDtype(ids, ['i32'], 'dispatchLayout: ids');
  expectRank(ids, 2, 'dispatchLayout: ids');
  const [tokens, topK] = ids.shape;
  const experts = expectInteger(numExperts, 1, 1 << 24, 'dispatchLayout: numExperts');
  const kind = expectOneOf(opts.layout ?? 'contiguous', ['contiguous', 'masked'] as const, 'dispatchLayout: options.layout');
  const masked = kind === 'masked';
  if (masked && opts.align !== undefined) throw new MoeError('ERR_MOE_ARGUMENT', 'dispatchLayout: options.align applies to the contiguous layout only');
  if (!masked && opts.maxTokensPerExpert !== undefined) {
    throw new MoeError('ERR_MOE_ARGUMENT', 'dispatchLayout: options.maxTokensPerExpert applies to the masked layout only');
  }
  const align = masked ? 1 : expectInteger(opts.align ?? 128, 1, 1 << 16, 'dispatchLayout: options.align');
  const maxRows = masked ? expectInteger(opts.maxTokensPerExpert ?? tokens, 0, 2 ** 31 - 1, 'dispatchLayout: options.maxTokensPerExpert') : 0;
  // Outputs sized for the worst case; the rows actually used are known only after the kernel ran.
  const capacity = masked ? experts * maxRows : tokens * topK + experts * (align - 1);
  if (capacity > 2 ** 31 - 1) throw new MoeError('ERR_MOE_RANGE', `dispatchLayout: ${capacity} rows exceed the i32 row index range`);
  const device = ids.device;
  const buffers = {
    tokensPerExpert: empty([experts], 'i32', device),
    offsets: empty([experts + 1], 'i32', device),
    rowToken: empty([capacity], 'i32', device),
    groupIndex: empty([capacity], 'i32', device),
    slotRow: empty([tokens, topK], 'i32', device),
  };
  const args = { ids, numExperts: experts, align, masked, maxRowsPerExpert: maxRows, ...buffers };
  const base = { kind, numTokens: tokens, topK, numExperts: experts, align, maxRowsPerExpert: maxRows };
  const call: PreparedCall<DispatchLayout> = {
    run(async) {
      const finish = () => {
        if (device === 'cuda') {
          // R decides the result's shapes: read offsets[E] back (waits for the layout's kernels).
          const rows = buffers.offsets.to('cpu').data[experts];
          const prefix = (t: Tensor<'i32'>) => new Tensor<'i32'>(undefined, [rows], 'i32', 'cuda', t.handle);
          call.result = { ...base, ...buffers, numRows: rows, rowToken: prefix(buffers.rowToken), groupIndex: prefix(buffers.groupIndex) };
          return;
        }
        const rows = buffers.offsets.data[experts];
        call.result = {
          ...base,
          ...buffers,
          numRows: rows,
          rowToken: tensor(buffers.rowToken.data.subarray(0, rows), [rows]),
          groupIndex: tensor(buffers.groupIndex.data.subarray(0, rows), [rows]),
        };
      };
      if (!async) {
        native().dispatchLayout(args, false);
        return finish();
      }
      return native().dispatchLayout(args, true).then(finish);
    },
    result: undefined as unknown as DispatchLayout, // set by run()
  };
  return call;
}

const layoutTwin = twin(prepareLayout);

/** The contiguous (default) or masked layout of a routing's ids [T, k] over numExperts experts. */
export const dispatchLayout = layoutTwin.async;
export const dispatchLayoutSync = layoutTwin.sync;

/** Checks that `layout` came from dispatchLayout (or has its shape) and returns it typed. */
export function expectLayout(layout: unknown, what: string): DispatchLayout {
  const l = layout as DispatchLayout;
  if (typeof layout !== 'object' || layout === null || (l.kind !== 'contiguous' && l.kind !== 'masked')) {
    throw new MoeError('ERR_MOE_ARGUMENT', `${what}: expected the result of dispatchLayout`);
  }
  for (const key of ['rowToken', 'groupIndex', 'slotRow', 'tokensPerExpert'] as const) {
    expectTensor(l[key], `${what}.${key}`);
    expectDtype(l[key], ['i32'], `${what}.${key}`);
  }
  return l;
}
