/**
 * The addon can be called without lib/ in front of it, so the native checks
 * (core/op_checks.cpp, core/moe_op_checks.cpp: one copy, run by every
 * backend) must refuse bad arguments of every op with the code lib/ gives,
 * never crash. Each op: one valid call (so that each bad call below differs
 * from a good one only in what it names), then bad ones, on the CPU and, where
 * it is available (a GPU or the emulator), the CUDA backend.
 */
import { describe, expect, it } from 'vitest';
import { backends, tensor, type Device, type Tensor } from '../lib/index';
import { native } from '../lib/native';
import { expectMoeError } from './helpers/errors';

const cuda = backends().find((b) => b.name === 'cuda')!;
const devices: Device[] = cuda.available ? ['cpu', 'cuda'] : ['cpu'];

type Args = Record<string, unknown>;
type Case = [what: string, change: Args, code: string];

for (const device of devices) {
  // Zero-filled tensors on `device` (zeros are valid ids, rows and values).
  const f32 = (...shape: number[]) => tensor(new Float32Array(count(shape)), shape, 'f32').to(device);
  const bf16 = (...shape: number[]) => tensor(new Uint16Array(count(shape)), shape, 'bf16').to(device);
  const fp8 = (...shape: number[]) => tensor(new Uint8Array(count(shape)), shape, 'fp8_e4m3').to(device);
  const i32 = (...shape: number[]) => tensor(new Int32Array(count(shape)), shape, 'i32').to(device);
  // The same memory under another shape (a device tensor cannot be re-made without it).
  const reshaped = (t: Tensor, ...shape: number[]) =>
    ({ data: t.device === 'cpu' ? t.data : undefined, dtype: t.dtype, shape, device: t.device, handle: (t as unknown as { handle: unknown }).handle }) as unknown as Tensor;

  const ops: Array<[op: string, valid: () => Args, bad: () => Case[]]> = [
    [
      'quantizeActivations',
      () => ({ x: f32(4, 32), q: fp8(4, 32), scales: f32(4, 1), scaleFormat: 'f32' }),
      () => [
        ['q of another shape', { q: fp8(4, 16) }, 'ERR_MOE_SHAPE'],
        ['bf16 scales', { scales: bf16(4, 1) }, 'ERR_MOE_DTYPE'],
        ['i32 x', { x: i32(4, 32) }, 'ERR_MOE_DTYPE'],
        ['an unknown scale format', { scaleFormat: 'e8' }, 'ERR_MOE_RANGE'],
      ],
    ],
    [
      'quantizeWeights',
      () => ({ x: f32(4, 32), q: fp8(4, 32), scales: f32(1, 1), scaleFormat: 'f32' }),
      () => [
        ['per-token scales', { scales: f32(4, 1) }, 'ERR_MOE_SHAPE'],
        ['an f32 q', { q: f32(4, 32) }, 'ERR_MOE_DTYPE'],
      ],
    ],
    [
      'dequantize',
      () => ({ q: fp8(4, 32), scales: f32(4, 1), blockRows: 1, out: f32(4, 32) }),
      () => [
        ['blockRows 7', { blockRows: 7 }, 'ERR_MOE_RANGE'],
        ['out of another shape', { out: f32(4, 16) }, 'ERR_MOE_SHAPE'],
        ['an i32 out', { out: i32(4, 32) }, 'ERR_MOE_DTYPE'],
      ],
    ],
    [
      'gemmFp8',
      () => ({ a: fp8(2, 32), aScales: f32(2, 1), b: fp8(3, 32), bScales: f32(1, 1), d: f32(2, 3) }),
      () => [
        ['b of another K', { b: fp8(3, 16) }, 'ERR_MOE_SHAPE'],
        ['d of another N', { d: f32(2, 4) }, 'ERR_MOE_SHAPE'],
        ['fp8 a scales', { aScales: fp8(2, 1) }, 'ERR_MOE_DTYPE'],
        ['an i32 d', { d: i32(2, 3) }, 'ERR_MOE_DTYPE'],
      ],
    ],
    [
      'groupedGemmFp8',
      () => ({ a: fp8(4, 32), aScales: f32(4, 1), b: fp8(2, 8, 32), bScales: f32(2, 1, 1), groupIndex: i32(4), d: f32(4, 8) }),
      () => [
        ['groupIndex of 3 rows', { groupIndex: i32(3) }, 'ERR_MOE_SHAPE'],
        ['2-D b', { b: fp8(16, 32) }, 'ERR_MOE_SHAPE'],
        ['f32 groupIndex', { groupIndex: f32(4) }, 'ERR_MOE_DTYPE'],
        ['d of another N', { d: f32(4, 9) }, 'ERR_MOE_SHAPE'],
      ],
    ],
    [
      'groupedGemmFp8 (masked)',
      () => ({ a: fp8(2, 4, 32), aScales: f32(2, 4, 1), b: fp8(2, 8, 32), bScales: f32(2, 1, 1), maskedM: i32(2), d: f32(2, 4, 8) }),
      () => [
        ['maskedM of 3 groups', { maskedM: i32(3) }, 'ERR_MOE_SHAPE'],
        ['a of 3 groups', { a: fp8(3, 4, 32), aScales: f32(3, 4, 1) }, 'ERR_MOE_SHAPE'],
        ['f32 maskedM', { maskedM: f32(2) }, 'ERR_MOE_DTYPE'],
      ],
    ],
    [
      'route',
      () => ({
        logits: f32(4, 8), ids: i32(4, 2), weights: f32(4, 2),
        scoring: 'softmax', topK: 2, numGroups: 1, topKGroups: 1, renormalize: false, scale: 1,
      }),
      () => [
        ['topK over E', { topK: 9, ids: i32(4, 9), weights: f32(4, 9) }, 'ERR_MOE_RANGE'],
        // Both drifts once found between lib/ and native code:
        ['groups with softmax', { numGroups: 2 }, 'ERR_MOE_RANGE'],
        ['a NaN scale', { scale: NaN }, 'ERR_MOE_RANGE'],
        ['an infinite scale', { scale: Infinity }, 'ERR_MOE_RANGE'],
        ['numGroups not dividing E', { scoring: 'sigmoid', numGroups: 3, topKGroups: 1 }, 'ERR_MOE_RANGE'],
        ['a bias with softmax', { bias: f32(8) }, 'ERR_MOE_RANGE'],
        ['ids of another k', { ids: i32(4, 3) }, 'ERR_MOE_SHAPE'],
        ['bf16 weights', { weights: bf16(4, 2) }, 'ERR_MOE_DTYPE'],
        ['an unknown scoring', { scoring: 'relu' }, 'ERR_MOE_RANGE'],
      ],
    ],
    [
      'dispatchLayout',
      () => ({
        ids: i32(4, 2), numExperts: 8, align: 1, masked: false, maxRowsPerExpert: 0,
        tokensPerExpert: i32(8), offsets: i32(9), rowToken: i32(8), groupIndex: i32(8), slotRow: i32(4, 2),
      }),
      () => [
        ['offsets of E rows', { offsets: i32(8) }, 'ERR_MOE_SHAPE'],
        ['f32 ids', { ids: f32(4, 2) }, 'ERR_MOE_DTYPE'],
        ['slotRow of another k', { slotRow: i32(4, 3) }, 'ERR_MOE_SHAPE'],
        ['masked with maxRowsPerExpert 0', { masked: true }, 'ERR_MOE_RANGE'],
      ],
    ],
    [
      'dispatch',
      () => ({ x: f32(4, 32), rowToken: i32(8), out: f32(8, 32) }),
      () => [
        ['out of another H', { out: f32(8, 16) }, 'ERR_MOE_SHAPE'],
        ['out of fewer rows', { out: f32(7, 32) }, 'ERR_MOE_SHAPE'],
        ['an unknown scale format', { out: fp8(8, 32), scales: f32(8, 1), scaleFormat: 'e8' }, 'ERR_MOE_RANGE'],
        ['f32 rowToken', { rowToken: f32(8) }, 'ERR_MOE_DTYPE'],
      ],
    ],
    [
      'swiglu',
      () => ({ h: f32(4, 64), out: f32(4, 32) }),
      () => [
        ['h of an odd width', { h: f32(4, 63) }, 'ERR_MOE_SHAPE'],
        ['out of another width', { out: f32(4, 16) }, 'ERR_MOE_SHAPE'],
        ['fp8 out without scales', { out: fp8(4, 32) }, 'ERR_MOE_DTYPE'],
      ],
    ],
    [
      'routerLogits',
      () => ({ x: f32(4, 32), w: f32(8, 32), logits: f32(4, 8) }),
      () => [
        ['w of another H', { w: f32(8, 16) }, 'ERR_MOE_SHAPE'],
        ['bf16 logits', { logits: bf16(4, 8) }, 'ERR_MOE_DTYPE'],
        ['fp8 x', { x: fp8(4, 32) }, 'ERR_MOE_DTYPE'],
      ],
    ],
    [
      'combine',
      () => ({ y: f32(8, 32), slotRow: i32(4, 2), weights: f32(4, 2), out: f32(4, 32) }),
      () => [
        ['weights of another k', { weights: f32(4, 3) }, 'ERR_MOE_SHAPE'],
        ['out of another H', { out: f32(4, 16) }, 'ERR_MOE_SHAPE'],
        ['i32 y', { y: i32(8, 32) }, 'ERR_MOE_DTYPE'],
        ['shared of another shape', { shared: f32(4, 16) }, 'ERR_MOE_SHAPE'],
      ],
    ],
  ];

  describe(`native entry points on ${device}, called without lib/`, () => {
    for (const [op, valid, bad] of ops) {
      const entry = op.split(' ')[0] as 'route';
      it(`${op}: a valid call runs; bad arguments are MoeErrors with lib/'s codes, sync and async`, async () => {
        const call = (args: Args, async: boolean) => (native()[entry] as (a: Args, async: boolean) => unknown)(args, async);
        expect(() => call(valid(), false)).not.toThrow();
        await expect(call(valid(), true)).resolves.toBeUndefined();
        for (const [what, change, code] of bad()) {
          expectMoeError(() => call({ ...valid(), ...change }, false), code);
          await expect(call({ ...valid(), ...change }, true), what).rejects.toMatchObject({ code });
        }
      });
    }

    it('a tensor claiming more elements than its memory holds is ERR_MOE_SHAPE, not a read past it', () => {
      const x = f32(4, 32);
      expectMoeError(() => native().quantizeActivations({ x: reshaped(x, 8, 32), q: fp8(8, 32), scales: f32(8, 1), scaleFormat: 'f32' } as never, false), 'ERR_MOE_SHAPE');
    });
  });
}

function count(shape: number[]): number {
  return shape.reduce((n, d) => n * d, 1);
}
