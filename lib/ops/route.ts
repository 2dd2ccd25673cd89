/**
 * Top-k expert routing (SPEC.md, "Routing"): softmax top-k (Mixtral, Qwen)
 * and DeepSeek-V3's grouped sigmoid routing with a score-correction bias.
 */
import { MoeError, describe } from '../errors';
import { native } from '../native';
import { Tensor, empty } from '../tensor';
import { expectDtype, expectInteger, expectOneOf, expectOptions, expectRank, expectShape, expectTensor, expectFinite } from '../validate';
import { PreparedCall, twin } from './twin';

export interface RouteOptions {
  /** 'softmax' (default) or 'sigmoid' (DeepSeek-V3's noaux_tc). */
  scoring?: 'softmax' | 'sigmoid';
  /** Experts per token, 1..E. */
  topK: number;
  /** Equal groups of experts (sigmoid only); default 1. */
  numGroups?: number;
  /** Groups kept per token; default numGroups. */
  topKGroups?: number;
  /** [E] f32 score-correction bias (sigmoid only; used for selection, not for the weights). */
  bias?: Tensor;
  /** Divide the weights by their sum; default false. */
  renormalize?: boolean;
  /** Multiply the weights by this; default 1. */
  scale?: number;
}

export interface Routing {
  /** [T, k] i32: selected experts in descending selection score; -1 where fewer than k could be selected */
  readonly ids: Tensor<'i32'>;
  /** [T, k] f32: their weights; 0 where ids is -1 */
  readonly weights: Tensor<'f32'>;
}

/** DeepSeek-V3's routing: 256 experts, top-8 of 4 kept groups out of 8, sigmoid with bias, scaled by 2.5. */
export const DEEPSEEK_V3_ROUTING = Object.freeze({
  scoring: 'sigmoid',
  topK: 8,
  numGroups: 8,
  topKGroups: 4,
  renormalize: true,
  scale: 2.5,
} as const);

const ROUTE_KEYS = ['scoring', 'topK', 'numGroups', 'topKGroups', 'bias', 'renormalize', 'scale'] as const;

function prepareRoute(logits: Tensor, options: RouteOptions): PreparedCall<Routing> {
  const opts = expectOptions(options, ROUTE_KEYS, 'route: options');
  expectTensor(logits, 'route: logits');
  expectDtype(logits, ['f32', 'bf16'], 'route: logits');
  expectRank(logits, 2, 'route: logits');
  const [tokens, experts] = logits.shape;
  if (experts < 1) throw new MoeError('ERR_MOE_SHAPE', 'route: logits: expected E >= 1 experts, got 0');
  const scoring = expectOneOf(opts.scoring ?? 'softmax', ['softmax', 'sigmoid'] as const, 'route: options.scoring');
  const topK = expectInteger(opts.topK, 1, experts, 'route: options.topK');
  const numGroups = expectInteger(opts.numGroups ?? 1, 1, experts, 'route: options.numGroups');
  if (experts % numGroups !== 0) {
    throw new MoeError('ERR_MOE_RANGE', `route: options.numGroups: E = ${experts} experts do not split into ${numGroups} equal groups`);
  }
  const topKGroups = expectInteger(opts.topKGroups ?? numGroups, 1, numGroups, 'route: options.topKGroups');
  if (scoring === 'softmax' && numGroups !== 1) {
    throw new MoeError('ERR_MOE_RANGE', "route: options.numGroups: group-limited selection needs scoring 'sigmoid'");
  }
  if (topKGroups * (experts / numGroups) < topK) {
    throw new MoeError('ERR_MOE_RANGE', `route: options.topK: ${topK} experts cannot come from ${topKGroups} groups of ${experts / numGroups}`);
  }
  let bias: Tensor | undefined;
  if (opts.bias !== undefined) {
    if (scoring !== 'sigmoid') throw new MoeError('ERR_MOE_RANGE', "route: options.bias needs scoring 'sigmoid'");
    bias = expectTensor(opts.bias, 'route: options.bias');
    expectDtype(bias, ['f32'], 'route: options.bias');
    expectShape(bias, [experts], 'route: options.bias');
    expectFinite(bias as Tensor<'f32'>, 'route: options.bias');
  }
  const renormalize = opts.renormalize ?? false;
  if (typeof renormalize !== 'boolean') throw new MoeError('ERR_MOE_RANGE', 'route: options.renormalize: expected a boolean');
  const scale = opts.scale ?? 1;
  if (typeof scale !== 'number' || !Number.isFinite(scale)) {
    throw new MoeError('ERR_MOE_RANGE', `route: options.scale: expected a finite number, got ${describe(scale)}`);
  }
  const result: Routing = { ids: empty([tokens, topK], 'i32', logits.device), weights: empty([tokens, topK], 'f32', logits.device) };
  const args = { logits, bias, ids: result.ids, weights: result.weights, scoring, topK, numGroups, topKGroups, renormalize, scale };
  return { run: (async) => (tokens === 0 ? undefined : native().route(args, async)), result };
}

const routeTwin = twin(prepareRoute);

/** ids and weights [T, k] from router logits [T, E] (f32 or bf16). */
export const route = routeTwin.async;
export const routeSync = routeTwin.sync;
