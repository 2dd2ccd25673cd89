/**
 * An MoE layer's shape and routing, with the DeepSeek-V3 Hugging Face
 * `config.json` keys it is read from (Mixtral's and Qwen-MoE's keys map onto
 * the same fields: configFromHuggingFace).
 */
import { MoeError, describe } from '../errors';

export interface MoeConfig {
  /** H: hidden_size */
  hiddenSize: number;
  /** I: moe_intermediate_size (each routed expert's; a shared expert's is I * numSharedExperts) */
  intermediateSize: number;
  /** E: n_routed_experts */
  numExperts: number;
  /** k: num_experts_per_tok */
  topK: number;
  /** n_group */
  numGroups: number;
  /** topk_group */
  topKGroups: number;
  /** routed_scaling_factor */
  routedScalingFactor: number;
  /** norm_topk_prob */
  normTopKProb: boolean;
  /** scoring_func */
  scoring: 'sigmoid' | 'softmax';
  /** n_shared_experts (0 for none) */
  numSharedExperts: number;
}

/** DeepSeek-V3 / R1's MoE layer. */
export const DEEPSEEK_V3_CONFIG: Readonly<MoeConfig> = Object.freeze({
  hiddenSize: 7168,
  intermediateSize: 2048,
  numExperts: 256,
  topK: 8,
  numGroups: 8,
  topKGroups: 4,
  routedScalingFactor: 2.5,
  normTopKProb: true,
  scoring: 'sigmoid',
  numSharedExperts: 1,
});

/** DeepSeek-V3's routing with H and I divided by `scale` (kept multiples of 128), for small machines. */
export function scaledDeepSeekV3(scale: number): MoeConfig {
  if (typeof scale !== 'number' || !(scale >= 1 && scale <= 1 << 16)) {
    throw new MoeError('ERR_MOE_RANGE', `scaledDeepSeekV3: scale must be a number in [1, 65536], got ${describe(scale)}`);
  }
  const shrink = (n: number) => Math.max(128, Math.round(n / scale / 128) * 128);
  return { ...DEEPSEEK_V3_CONFIG, hiddenSize: shrink(DEEPSEEK_V3_CONFIG.hiddenSize), intermediateSize: shrink(DEEPSEEK_V3_CONFIG.intermediateSize) };
}

function positiveInteger(config: Record<string, unknown>, key: string, where: string, fallback?: number): number {
  const value = config[key] ?? fallback;
  if (!Number.isSafeInteger(value) || (value as number) < 0) {
    throw new MoeError('ERR_MOE_CHECKPOINT', `${where}: '${key}' must be a non-negative integer, got ${describe(config[key])}`);
  }
  return value as number;
}

/** A JSON boolean (the string "false" is not one: it would read as true). */
function booleanKey(config: Record<string, unknown>, key: string, where: string, fallback: boolean): boolean {
  const value = config[key] ?? fallback;
  if (typeof value !== 'boolean') {
    throw new MoeError('ERR_MOE_CHECKPOINT', `${where}: '${key}' must be true or false, got ${describe(config[key])}`);
  }
  return value;
}

/** The MoE checkpoint layouts fromSafetensors reads (checkpoint/naming.ts has their tensor names). */
export type CheckpointFamily = 'deepseek-v3' | 'mixtral' | 'qwen-moe';

/**
 * Which family a Hugging Face config.json describes, from the keys only that
 * family has: DeepSeek-V2/V3's `n_routed_experts`, Mixtral's
 * `num_local_experts`, Qwen2-MoE / Qwen3-MoE's `num_experts` with
 * `moe_intermediate_size`.
 */
export function checkpointFamily(config: Record<string, unknown>, where: string): CheckpointFamily {
  if (config.n_routed_experts !== undefined) return 'deepseek-v3';
  if (config.num_local_experts !== undefined) return 'mixtral';
  if (config.num_experts !== undefined && config.moe_intermediate_size !== undefined) return 'qwen-moe';
  throw new MoeError(
    'ERR_MOE_CHECKPOINT',
    `${where}: not a known MoE config: expected 'n_routed_experts' (DeepSeek-V3), 'num_local_experts' (Mixtral) or 'num_experts' with 'moe_intermediate_size' (Qwen-MoE)`,
  );
}

/**
 * Reads a Hugging Face config.json object of a DeepSeek-V3-style, Mixtral or
 * Qwen-MoE model. Mixtral and Qwen-MoE route by softmax top-k over all
 * experts (Mixtral renormalizes the k weights; Qwen does when
 * `norm_topk_prob`), with no groups, bias or scaling.
 */
export function configFromHuggingFace(config: Record<string, unknown>, where: string): MoeConfig {
  where = typeof where === 'string' ? where : 'configFromHuggingFace';
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    throw new MoeError('ERR_MOE_CHECKPOINT', `${where}: expected a config.json object, got ${describe(config)}`);
  }
  const family = checkpointFamily(config, where);
  const result = family === 'deepseek-v3' ? deepSeekConfig(config, where) : softmaxFamilyConfig(config, family, where);
  validateConfig(result, where);
  return result;
}

function deepSeekConfig(config: Record<string, unknown>, where: string): MoeConfig {
  const scoring = (config.scoring_func ?? 'softmax') as string;
  if (scoring !== 'sigmoid' && scoring !== 'softmax') {
    throw new MoeError('ERR_MOE_CHECKPOINT', `${where}: scoring_func must be 'sigmoid' or 'softmax', got ${describe(scoring)}`);
  }
  const scaling = config.routed_scaling_factor ?? 1;
  if (typeof scaling !== 'number' || !Number.isFinite(scaling)) {
    throw new MoeError('ERR_MOE_CHECKPOINT', `${where}: routed_scaling_factor must be a number`);
  }
  return {
    hiddenSize: positiveInteger(config, 'hidden_size', where),
    intermediateSize: positiveInteger(config, 'moe_intermediate_size', where),
    numExperts: positiveInteger(config, 'n_routed_experts', where),
    topK: positiveInteger(config, 'num_experts_per_tok', where),
    numGroups: positiveInteger(config, 'n_group', where, 1),
    topKGroups: positiveInteger(config, 'topk_group', where, 1),
    routedScalingFactor: scaling,
    normTopKProb: booleanKey(config, 'norm_topk_prob', where, false),
    scoring,
    numSharedExperts: positiveInteger(config, 'n_shared_experts', where, 0),
  };
}

function softmaxFamilyConfig(config: Record<string, unknown>, family: 'mixtral' | 'qwen-moe', where: string): MoeConfig {
  if (family === 'qwen-moe' && positiveInteger(config, 'shared_expert_intermediate_size', where, 0) > 0) {
    throw new MoeError(
      'ERR_MOE_CHECKPOINT',
      `${where}: Qwen2-MoE's shared expert is scaled by a per-token sigmoid gate (shared_expert_gate), which this layer does not compute`,
    );
  }
  const mixtral = family === 'mixtral';
  return {
    hiddenSize: positiveInteger(config, 'hidden_size', where),
    intermediateSize: positiveInteger(config, mixtral ? 'intermediate_size' : 'moe_intermediate_size', where),
    numExperts: positiveInteger(config, mixtral ? 'num_local_experts' : 'num_experts', where),
    topK: positiveInteger(config, 'num_experts_per_tok', where),
    numGroups: 1,
    topKGroups: 1,
    routedScalingFactor: 1,
    normTopKProb: mixtral ? true : booleanKey(config, 'norm_topk_prob', where, false),
    scoring: 'softmax',
    numSharedExperts: 0,
  };
}

const INTEGER_FIELDS = ['hiddenSize', 'intermediateSize', 'numExperts', 'topK', 'numGroups', 'topKGroups', 'numSharedExperts'] as const;

export function validateConfig(c: MoeConfig, where: string): void {
  if (typeof c !== 'object' || c === null) throw new MoeError('ERR_MOE_ARGUMENT', `${where}: expected a MoeConfig object, got ${describe(c)}`);
  const own = (key: keyof MoeConfig): unknown => (Object.prototype.hasOwnProperty.call(c, key) ? c[key] : undefined);
  for (const key of INTEGER_FIELDS) {
    const value = own(key);
    if (!Number.isSafeInteger(value) || (value as number) < 0 || (value as number) > 1 << 20) {
      throw new MoeError('ERR_MOE_RANGE', `${where}: ${key} must be an integer in [0, ${1 << 20}], got ${describe(value)}`);
    }
  }
  if (typeof own('routedScalingFactor') !== 'number' || !Number.isFinite(c.routedScalingFactor)) {
    throw new MoeError('ERR_MOE_RANGE', `${where}: routedScalingFactor must be a finite number, got ${describe(own('routedScalingFactor'))}`);
  }
  if (typeof own('normTopKProb') !== 'boolean') throw new MoeError('ERR_MOE_RANGE', `${where}: normTopKProb must be a boolean, got ${describe(own('normTopKProb'))}`);
  if (own('scoring') !== 'sigmoid' && own('scoring') !== 'softmax') {
    throw new MoeError('ERR_MOE_RANGE', `${where}: scoring must be 'sigmoid' or 'softmax', got ${describe(own('scoring'))}`);
  }
  const problems: string[] = [];
  if (c.hiddenSize <= 0 || c.hiddenSize % 16 !== 0) problems.push(`hidden size ${c.hiddenSize} must be a positive multiple of 16`);
  if (c.intermediateSize <= 0 || c.intermediateSize % 16 !== 0) problems.push(`intermediate size ${c.intermediateSize} must be a positive multiple of 16`);
  if (c.numExperts < 1) problems.push('there must be at least one expert');
  if (c.topK < 1 || c.topK > c.numExperts) problems.push(`top-k ${c.topK} must be in [1, ${c.numExperts}]`);
  if (c.numGroups < 1 || c.numExperts % c.numGroups !== 0) problems.push(`${c.numExperts} experts do not form ${c.numGroups} equal groups`);
  if (c.topKGroups < 1 || c.topKGroups > c.numGroups) problems.push(`topk groups ${c.topKGroups} must be in [1, ${c.numGroups}]`);
  if (c.scoring === 'softmax' && c.numGroups > 1) problems.push('group-limited routing needs sigmoid scoring');
  if (problems.length > 0) throw new MoeError('ERR_MOE_RANGE', `${where}: ${problems.join('; ')}`);
}
