/**
 * The JS surface throws only MoeError, reads options as the caller's own
 * properties (never from a polluted Object.prototype), and checks tensors that
 * were built by hand rather than by tensor()/empty().
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  MoeError,
  MoeLayer,
  Tensor,
  configFromHuggingFace,
  empty,
  quantizeActivationsSync,
  scaledDeepSeekV3,
  swigluSync,
  tensor,
} from '../lib/index';
import { randomFloats, rng } from './helpers/random';
import { expectMoeError } from './helpers/errors';
import { smallDeepSeekConfig } from './helpers/moe-config';

const random = rng();

async function expectMoeRejection(promise: Promise<unknown>, code: string): Promise<void> {
  const error = await promise.then(() => undefined, (e: unknown) => e);
  expect(error, `expected a MoeError ${code}`).toBeInstanceOf(MoeError);
  expect((error as MoeError).code, (error as Error).message).toBe(code);
}

describe('every public function throws only MoeError', () => {
  it('empty() with a bad dtype or device', () => {
    expectMoeError(() => empty([2], 'f64' as never), 'ERR_MOE_DTYPE', /dtype/);
    expectMoeError(() => empty([2], Symbol('x') as never), 'ERR_MOE_DTYPE', /symbol/);
    expectMoeError(() => empty([2], 'f32', 'tpu' as never), 'ERR_MOE_RANGE', /device/);
    expectMoeError(() => empty([2 ** 40], 'f32'), 'ERR_MOE_RANGE', /cannot allocate/);
  });

  it('MoeLayer.random and new MoeLayer with missing or malformed arguments', () => {
    expectMoeError(() => MoeLayer.random(undefined as never), 'ERR_MOE_ARGUMENT', /MoeConfig/);
    expectMoeError(() => MoeLayer.random(null as never), 'ERR_MOE_ARGUMENT', /MoeConfig/);
    expectMoeError(() => MoeLayer.random({ ...smallDeepSeekConfig(128, 128), topK: '8' } as never), 'ERR_MOE_RANGE', /topK/);
    expectMoeError(() => MoeLayer.random({ ...smallDeepSeekConfig(128, 128), normTopKProb: 'false' } as never), 'ERR_MOE_RANGE', /normTopKProb/);
    expectMoeError(() => MoeLayer.random(smallDeepSeekConfig(128, 128), { seed: Symbol('s') } as never), 'ERR_MOE_RANGE', /seed/);
    expectMoeError(() => MoeLayer.random(smallDeepSeekConfig(128, 128), { onProgress: 3 } as never), 'ERR_MOE_ARGUMENT', /onProgress/);
    expectMoeError(() => new MoeLayer(smallDeepSeekConfig(128, 128), undefined as never), 'ERR_MOE_ARGUMENT', /weights/);
    expectMoeError(() => scaledDeepSeekV3('x' as never), 'ERR_MOE_RANGE', /scale/);
    expectMoeError(() => configFromHuggingFace(undefined as never, 'config.json'), 'ERR_MOE_CHECKPOINT', /object/);
    expectMoeError(() => configFromHuggingFace({ n_routed_experts: 1n } as never, 'config.json'), 'ERR_MOE_CHECKPOINT', /n_routed_experts|hidden_size/);
  });

  it("forward(x, { profile: 'yes' }) is refused before the forward runs", async () => {
    const c = smallDeepSeekConfig(128, 128);
    const layer = MoeLayer.random(c, { seed: 3 });
    const x = tensor(randomFloats(2 * 128, random), [2, 128]);
    expectMoeError(() => layer.forwardSync(x, { profile: 'yes' as never }), 'ERR_MOE_ARGUMENT', /profile/);
    await expectMoeRejection(layer.forward(x, { profile: 'yes' as never }), 'ERR_MOE_ARGUMENT');
    await expectMoeRejection(layer.forward(x, { profile: Object.freeze({}) as never }), 'ERR_MOE_ARGUMENT');
  });

  it('hand-built Tensors are checked like any other argument', () => {
    const x = new Float32Array(2 * 16);
    expectMoeError(() => new Tensor(x, 'ab' as never, 'f32'), 'ERR_MOE_SHAPE', /shape/);
    expectMoeError(() => new Tensor(x as never, [2, 16], 'f64' as never), 'ERR_MOE_DTYPE', /dtype/);
    expectMoeError(() => new Tensor(x, [2, 16], 'f32', 'gpu' as never), 'ERR_MOE_RANGE', /device/);
    // Valid fields, data that does not match them.
    expectMoeError(() => quantizeActivationsSync(new Tensor(new Int32Array(32) as never, [2, 16], 'f32')), 'ERR_MOE_DTYPE', /Float32Array/);
    expectMoeError(() => quantizeActivationsSync(new Tensor(x, [4, 16], 'f32')), 'ERR_MOE_SHAPE', /elements/);
    expectMoeError(() => quantizeActivationsSync(new Tensor(undefined as never, [2, 16], 'f32')), 'ERR_MOE_ARGUMENT', /without data/);
    // A Tensor made without its constructor.
    const forged = Object.create(Tensor.prototype) as Tensor;
    expectMoeError(() => quantizeActivationsSync(forged), 'ERR_MOE_DTYPE', /dtype/);
    const shaped = Object.assign(Object.create(Tensor.prototype), { dtype: 'f32', shape: [2, 16], device: 'cpu', storage: [1, 2] });
    expectMoeError(() => quantizeActivationsSync(shaped), 'ERR_MOE_DTYPE', /Float32Array/);
  });

  it('Tensor.to() checks the data length against the shape', () => {
    const t = new Tensor(new Float32Array(3), [2, 2], 'f32');
    expectMoeError(() => t.to('cpu'), 'ERR_MOE_SHAPE', /elements/);
    expectMoeError(() => t.to('cuda'), 'ERR_MOE_SHAPE', /elements/);
    expectMoeError(() => tensor(new Float32Array(4), [4]).to(Symbol('d') as never), 'ERR_MOE_RANGE', /device/);
  });

  it('Symbols anywhere in options', async () => {
    const x = tensor(randomFloats(2 * 64, random), [2, 64]);
    expectMoeError(() => quantizeActivationsSync(x, { [Symbol('k')]: 1 } as never), 'ERR_MOE_ARGUMENT', /unknown option/);
    expectMoeError(() => quantizeActivationsSync(x, { scaleFormat: Symbol('f') } as never), 'ERR_MOE_RANGE', /scaleFormat/);
    expectMoeError(() => quantizeActivationsSync(x, Symbol('o') as never), 'ERR_MOE_ARGUMENT', /options must be an object/);
    const throwing = { get scaleFormat(): string { throw new TypeError('boom'); } };
    expectMoeError(() => quantizeActivationsSync(x, throwing as never), 'ERR_MOE_ARGUMENT', /could not be read/);
    const proxy = new Proxy({}, { ownKeys() { throw new RangeError('no keys'); } });
    expectMoeError(() => quantizeActivationsSync(x, proxy as never), 'ERR_MOE_ARGUMENT', /could not be read/);
  });
});

describe('options are read as own properties', () => {
  const proto = Object.prototype as Record<string, unknown>;
  afterEach(() => {
    delete proto.into;
    delete proto.out;
    delete proto.scaleFormat;
  });

  it('Object.prototype.into does not redirect an operation called without options', () => {
    const x = tensor(randomFloats(2 * 32, random), [2, 32]);
    const trap = empty([2, 16], 'bf16');
    proto.into = trap;
    const out = swigluSync(x);
    expect(out).not.toBe(trap);
    expect(Array.from(trap.data).every((v) => v === 0)).toBe(true);
    // And an options object without its own `into`.
    expect(swigluSync(x, {})).not.toBe(trap);
  });

  it('inherited keys are neither options nor typos', () => {
    const x = tensor(randomFloats(2 * 64, random), [2, 64]);
    proto.scaleFormat = 'nonsense';
    const q = quantizeActivationsSync(x, Object.create({ scaleFormat: 'ue8m0' }));
    // f32 scales (the default), not the inherited ue8m0 or the polluted value.
    expect(Array.from(q.scales.data).some((s) => Math.log2(s) % 1 !== 0)).toBe(true);
  });

  it('a quantized `into` is read from its own data and scales', () => {
    const x = tensor(randomFloats(2 * 64, random), [2, 64]);
    proto.data = empty([2, 64], 'fp8_e4m3');
    proto.scales = empty([2, 1], 'f32');
    try {
      expectMoeError(() => quantizeActivationsSync(x, { into: {} as never }), 'ERR_MOE_ARGUMENT', /into\.data/);
    } finally {
      delete proto.data;
      delete proto.scales;
    }
  });
});

describe('resizable ArrayBuffers', () => {
  it('are refused by tensor() and by every operation', () => {
    const Resizable = ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => ArrayBuffer;
    let buffer: ArrayBuffer;
    try {
      buffer = new Resizable(256, { maxByteLength: 1024 });
    } catch {
      return; // a Node without resizable ArrayBuffers cannot make one either
    }
    if ((buffer as { resizable?: boolean }).resizable !== true) return;
    const data = new Float32Array(buffer, 0, 64);
    expectMoeError(() => tensor(data, [4, 16]), 'ERR_MOE_DTYPE', /resizable/);
    expectMoeError(() => quantizeActivationsSync(new Tensor(data, [4, 16], 'f32')), 'ERR_MOE_DTYPE', /resizable/);
  });
});
