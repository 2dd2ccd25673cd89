/**
 * Loads one MoE layer of a Hugging Face checkpoint: `config.json`,
 * `model.safetensors.index.json` (or a single `model.safetensors`), and the
 * layer's tensors, named as its family names them (naming.ts): DeepSeek-V3
 * (the SPEC's layout: fp8 e4m3 expert weights with 128x128
 * `weight_scale_inv`, a bf16/f32 router and its correction bias, shared
 * experts), Mixtral or Qwen-MoE (bf16/f32 weights, quantized here).
 *
 * fp8 expert weights are mapped from the shards where their layout allows
 * (expert-weights.ts); every other tensor is read straight into its place
 * in the layer's buffers with positioned reads: shards are never read whole.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MoeError, describe } from '../errors';
import { Tensor, tensor } from '../tensor';
import { bf16ToFloat } from '../numerics';
import { MoeConfig, checkpointFamily, configFromHuggingFace } from '../moe/config';
import type { MoeWeights } from '../moe/layer';
import type { SafetensorsDType } from './safetensors';
import { layerNames, layerPrefix } from './naming';
import { expectPath, readJsonObject } from './files';
import { CheckpointFiles } from './checkpoint-files';
import { loadExperts, w13Parts, w2Parts } from './expert-weights';

export interface LoadOptions {
  /** The decoder layer whose MoE block to load. */
  layer: number;
  /** Called as expert matrices load: done and total count w13 and w2 of each expert (routed and shared). */
  onProgress?: (done: number, total: number) => void;
  /**
   * Expert parallelism: the routed experts to read, from the layer's E (a
   * contiguous range); the others are not read. Default: all.
   */
  experts?: (numExperts: number) => { first: number; count: number };
  /**
   * Map fp8 expert weights from the checkpoint files where their layout
   * allows it (shared between processes through the page cache; see
   * mapped.ts for the rule that comes with it) instead of reading them.
   * Default true.
   */
  mmap?: boolean;
}

function asFloat32(bytes: Uint8Array, dtype: SafetensorsDType): Float32Array {
  if (dtype === 'F32') return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  const bits = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  return Float32Array.from(bits, bf16ToFloat);
}

/** Reads a (possibly unaligned-length) tensor into fresh, aligned memory. */
async function readFresh(files: CheckpointFiles, name: string, dtypes: SafetensorsDType[], shape: number[]) {
  const { file, info } = await files.locate(name, dtypes, shape);
  return { bytes: await file.read(name), dtype: info.dtype };
}

export interface LoadedLayer {
  config: MoeConfig;
  /** w13 and w2 hold the experts options.experts chose (all by default). */
  weights: MoeWeights;
  /** Identifies the checkpoint's content (a digest of config.json and the index), for comparing ranks. */
  checkpoint: string;
}

/** Throws unless decoder layer `layer` of this model has an MoE block. */
function expectMoeLayer(hf: Record<string, unknown>, layer: number): void {
  if (!Number.isInteger(layer) || layer < 0) throw new MoeError('ERR_MOE_RANGE', `fromSafetensors: options.layer must be a non-negative integer, got ${describe(layer)}`);
  const numLayers = hf.num_hidden_layers;
  if (typeof numLayers === 'number' && layer >= numLayers) {
    throw new MoeError('ERR_MOE_RANGE', `fromSafetensors: layer ${layer} is past the model's ${numLayers} layers`);
  }
  const denseLayers = hf.first_k_dense_replace; // DeepSeek-V3
  if (typeof denseLayers === 'number' && layer < denseLayers) {
    throw new MoeError('ERR_MOE_RANGE', `fromSafetensors: layer ${layer} is a dense layer (first_k_dense_replace = ${denseLayers}); MoE layers start at ${denseLayers}`);
  }
  const mlpOnly = hf.mlp_only_layers; // Qwen-MoE
  const step = hf.decoder_sparse_step;
  if ((Array.isArray(mlpOnly) && mlpOnly.includes(layer)) || (typeof step === 'number' && step > 1 && (layer + 1) % step !== 0)) {
    throw new MoeError('ERR_MOE_RANGE', `fromSafetensors: layer ${layer} is a dense layer (mlp_only_layers / decoder_sparse_step)`);
  }
}

/** sha256 of config.json and the shard index (or the single file's header size): equal for equal checkpoints wherever they lie. */
function checkpointDigest(dir: string): string {
  const hash = createHash('sha256');
  for (const name of ['config.json', 'model.safetensors.index.json']) {
    const file = path.join(dir, name);
    if (fs.existsSync(file)) hash.update(fs.readFileSync(file));
  }
  const single = path.join(dir, 'model.safetensors');
  if (fs.existsSync(single)) hash.update(String(fs.statSync(single).size));
  return hash.digest('hex').slice(0, 16);
}

export async function loadHuggingFaceLayer(pathOrDir: string, options: LoadOptions): Promise<LoadedLayer> {
  expectPath(pathOrDir, 'fromSafetensors: path');
  const dir = fs.existsSync(pathOrDir) && fs.statSync(pathOrDir).isFile() ? path.dirname(pathOrDir) : pathOrDir;
  const configPath = path.join(dir, 'config.json');
  const hf = await readJsonObject(configPath);
  const config = configFromHuggingFace(hf, configPath);
  expectMoeLayer(hf, options.layer);
  const files = await CheckpointFiles.open(dir, layerPrefix(options.layer));
  const names = layerNames(checkpointFamily(hf, configPath), options.layer);
  const { hiddenSize: h, intermediateSize: i, numExperts: e } = config;

  const gateRead = await readFresh(files, names.router, ['BF16', 'F32'], [e, h]);
  const gate: Tensor = gateRead.dtype === 'F32'
    ? tensor(new Float32Array(gateRead.bytes.buffer), [e, h])
    : tensor(new Uint16Array(gateRead.bytes.buffer), [e, h], 'bf16');
  let bias: Tensor<'f32'> | undefined;
  if (names.bias && files.has(names.bias)) {
    const b = await readFresh(files, names.bias, ['F32', 'BF16'], [e]);
    bias = tensor(Float32Array.from(asFloat32(b.bytes, b.dtype)), [e], 'f32');
  }

  const range = options.experts ? options.experts(e) : { first: 0, count: e };
  const map = options.mmap ?? true;
  const routed = Array.from({ length: range.count }, (_, local) => names.expert(range.first + local));
  const shared = config.numSharedExperts > 0 && names.shared ? names.shared : undefined;
  const total = 2 * (range.count + (shared ? 1 : 0));
  let done = 0;
  const step = () => options.onProgress?.(++done, total);
  const w13 = await loadExperts(files, routed.map(w13Parts), i, h, map, step);
  const w2 = await loadExperts(files, routed.map(w2Parts), h, i, map, step);
  const sharedW13 = shared ? await loadExperts(files, [w13Parts(shared)], i * config.numSharedExperts, h, map, step) : undefined;
  const sharedW2 = shared ? await loadExperts(files, [w2Parts(shared)], h, i * config.numSharedExperts, map, step) : undefined;
  return { config, weights: { gate, bias, w13, w2, sharedW13, sharedW2 }, checkpoint: checkpointDigest(dir) };
}
