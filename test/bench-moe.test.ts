import { describe, expect, it } from 'vitest';
import { MoeLayer, bf16FromFloat32 } from '../lib/index';
import { benchMoe } from '../lib/bench/moe';
import { weightEvictor } from '../lib/bench/cache-evictor';
import { native } from '../lib/native';
import { smallDeepSeekConfig } from './helpers/moe-config';
import { randomFloats, rng, SEED } from './helpers/random';

const random = rng();
const x86 = process.arch === 'x64';

describe('evictFromCaches', () => {
  it('drops cache lines without changing the data', () => {
    const data = Uint8Array.from(randomFloats(100_003, random, 100), (v) => v & 0xff);
    const before = data.slice();
    // An unaligned view: the first and last lines are partial.
    expect(native().evictFromCaches(data.subarray(3, 99_999))).toBe(x86);
    expect(native().evictFromCaches(new Float32Array(0))).toBe(x86);
    expect(data).toEqual(before);
  });

  it('rejects what is not a typed array, and reports a detached one', () => {
    expect(() => native().evictFromCaches({} as Uint8Array)).toThrow(TypeError);
    const buffer = new ArrayBuffer(4096);
    const view = new Uint8Array(buffer);
    structuredClone(buffer, { transfer: [buffer] });  // detaches `view`
    expect(native().evictFromCaches(view)).toBe(false);
  });
});

describe('bench moe', () => {
  const layer = MoeLayer.random(smallDeepSeekConfig(256, 128), { seed: SEED });

  it('evicts every host weight, and the forward still gives the same bits', () => {
    const h = layer.config.hiddenSize;
    const x = bf16FromFloat32(randomFloats(5 * h, random), [5, h]);
    const first = layer.forwardSync(x).data.slice();
    const evict = weightEvictor(layer);
    expect(evict !== undefined).toBe(x86);
    evict?.();
    expect(layer.forwardSync(x).data).toEqual(first);
    // Every weight tensor the forward reads: router, experts' data and scales (the small config has a shared expert).
    const shards = layer.weights.w13.data.length + layer.weights.w2.data.length;
    expect(layer.hostWeights().length).toBeGreaterThanOrEqual(1 + 2 * shards + 4);
  });

  it('reports each batch with cold weights by default and warm on request', async () => {
    const cold = await benchMoe(layer, { tokenCounts: [1, 3], timeMs: 5 });
    expect(cold.coldCache).toBe(x86);
    expect(cold.rows.map((r) => r.tokens)).toEqual([1, 3]);
    for (const row of cold.rows) {
      expect(row.ms).toBeGreaterThan(0);
      expect(row.rooflineRatio).toBeGreaterThan(0);
      expect(row.nonGemmShare).toBeGreaterThan(0);
      expect(row.nonGemmShare).toBeLessThan(1);
    }
    const warm = await benchMoe(layer, { tokenCounts: [2], timeMs: 5, warmCache: true });
    expect(warm.coldCache).toBe(false);
  });
});
