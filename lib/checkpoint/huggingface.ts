/**
 * Loads one MoE layer of a Hugging Face checkpoint: `config.json`,
 * `model.safetensors.index.json` (or a single `model.safetensors`), and the
 * layer's tensors, named as its family names them (naming.ts): DeepSeek-V3
 * (the SPEC's layout: fp8 e4m3 expert weights with 128x128
 * `weight_scale_inv`, a bf16/f32 router and its correction bias, shared
 * experts), Mixtral or Qwen-MoE (bf16/f32 weights, quantized here).
 *
 * Each tensor is read straight into its place in the layer's buffers with
 * positioned reads: shards are never read whole.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MoeError, describe } from '../errors';
import { quantizeWeights } from '../ops/quantize';
import { Tensor, tensor } from '../tensor';
import { bf16ToFloat } from '../numerics';
import { MoeConfig, checkpointFamily, configFromHuggingFace } from '../moe/config';
import { ExpertMatrices, allocExperts, expertSlot } from '../moe/experts';
import type { MoeWeights } from '../moe/layer';
import { SafetensorsDType, SafetensorsFile, TensorInfo } from './safetensors';
import { layerNames, layerPrefix } from './naming';
import { expectPath, readJsonObject } from './files';

export interface LoadOptions {
  /** The decoder layer whose MoE block to load. */
  layer: number;
  onProgress?: (done: number, total: number) => void;
  /**
   * Expert parallelism: the routed experts to read, from the layer's E (a
   * contiguous range); the others are not read. Default: all.
   */
  experts?: (numExperts: number) => { first: number; count: number };
}

function fail(message: string): never {
  throw new MoeError('ERR_MOE_CHECKPOINT', message);
}

/** Where each tensor lives: the index's weight_map, or every tensor of a single model.safetensors. */
class CheckpointFiles {
  private readonly dir: string;
  private readonly weightMap: Map<string, string>;
  /** The layer's names start with this: only those entries of a shard's header are kept. */
  private readonly prefix: string;
  private readonly open = new Map<string, SafetensorsFile>();

  private constructor(dir: string, weightMap: Map<string, string>, prefix: string) {
    this.dir = dir;
    this.weightMap = weightMap;
    this.prefix = prefix;
  }

  static async open(dir: string, prefix: string): Promise<CheckpointFiles> {
    const indexPath = path.join(dir, 'model.safetensors.index.json');
    const weightMap = new Map<string, string>();
    const files = new CheckpointFiles(dir, weightMap, prefix);
    if (fs.existsSync(indexPath)) {
      const map = (await readJsonObject(indexPath)).weight_map;
      if (typeof map !== 'object' || map === null || Array.isArray(map)) fail(`${indexPath}: missing 'weight_map'`);
      for (const [name, file] of Object.entries(map as Record<string, unknown>)) {
        // A shard is a file name in the checkpoint's directory: no path, no '.' or '..'.
        if (typeof file !== 'string' || file === '' || file === '.' || file === '..' || file.includes('/') || file.includes('\\') || file.includes('\0')) {
          fail(`${indexPath}: bad shard name ${describe(file)} for '${name}'`);
        }
        weightMap.set(name, file);
      }
    } else if (fs.existsSync(path.join(dir, 'model.safetensors'))) {
      for (const name of (await files.file('model.safetensors')).tensors.keys()) weightMap.set(name, 'model.safetensors');
    } else {
      fail(`${dir}: neither model.safetensors.index.json nor model.safetensors is there`);
    }
    return files;
  }

  private async file(name: string): Promise<SafetensorsFile> {
    let file = this.open.get(name);
    if (!file) {
      // Every entry is validated (off the JS thread for a large header); only the layer's are handed back.
      file = await SafetensorsFile.load(path.join(this.dir, name), { prefixes: [this.prefix] });
      this.open.set(name, file);
    }
    return file;
  }

  has(name: string): boolean {
    return this.weightMap.has(name);
  }

  /** The tensor's header entry, checked against the allowed dtypes and the expected shape. */
  async locate(name: string, dtypes: readonly SafetensorsDType[], shape: readonly number[]): Promise<{ file: SafetensorsFile; info: TensorInfo }> {
    const shard = this.weightMap.get(name);
    if (!shard) fail(`${name}: not in the checkpoint's weight map (${this.dir})`);
    const file = await this.file(shard);
    if (!file.tensors.has(name)) fail(`${name}: the weight map points to ${shard}, which does not hold it`);
    const info = file.info(name);
    if (!dtypes.includes(info.dtype) || info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      fail(`${name} in ${shard}: expected ${dtypes.join(' or ')} [${shape.join(', ')}], got ${info.dtype} [${info.shape.join(', ')}]`);
    }
    return { file, info };
  }
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

/**
 * Fills expert `e` of `m` from `parts` stacked along N (gate then up for w13):
 * fp8 weights with their scale_inv are read in place; bf16/f32 weights are
 * read and quantized 128x128 here.
 */
async function loadExpert(files: CheckpointFiles, m: ExpertMatrices, expert: number, parts: string[], rowsPerPart: number): Promise<void> {
  const slot = expertSlot(m, expert);
  const k = m.k;
  const scaleCols = Math.ceil(k / 128);
  const first = await files.locate(`${parts[0]}.weight`, ['F8_E4M3', 'BF16', 'F32'], [rowsPerPart, k]);
  if (first.info.dtype === 'F8_E4M3') {
    if (parts.length > 1 && rowsPerPart % 128 !== 0) {
      fail(`${parts[0]}.weight: stacking fp8 experts needs 128-row blocks, but N = ${rowsPerPart}`);
    }
    for (const [i, part] of parts.entries()) {
      const { file } = await files.locate(`${part}.weight`, ['F8_E4M3'], [rowsPerPart, k]);
      await file.read(`${part}.weight`, slot.data.subarray(i * rowsPerPart * k, (i + 1) * rowsPerPart * k));
      const scaleRows = Math.ceil(rowsPerPart / 128);
      const scales = await files.locate(`${part}.weight_scale_inv`, ['F32'], [scaleRows, scaleCols]);
      const target = slot.scales.subarray(i * scaleRows * scaleCols, (i + 1) * scaleRows * scaleCols);
      await scales.file.read(`${part}.weight_scale_inv`, new Uint8Array(target.buffer, target.byteOffset, target.byteLength));
      // A NaN, infinite, zero or negative scale would load silently and poison every forward.
      const bad = target.findIndex((v) => !(v > 0 && v < Infinity));
      if (bad >= 0) fail(`${scales.file.path}: tensor '${part}.weight_scale_inv': element ${bad} is ${target[bad]}, expected a positive finite scale`);
    }
    return;
  }
  // Unquantized checkpoint: the parts stacked [N, K] in their own dtype (bf16
  // or f32, as quantizeWeights takes either), quantized 128x128 off the JS
  // thread: no per-element conversion or quantization on the event loop.
  const dtype = first.info.dtype;
  const values = dtype === 'BF16' ? new Uint16Array(m.n * k) : new Float32Array(m.n * k); // [N, K]
  for (const [i, part] of parts.entries()) {
    const { file } = await files.locate(`${part}.weight`, [dtype], [rowsPerPart, k]);
    const rows = values.subarray(i * rowsPerPart * k, (i + 1) * rowsPerPart * k);
    await file.read(`${part}.weight`, new Uint8Array(rows.buffer, rows.byteOffset, rows.byteLength));
  }
  const weights = dtype === 'BF16' ? tensor(values as Uint16Array, [m.n, k], 'bf16') : tensor(values as Float32Array, [m.n, k], 'f32');
  try {
    await quantizeWeights(weights, {
      into: {
        data: tensor(slot.data, [m.n, k], 'fp8_e4m3'),
        scales: tensor(slot.scales, [Math.ceil(m.n / 128), scaleCols], 'f32'),
      },
    });
  } catch (error) {
    if (error instanceof MoeError && error.code === 'ERR_MOE_NONFINITE') fail(`${parts.join(' + ')}.weight: ${error.message}`);
    throw error;
  }
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
  const w13 = allocExperts(range.count, 2 * i, h);
  const w2 = allocExperts(range.count, h, i);
  const shared = config.numSharedExperts;
  const sharedW13 = shared > 0 ? allocExperts(1, 2 * i * shared, h) : undefined;
  const sharedW2 = shared > 0 ? allocExperts(1, h, i * shared) : undefined;
  const total = range.count + (shared > 0 ? 1 : 0);
  for (let local = 0; local < range.count; local++) {
    const { gate: g, up, down } = names.expert(range.first + local);
    await loadExpert(files, w13, local, [g, up], i);
    await loadExpert(files, w2, local, [down], h);
    options.onProgress?.(local + 1, total);
  }
  if (sharedW13 && sharedW2 && names.shared) {
    await loadExpert(files, sharedW13, 0, [names.shared.gate, names.shared.up], i * shared);
    await loadExpert(files, sharedW2, 0, [names.shared.down], h);
    options.onProgress?.(total, total);
  }
  return { config, weights: { gate, bias, w13, w2, sharedW13, sharedW2 }, checkpoint: checkpointDigest(dir) };
}
