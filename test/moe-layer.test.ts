import * as fs from 'node:fs';
import * as path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { ForwardProfile, MoeConfig, MoeError, getNumThreads, setNumThreads, MoeLayer, bf16FromFloat32, referenceForwardToken, tensor } from '../lib/index';
import { calcDiff } from './helpers/reference';
import { layerTensors, softmaxFamilyCheckpoint, tempDirs, writeCheckpoint, writeCheckpointFiles } from './helpers/checkpoint';
import { smallDeepSeekConfig } from './helpers/moe-config';
import { randomFloats, rng, seedNote, SEED } from './helpers/random';
import { PREPARED_SIZES, Workspace } from '../lib/moe/workspace';

const random = rng();

const SMALL: MoeConfig = smallDeepSeekConfig(256, 128);


function referenceLayer(layer: MoeLayer, x: Float32Array, tokens: number): Float64Array {
  const h = layer.config.hiddenSize;
  const out = new Float64Array(tokens * h);
  for (let t = 0; t < tokens; t++) {
    out.set(referenceForwardToken(layer.config, layer.weights, Float64Array.from(x.subarray(t * h, (t + 1) * h))).out, t * h);
  }
  return out;
}

describe('MoeLayer', () => {
  const layer = MoeLayer.random(SMALL, { seed: SEED });

  for (const tokens of [1, 7, 64]) {
    it(`matches the float64 reference of the same layer at T=${tokens} ${seedNote}`, async () => {
      const x = randomFloats(tokens * SMALL.hiddenSize, random);
      const into = tensor(new Float32Array(tokens * SMALL.hiddenSize).fill(NaN), [tokens, SMALL.hiddenSize]);
      const out = (await layer.forward(tensor(x, [tokens, SMALL.hiddenSize]), { out: 'f32', into })).data as Float32Array;
      expect(calcDiff(out, referenceLayer(layer, x, tokens))).toBeLessThan(2e-3);
      // Its own output (not zeroed before the forward writes it) holds the same bits as the poisoned one.
      const own = await layer.forward(tensor(x, [tokens, SMALL.hiddenSize]), { out: 'f32' });
      expect(Buffer.from((own.data as Float32Array).buffer, (own.data as Float32Array).byteOffset, own.byteLength).equals(Buffer.from(out.buffer, out.byteOffset, out.byteLength))).toBe(true);
      // bf16 in, bf16 out (the default)
      const xb = bf16FromFloat32(x, [tokens, SMALL.hiddenSize]);
      const outB = layer.forwardSync(xb);
      expect(outB.dtype).toBe('bf16');
      expect(calcDiff(outB.toFloat32Array(), referenceLayer(layer, xb.toFloat32Array(), tokens))).toBeLessThan(2e-3);
    });
  }

  it('gives the same bits with expert weights split into several shards', () => {
    const sharded = MoeLayer.random(SMALL, { seed: SEED, maxShardBytes: 5 * 2 * SMALL.intermediateSize * SMALL.hiddenSize });
    expect(sharded.weights.w13.data.length).toBeGreaterThan(1);
    expect(sharded.weights.w2.data.length).toBeGreaterThan(1);
    const x = tensor(randomFloats(64 * SMALL.hiddenSize, random), [64, SMALL.hiddenSize]);
    const a = layer.forwardSync(x, { out: 'f32' }).data;
    const b = sharded.forwardSync(x, { out: 'f32' }).data;
    expect(Buffer.compare(Buffer.from(a.buffer), Buffer.from(b.buffer))).toBe(0);
  });

  it('gives the same bits fused (gather, first GEMM and SwiGLU per expert) as with the separate ops', () => {
    const sharded = MoeLayer.random(SMALL, { seed: SEED, maxShardBytes: 5 * 2 * SMALL.intermediateSize * SMALL.hiddenSize });
    // T = 2: few segments, run one by one; T = 300: one task per segment.
    for (const tokens of [2, 33, 300]) {
      const x = bf16FromFloat32(randomFloats(tokens * SMALL.hiddenSize, random), [tokens, SMALL.hiddenSize]);
      for (const l of [layer, sharded]) {
        const fused = l.forwardSync(x, { out: 'f32' }).data;
        process.env.MOE_FUSED_EXPERTS = '0';
        let separate: Float32Array;
        try {
          separate = l.forwardSync(x, { out: 'f32' }).data as Float32Array;
        } finally {
          delete process.env.MOE_FUSED_EXPERTS;
        }
        expect(Buffer.compare(Buffer.from(fused.buffer), Buffer.from(separate.buffer)), `T=${tokens} ${seedNote}`).toBe(0);
      }
    }
  });

  // The fused path runs the shared expert as one more expert of expertUp and
  // the w2 grouped GEMM (its token rows cut into runs of <= 256 from T = 257
  // on), and with few tasks per thread (8 threads here) cuts experts of <= 16
  // rows into runs of 128 columns of I and H: I = 384 (3 runs), H = 592 (4
  // whole runs and a ragged one of 80).
  it('gives the same bits with the shared expert and column runs inside the experts\' tasks as with the separate ops', () => {
    const config: MoeConfig = smallDeepSeekConfig(592, 384);
    const wide = MoeLayer.random(config, { seed: SEED });
    const sharded = MoeLayer.random(config, { seed: SEED, maxShardBytes: 5 * 2 * config.intermediateSize * config.hiddenSize });
    const threads = getNumThreads();
    try {
      for (const [tokens, pool] of [[1, 8], [2, 8], [5, 8], [17, 8], [1, threads], [300, threads], [600, threads]]) {
        setNumThreads(pool);
        const x = bf16FromFloat32(randomFloats(tokens * config.hiddenSize, random), [tokens, config.hiddenSize]);
        for (const batchInvariant of [false, true]) {
          const fused = wide.forwardSync(x, { out: 'f32', batchInvariant }).data;
          expect(Buffer.compare(Buffer.from(fused.buffer), Buffer.from(sharded.forwardSync(x, { out: 'f32', batchInvariant }).data.buffer))).toBe(0);
          process.env.MOE_FUSED_EXPERTS = '0';
          let separate: Float32Array;
          try {
            separate = wide.forwardSync(x, { out: 'f32', batchInvariant }).data as Float32Array;
          } finally {
            delete process.env.MOE_FUSED_EXPERTS;
          }
          expect(Buffer.compare(Buffer.from(fused.buffer), Buffer.from(separate.buffer)), `T=${tokens} threads=${pool} batchInvariant=${batchInvariant} ${seedNote}`).toBe(0);
        }
      }
    } finally {
      setNumThreads(threads);
    }
  });

  it('softmax routing without groups or shared experts (Mixtral/Qwen style)', () => {
    const config: MoeConfig = { ...SMALL, scoring: 'softmax', numGroups: 1, topKGroups: 1, topK: 2, numSharedExperts: 0, routedScalingFactor: 1, normTopKProb: true };
    const mixtral = MoeLayer.random(config, { seed: SEED + 1 });
    const x = randomFloats(5 * SMALL.hiddenSize, random);
    const out = mixtral.forwardSync(tensor(x, [5, SMALL.hiddenSize]), { out: 'f32' }).data as Float32Array;
    expect(calcDiff(out, referenceLayer(mixtral, x, 5))).toBeLessThan(2e-3);
  });

  it('reports the time of every stage and the routing statistics', () => {
    const profile = {} as ForwardProfile;
    layer.forwardSync(tensor(randomFloats(16 * SMALL.hiddenSize, random), [16, SMALL.hiddenSize]), { profile });
    const stages = profile.stages as unknown as Record<string, number>;
    for (const stage of ['router', 'route', 'layout', 'dispatch', 'gemm1', 'swiglu', 'gemm2', 'shared', 'combine']) {
      expect(stages[stage], stage).toBeGreaterThanOrEqual(0);
    }
    expect(stages.gemm1).toBeGreaterThan(0);
    expect(profile.rows).toBe(16 * SMALL.topK);
    expect(profile.activeExperts).toBeGreaterThanOrEqual(SMALL.topK);
    expect(profile.activeExperts).toBeLessThanOrEqual(SMALL.numExperts);
  });

  it('is safe under concurrent forwards on one layer', async () => {
    const inputs = Array.from({ length: 6 }, (_, i) => tensor(randomFloats((3 + i * 5) * SMALL.hiddenSize, random), [3 + i * 5, SMALL.hiddenSize]));
    const sequential = inputs.map((x) => layer.forwardSync(x).data);
    const concurrent = await Promise.all(inputs.map((x) => layer.forward(x)));
    concurrent.forEach((out, i) => expect(Buffer.compare(Buffer.from(out.data.buffer), Buffer.from(sequential[i].buffer))).toBe(0));
  });

  it('runs with a single CPU thread (nested parallel regions run serially)', async () => {
    const x = tensor(randomFloats(64 * SMALL.hiddenSize, random), [64, SMALL.hiddenSize]);
    const both = layer.forwardSync(x, { out: 'f32' }).data;
    const threads = getNumThreads();
    setNumThreads(1);
    try {
      const single = (await layer.forward(x, { out: 'f32' })).data;
      expect(Buffer.compare(Buffer.from(single.buffer), Buffer.from(both.buffer))).toBe(0);
    } finally {
      setNumThreads(threads);
    }
  });

  it(`keeps the views of the last ${PREPARED_SIZES} token counts, and every count gets its own rows ${seedNote}`, async () => {
    const ws = new Workspace(SMALL, 100);
    const kept = Array.from({ length: PREPARED_SIZES }, (_, i) => ws.prepared(i + 1));
    expect(ws.prepared(1)).toBe(kept[0]); // a hit makes 1 the most recent: 2 goes next
    ws.prepared(PREPARED_SIZES + 1);
    expect(ws.prepared(1)).toBe(kept[0]);
    expect(ws.prepared(3)).toBe(kept[2]);
    expect(ws.prepared(2)).not.toBe(kept[1]);
    for (const [t, p] of [[1, kept[0]], [2, ws.prepared(2)]] as const) expect(p.views.ids.shape).toEqual([t, SMALL.topK]);
    // Forwards over more sizes than are kept, then the first again: each matches a fresh layer's rows.
    const layer = MoeLayer.random(SMALL, { seed: SEED });
    const fresh = MoeLayer.random(SMALL, { seed: SEED });
    const h = SMALL.hiddenSize;
    const x = randomFloats((PREPARED_SIZES + 8) * h, random);
    for (const t of [3, ...Array.from({ length: PREPARED_SIZES + 8 }, (_, i) => i + 1), 3, 17]) {
      const xt = tensor(x.subarray(0, t * h), [t, h]);
      const y = (await layer.forward(xt, { out: 'f32' })).data;
      const expected = fresh.forwardSync(xt, { out: 'f32' }).data;
      expect(Buffer.compare(Buffer.from(y.buffer, y.byteOffset, y.byteLength), Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength)), `T=${t}`).toBe(0);
    }
  });

  it('keeps RSS flat over 1000 forwards (the workspace is allocated once and reused)', async () => {
    const x = tensor(randomFloats(4 * SMALL.hiddenSize, random), [4, SMALL.hiddenSize]);
    for (let i = 0; i < 50; i++) await layer.forward(x);
    global.gc?.();
    const before = process.memoryUsage().rss;
    for (let i = 0; i < 1000; i++) await layer.forward(x);
    global.gc?.();
    const grown = process.memoryUsage().rss - before;
    expect(grown, `RSS grew by ${(grown / 2 ** 20).toFixed(1)} MiB`).toBeLessThan(8 * 2 ** 20);
  });

  it('does not block the event loop during a long forward', async () => {
    const big = MoeLayer.random({ ...SMALL, hiddenSize: 1024, intermediateSize: 512, numExperts: 64 }, { seed: 5 });
    const x = tensor(randomFloats(4096 * 1024, random), [4096, 1024]); // ~100 GFLOP of expert GEMMs
    await big.forward(x); // the first call allocates the workspace; measure the steady state
    // One compute thread, so the JS thread has a core of its own on a 2-core
    // machine: what is measured is whether the forward runs off the JS thread
    // (then the loop's worst delay is scheduling noise) or on it (then the
    // delay is the whole forward), not how the OS shares a saturated CPU.
    const threads = getNumThreads();
    setNumThreads(1);
    const histogram = monitorEventLoopDelay({ resolution: 1 });
    try {
      histogram.enable();
      const started = performance.now();
      await big.forward(x);
      const elapsed = performance.now() - started;
      histogram.disable();
      expect(elapsed).toBeGreaterThan(100);
      expect(histogram.max / 1e6, `event-loop delay max over a ${elapsed.toFixed(0)} ms forward`).toBeLessThan(Math.max(20, elapsed / 10));
    } finally {
      setNumThreads(threads);
    }
  });

  it('rejects bad input', async () => {
    const call = () => layer.forwardSync(tensor(new Float32Array(2 * 128), [2, 128]));
    expect(call).toThrow(MoeError);
    await expect(layer.forward(tensor(new Int32Array(256), [1, 256]) as never)).rejects.toMatchObject({ code: 'ERR_MOE_DTYPE' });
    expect(() => layer.forwardSync(tensor(new Float32Array(256), [1, 256]), { out: 'f16' as never })).toThrow(/options.out/);
    expect(() => MoeLayer.random({ ...SMALL, numGroups: 5 })).toThrow(MoeError);
    // x detached, and a weight detached after the layer has run (the addon
    // reads the weights once, so this must be caught before it reads freed memory).
    const x = tensor(randomFloats(4 * SMALL.hiddenSize, random), [4, SMALL.hiddenSize]);
    const own = MoeLayer.random(SMALL, { seed: SEED });
    own.forwardSync(x);
    const detachedX = tensor(randomFloats(4 * SMALL.hiddenSize, random), [4, SMALL.hiddenSize]);
    structuredClone(detachedX.data.buffer, { transfer: [detachedX.data.buffer as ArrayBuffer] });
    expect(() => own.forwardSync(detachedX)).toThrow(expect.objectContaining({ code: 'ERR_MOE_DETACHED' }));
    // A weight of a layer that has run is pinned (README, "Buffers and
    // concurrency"): a transfer throws (Node >= 21) or copies (Node 20).
    const w2 = own.weights.w2.data[0].data;
    try {
      structuredClone(w2.buffer, { transfer: [w2.buffer as ArrayBuffer] });
    } catch (e) {
      expect((e as Error).name).toBe('DataCloneError');
    }
    expect(w2.byteLength).toBeGreaterThan(0);
    expect(own.forwardSync(x).shape).toEqual(x.shape);
    // One detached before the layer first ran is caught before it is read.
    const fresh = MoeLayer.random(SMALL, { seed: SEED });
    const w13 = fresh.weights.w13.data[0].data;
    structuredClone(w13.buffer, { transfer: [w13.buffer as ArrayBuffer] });
    expect(() => fresh.forwardSync(x)).toThrow(expect.objectContaining({ code: 'ERR_MOE_DETACHED' }));
    await expect(fresh.forward(x)).rejects.toMatchObject({ code: 'ERR_MOE_DETACHED' });
  });
});

describe('MoeLayer.fromSafetensors', () => {
  const source = MoeLayer.random(SMALL, { seed: SEED + 7 });
  const layerIndex = 3;
  const fresh = tempDirs();

  it('loads a sharded DeepSeek-V3-format checkpoint and computes the same layer', async () => {
    const dir = writeCheckpoint(fresh(), SMALL, layerTensors(SMALL, source.weights, layerIndex), 3);
    const loaded = await MoeLayer.fromSafetensors(dir, { layer: layerIndex });
    expect(loaded.config).toEqual(SMALL);
    const x = tensor(randomFloats(9 * SMALL.hiddenSize, random), [9, SMALL.hiddenSize]);
    const a = source.forwardSync(x, { out: 'f32' }).data as Float32Array;
    const b = loaded.forwardSync(x, { out: 'f32' }).data as Float32Array;
    expect(Buffer.compare(Buffer.from(a.buffer), Buffer.from(b.buffer))).toBe(0);
    expect(calcDiff(b, referenceLayer(loaded, x.data as Float32Array, 9))).toBeLessThan(2e-3);
  });

  it('quantizes a bf16 (unquantized) checkpoint at load', async () => {
    const tensors = layerTensors(SMALL, source.weights, layerIndex);
    // Replace every expert weight by its dequantized bf16 values.
    for (const name of Object.keys(tensors)) {
      if (!name.endsWith('_proj.weight')) continue;
      const q = tensors[name];
      const scales = new Float32Array(tensors[`${name}_scale_inv`].bytes.slice().buffer);
      const [rows, cols] = q.shape;
      const values = new Float32Array(rows * cols);
      const { FP8_E4M3_VALUES } = await import('../lib/numerics');
      for (let i = 0; i < values.length; i++) {
        const r = Math.floor(i / cols);
        values[i] = FP8_E4M3_VALUES[q.bytes[i]] * scales[Math.floor(r / 128) * Math.ceil(cols / 128) + Math.floor((i % cols) / 128)];
      }
      const bf16 = bf16FromFloat32(values, [rows, cols]);
      tensors[name] = { dtype: 'BF16', shape: q.shape, bytes: new Uint8Array(bf16.data.buffer) };
      delete tensors[`${name}_scale_inv`];
    }
    const dir = writeCheckpoint(fresh(), SMALL, tensors, 2);
    const loaded = await MoeLayer.fromSafetensors(dir, { layer: layerIndex });
    const x = tensor(randomFloats(5 * SMALL.hiddenSize, random), [5, SMALL.hiddenSize]);
    const out = loaded.forwardSync(x, { out: 'f32' }).data as Float32Array;
    expect(calcDiff(out, referenceLayer(loaded, x.data as Float32Array, 5))).toBeLessThan(2e-3);
    expect(calcDiff(out, source.forwardSync(x, { out: 'f32' }).data as Float32Array)).toBeLessThan(2e-3);
  });

  for (const family of ['mixtral', 'qwen3_moe'] as const) {
    it(`loads a ${family} checkpoint (f32 weights under its own names) as a softmax-routed layer`, async () => {
      const config: MoeConfig = {
        ...SMALL, scoring: 'softmax', numGroups: 1, topKGroups: 1, topK: 2, numSharedExperts: 0, routedScalingFactor: 1, normTopKProb: true,
      };
      const softmaxSource = MoeLayer.random(config, { seed: SEED + 11 });
      const written = softmaxFamilyCheckpoint(family, config, softmaxSource.weights, layerIndex);
      const dir = writeCheckpointFiles(fresh(), written.config, written.tensors, 2);
      const loaded = await MoeLayer.fromSafetensors(dir, { layer: layerIndex });
      expect(loaded.config).toEqual(config);
      expect(loaded.weights.bias).toBeUndefined();
      const x = tensor(randomFloats(6 * SMALL.hiddenSize, random), [6, SMALL.hiddenSize]);
      const out = loaded.forwardSync(x, { out: 'f32' }).data as Float32Array;
      expect(calcDiff(out, referenceLayer(loaded, x.data as Float32Array, 6))).toBeLessThan(2e-3);
      expect(calcDiff(out, softmaxSource.forwardSync(x, { out: 'f32' }).data as Float32Array)).toBeLessThan(2e-3);
    });
  }

  it("rejects Qwen2-MoE's gated shared expert and Qwen's dense layers", async () => {
    const config: MoeConfig = { ...SMALL, scoring: 'softmax', numGroups: 1, topKGroups: 1, topK: 2, numSharedExperts: 0, routedScalingFactor: 1 };
    const written = softmaxFamilyCheckpoint('qwen3_moe', config, MoeLayer.random(config, { seed: SEED + 12 }).weights, layerIndex);
    const gated = writeCheckpointFiles(fresh(), { ...written.config, shared_expert_intermediate_size: 256 }, written.tensors, 1);
    await expect(MoeLayer.fromSafetensors(gated, { layer: layerIndex })).rejects.toThrow(/shared_expert_gate/);
    const dense = writeCheckpointFiles(fresh(), { ...written.config, mlp_only_layers: [layerIndex] }, written.tensors, 1);
    await expect(MoeLayer.fromSafetensors(dense, { layer: layerIndex })).rejects.toMatchObject({ code: 'ERR_MOE_RANGE' });
  });

  describe('broken checkpoints are errors naming the tensor and the file', () => {
    const write = (mutate: (dir: string, tensors: ReturnType<typeof layerTensors>) => void, shards = 2) => {
      const dir = fresh();
      const tensors = layerTensors(SMALL, source.weights, layerIndex);
      mutate(dir, tensors);
      writeCheckpoint(dir, SMALL, tensors, shards);
      return dir;
    };
    const expectFailure = async (dir: string, pattern: RegExp, layer = layerIndex) => {
      const error = await MoeLayer.fromSafetensors(dir, { layer }).catch((e) => e);
      expect(error).toBeInstanceOf(MoeError);
      expect(error.message).toMatch(pattern);
      return error as MoeError;
    };
    const expert = `model.layers.${layerIndex}.mlp.experts.5`;

    it('a missing tensor', async () => {
      const dir = write((_, t) => delete t[`${expert}.up_proj.weight`]);
      expect((await expectFailure(dir, /experts\.5\.up_proj\.weight.*not in the checkpoint/)).code).toBe('ERR_MOE_CHECKPOINT');
    });

    it('a tensor of the wrong dtype or shape', async () => {
      const dir = write((_, t) => {
        const w = t[`${expert}.down_proj.weight`];
        t[`${expert}.down_proj.weight`] = { dtype: 'I8', shape: w.shape, bytes: w.bytes };
      });
      await expectFailure(dir, /experts\.5\.down_proj\.weight in model-0000\d-of-00002\.safetensors: expected F8_E4M3 or BF16 or F32 \[256, 128\], got I8/);
      const dir2 = write((_, t) => {
        const w = t[`${expert}.gate_proj.weight`];
        t[`${expert}.gate_proj.weight`] = { ...w, shape: [64, 512] };
      });
      await expectFailure(dir2, /gate_proj\.weight.*got F8_E4M3 \[64, 512\]/);
    });

    it('a truncated shard, a bad header, a header length past the end', async () => {
      const dir = write(() => {});
      const shard = path.join(dir, 'model-00002-of-00002.safetensors');
      const whole = fs.readFileSync(shard);
      fs.writeFileSync(shard, whole.subarray(0, whole.length - 100));
      await expectFailure(dir, /model-00002-of-00002\.safetensors: tensors cover \d+ data bytes, the file holds \d+/);

      const header = Buffer.from(whole);
      header.write('@', 9); // inside the JSON header
      fs.writeFileSync(shard, header);
      await expectFailure(dir, /model-00002-of-00002\.safetensors: header is not valid JSON/);

      const huge = Buffer.from(whole);
      huge.writeBigUInt64LE(BigInt(whole.length), 0);
      fs.writeFileSync(shard, huge);
      await expectFailure(dir, /header length \d+ exceeds the file/);

      fs.writeFileSync(shard, Buffer.alloc(5));
      await expectFailure(dir, /too short/);
    });

    it('overlapping tensors, a missing shard, a dense layer, a bad config', async () => {
      const dir = write(() => {});
      fs.rmSync(path.join(dir, 'model-00001-of-00002.safetensors'));
      await expectFailure(dir, /model-00001-of-00002\.safetensors: cannot open/);

      const dense = write(() => {});
      await expectFailure(dense, /layer 0 is a dense layer/, 0);

      const badConfig = write(() => {});
      fs.writeFileSync(path.join(badConfig, 'config.json'), JSON.stringify({ hidden_size: 256, n_routed_experts: 8 }));
      await expectFailure(badConfig, /config\.json: 'moe_intermediate_size' must be a non-negative integer/);
      fs.writeFileSync(path.join(badConfig, 'config.json'), JSON.stringify({ hidden_size: 256 }));
      await expectFailure(badConfig, /config\.json: not a known MoE config/);

      const overlap = fresh();
      fs.writeFileSync(path.join(overlap, 'config.json'), JSON.stringify({}));
      const body = Buffer.from(JSON.stringify({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }));
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(body.length));
      fs.writeFileSync(path.join(overlap, 'model.safetensors'), Buffer.concat([len, body, Buffer.alloc(12)]));
      const { SafetensorsFile } = await import('../lib/index');
      expect(() => SafetensorsFile.open(path.join(overlap, 'model.safetensors'))).toThrow(/tensor 'b' starts at byte 4, expected 8/);
    });
  });
});
