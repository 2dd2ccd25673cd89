// The routed experts' two halves in one parallel region (native/src/cpu/expert_chain.cpp):
// each expert's second GEMM waits only for its own first half. It runs
// where both halves give every pool thread >= 4 tasks (forEachExpertTask's
// rule), else the two halves run one region after the other; the bits are
// those of the separate ops either way.
import { describe, expect, it } from 'vitest';
import { MoeConfig, MoeError, MoeLayer, bf16FromFloat32, cpuInfo, getNumThreads, setNumThreads } from '../lib/index';
import { native } from '../lib/native';
import { separateOps as separate, smallDeepSeekConfig } from './helpers/moe-config';
import { randomFloats, rng, seedNote, SEED } from './helpers/random';

const random = rng();

// I = 384 (3 column blocks of 128) and H = 592 (5, the last ragged): with
// 9 items at T = 1 (8 experts and the shared one) 2 threads chain the 9
// whole experts, 3 and 4 threads chain runs of 2 column blocks (18 tasks
// per half), 8 threads run the halves apart (27 first-half tasks < 32).
const CONFIG: MoeConfig = smallDeepSeekConfig(592, 384);

function withThreads<T>(threads: number, run: () => T): T {
  const before = getNumThreads();
  setNumThreads(threads);
  try {
    return run();
  } finally {
    setNumThreads(before);
  }
}

const same = (a: Float32Array, b: Float32Array) => Buffer.compare(Buffer.from(a.buffer), Buffer.from(b.buffer)) === 0;

// The process uses (almost) no CPU over 300 ms, from 20 ms on (past any watch
// for work, <= 500 us): a worker that kept watching would use ~300 ms.
async function expectIdle(): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 20));
  const before = process.cpuUsage();
  const start = performance.now();
  await new Promise((resolve) => setTimeout(resolve, 300));
  const used = process.cpuUsage(before);
  const cpuMs = (used.user + used.system) / 1e3;
  expect(cpuMs, `${cpuMs.toFixed(1)} ms of CPU over ${(performance.now() - start).toFixed(0)} ms idle`).toBeLessThan(60);
}

describe('the experts chained in one parallel region', () => {
  const layer = MoeLayer.random(CONFIG, { seed: SEED });
  const sharded = MoeLayer.random(CONFIG, { seed: SEED, maxShardBytes: 5 * 2 * CONFIG.intermediateSize * CONFIG.hiddenSize });

  it('gives the bits of the separate ops at every thread count and T, repeated (a second half that started early would differ)', () => {
    for (const threads of [1, 2, 3, 4, 8]) {
      for (const tokens of [1, 2, 5, 17, 64, 300]) {
        const x = bf16FromFloat32(randomFloats(tokens * CONFIG.hiddenSize, random), [tokens, CONFIG.hiddenSize]);
        for (const batchInvariant of [false, true]) {
          const want = separate(() => withThreads(threads, () => layer.forwardSync(x, { out: 'f32', batchInvariant }).data as Float32Array));
          withThreads(threads, () => {
            for (let rep = 0; rep < 3; rep++) {
              for (const l of [layer, sharded]) {
                const got = l.forwardSync(x, { out: 'f32', batchInvariant }).data as Float32Array;
                expect(same(got, want), `threads=${threads} T=${tokens} batchInvariant=${batchInvariant} rep=${rep} ${seedNote}`).toBe(true);
              }
            }
          });
        }
      }
    }
  });

  it('fails with the first half\'s error where one expert\'s weights hold a NaN, and the pool runs on', () => {
    // Every token picks expert 5 (its bias dwarfs the scores); row 0 of its
    // w13 is NaN (fp8 0x7f): that expert's first-half task fails, no other.
    const poisoned = MoeLayer.random(CONFIG, { seed: SEED + 1 });
    const { w13, bias } = poisoned.weights;
    (bias!.data as Float32Array)[5] = 100;
    const expertBytes = 2 * CONFIG.intermediateSize * CONFIG.hiddenSize;
    (w13.data[0].data as Uint8Array).fill(0x7f, 5 * expertBytes, 5 * expertBytes + CONFIG.hiddenSize);
    const tokens = 4;
    const x = bf16FromFloat32(randomFloats(tokens * CONFIG.hiddenSize, random), [tokens, CONFIG.hiddenSize]);
    const failure = (threads: number, run = (f: () => unknown) => f()) => {
      try {
        withThreads(threads, () => run(() => poisoned.forwardSync(x)));
      } catch (e) {
        expect(e).toBeInstanceOf(MoeError);
        return e as MoeError;
      }
      throw new Error(`threads=${threads}: the forward did not fail`);
    };
    const chained = failure(2);
    expect(chained.code).toBe('ERR_MOE_NONFINITE');
    expect(chained.message).toMatch(/^expertUp: .*NaN/);
    expect(failure(1).message).toBe(chained.message); // one thread: the halves one after the other
    expect(failure(2, separate).code).toBe('ERR_MOE_NONFINITE');
    // The pool is whole: a healthy layer still gives the separate ops' bits.
    const y = bf16FromFloat32(randomFloats(tokens * CONFIG.hiddenSize, random), [tokens, CONFIG.hiddenSize]);
    withThreads(2, () => {
      const want = separate(() => layer.forwardSync(y, { out: 'f32' }).data as Float32Array);
      expect(same(layer.forwardSync(y, { out: 'f32' }).data as Float32Array, want), seedNote).toBe(true);
    });
  });

  it('leaves an idle process without CPU use: the pool threads watch for work only briefly before they sleep', async () => {
    const x = bf16FromFloat32(randomFloats(CONFIG.hiddenSize, random), [1, CONFIG.hiddenSize]);
    const threads = getNumThreads();
    setNumThreads(2);
    try {
      for (let i = 0; i < 20; i++) layer.forwardSync(x);
      await expectIdle();
    } finally {
      setNumThreads(threads);
    }
  });

  it('has a forward\'s wake-up watch longer than between regions, bounded too: wakes that no forward follows (with the first reads or without) leave the process idle', async () => {
    const { spinMicros, wakeSpinMicros } = cpuInfo();
    expect(spinMicros).toBe(100); // the defaults (MOE_CPU_SPIN_US unset)
    expect(wakeSpinMicros).toBe(500);
    const x = bf16FromFloat32(randomFloats(CONFIG.hiddenSize, random), [1, CONFIG.hiddenSize]);
    const threads = getNumThreads();
    setNumThreads(2);
    try {
      const want = separate(() => layer.forwardSync(x, { out: 'f32' }).data as Float32Array);
      // The layer's prepared weights: the woken worker reads the forward's first weights into the caches.
      const weights = (layer as unknown as { prepared: { handle: unknown } }).prepared.handle;
      // Announced regions that never come, while the worker sleeps and while it still watches or reads.
      for (let i = 0; i < 10; i++) {
        native().wakeThreads(i % 4 < 2 ? weights : undefined);
        native().wakeThreads(weights);
        await new Promise((resolve) => setTimeout(resolve, i % 2 ? 0 : 5));
      }
      native().wakeThreads(weights);
      expect(same(layer.forwardSync(x, { out: 'f32' }).data as Float32Array, want), seedNote).toBe(true);
      native().wakeThreads(weights);
      await expectIdle();
    } finally {
      setNumThreads(threads);
    }
  });
});
