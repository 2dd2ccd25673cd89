/**
 * Where one MoE layer's tensors are in a Hugging Face checkpoint, per family
 * (moe/config.ts tells the family from config.json):
 *
 *   DeepSeek-V3  model.layers.{L}.mlp.gate.weight, .gate.e_score_correction_bias,
 *                .mlp.experts.{e}.{gate,up,down}_proj, .mlp.shared_experts.{gate,up,down}_proj
 *   Mixtral      model.layers.{L}.block_sparse_moe.gate.weight,
 *                .block_sparse_moe.experts.{e}.{w1,w3,w2} (gate, up, down)
 *   Qwen-MoE     model.layers.{L}.mlp.gate.weight, .mlp.experts.{e}.{gate,up,down}_proj
 *
 * Names are without the `.weight` / `.weight_scale_inv` suffix.
 */
import type { CheckpointFamily } from '../moe/config';

export interface ExpertNames {
  gate: string;
  up: string;
  down: string;
}

export interface LayerNames {
  /** The router's [E, H] weight. */
  router: string;
  /** DeepSeek-V3's [E] selection bias, if the family has one. */
  bias?: string;
  expert(e: number): ExpertNames;
  /** The shared experts, stacked (DeepSeek-V3). */
  shared?: ExpertNames;
}

/** Every tensor of decoder layer `layer` is named with this prefix, in every family. */
export const layerPrefix = (layer: number): string => `model.layers.${layer}.`;

const projections = (base: string): ExpertNames => ({ gate: `${base}.gate_proj`, up: `${base}.up_proj`, down: `${base}.down_proj` });

export function layerNames(family: CheckpointFamily, layer: number): LayerNames {
  if (family === 'mixtral') {
    const prefix = `${layerPrefix(layer)}block_sparse_moe`;
    return {
      router: `${prefix}.gate.weight`,
      expert: (e) => ({ gate: `${prefix}.experts.${e}.w1`, up: `${prefix}.experts.${e}.w3`, down: `${prefix}.experts.${e}.w2` }),
    };
  }
  const prefix = `${layerPrefix(layer)}mlp`;
  return {
    router: `${prefix}.gate.weight`,
    bias: family === 'deepseek-v3' ? `${prefix}.gate.e_score_correction_bias` : undefined,
    expert: (e) => projections(`${prefix}.experts.${e}`),
    shared: family === 'deepseek-v3' ? projections(`${prefix}.shared_experts`) : undefined,
  };
}
