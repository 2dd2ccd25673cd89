import * as diagnosticsChannel from 'node:diagnostics_channel';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BATCH_CHANNEL, BatchEvent, MoeConfig, MoeLayer, backends, tensor } from '../lib/index';
import { calcDiff } from './helpers/reference';
import { smallDeepSeekConfig } from './helpers/moe-config';
import { randomFloats, rng, seedNote, SEED } from './helpers/random';

// MoeBatcher over a CUDA layer: batches up to 16 rows are padded to a
// captured CUDA-graph size and replayed; larger ones run as plain forwards.
// Each request is compared with its rows run alone through the GPU layer.
// Skipped where backends() says CUDA is unavailable (CI runs it on the
// plug-in's CPU emulation).
const cuda = backends().find((b) => b.name === 'cuda')!;
const SMALL: MoeConfig = smallDeepSeekConfig(256, 128);
const H = SMALL.hiddenSize;
const random = rng();

describe.skipIf(!cuda.available)('MoeBatcher on a CUDA layer', () => {
  let gpu: MoeLayer;
  const events: BatchEvent[] = [];
  const onBatch = (e: unknown) => events.push(e as BatchEvent);
  beforeAll(() => {
    gpu = MoeLayer.random(SMALL, { seed: SEED }).to('cuda');
    diagnosticsChannel.subscribe(BATCH_CHANNEL, onBatch);
  });
  afterAll(() => diagnosticsChannel.unsubscribe(BATCH_CHANNEL, onBatch));

  async function alone(x: Float32Array): Promise<Float32Array> {
    const y = await gpu.forward(tensor(x, [x.length / H, H]), { out: 'f32' });
    const host = y.to('cpu').data as Float32Array;
    y.dispose();
    return host;
  }

  it(`replays captured graphs for small batches and gives each request its own rows ${seedNote}`, async () => {
    events.length = 0;
    const batcher = gpu.batcher({ out: 'f32', graphBuckets: [2, 4, 8, 16], maxBatchTokens: 64 });
    const xs = Array.from({ length: 60 }, () => randomFloats((1 + Math.floor(random() * 3)) * H, random));
    const ys = await Promise.all(xs.map((x) => batcher.submit(x)));
    // A lone request: the smallest bucket that holds it.
    const lone = randomFloats(3 * H, random);
    const yLone = await batcher.submit(lone);
    await batcher.close();
    for (let i = 0; i < xs.length; i++) {
      expect(ys[i].device).toBe('cpu');
      expect(calcDiff(ys[i].data as Float32Array, await alone(xs[i])), `request ${i}`).toBeLessThan(1e-4);
    }
    expect(calcDiff(yLone.data as Float32Array, await alone(lone))).toBeLessThan(1e-4);
    expect(events.at(-1)).toMatchObject({ tokens: 3, paddedTokens: 4, graph: true });
    for (const e of events) {
      if (e.tokens <= 16) expect(e).toMatchObject({ graph: true, paddedTokens: [2, 4, 8, 16].find((s) => s >= e.tokens) });
      else expect(e).toMatchObject({ graph: false, paddedTokens: e.tokens });
    }
    expect(events.some((e) => e.graph)).toBe(true);
  });

  it('fails a NaN request alone', async () => {
    const batcher = gpu.batcher({ out: 'f32', maxWaitMs: 60_000 });
    const good = randomFloats(H, random);
    const bad = randomFloats(H, random);
    bad[3] = NaN;
    const ok = batcher.submit(good);
    await expect(batcher.submit(bad)).rejects.toMatchObject({ code: 'ERR_MOE_NONFINITE' });
    await batcher.close();
    expect(calcDiff((await ok).data as Float32Array, await alone(good))).toBeLessThan(1e-4);
  });

  it('refuses batchInvariant (CPU layers only)', () => {
    expect(() => gpu.batcher({ batchInvariant: true })).toThrow(expect.objectContaining({ code: 'ERR_MOE_UNSUPPORTED' }));
  });
});
