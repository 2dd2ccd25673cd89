/**
 * Writes a small DeepSeek-V3-format Hugging Face checkpoint (config.json,
 * model.safetensors.index.json, several shards) from a layer's weights, the
 * way the real checkpoints are laid out: per-expert gate/up/down_proj fp8
 * weights with weight_scale_inv, the router gate and its correction bias.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll } from 'vitest';
import { MoeConfig, MoeWeights, SafetensorsDType, fp8E4m3ToFloat, writeSafetensors } from '../../lib/index';
import { expertSlot } from '../../lib/moe/experts';
import { bytesOf } from '../../lib/checkpoint/safetensors';

type Entry = { dtype: SafetensorsDType; shape: number[]; bytes: Uint8Array };

export function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'moe-ckpt-'));
}

/**
 * For a test file or describe block: a maker of fresh temporary directories,
 * all removed after its tests (call at collection time, as it registers afterAll).
 */
export function tempDirs(): () => string {
  const made: string[] = [];
  afterAll(() => made.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));
  return () => {
    const d = tempDir();
    made.push(d);
    return d;
  };
}

/** All tensors of layer `layer` under their Hugging Face names. */
export function layerTensors(config: MoeConfig, weights: MoeWeights, layer: number): Record<string, Entry> {
  const { hiddenSize: h, intermediateSize: i, numExperts: e } = config;
  const prefix = `model.layers.${layer}.mlp`;
  const out: Record<string, Entry> = {};
  out[`${prefix}.gate.weight`] = { dtype: weights.gate.dtype === 'bf16' ? 'BF16' : 'F32', shape: [e, h], bytes: bytesOf(weights.gate.data) };
  if (weights.bias) out[`${prefix}.gate.e_score_correction_bias`] = { dtype: 'F32', shape: [e], bytes: bytesOf(weights.bias.data) };
  const put = (name: string, data: Uint8Array, scales: Float32Array, rows: number, cols: number) => {
    out[`${name}.weight`] = { dtype: 'F8_E4M3', shape: [rows, cols], bytes: data };
    out[`${name}.weight_scale_inv`] = { dtype: 'F32', shape: [Math.ceil(rows / 128), Math.ceil(cols / 128)], bytes: bytesOf(scales) };
  };
  const split = (m: MoeWeights['w13'], expert: number, base: string, inner: number) => {
    const slot = expertSlot(m, expert);
    const half = inner * h;
    const scaleHalf = Math.ceil(inner / 128) * Math.ceil(h / 128);
    put(`${base}.gate_proj`, slot.data.subarray(0, half), slot.scales.subarray(0, scaleHalf), inner, h);
    put(`${base}.up_proj`, slot.data.subarray(half), slot.scales.subarray(scaleHalf), inner, h);
  };
  for (let expert = 0; expert < e; expert++) {
    const base = `${prefix}.experts.${expert}`;
    split(weights.w13, expert, base, i);
    const down = expertSlot(weights.w2, expert);
    put(`${base}.down_proj`, down.data, down.scales, h, i);
  }
  if (weights.sharedW13 && weights.sharedW2) {
    const base = `${prefix}.shared_experts`;
    split(weights.sharedW13, 0, base, i * config.numSharedExperts);
    const down = expertSlot(weights.sharedW2, 0);
    put(`${base}.down_proj`, down.data, down.scales, h, i * config.numSharedExperts);
  }
  return out;
}

export function hfConfig(config: MoeConfig, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    architectures: ['DeepseekV3ForCausalLM'],
    model_type: 'deepseek_v3',
    hidden_size: config.hiddenSize,
    moe_intermediate_size: config.intermediateSize,
    n_routed_experts: config.numExperts,
    num_experts_per_tok: config.topK,
    n_group: config.numGroups,
    topk_group: config.topKGroups,
    routed_scaling_factor: config.routedScalingFactor,
    norm_topk_prob: config.normTopKProb,
    scoring_func: config.scoring,
    topk_method: 'noaux_tc',
    n_shared_experts: config.numSharedExperts,
    first_k_dense_replace: 1,
    num_hidden_layers: 4,
    quantization_config: { activation_scheme: 'dynamic', fmt: 'e4m3', quant_method: 'fp8', weight_block_size: [128, 128] },
    ...extra,
  };
}

/** Writes the checkpoint into `dir` with the tensors spread over `shards` files; returns the dir. */
export function writeCheckpoint(dir: string, config: MoeConfig, tensors: Record<string, Entry>, shards = 3, extra: Record<string, unknown> = {}): string {
  return writeCheckpointFiles(dir, hfConfig(config, extra), tensors, shards);
}

/**
 * A layer's weights as a Mixtral or Qwen3-MoE checkpoint stores them: f32
 * expert matrices (the fp8 values times their block scales) under that
 * family's names, the router as it is, and the family's config.json.
 */
export function softmaxFamilyCheckpoint(
  family: 'mixtral' | 'qwen3_moe', config: MoeConfig, weights: MoeWeights, layer: number,
): { config: Record<string, unknown>; tensors: Record<string, Entry> } {
  const { hiddenSize: h, intermediateSize: i, numExperts: e } = config;
  const prefix = family === 'mixtral' ? `model.layers.${layer}.block_sparse_moe` : `model.layers.${layer}.mlp`;
  const [gateName, upName, downName] = family === 'mixtral' ? ['w1', 'w3', 'w2'] : ['gate_proj', 'up_proj', 'down_proj'];
  const tensors: Record<string, Entry> = {};
  tensors[`${prefix}.gate.weight`] = { dtype: weights.gate.dtype === 'bf16' ? 'BF16' : 'F32', shape: [e, h], bytes: bytesOf(weights.gate.data) };
  const put = (name: string, m: MoeWeights['w13'], expert: number, row0: number, rows: number) => {
    const slot = expertSlot(m, expert);
    const cols = m.k, groups = Math.ceil(cols / 128);
    const values = new Float32Array(rows * cols);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const scale = slot.scales[Math.floor((row0 + r) / 128) * groups + Math.floor(c / 128)];
        values[r * cols + c] = fp8E4m3ToFloat(slot.data[(row0 + r) * cols + c]) * scale;
      }
    }
    tensors[`${name}.weight`] = { dtype: 'F32', shape: [rows, cols], bytes: bytesOf(values) };
  };
  for (let expert = 0; expert < e; expert++) {
    const base = `${prefix}.experts.${expert}`;
    put(`${base}.${gateName}`, weights.w13, expert, 0, i);
    put(`${base}.${upName}`, weights.w13, expert, i, i);
    put(`${base}.${downName}`, weights.w2, expert, 0, h);
  }
  const common = { hidden_size: h, num_experts_per_tok: config.topK, num_hidden_layers: layer + 2 };
  const json = family === 'mixtral'
    ? { architectures: ['MixtralForCausalLM'], model_type: 'mixtral', intermediate_size: i, num_local_experts: e, ...common }
    : {
        architectures: ['Qwen3MoeForCausalLM'], model_type: 'qwen3_moe', moe_intermediate_size: i, num_experts: e,
        norm_topk_prob: config.normTopKProb, decoder_sparse_step: 1, mlp_only_layers: [], ...common,
      };
  return { config: json, tensors };
}

/** Writes config.json and the tensors spread over `shards` files with their index; returns the dir. */
export function writeCheckpointFiles(dir: string, configJson: Record<string, unknown>, tensors: Record<string, Entry>, shards = 3): string {
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(configJson, null, 2));
  const names = Object.keys(tensors);
  const weightMap: Record<string, string> = {};
  const perShard = Math.ceil(names.length / shards);
  for (let s = 0; s < shards; s++) {
    const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    const subset = Object.fromEntries(names.slice(s * perShard, (s + 1) * perShard).map((n) => [n, tensors[n]]));
    for (const n of Object.keys(subset)) weightMap[n] = file;
    writeSafetensors(path.join(dir, file), subset, { format: 'pt' });
  }
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  return dir;
}

/**
 * The tensors in the order the safetensors reference writer (Python's
 * `safetensors`, which wrote the published checkpoints) stores them: by
 * dtype, widest first, then by name. An expert's fp8 gate_proj and up_proj
 * then lie back to back, which is what lets a loader map w13 in place.
 */
export function inReferenceWriterOrder(tensors: Record<string, Entry>): Record<string, Entry> {
  const width: Record<string, number> = { F64: 8, I64: 8, F32: 4, I32: 4, BF16: 2, F16: 2, I16: 2, F8_E4M3: 1, F8_E5M2: 1, I8: 1, U8: 1, BOOL: 1 };
  const names = Object.keys(tensors).sort((a, b) => width[tensors[b].dtype] - width[tensors[a].dtype] || (a < b ? -1 : a > b ? 1 : 0));
  return Object.fromEntries(names.map((n) => [n, tensors[n]]));
}
