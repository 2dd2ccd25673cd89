import { describe, expect, expectTypeOf, it } from 'vitest';
import { MoeBatcher, MoeLayer, Tensor, bf16FromFloat32, tensor } from '../lib/index';
import { smallDeepSeekConfig } from './helpers/moe-config';
import { randomFloats, rng } from './helpers/random';

// Typed, zero-copy I/O for servers: forward's output dtype in its type,
// tensors over request bytes at any offset, and layers freed on demand.
const random = rng();
const SMALL = smallDeepSeekConfig(256, 128);
const H = SMALL.hiddenSize;

describe('typed forward outputs', () => {
  const layer = MoeLayer.random(SMALL, { seed: 1 });
  it("types forward(x, { out: 'f32' }) as Tensor<'f32'> and the default as Tensor<'bf16'>", async () => {
    const x = tensor(randomFloats(2 * H, random), [2, H]);
    const y = await layer.forward(x, { out: 'f32' });
    expectTypeOf(y).toEqualTypeOf<Tensor<'f32'>>();
    expectTypeOf(y.data).toEqualTypeOf<Float32Array>();
    expect(y.data).toBeInstanceOf(Float32Array);
    const z = layer.forwardSync(x);
    expectTypeOf(z).toEqualTypeOf<Tensor<'bf16'>>();
    expect(z.data).toBeInstanceOf(Uint16Array);
    const batcher = layer.batcher({ out: 'f32' });
    expectTypeOf(batcher).toEqualTypeOf<MoeBatcher<'f32'>>();
    const r = await batcher.submit(x);
    expectTypeOf(r).toEqualTypeOf<Tensor<'f32'>>();
    expect(Array.from(r.data)).toEqual(Array.from(y.data));
    await batcher.close();
  });
});

describe('tensor() over bytes', () => {
  it('reads little-endian f32, bf16 and i32 bytes at any offset', () => {
    const values = randomFloats(12, random);
    for (const offset of [0, 1, 2, 3, 4]) {
      const buf = Buffer.alloc(values.byteLength + offset);
      buf.set(new Uint8Array(values.buffer), offset);
      const t = tensor(buf.subarray(offset), [3, 4], 'f32');
      expectTypeOf(t).toEqualTypeOf<Tensor<'f32'>>();
      expect(Array.from(t.data)).toEqual(Array.from(values));
      if (offset % 4 === 0) expect(t.data.buffer).toBe(buf.buffer); // in place where aligned
    }
    const b = bf16FromFloat32(values, [12]);
    const bytes = Buffer.alloc(25);
    bytes.set(new Uint8Array(b.data.buffer, b.data.byteOffset, 24), 1);
    expect(Array.from(tensor(bytes.subarray(1), [12], 'bf16').data)).toEqual(Array.from(b.data));
    expect(Array.from(tensor(new Uint8Array(new Int32Array([7, -9]).buffer), [2], 'i32').data)).toEqual([7, -9]);
    expect(tensor(new Uint8Array(6), [6]).dtype).toBe('fp8_e4m3'); // bytes without a dtype stay fp8 codes
  });

  it('rejects a byte count that is not a whole number of values, or a shape that does not match', () => {
    expect(() => tensor(new Uint8Array(6), [1], 'f32')).toThrow(expect.objectContaining({ code: 'ERR_MOE_SHAPE' }));
    expect(() => tensor(new Uint8Array(8), [3], 'f32')).toThrow(expect.objectContaining({ code: 'ERR_MOE_SHAPE' }));
  });
});

describe('MoeLayer.dispose', () => {
  it('frees the layer; later forwards and batchers fail with ERR_MOE_CLOSED', async () => {
    const x = tensor(randomFloats(H, random), [1, H]);
    let kept: MoeLayer;
    {
      using layer = MoeLayer.random(SMALL, { seed: 2 });
      kept = layer;
      await layer.forward(x);
    }
    expect(() => kept.forwardSync(x)).toThrow(expect.objectContaining({ code: 'ERR_MOE_CLOSED' }));
    await expect(kept.forward(x)).rejects.toMatchObject({ code: 'ERR_MOE_CLOSED' });
    expect(() => kept.batcher()).toThrow(expect.objectContaining({ code: 'ERR_MOE_CLOSED' }));
    kept.dispose(); // twice is fine
  });
});
