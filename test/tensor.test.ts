import { describe, expect, it } from 'vitest';
import { MoeError, Tensor, bf16FromFloat32, empty, fp8FromFloat32, tensor } from '../lib/index';

describe('tensor', () => {
  it('infers the dtype from the typed array', () => {
    expect(tensor(new Float32Array(6), [2, 3]).dtype).toBe('f32');
    expect(tensor(new Uint16Array(6), [2, 3]).dtype).toBe('bf16');
    expect(tensor(new Uint8Array(6), [2, 3]).dtype).toBe('fp8_e4m3');
    expect(tensor(new Int32Array(6), [6]).dtype).toBe('i32');
  });

  it('is a zero-copy view that respects byteOffset', () => {
    const backing = new Float32Array([9, 1, 2, 3, 4, 9]);
    const view = backing.subarray(1, 5);
    const t = tensor(view, [2, 2]);
    expect(t.data).toBe(view);
    expect(t.data.byteOffset).toBe(4);
    backing[2] = 42;
    expect(Array.from(t.toFloat32Array())).toEqual([1, 42, 3, 4]);
    expect(t.shape).toEqual([2, 2]);
    expect(t.device).toBe('cpu');
  });

  it('decodes bf16 and fp8 exactly', () => {
    const values = new Float32Array([1, -2.5, 0.15625, 448]);
    expect(Array.from(bf16FromFloat32(values, [4]).toFloat32Array())).toEqual([1, -2.5, 0.15625, 448]);
    expect(Array.from(fp8FromFloat32(values, [2, 2]).toFloat32Array())).toEqual([1, -2.5, 0.15625, 448]);
  });

  it('rejects mismatched data, dtype and shape with MoeError', () => {
    const bad = [
      () => tensor(new Float32Array(5), [2, 3]),
      () => tensor(new Float32Array(6) as unknown as Uint16Array, [2, 3], 'bf16'),
      () => tensor([1, 2] as unknown as Float32Array, [2]),
      () => tensor(new Float64Array(2) as unknown as Float32Array, [2]),
      () => tensor(new Float32Array(2), [2, -1]),
      () => tensor(new Float32Array(2), [2.5]),
      () => tensor(new Float32Array(2), [1, 1, 1, 1, 2]),
      () => tensor(new Float32Array(2), [2], 'f64' as 'f32'),
      () => empty([2, NaN], 'f32'),
      () => fp8FromFloat32(new Float32Array(3), [2, 2]),
    ];
    for (const call of bad) {
      expect(call).toThrow(MoeError);
    }
    try {
      tensor(new Float32Array(5), [2, 3]);
    } catch (error) {
      expect((error as MoeError).code).toBe('ERR_MOE_SHAPE');
      expect((error as MoeError).message).toMatch(/\[2, 3\].*6.*5/);
    }
    expect(empty([2, 3], 'bf16')).toBeInstanceOf(Tensor);
  });
});

describe('long-lived host buffers', () => {
  it('are zeroed arrays of the dtype, and large ones are offered huge pages where Linux has them', async () => {
    const { allocateLongLived } = await import('../lib/tensor');
    const { native } = await import('../lib/native');
    const small = allocateLongLived('bf16', 1000);
    expect(small).toBeInstanceOf(Uint16Array);
    expect(small.length).toBe(1000);
    const large = allocateLongLived('fp8_e4m3', 16 << 20);
    expect(large).toBeInstanceOf(Uint8Array);
    expect(large.every((v) => v === 0)).toBe(true);
    expect(native().adviseHugePages(new Uint8Array(1 << 20))).toBe(false); // below the 4 MiB floor
    const fs = await import('node:fs');
    const thp = '/sys/kernel/mm/transparent_hugepage/enabled';
    if (process.platform === 'linux' && fs.existsSync(thp) && !fs.readFileSync(thp, 'utf8').includes('[never]')) {
      expect(native().adviseHugePages(new Uint8Array(16 << 20))).toBe(true);
    }
    expect(() => native().adviseHugePages({} as Uint8Array)).toThrow(TypeError);
  });
});
