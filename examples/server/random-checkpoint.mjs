#!/usr/bin/env node
// Writes a random DeepSeek-V3-routed MoE layer (scaledDeepSeekV3(--scale),
// --seed) as a one-shard Hugging Face checkpoint in DIR, laid out as the
// safetensors reference writer lays out the published checkpoints (by
// dtype, then by name), so that `main.mjs --model DIR --layer 3` serves it
// with its fp8 expert weights memory-mapped. For trying the server, and
// measuring its memory, without downloading a real model.
//   node random-checkpoint.mjs DIR [--scale 8] [--seed 1]
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { MoeLayer, scaledDeepSeekV3, writeSafetensors } from 'moe-kernels';

const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: { scale: { type: 'string', default: '8' }, seed: { type: 'string', default: '1' } },
});
if (positionals.length !== 1) throw new Error('usage: node random-checkpoint.mjs DIR [--scale 8] [--seed 1]');
const dir = positionals[0];
const LAYER = 3;
const config = scaledDeepSeekV3(Number(args.scale));
const { weights } = MoeLayer.random(config, { seed: Number(args.seed) });
const bytes = (view) => new Uint8Array(view.buffer, view.byteOffset, view.byteLength);

const tensors = {};
const prefix = `model.layers.${LAYER}.mlp`;
tensors[`${prefix}.gate.weight`] = { dtype: 'BF16', shape: [...weights.gate.shape], bytes: bytes(weights.gate.data) };
tensors[`${prefix}.gate.e_score_correction_bias`] = { dtype: 'F32', shape: [config.numExperts], bytes: bytes(weights.bias.data) };
// Expert e of matrices m: rows [row0, row0 + rows) of its [N, K] fp8 weight, with their 128x128 scales.
const put = (name, m, e, row0, rows) => {
  const perShard = m.data[0].shape[0];
  const data = m.data[Math.floor(e / perShard)].data;
  const scales = m.scales[Math.floor(e / perShard)].data;
  const local = e % perShard;
  const scaleCols = Math.ceil(m.k / 128);
  const scaleRows = Math.ceil(m.n / 128);
  const from = (local * m.n + row0) * m.k;
  const scaleFrom = (local * scaleRows + row0 / 128) * scaleCols;
  tensors[`${name}.weight`] = { dtype: 'F8_E4M3', shape: [rows, m.k], bytes: data.subarray(from, from + rows * m.k) };
  tensors[`${name}.weight_scale_inv`] = {
    dtype: 'F32', shape: [Math.ceil(rows / 128), scaleCols], bytes: bytes(scales.subarray(scaleFrom, scaleFrom + Math.ceil(rows / 128) * scaleCols)),
  };
};
const expert = (base, w13, w2, e) => {
  const inner = w13.n / 2;
  put(`${base}.gate_proj`, w13, e, 0, inner);
  put(`${base}.up_proj`, w13, e, inner, inner);
  put(`${base}.down_proj`, w2, e, 0, w2.n);
};
for (let e = 0; e < config.numExperts; e++) expert(`${prefix}.experts.${e}`, weights.w13, weights.w2, e);
expert(`${prefix}.shared_experts`, weights.sharedW13, weights.sharedW2, 0);

// The reference writer's order: the widest dtype first, then by name.
const width = { F32: 4, BF16: 2, F8_E4M3: 1 };
const ordered = Object.fromEntries(Object.keys(tensors)
  .sort((a, b) => width[tensors[b].dtype] - width[tensors[a].dtype] || (a < b ? -1 : 1))
  .map((name) => [name, tensors[name]]));

fs.mkdirSync(dir, { recursive: true });
writeSafetensors(path.join(dir, 'model.safetensors'), ordered, { format: 'pt' });
fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({
  architectures: ['DeepseekV3ForCausalLM'], model_type: 'deepseek_v3',
  hidden_size: config.hiddenSize, moe_intermediate_size: config.intermediateSize,
  n_routed_experts: config.numExperts, num_experts_per_tok: config.topK, n_group: config.numGroups, topk_group: config.topKGroups,
  routed_scaling_factor: config.routedScalingFactor, norm_topk_prob: config.normTopKProb, scoring_func: config.scoring,
  topk_method: 'noaux_tc', n_shared_experts: config.numSharedExperts, first_k_dense_replace: 1, num_hidden_layers: LAYER + 1,
  quantization_config: { activation_scheme: 'dynamic', fmt: 'e4m3', quant_method: 'fp8', weight_block_size: [128, 128] },
}, null, 2));
const size = fs.statSync(path.join(dir, 'model.safetensors')).size;
console.log(`${dir}: layer ${LAYER} of H=${config.hiddenSize} I=${config.intermediateSize} E=${config.numExperts}, model.safetensors ${(size / 2 ** 20).toFixed(1)} MiB`);
