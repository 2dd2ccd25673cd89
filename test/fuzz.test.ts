/**
 * Property-based fuzzing (fast-check) of every public entry point: called
 * with arbitrary arguments — well-formed tensors of random dtypes and shapes,
 * hand-built and SharedArrayBuffer-backed ones, quantized pairs, layouts,
 * options with known keys and wild values, and anything else — each either
 * returns (or resolves) or throws (or rejects) a MoeError with a code, in
 * both the Sync and the Promise form. A few seconds in all; FUZZ_SEED
 * reproduces a run (a failure prints its seed and the shrunk arguments).
 */
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { describe as describeValue } from '../lib/errors';
import * as m from '../lib/index';
import { MoeError, Tensor } from '../lib/index';

const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : Date.now() % 2 ** 31;
const TIME_LIMIT_MS = 1500; // per group below
const originalThreads = m.getNumThreads();
afterAll(() => m.setNumThreads(originalThreads));

const DTYPES = ['f32', 'bf16', 'fp8_e4m3', 'i32'] as const;
const shapeArb = fc.array(fc.integer({ min: 0, max: 5 }), { minLength: 1, maxLength: 3 });
const innerShapeArb = fc.tuple(fc.integer({ min: 0, max: 4 }), fc.constantFrom(16, 32, 128, 144, 7));

function filled(dtype: (typeof DTYPES)[number], shape: number[], seed: number, shared: boolean): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const Storage = { f32: Float32Array, bf16: Uint16Array, fp8_e4m3: Uint8Array, i32: Int32Array }[dtype];
  const data = shared ? new Storage(new SharedArrayBuffer(n * Storage.BYTES_PER_ELEMENT) as never) : new Storage(n);
  let s = seed | 1;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    data[i] = dtype === 'f32' ? (s / 2 ** 31 - 0.5) * 4 : dtype === 'i32' ? (s % 9) - 2 : s & (dtype === 'bf16' ? 0x3fff : 0x7e);
  }
  return new Tensor(data as never, shape, dtype);
}

const tensorArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.tuple(fc.constantFrom(...DTYPES), fc.oneof(shapeArb, innerShapeArb), fc.integer(), fc.boolean()).map(([d, s, seed, shared]) => filled(d, s, seed, shared)),
  // Hand-built: data that does not match dtype or shape.
  fc.tuple(fc.constantFrom(...DTYPES), shapeArb, fc.integer({ min: 0, max: 40 })).map(([d, s, n]) => new Tensor(new Float32Array(n) as never, s, d)),
  fc.constant(Object.create(Tensor.prototype)),
);

const quantArb = fc.record({ data: tensorArb, scales: tensorArb });
const layoutArb = fc.tuple(fc.integer({ min: 0, max: 6 }), fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 6 }), fc.boolean()).map(([t, k, e, masked]) => {
  try {
    const ids = m.tensor(Int32Array.from({ length: t * k }, (_, i) => (i % (e + 1)) - 1), [t, k]);
    return m.dispatchLayoutSync(ids, e, masked ? { layout: 'masked', maxTokensPerExpert: t * k } : { align: 1 });
  } catch (e) {
    return e;
  }
});

const scalarArb = fc.oneof(
  fc.constantFrom(undefined, null, NaN, Infinity, -1, 0, 1, 2, 7, 2 ** 31, '', 'f32', 'bf16', 'fp8', 'fp8_e4m3', 'cpu', 'cuda', 'masked', 'contiguous', 'ue8m0', 'softmax', 'sigmoid', true, false),
  fc.constant(Symbol('fuzz')),
  fc.bigInt(),
  fc.double(),
  fc.string({ maxLength: 8 }),
);

const OPTION_KEYS = ['into', 'out', 'scaleFormat', 'quantize', 'shared', 'topK', 'numGroups', 'topKGroups', 'scoring', 'bias', 'renormalize', 'scale', 'layout', 'align', 'maxTokensPerExpert', 'profile', 'seed', 'device', 'layer', '__proto__', 'constructor'];
const valueArb: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small' }, scalarArb, tensorArb, quantArb, layoutArb, tie('options'), fc.anything({ maxDepth: 2 })),
  options: fc.dictionary(fc.constantFrom(...OPTION_KEYS), tie('value'), { maxKeys: 3 }),
})).value;

type Entry = [name: string, fn: (...args: unknown[]) => unknown, arity: number];
const ops: Entry[] = (
  [
    ['quantizeActivations', 2], ['quantizeWeights', 2], ['dequantize', 2], ['gemmFp8', 3], ['routerLogits', 3],
    ['route', 2], ['dispatchLayout', 3], ['dispatch', 3], ['swiglu', 2], ['combine', 4], ['groupedGemmFp8', 4],
    ['groupedGemmFp8Masked', 4],
  ] as const
).flatMap(([name, arity]) => [
  [name, (m as unknown as Record<string, (...a: unknown[]) => unknown>)[name], arity] as Entry,
  [`${name}Sync`, (m as unknown as Record<string, (...a: unknown[]) => unknown>)[`${name}Sync`], arity] as Entry,
]);

const layer = m.MoeLayer.random({ ...m.DEEPSEEK_V3_CONFIG, hiddenSize: 32, intermediateSize: 16, numExperts: 4, numGroups: 2, topKGroups: 1, topK: 2 }, { seed: 3 });
const others: Entry[] = [
  ['tensor', m.tensor as never, 3],
  ['empty', m.empty as never, 3],
  ['bf16FromFloat32', m.bf16FromFloat32 as never, 2],
  ['fp8FromFloat32', m.fp8FromFloat32 as never, 2],
  ['fp8E4m3FromFloat', m.fp8E4m3FromFloat as never, 1],
  ['fp8E4m3ToFloat', m.fp8E4m3ToFloat as never, 1],
  ['bf16FromFloat', m.bf16FromFloat as never, 1],
  ['bf16ToFloat', m.bf16ToFloat as never, 1],
  ['setNumThreads', (n: unknown) => (typeof n === 'number' && n > 8 ? undefined : m.setNumThreads(n as never)), 1],
  ['setDefaultBackend', (b: unknown) => (b === 'cuda' ? undefined : m.setDefaultBackend(b as never)), 1],
  ['scaledDeepSeekV3', m.scaledDeepSeekV3 as never, 1],
  ['configFromHuggingFace', m.configFromHuggingFace as never, 2],
  ['MoeLayer.random', (c: unknown, o: unknown) => m.MoeLayer.random(c as never, o as never), 2],
  ['new MoeLayer', (c: unknown, w: unknown) => new m.MoeLayer(c as never, w as never), 2],
  ['layer.forward', (x: unknown, o: unknown) => layer.forward(x as never, o as never), 2],
  ['layer.forwardSync', (x: unknown, o: unknown) => layer.forwardSync(x as never, o as never), 2],
  ['layer.to', (d: unknown) => (d === 'cuda' ? undefined : layer.to(d as never)), 1],
  ['layer.capture', (o: unknown) => layer.capture(o as never), 1],
  ['SafetensorsFile.open', (p: unknown) => (typeof p === 'string' && p !== '' ? undefined : m.SafetensorsFile.open(p as never)), 1],
  ['MoeLayer.fromSafetensors', (p: unknown, o: unknown) => m.MoeLayer.fromSafetensors((typeof p === 'string' ? '/nonexistent/moe-fuzz' : p) as never, o as never), 2],
  ['Tensor.to', (t: unknown, d: unknown) => (t instanceof Tensor && d !== 'cuda' ? t.to(d as never) : undefined), 2],
  ['Tensor.toFloat32Array', (t: unknown) => (t instanceof Tensor ? t.toFloat32Array() : undefined), 1],
];

async function onlyMoeErrors(fn: (...args: unknown[]) => unknown, args: unknown[]): Promise<boolean> {
  try {
    const result = fn(...args);
    if (result instanceof Promise) await result;
    return true;
  } catch (error) {
    if (error instanceof MoeError && typeof error.code === 'string' && error.code.startsWith('ERR_MOE_')) return true;
    throw error;
  }
}

async function fuzz(entries: Entry[]): Promise<void> {
  const details = await fc.check(
    fc.asyncProperty(fc.constantFrom(...entries), fc.array(valueArb, { maxLength: 5 }), async ([name, fn, arity], args) => {
      const call = args.slice(0, arity + 1);
      try {
        return await onlyMoeErrors(fn, call);
      } catch (error) {
        throw new Error(`${name}(${call.map(describeValue).join(', ')}) threw ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`);
      }
    }),
    { seed: SEED, interruptAfterTimeLimit: TIME_LIMIT_MS, numRuns: 1_000_000, markInterruptAsFailure: false, endOnFailure: true },
  );
  if (details.failed) throw new Error(fc.defaultReportMessage(details));
  // The time limit, not a broken generator, must be what ended the run.
  expect(details.numRuns, 'fuzzed calls in the time limit').toBeGreaterThan(100);
  console.log(`fuzz: ${details.numRuns} calls over ${entries.length} entry points (FUZZ_SEED=${SEED})`);
}

describe(`fuzzing the public API (FUZZ_SEED=${SEED})`, () => {
  it('operations (Sync and Promise forms) throw or reject only MoeError', async () => {
    await fuzz(ops);
  });
  it('tensors, numerics, runtime, configs, the layer and checkpoints throw only MoeError', async () => {
    await fuzz(others);
  });
});
