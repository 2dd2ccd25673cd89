import { beforeAll, describe, expect, it } from 'vitest';
import { MoeConfig, MoeLayer, backends, bf16FromFloat32, referenceForwardToken, tensor, type ForwardProfile } from '../lib/index';
import { calcDiff } from './helpers/reference';
import { smallDeepSeekConfig } from './helpers/moe-config';
import { randomFloats, rng, seedNote, SEED } from './helpers/random';

// MoeLayer on the GPU: weights resident on the device, the forward enqueued
// on the plug-in's stream (contiguous layout with one host sync for R, the
// masked decode layout with none), and CUDA graph capture / replay. Compared
// with the CPU layer (the same fp8 weights) and a float64 reference.
// Skipped where backends() says CUDA is unavailable; there the layer must
// fail with a clear MoeError instead of crashing.
const cuda = backends().find((b) => b.name === 'cuda')!;

const SMALL: MoeConfig = smallDeepSeekConfig(512, 256);

describe.skipIf(cuda.available)('MoeLayer on CUDA without a GPU', () => {
  it(`fails with ERR_MOE_DEVICE, not a crash (${cuda.reason})`, () => {
    expect(() => MoeLayer.random(SMALL, { seed: 1, device: 'cuda' })).toThrow(expect.objectContaining({ code: 'ERR_MOE_DEVICE' }));
    const layer = MoeLayer.random(SMALL, { seed: 1 });
    expect(() => layer.to('cuda')).toThrow(expect.objectContaining({ code: 'ERR_MOE_DEVICE' }));
    expect(() => layer.capture({ maxTokens: 4 })).toThrow(expect.objectContaining({ code: 'ERR_MOE_DEVICE' }));
  });
});

describe.skipIf(!cuda.available)('MoeLayer on the GPU', () => {
  // Built in beforeAll: describe bodies run (to collect tests) even when skipped.
  let cpu: MoeLayer;
  let gpu: MoeLayer;
  beforeAll(() => {
    cpu = MoeLayer.random(SMALL, { seed: SEED });
    gpu = cpu.to('cuda');
  });
  const h = SMALL.hiddenSize;

  function reference(x: Float32Array, tokens: number): Float64Array {
    const out = new Float64Array(tokens * h);
    for (let t = 0; t < tokens; t++) out.set(referenceForwardToken(cpu.config, cpu.weights, Float64Array.from(x.subarray(t * h, (t + 1) * h))).out, t * h);
    return out;
  }

  for (const [tokens, layout] of [[1, 'masked'], [5, 'masked'], [16, 'contiguous'], [200, 'contiguous'], [37, 'masked']] as const) {
    it(`T=${tokens} (${layout}): matches the CPU layer (diff < 1e-3) and the float64 reference (diff < 2e-3) ${seedNote}`, async () => {
      const values = randomFloats(tokens * h, rng(tokens), 1);
      const x = bf16FromFloat32(values, [tokens, h]);
      const want = cpu.forwardSync(x, { out: 'f32' }).toFloat32Array();
      const got = await gpu.forward(x.to('cuda'), { out: 'f32', layout });
      expect(got.device).toBe('cuda');
      const g = got.toFloat32Array();
      // Not bitwise: router logits and GEMMs sum in another order (bf16 / fp8 roundings may flip), and a near-tie may route differently.
      expect(calcDiff(g, want)).toBeLessThan(1e-3);
      expect(calcDiff(g, reference(x.toFloat32Array(), tokens))).toBeLessThan(2e-3);
      // The same input again: bitwise the same output (no atomics anywhere).
      const again = gpu.forwardSync(x, { out: 'f32', layout }).toFloat32Array();
      expect(Buffer.from(again.buffer).equals(Buffer.from(g.buffer))).toBe(true);
    });
  }

  it("{ profile }: the CPU layer's experts and rows; stage times are the documented capability difference (0: the forward's calls return before the GPU ran them)", async () => {
    const tokens = 24;
    const x = bf16FromFloat32(randomFloats(tokens * h, rng(24), 1), [tokens, h]);
    const want: ForwardProfile = {} as ForwardProfile;
    const got: ForwardProfile = {} as ForwardProfile;
    cpu.forwardSync(x, { profile: want });
    await gpu.forward(x, { profile: got, layout: 'contiguous' });
    // (A near-tie may route one token differently on the GPU: the counts agree to a few experts.)
    expect(Math.abs(got.activeExperts - want.activeExperts)).toBeLessThanOrEqual(2);
    expect(got.activeExperts).toBeGreaterThan(0);
    expect(Object.keys(got.stages).sort()).toEqual(Object.keys(want.stages).sort());
    expect(Object.values(got.stages).every((ms) => ms === 0)).toBe(true);
    expect(Object.values(want.stages).some((ms) => ms > 0)).toBe(true);
  });

  it('reports NaN in x as ERR_MOE_NONFINITE after the forward', () => {
    const x = bf16FromFloat32(new Float32Array(2 * h).fill(NaN), [2, h]);
    expect(() => gpu.forwardSync(x)).toThrow(expect.objectContaining({ code: 'ERR_MOE_NONFINITE' }));
  });

  it('a captured decode forward replays to the uncaptured forward, bit for bit', async () => {
    const graph = gpu.capture({ maxTokens: 4 });
    try {
      for (const tokens of [4, 4, 2, 1]) {
        const x = bf16FromFloat32(randomFloats(tokens * h, rng(100 + tokens), 1), [tokens, h]);
        const replayed = (await graph.replay(x)).toFloat32Array();
        // Fewer tokens are zero-padded to 4: bit for bit the forward of the padded input, first rows
        // (a forward of the rows alone may take other GEMM paths and round differently).
        const padded = new Uint16Array(4 * h);
        padded.set(x.data as Uint16Array);
        const direct = gpu.forwardSync(tensor(padded, [4, h], 'bf16'), { layout: 'masked' }).toFloat32Array().subarray(0, tokens * h);
        expect(Buffer.from(replayed.buffer).equals(Buffer.from(direct.buffer.slice(direct.byteOffset, direct.byteOffset + direct.byteLength)))).toBe(true);
      }
    } finally {
      graph.dispose();
    }
  });

  it('ragged sizes (H, I not multiples of 128; few experts) match the CPU layer in both layouts', async () => {
    const ragged: MoeConfig = { ...SMALL, hiddenSize: 272, intermediateSize: 144, numExperts: 16, numGroups: 4, topKGroups: 2, topK: 4 };
    const host = MoeLayer.random(ragged, { seed: SEED + 1 });
    const device = host.to('cuda');
    for (const [tokens, layout] of [[5, 'masked'], [40, 'contiguous']] as const) {
      const x = bf16FromFloat32(randomFloats(tokens * 272, rng(300 + tokens), 1), [tokens, 272]);
      const want = host.forwardSync(x, { out: 'f32' }).toFloat32Array();
      const got = (await device.forward(x, { out: 'f32', layout })).toFloat32Array();
      expect(calcDiff(got, want), `T=${tokens} ${layout}`).toBeLessThan(1e-3);
    }
  });

  it('concurrent replays of one captured forward each return their own output', async () => {
    const graph = gpu.capture({ maxTokens: 4 });
    try {
      const xs = [4, 4, 4].map((tokens, i) => bf16FromFloat32(randomFloats(tokens * h, rng(200 + i), 1), [tokens, h]));
      const outs = await Promise.all(xs.map((x) => graph.replay(x)));
      xs.forEach((x, i) => {
        const direct = gpu.forwardSync(x, { layout: 'masked' }).toFloat32Array();
        expect(Buffer.from(outs[i].toFloat32Array().buffer).equals(Buffer.from(direct.buffer))).toBe(true);
      });
    } finally {
      graph.dispose();
    }
  });
});
