import { describe, expect, it } from 'vitest';
import { MoeConfig, MoeLayer, bf16FromFloat32, cpuInfo, tensor } from '../lib/index';
import { smallDeepSeekConfig } from './helpers/moe-config';
import { randomFloats, rng, seedNote, SEED } from './helpers/random';

// batchInvariant: a token's output bits do not depend on what shares its
// batch. Every row of a batch is compared bit for bit with the same token
// run alone (T = 1), at batch sizes on both sides of every kernel switch
// (router: 8-token blocks; GEMM: streaming up to 8 rows, packed or AMX above).
const random = rng();
const SMALL: MoeConfig = smallDeepSeekConfig(256, 128);
const H = SMALL.hiddenSize;

function bits(a: Float32Array | Uint16Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Rows of `batch` [T, H] whose bits differ from the same token alone. */
function rowsDifferingFromAlone(layer: MoeLayer, x: Float32Array, tokens: number, batchInvariant: boolean): number[] {
  const batch = layer.forwardSync(tensor(x, [tokens, H]), { out: 'f32', batchInvariant }).data as Float32Array;
  const differ: number[] = [];
  for (let t = 0; t < tokens; t++) {
    const alone = layer.forwardSync(tensor(x.slice(t * H, (t + 1) * H), [1, H]), { out: 'f32', batchInvariant }).data as Float32Array;
    if (Buffer.compare(bits(alone), bits(batch.subarray(t * H, (t + 1) * H))) !== 0) differ.push(t);
  }
  return differ;
}

describe(`batchInvariant (CPU, ${cpuInfo().gemmIsa})`, () => {
  const layer = MoeLayer.random(SMALL, { seed: SEED });

  for (const tokens of [2, 8, 9, 17, 64, 300]) {
    it(`gives every token of a batch of ${tokens} the bits it has alone ${seedNote}`, () => {
      const x = randomFloats(tokens * H, random);
      expect(rowsDifferingFromAlone(layer, x, tokens, true)).toEqual([]);
    });
  }

  it(`holds for bf16 input and bf16 output too ${seedNote}`, () => {
    const tokens = 40;
    const x = bf16FromFloat32(randomFloats(tokens * H, random), [tokens, H]);
    const batch = layer.forwardSync(x, { batchInvariant: true }).data as Uint16Array;
    for (let t = 0; t < tokens; t++) {
      const one = tensor(x.data.slice(t * H, (t + 1) * H), [1, H], 'bf16');
      const alone = layer.forwardSync(one, { batchInvariant: true }).data as Uint16Array;
      expect(Buffer.compare(bits(alone), bits(batch.subarray(t * H, (t + 1) * H))), `token ${t}`).toBe(0);
    }
  });

  it(`holds through a batcher: 300 concurrent requests each get the bits of their rows alone ${seedNote}`, async () => {
    const batcher = layer.batcher({ out: 'f32', batchInvariant: true, maxBatchTokens: 128, maxQueueTokens: 4096 });
    const xs = Array.from({ length: 300 }, () => randomFloats((1 + Math.floor(random() * 4)) * H, random));
    const ys = await Promise.all(xs.map((x) => batcher.submit(x)));
    await batcher.close();
    expect(batcher.stats().meanBatchTokens).toBeGreaterThan(8); // batches larger than the kernels' switch points
    xs.forEach((x, i) => {
      const alone = layer.forwardSync(tensor(x, [x.length / H, H]), { out: 'f32', batchInvariant: true }).data as Float32Array;
      expect(Buffer.compare(bits(alone), bits(ys[i].data as Float32Array)), `request ${i}`).toBe(0);
    });
  });

  it('is a boolean option', () => {
    const x = tensor(randomFloats(H, random), [1, H]);
    expect(() => layer.forwardSync(x, { batchInvariant: 1 as unknown as boolean })).toThrow(expect.objectContaining({ code: 'ERR_MOE_ARGUMENT' }));
  });
});
