/**
 * Many concurrent forwards of one layer do not each allocate a workspace: at
 * most MAX_CONCURRENT_FORWARDS run, the rest wait in call order.
 */
import { describe, expect, it, vi } from 'vitest';
import { MoeLayer, tensor } from '../lib/index';
import { MAX_CONCURRENT_FORWARDS } from '../lib/moe/layer';
import { native } from '../lib/native';
import { randomFloats, rng } from './helpers/random';
import { smallDeepSeekConfig } from './helpers/moe-config';

const random = rng();

describe('concurrent forwards of one layer', () => {
  it('allocate at most MAX_CONCURRENT_FORWARDS workspaces, and all complete with the sync result', async () => {
    const config = { ...smallDeepSeekConfig(128, 128), numExperts: 8, numGroups: 4, topKGroups: 2, topK: 4 };
    const layer = MoeLayer.random(config, { seed: 6 });
    const x = tensor(randomFloats(64 * 128, random), [64, 128]);
    const expected = layer.forwardSync(x, { out: 'f32' }).data;
    // Each new workspace is read by the addon once per token count.
    const prepare = vi.spyOn(native(), 'moePrepareWorkspace');
    const results = await Promise.all(Array.from({ length: 32 }, () => layer.forward(x, { out: 'f32' })));
    expect(prepare.mock.calls.length).toBeLessThanOrEqual(MAX_CONCURRENT_FORWARDS);
    prepare.mockRestore();
    for (const y of results) expect(Buffer.compare(Buffer.from(y.data.buffer), Buffer.from(expected.buffer))).toBe(0);
    // The queue drains: a later forward runs at once.
    await expect(layer.forward(x)).resolves.toBeDefined();
  });
});
