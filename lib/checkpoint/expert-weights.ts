/**
 * One layer's expert matrices from a checkpoint: fp8 weights mapped from the
 * files in place where their layout allows it (mapped.ts), else read into
 * the layer's own buffers (and bf16/f32 weights quantized 128x128 here).
 * Scales are always read: they are 1/16384 of the weights.
 */
import { MoeError } from '../errors';
import { quantizeWeights } from '../ops/quantize';
import { empty, tensor } from '../tensor';
import { ExpertMatrices, allocExperts, expertSlot } from '../moe/experts';
import type { ExpertNames } from './naming';
import { CheckpointFiles } from './checkpoint-files';
import { mapTensors } from './mapped';

function fail(message: string): never {
  throw new MoeError('ERR_MOE_CHECKPOINT', message);
}

/** One expert matrix's tensors, stacked along N in this order (gate then up for w13). */
export type ExpertParts = string[];

/** The w13 and w2 parts of an expert. */
export const w13Parts = (names: ExpertNames): ExpertParts => [names.gate, names.up];
export const w2Parts = (names: ExpertNames): ExpertParts => [names.down];

/** Reads `part`'s weight_scale_inv [rows, cols] into `target`, refusing scales that would poison every forward. */
async function readScales(files: CheckpointFiles, part: string, target: Float32Array, rows: number, cols: number): Promise<void> {
  const { file } = await files.locate(`${part}.weight_scale_inv`, ['F32'], [rows, cols]);
  await file.read(`${part}.weight_scale_inv`, new Uint8Array(target.buffer, target.byteOffset, target.byteLength));
  // A NaN, infinite, zero or negative scale would load silently and poison every forward.
  const bad = target.findIndex((v) => !(v > 0 && v < Infinity));
  if (bad >= 0) fail(`${file.path}: tensor '${part}.weight_scale_inv': element ${bad} is ${target[bad]}, expected a positive finite scale`);
}

/** The scales of every part of an expert, stacked like its weights. */
async function readExpertScales(files: CheckpointFiles, parts: ExpertParts, target: Float32Array, rowsPerPart: number, k: number): Promise<void> {
  const scaleRows = Math.ceil(rowsPerPart / 128);
  const scaleCols = Math.ceil(k / 128);
  for (const [i, part] of parts.entries()) {
    await readScales(files, part, target.subarray(i * scaleRows * scaleCols, (i + 1) * scaleRows * scaleCols), scaleRows, scaleCols);
  }
}

/**
 * Fills expert `expert` of `m` from `parts` stacked along N: fp8 weights with
 * their scale_inv are read in place; bf16/f32 weights are read and
 * quantized 128x128 here.
 */
async function readExpert(files: CheckpointFiles, m: ExpertMatrices, expert: number, parts: ExpertParts, rowsPerPart: number): Promise<void> {
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
    }
    await readExpertScales(files, parts, slot.scales, rowsPerPart, k);
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

/**
 * Whether every expert's weights can be mapped as they lie: fp8 e4m3 of the
 * expected shape, all parts of an expert in one file and back to back (the
 * layout of the safetensors reference writer, which stores tensors by dtype
 * then name: gate_proj directly before up_proj), and 128-row parts where
 * they are stacked (their scales stack by 128-row blocks). The CPU kernels
 * need no alignment of the weights.
 */
async function mappable(files: CheckpointFiles, experts: ExpertParts[], rowsPerPart: number, k: number): Promise<boolean> {
  if (experts.some((parts) => parts.length > 1) && rowsPerPart % 128 !== 0) return false;
  for (const parts of experts) {
    let previous: { path: string; end: number } | undefined;
    for (const part of parts) {
      const name = `${part}.weight`;
      if (!files.has(name)) return false; // (readExpert reports it)
      const { file, info } = await files.locate(name, ['F8_E4M3', 'BF16', 'F32'], [rowsPerPart, k]);
      if (info.dtype !== 'F8_E4M3') return false;
      const { offset, length } = file.byteRange(name);
      if (previous && (previous.path !== file.path || previous.end !== offset)) return false;
      previous = { path: file.path, end: offset + length };
    }
  }
  return true;
}

/**
 * Expert matrices whose fp8 data are mapped from the files: one shard per
 * expert (the CPU backend takes shards of any size), each a view of its
 * expert's bytes in the checkpoint; the scales in one private buffer.
 */
async function mapExperts(files: CheckpointFiles, experts: ExpertParts[], rowsPerPart: number, k: number, onExpert: () => void): Promise<ExpertMatrices> {
  const n = rowsPerPart * experts[0].length;
  const scaleRows = Math.ceil(n / 128);
  const scaleCols = Math.ceil(k / 128);
  const allScales = empty([experts.length, scaleRows, scaleCols], 'f32').data; // [E, ceil(N/128), ceil(K/128)]
  const data = [];
  const scales = [];
  for (const [e, parts] of experts.entries()) {
    const { file } = await files.locate(`${parts[0]}.weight`, ['F8_E4M3'], [rowsPerPart, k]);
    data.push(tensor(mapTensors(file, `${parts[0]}.weight`, `${parts[parts.length - 1]}.weight`), [1, n, k], 'fp8_e4m3'));
    const target = allScales.subarray(e * scaleRows * scaleCols, (e + 1) * scaleRows * scaleCols);
    await readExpertScales(files, parts, target, rowsPerPart, k);
    scales.push(tensor(target, [1, scaleRows, scaleCols], 'f32'));
    onExpert();
  }
  return { numExperts: experts.length, n, k, data, scales };
}

/**
 * The matrices of `experts` (each the parts stacked along N, rowsPerPart rows
 * of K each): mapped where `map` is set and the layout allows it, else read.
 * onExpert is called after each expert.
 */
export async function loadExperts(
  files: CheckpointFiles, experts: ExpertParts[], rowsPerPart: number, k: number, map: boolean, onExpert: () => void,
): Promise<ExpertMatrices> {
  if (map && experts.length > 0 && (await mappable(files, experts, rowsPerPart, k))) return mapExperts(files, experts, rowsPerPart, k, onExpert);
  const m = allocExperts(experts.length, rowsPerPart * (experts[0]?.length ?? 1), k);
  for (const [e, parts] of experts.entries()) {
    await readExpert(files, m, e, parts, rowsPerPart);
    onExpert();
  }
  return m;
}
