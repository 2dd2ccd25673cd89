/**
 * Hostile checkpoints: whatever sits where a config, an index or a shard
 * should be, fromSafetensors ends with a coded MoeError naming the file (and
 * the tensor), never a hang, unbounded memory, a raw Node error or a silent
 * load of unusable values. The FIFO cases run in a child process, so that a
 * hang fails the test by its timeout instead of stopping the runner.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MoeError, MoeLayer, SafetensorsFile, quantizeWeightsSync, tensor, writeSafetensors } from '../lib/index';
import { expertSlot } from '../lib/moe/experts';
import { layerTensors, softmaxFamilyCheckpoint, tempDirs, writeCheckpoint } from './helpers/checkpoint';
import { smallDeepSeekConfig } from './helpers/moe-config';

const root = path.resolve(__dirname, '..');
const SMALL = { ...smallDeepSeekConfig(128, 128), numExperts: 8, numGroups: 4, topKGroups: 2, topK: 4 };
const LAYER = 1;
const fresh = tempDirs();

const source = MoeLayer.random(SMALL, { seed: 9 });
const checkpoint = () => writeCheckpoint(fresh(), SMALL, layerTensors(SMALL, source.weights, LAYER), 2);

async function expectCheckpointError(dir: string, message: RegExp): Promise<void> {
  const error = await MoeLayer.fromSafetensors(dir, { layer: LAYER }).then(() => undefined, (e: unknown) => e);
  expect(error, 'expected a MoeError').toBeInstanceOf(MoeError);
  expect((error as MoeError).code, (error as Error).message).toBe('ERR_MOE_CHECKPOINT');
  expect((error as Error).message).toMatch(message);
}

function firstShard(dir: string): string {
  return JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8')).weight_map[`model.layers.${LAYER}.mlp.gate.weight`];
}

describe('fromSafetensors refuses what is not a regular file', () => {
  it.skipIf(process.platform === 'win32')('a FIFO in place of config.json, the index or a shard (no hang)', () => {
    const cases = ['config.json', 'model.safetensors.index.json', 'shard'].map((which) => {
      const dir = checkpoint();
      const name = which === 'shard' ? firstShard(dir) : which;
      fs.rmSync(path.join(dir, name));
      spawnSync('mkfifo', [path.join(dir, name)]);
      return { dir, name };
    });
    const script = `
const m = require(${JSON.stringify(root)});
(async () => {
  for (const { dir, name } of ${JSON.stringify(cases)}) {
    const e = await m.MoeLayer.fromSafetensors(dir, { layer: ${LAYER} }).then(() => undefined, (e) => e);
    if (!(e instanceof m.MoeError) || e.code !== 'ERR_MOE_CHECKPOINT' || !e.message.includes(name) || !/FIFO/.test(e.message)) {
      console.error('unexpected:', e && e.message); process.exit(1);
    }
  }
  console.log('fifo ok');
})();`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status, `${r.signal ?? ''} ${r.stderr}`).toBe(0);
    expect(r.stdout).toContain('fifo ok');
  });

  it('a symlink to /dev/zero in place of config.json or the index (no unbounded read)', async () => {
    for (const name of ['config.json', 'model.safetensors.index.json']) {
      const dir = checkpoint();
      fs.rmSync(path.join(dir, name));
      fs.symlinkSync('/dev/zero', path.join(dir, name));
      await expectCheckpointError(dir, new RegExp(`${name.replace(/\./g, '\\.')}: expected a regular file, found a character device`));
    }
  });

  it('a directory, . or .. as a shard', async () => {
    const dir = checkpoint();
    const index = path.join(dir, 'model.safetensors.index.json');
    const json = JSON.parse(fs.readFileSync(index, 'utf8'));
    for (const shard of ['.', '..', 'sub']) {
      fs.mkdirSync(path.join(dir, 'sub'), { recursive: true });
      json.weight_map[`model.layers.${LAYER}.mlp.gate.weight`] = shard;
      fs.writeFileSync(index, JSON.stringify(json));
      await expectCheckpointError(dir, shard === 'sub' ? /sub: expected a regular file, found a directory/ : /bad shard name/);
    }
    expect(() => SafetensorsFile.open(dir)).toThrow(/expected a regular file, found a directory/);
  });

  it('a config.json over the size limit', async () => {
    const dir = checkpoint();
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, padding: ' '.repeat(65 * 2 ** 20) }));
    await expectCheckpointError(dir, /config\.json: .*over the .*limit/);
  });
});

describe('fromSafetensors checks what it reads', () => {
  it('deeply nested JSON in config.json or a shard header is ERR_MOE_CHECKPOINT', async () => {
    const deep = '['.repeat(200_000) + ']'.repeat(200_000);
    const dir = checkpoint();
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config).replace(/"hidden_size":\d+/, `"hidden_size":${deep}`));
    await expectCheckpointError(dir, /config\.json: 'hidden_size' must be a non-negative integer/);
    const shardDir = checkpoint();
    const header = `{"t": {"dtype": "F32", "shape": ${deep}, "data_offsets": [0, 0]}}`;
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(header.length));
    fs.writeFileSync(path.join(shardDir, firstShard(shardDir)), Buffer.concat([length, Buffer.from(header)]));
    await expectCheckpointError(shardDir, /shape must be an array of non-negative integers/);
    // Nesting within the parser's reach still may not reach an error message's JSON.stringify.
    const moderate = '['.repeat(5000) + ']'.repeat(5000);
    const header2 = `{"t": {"dtype": "F32", "shape": [${moderate}], "data_offsets": [0, 0]}}`;
    const length2 = Buffer.alloc(8);
    length2.writeBigUInt64LE(BigInt(header2.length));
    fs.writeFileSync(path.join(shardDir, firstShard(shardDir)), Buffer.concat([length2, Buffer.from(header2)]));
    await expectCheckpointError(shardDir, /shape must be an array of non-negative integers/);
  });

  it('huge sizes in config.json are coded errors, not RangeErrors', async () => {
    for (const extra of [{ hidden_size: 2 ** 40 }, { moe_intermediate_size: 2 ** 31 }, { n_routed_experts: 1e15 }]) {
      const dir = fresh();
      writeCheckpoint(dir, SMALL, layerTensors(SMALL, source.weights, LAYER), 1, extra);
      const error = await MoeLayer.fromSafetensors(dir, { layer: LAYER }).then(() => undefined, (e: unknown) => e);
      expect(error, JSON.stringify(extra)).toBeInstanceOf(MoeError);
    }
  });

  it('a non-finite or non-positive weight_scale_inv is refused at load, naming the file and the tensor', async () => {
    for (const bad of [NaN, Infinity, -1, 0]) {
      const tensors = layerTensors(SMALL, source.weights, LAYER);
      const name = `model.layers.${LAYER}.mlp.experts.3.up_proj.weight_scale_inv`;
      const scales = Float32Array.from(new Float32Array(tensors[name].bytes.slice().buffer));
      scales[0] = bad;
      tensors[name] = { ...tensors[name], bytes: new Uint8Array(scales.buffer) };
      const dir = writeCheckpoint(fresh(), SMALL, tensors, 1);
      await expectCheckpointError(dir, new RegExp(`safetensors: tensor '${name.replace(/\./g, '\\.')}': element 0 is ${bad}`));
    }
  });

  it("norm_topk_prob must be a JSON boolean ('false' is not false)", async () => {
    const dir = fresh();
    writeCheckpoint(dir, SMALL, layerTensors(SMALL, source.weights, LAYER), 1, { norm_topk_prob: 'false' });
    await expectCheckpointError(dir, /norm_topk_prob' must be true or false, got 'false'/);
  });
});

describe('fromSafetensors on bf16 checkpoints', () => {
  it('quantizes the bf16 matrices as given (no f32 detour on the JS thread), bit-exact with quantizeWeights', async () => {
    const config = { ...smallDeepSeekConfig(256, 128), numExperts: 4, numGroups: 1, topKGroups: 1, topK: 2, scoring: 'softmax' as const, numSharedExperts: 0, normTopKProb: true };
    const layer = MoeLayer.random(config, { seed: 4 });
    const written = softmaxFamilyCheckpoint('mixtral', config, layer.weights, 0);
    // As bf16: the f32 values' upper halves.
    for (const [name, t] of Object.entries(written.tensors)) {
      if (t.dtype !== 'F32' || !name.includes('experts')) continue;
      const f = new Uint32Array(t.bytes.slice().buffer);
      written.tensors[name] = { dtype: 'BF16', shape: t.shape, bytes: new Uint8Array(Uint16Array.from(f, (v) => v >>> 16).buffer) };
    }
    const dir = fresh();
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(written.config));
    writeSafetensors(path.join(dir, 'model.safetensors'), written.tensors);
    const loaded = await MoeLayer.fromSafetensors(dir, { layer: 0 });
    const { h, i } = { h: config.hiddenSize, i: config.intermediateSize };
    for (const expert of [0, 3]) {
      const part = (name: string) => new Uint16Array(written.tensors[`model.layers.0.block_sparse_moe.experts.${expert}.${name}.weight`].bytes.slice().buffer);
      const stacked = new Uint16Array(2 * i * h);
      stacked.set(part('w1'));
      stacked.set(part('w3'), i * h);
      const expected = quantizeWeightsSync(tensor(stacked, [2 * i, h], 'bf16'));
      const slot = expertSlot(loaded.weights.w13, expert);
      expect(Buffer.compare(Buffer.from(slot.data), Buffer.from(expected.data.data))).toBe(0);
      expect(Array.from(slot.scales)).toEqual(Array.from(expected.scales.data));
    }
  });
});
