/**
 * fp8 expert weights mapped from the checkpoint files (fromSafetensors'
 * default on CPU layers): the same bits as reading them, a read fallback
 * where the layout does not allow mapping, a coded error instead of a
 * SIGBUS for a file that changed, no leaked mappings, and pages shared
 * between processes.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MoeError, MoeLayer, SafetensorsFile, tensor } from '../lib/index';
import { loadHuggingFaceLayer } from '../lib/checkpoint/huggingface';
import { mapTensors } from '../lib/checkpoint/mapped';
import { inReferenceWriterOrder, layerTensors, softmaxFamilyCheckpoint, tempDir, writeCheckpoint, writeCheckpointFiles } from './helpers/checkpoint';
import { smallDeepSeekConfig } from './helpers/moe-config';
import { randomFloats, rng } from './helpers/random';

const root = path.resolve(__dirname, '..');
const LAYER = 1;
const SMALL = { ...smallDeepSeekConfig(256, 128), numExperts: 8, numGroups: 4, topKGroups: 2, topK: 4 };
const source = MoeLayer.random(SMALL, { seed: 21 });
const random = rng();
const dirs: string[] = [];
const fresh = () => {
  const d = tempDir();
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

/** The fp8 bytes of every expert matrix (routed and shared). */
const expertBytes = (layer: MoeLayer) => layer.weightBytes;

function outputsOf(layer: MoeLayer, x: ReturnType<typeof tensor>): Buffer {
  return Buffer.from((layer.forwardSync(x, { out: 'f32' }).data as Float32Array).buffer);
}

describe('fromSafetensors maps fp8 expert weights', () => {
  const x = tensor(randomFloats(13 * SMALL.hiddenSize, random), [13, SMALL.hiddenSize]);

  it('in the reference writer layout: every expert matrix mapped, outputs bit for bit those of the read layer', async () => {
    const dir = writeCheckpoint(fresh(), SMALL, inReferenceWriterOrder(layerTensors(SMALL, source.weights, LAYER)), 1);
    const mapped = await MoeLayer.fromSafetensors(dir, { layer: LAYER });
    const read = await MoeLayer.fromSafetensors(dir, { layer: LAYER, mmap: false });
    expect(mapped.mappedBytes).toBe(expertBytes(mapped));
    expect(read.mappedBytes).toBe(0);
    expect(mapped.memoryBytes).toBe(read.memoryBytes);
    expect(outputsOf(mapped, x).equals(outputsOf(read, x))).toBe(true);
    expect(outputsOf(mapped, x).equals(outputsOf(source, x))).toBe(true);
    // The unfused expert path (grouped GEMM for w13, then SwiGLU) over the one-expert shards.
    process.env.MOE_FUSED_EXPERTS = '0';
    try {
      expect(outputsOf(mapped, x).equals(outputsOf(read, x))).toBe(true);
    } finally {
      delete process.env.MOE_FUSED_EXPERTS;
    }
    // Promise form and the batch-invariant path read the same mapped bytes.
    const viaPromise = await mapped.forward(x, { out: 'f32', batchInvariant: true });
    const readPromise = await read.forward(x, { out: 'f32', batchInvariant: true });
    expect(Buffer.from((viaPromise.data as Float32Array).buffer).equals(Buffer.from((readPromise.data as Float32Array).buffer))).toBe(true);
  });

  it('tensor offsets that are not even 8-byte aligned still map (the kernels need no alignment)', async () => {
    const tensors = inReferenceWriterOrder(layerTensors(SMALL, source.weights, LAYER));
    // A 3-byte tensor ahead of the fp8 block shifts every weight by 3 bytes.
    const shifted = { ...Object.fromEntries(Object.entries(tensors).filter(([, t]) => t.dtype !== 'F8_E4M3')), 'pad.bytes': { dtype: 'U8' as const, shape: [3], bytes: new Uint8Array(3) }, ...Object.fromEntries(Object.entries(tensors).filter(([, t]) => t.dtype === 'F8_E4M3')) };
    const dir = writeCheckpoint(fresh(), SMALL, shifted, 1);
    const first = (await SafetensorsFile.load(path.join(dir, fs.readdirSync(dir).find((f) => f.endsWith('.safetensors'))!)));
    expect(first.byteRange(`model.layers.${LAYER}.mlp.experts.0.down_proj.weight`).offset % 8).not.toBe(0);
    const mapped = await MoeLayer.fromSafetensors(dir, { layer: LAYER });
    expect(mapped.mappedBytes).toBe(expertBytes(mapped));
    expect(outputsOf(mapped, x).equals(outputsOf(source, x))).toBe(true);
  });

  it('falls back to reading what cannot be mapped: gate and up apart, a shard boundary between them, bf16/f32 weights', async () => {
    // The test writer's order puts weight_scale_inv between gate_proj and up_proj: w13 is read, w2 mapped.
    const apart = await MoeLayer.fromSafetensors(writeCheckpoint(fresh(), SMALL, layerTensors(SMALL, source.weights, LAYER), 1), { layer: LAYER });
    const w2Bytes = (SMALL.numExperts + 1) * SMALL.hiddenSize * SMALL.intermediateSize;
    expect(apart.mappedBytes).toBe(w2Bytes);
    expect(outputsOf(apart, x).equals(outputsOf(source, x))).toBe(true);
    // Many shards: some experts' gate and up land in different files, so that matrix is read for all experts.
    const split = await MoeLayer.fromSafetensors(writeCheckpoint(fresh(), SMALL, inReferenceWriterOrder(layerTensors(SMALL, source.weights, LAYER)), 7), { layer: LAYER });
    expect(split.mappedBytes).toBeLessThan(expertBytes(split));
    expect(outputsOf(split, x).equals(outputsOf(source, x))).toBe(true);
    // Unquantized weights are quantized at load: nothing to map.
    const mixtral = { ...SMALL, scoring: 'softmax' as const, numSharedExperts: 0, numGroups: 1, topKGroups: 1, routedScalingFactor: 1, normTopKProb: true };
    const plain = MoeLayer.random(mixtral, { seed: 3 });
    const family = softmaxFamilyCheckpoint('mixtral', mixtral, plain.weights, LAYER);
    const quantized = await MoeLayer.fromSafetensors(writeCheckpointFiles(fresh(), family.config, family.tensors, 2), { layer: LAYER });
    expect(quantized.mappedBytes).toBe(0);
  });

  it('expert parallelism maps only the rank\'s experts', async () => {
    const dir = writeCheckpoint(fresh(), SMALL, inReferenceWriterOrder(layerTensors(SMALL, source.weights, LAYER)), 1);
    const { weights } = await loadHuggingFaceLayer(dir, { layer: LAYER, experts: () => ({ first: 2, count: 3 }) });
    expect(weights.w13.numExperts).toBe(3);
    expect(weights.w13.data).toHaveLength(3);
    const whole = await MoeLayer.fromSafetensors(dir, { layer: LAYER });
    for (let e = 0; e < 3; e++) {
      expect(Buffer.from(weights.w13.data[e].data).equals(Buffer.from(whole.weights.w13.data[e + 2].data))).toBe(true);
      expect(Buffer.from(weights.w2.data[e].data).equals(Buffer.from(whole.weights.w2.data[e + 2].data))).toBe(true);
    }
  });

  it('a write into a mapped weight stays in the process: no crash, the file unchanged', async () => {
    const dir = writeCheckpoint(fresh(), SMALL, inReferenceWriterOrder(layerTensors(SMALL, source.weights, LAYER)), 1);
    const shard = path.join(dir, fs.readdirSync(dir).find((f) => f.endsWith('.safetensors'))!);
    const before = fs.readFileSync(shard);
    const mapped = await MoeLayer.fromSafetensors(dir, { layer: LAYER });
    const bytes = mapped.weights.w2.data[0].data;
    bytes[0] ^= 0x11;
    const again = await MoeLayer.fromSafetensors(dir, { layer: LAYER });
    expect(again.weights.w2.data[0].data[0]).toBe(bytes[0] ^ 0x11);
    expect(fs.readFileSync(shard).equals(before)).toBe(true);
  });

  it('rejects a bad mmap option', async () => {
    const dir = writeCheckpoint(fresh(), SMALL, layerTensors(SMALL, source.weights, LAYER), 1);
    await expect(MoeLayer.fromSafetensors(dir, { layer: LAYER, mmap: 'yes' as unknown as boolean })).rejects.toMatchObject({ code: 'ERR_MOE_ARGUMENT' });
  });
});

describe('a checkpoint file that does not match its header is refused, not mapped', () => {
  it('truncated after the header was written: ERR_MOE_CHECKPOINT at load', async () => {
    const dir = writeCheckpoint(fresh(), SMALL, inReferenceWriterOrder(layerTensors(SMALL, source.weights, LAYER)), 1);
    const shard = path.join(dir, fs.readdirSync(dir).find((f) => f.endsWith('.safetensors'))!);
    fs.truncateSync(shard, fs.statSync(shard).size - 4096);
    const error = await MoeLayer.fromSafetensors(dir, { layer: LAYER }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MoeError);
    expect((error as MoeError).code).toBe('ERR_MOE_CHECKPOINT');
    expect((error as Error).message).toMatch(/truncated/);
  });

  it('truncated or grown between reading its header and mapping: ERR_MOE_CHECKPOINT, no SIGBUS', async () => {
    const dir = writeCheckpoint(fresh(), SMALL, inReferenceWriterOrder(layerTensors(SMALL, source.weights, LAYER)), 1);
    const shard = path.join(dir, fs.readdirSync(dir).find((f) => f.endsWith('.safetensors'))!);
    const file = await SafetensorsFile.load(shard);
    const last = [...file.tensors.keys()].sort((a, b) => file.byteRange(b).offset - file.byteRange(a).offset)[0];
    const size = fs.statSync(shard).size;
    for (const newSize of [size - 1, 16, size + 1]) {
      fs.truncateSync(shard, newSize);
      let error: unknown;
      try {
        mapTensors(file, last);
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(MoeError);
      expect((error as MoeError).code).toBe('ERR_MOE_CHECKPOINT');
      expect((error as Error).message).toMatch(/modified since/);
    }
  });
});

/** Runs `script` in a fresh node (the built package at `root`), returning its stdout; fails the test on a non-zero exit. */
function node(script: string, args: string[] = []): string {
  const run = spawnSync(process.execPath, [...args, '-e', script], { encoding: 'utf8', timeout: 120_000 });
  expect(run.status, run.stderr).toBe(0);
  return run.stdout;
}

describe('mappings are released', () => {
  it.skipIf(process.platform !== 'linux')('loading and dropping a mapped layer 200 times leaves no mappings behind', () => {
    const dir = writeCheckpoint(fresh(), SMALL, inReferenceWriterOrder(layerTensors(SMALL, source.weights, LAYER)), 1);
    const out = node(`
const fs = require('node:fs');
const { MoeLayer } = require(${JSON.stringify(root)});
const maps = () => fs.readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.includes(${JSON.stringify(dir)})).length;
const settle = async () => { for (let i = 0; i < 4; i++) { global.gc(); await new Promise((r) => setImmediate(r)); } };
let peak = 0;
// In a function of its own: the layer must not stay in the loop's frame.
async function loadAndDrop() {
  const layer = await MoeLayer.fromSafetensors(${JSON.stringify(dir)}, { layer: ${LAYER} });
  if (layer.mappedBytes === 0) throw new Error('not mapped');
  peak = Math.max(peak, maps());
  layer.dispose();
}
(async () => {
  for (let i = 0; i < 200; i++) {
    await loadAndDrop();
    if (i % 20 === 19) await settle();
  }
  await settle();
  console.log(JSON.stringify({ peak, left: maps() }));
})().catch((e) => { console.error(e); process.exit(1); });`, ['--expose-gc']);
    const { peak, left } = JSON.parse(out);
    // One layer maps 2E + 2 matrices; without the finalizer 200 loads would leave 200 times that.
    expect(peak).toBeGreaterThanOrEqual(2 * SMALL.numExperts + 2);
    expect(peak).toBeLessThan(25 * (2 * SMALL.numExperts + 2));
    expect(left).toBe(0);
  });
});

describe('processes mapping one checkpoint share its pages', () => {
  it.skipIf(process.platform !== 'linux')('Pss of the mapped weights is about Rss / N for N = 3 processes', async () => {
    // Larger matrices, so that the shared pages dominate the page-rounding at each end of a mapping.
    const config = { ...SMALL, hiddenSize: 1024, intermediateSize: 512 };
    const layer = MoeLayer.random(config, { seed: 5 });
    const dir = writeCheckpoint(fresh(), config, inReferenceWriterOrder(layerTensors(config, layer.weights, LAYER)), 1);
    const script = `
const fs = require('node:fs');
const { MoeLayer } = require(${JSON.stringify(root)});
(async () => {
  const layer = await MoeLayer.fromSafetensors(${JSON.stringify(dir)}, { layer: ${LAYER} });
  let sum = 0; // touch every page of the weights
  for (const m of [layer.weights.w13, layer.weights.w2, layer.weights.sharedW13, layer.weights.sharedW2]) for (const t of m.data) for (let i = 0; i < t.data.length; i += 4096) sum += t.data[i];
  console.log('ready ' + sum);
  process.stdin.once('data', () => process.exit(0));
})();`;
    const n = 3;
    const children = Array.from({ length: n }, () => spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'inherit'] }));
    try {
      await Promise.all(children.map((c) => new Promise<void>((resolve, reject) => {
        c.stdout.on('data', (d: Buffer) => d.toString().startsWith('ready') && resolve());
        c.once('exit', (code) => reject(new Error(`child exited with ${code}`)));
      })));
      for (const c of children) {
        // The checkpoint's mappings in this process: kB of Rss and Pss.
        let rss = 0, pss = 0, inCheckpoint = false;
        for (const line of fs.readFileSync(`/proc/${c.pid}/smaps`, 'utf8').split('\n')) {
          if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inCheckpoint = line.includes(dir);
          else if (inCheckpoint && line.startsWith('Rss:')) rss += Number(line.split(/\s+/)[1]);
          else if (inCheckpoint && line.startsWith('Pss:')) pss += Number(line.split(/\s+/)[1]);
        }
        expect(rss * 1024).toBeGreaterThanOrEqual(layer.weightBytes);
        expect(pss).toBeGreaterThan(rss / n * 0.9);
        expect(pss).toBeLessThan(rss / n * 1.1);
      }
    } finally {
      for (const c of children) c.stdin.end('x');
    }
  }, 60_000);
});
