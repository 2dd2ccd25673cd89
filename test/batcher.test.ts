import * as diagnosticsChannel from 'node:diagnostics_channel';
import { afterEach, describe, expect, it } from 'vitest';
import { BATCH_CHANNEL, BatchEvent, MoeBatcher, MoeConfig, MoeLayer, Tensor, bf16FromFloat32, tensor } from '../lib/index';
import { calcDiff } from './helpers/reference';
import { smallDeepSeekConfig } from './helpers/moe-config';
import { randomFloats, rng, seedNote, SEED } from './helpers/random';

// MoeBatcher: requests coalesced into layer forwards. Every request's result
// is compared with the same rows run alone through the layer. Without
// batchInvariant a token's last bits may depend on its batch (SPEC
// tolerance), so these compare by calcDiff; batch-invariant.test.ts checks
// the bits.
const random = rng();
const SMALL: MoeConfig = smallDeepSeekConfig(256, 128);
const H = SMALL.hiddenSize;
const layer = MoeLayer.random(SMALL, { seed: SEED });

const events: BatchEvent[] = [];
const onBatch = (e: unknown) => events.push(e as BatchEvent);
diagnosticsChannel.subscribe(BATCH_CHANNEL, onBatch);
// Every batcher a test makes is closed after it, even when the test failed, so that no batch of one test reaches the next.
const made: MoeBatcher[] = [];
function batcherOf(options?: ConstructorParameters<typeof MoeBatcher>[1]): MoeBatcher {
  const b = layer.batcher(options);
  made.push(b);
  return b;
}
afterEach(async () => {
  await Promise.all(made.splice(0).map((b) => b.close()));
  events.length = 0;
});

function rows(n: number): Float32Array {
  return randomFloats(n * H, random);
}

/** The request alone through the layer, f32 out. */
function alone(x: Float32Array | Uint16Array, n: number): Float32Array {
  const t = x instanceof Float32Array ? tensor(x, [n, H]) : tensor(x, [n, H], 'bf16');
  return layer.forwardSync(t, { out: 'f32' }).data as Float32Array;
}

function expectOwnRows(y: Tensor, x: Float32Array | Uint16Array, n: number, note = ''): void {
  expect(y.shape, note).toEqual([n, H]);
  expect(y.dtype).toBe('f32');
  // Another request's rows would be uncorrelated (diff ~1); batch-dependent rounding is ~1e-6.
  expect(calcDiff(y.data as Float32Array, alone(x, n)), `${note} ${seedNote}`).toBeLessThan(1e-4);
}

/** A batcher whose first forward is held back until `release()`: what is submitted meanwhile stays queued. */
function heldBatcher(options: ConstructorParameters<typeof MoeBatcher>[1] = {}) {
  const batcher = batcherOf({ out: 'f32', maxWaitMs: 60_000, ...options });
  return batcher;
}

describe('MoeBatcher', () => {
  it(`gives 1,000 concurrent requests of random sizes each its own rows ${seedNote}`, async () => {
    const batcher = batcherOf({ out: 'f32', maxBatchTokens: 64, maxQueueTokens: 10_000 });
    const requests = Array.from({ length: 1000 }, (_, i) => {
      const n = 1 + Math.floor(random() * 6);
      const x = rows(n);
      // Every input form: Float32Array, a Tensor, f32 bytes at an odd offset, a bf16 tensor.
      let input: Parameters<MoeBatcher['submit']>[0];
      let ref: Float32Array | Uint16Array = x;
      switch (i % 4) {
        case 0:
          input = x;
          break;
        case 1:
          input = tensor(x, [n, H]);
          break;
        case 2: {
          const bytes = Buffer.alloc(x.byteLength + 3);
          bytes.set(new Uint8Array(x.buffer), 3);
          input = bytes.subarray(3);
          break;
        }
        default: {
          const b = bf16FromFloat32(x, [n, H]);
          input = b;
          ref = b.data;
        }
      }
      return { n, ref, promise: batcher.submit(input) };
    });
    const results = await Promise.all(requests.map((r) => r.promise));
    requests.forEach((r, i) => expectOwnRows(results[i], r.ref, r.n, `request ${i}`));
    const stats = batcher.stats();
    expect(stats.completed).toBe(1000);
    expect(stats.batches).toBeLessThan(1000); // they were batched
    expect(stats.meanBatchTokens).toBeGreaterThan(1);
    expect(events.reduce((n, e) => n + e.tokens, 0)).toBe(requests.reduce((n, r) => n + r.n, 0));
    expect(Math.max(...events.map((e) => e.tokens))).toBeLessThanOrEqual(64);
    await batcher.close();
  });

  it('publishes every batch on the diagnostics channel', async () => {
    const batcher = batcherOf({ maxBatchTokens: 16 });
    await Promise.all(Array.from({ length: 40 }, () => batcher.submit(rows(1))));
    expect(events.length).toBe(batcher.stats().batches);
    for (const e of events) {
      expect(e.tokens).toBeGreaterThan(0);
      expect(e.paddedTokens).toBe(e.tokens);
      expect(e.expertsHit).toBeGreaterThan(0);
      expect(e.expertsHit).toBeLessThanOrEqual(SMALL.numExperts);
      expect(e.computeMs).toBeGreaterThan(0);
      expect(e.queueMs).toBeGreaterThanOrEqual(0);
      expect(e.maxQueueMs).toBeGreaterThanOrEqual(e.queueMs);
      expect(e.failed).toBe(false);
    }
    await batcher.close();
  });

  it('starts the next batch at the end of the turn in which a batch ended: requests submitted in that turn join it', async () => {
    const batcher = batcherOf({ out: 'f32', maxWaitMs: 0 });
    const xs = [rows(1), rows(2), rows(3)];
    const first = batcher.submit(xs[0]); // an idle batcher: this forward starts now, alone
    const queued = batcher.submit(xs[1]); // waits for the first forward
    // Submitted by the first request's continuation, in the turn its batch ended (as a server answers, then reads the next request).
    const late = first.then(() => batcher.submit(xs[2]));
    const [y0, y1, y2] = await Promise.all([first, queued, late]);
    expect(events.map((e) => e.requests)).toEqual([1, 2]);
    expectOwnRows(y0, xs[0], 1);
    expectOwnRows(y1, xs[1], 2);
    expectOwnRows(y2, xs[2], 3);
    expect(batcher.stats()).toMatchObject({ batches: 2, completed: 3, queuedRequests: 0, inFlightBatches: 0 });
  });

  it('asks the layer for a profile only while someone listens on the channel', async () => {
    const profiles: unknown[] = [];
    const forward = layer.forward.bind(layer);
    const spied = Object.assign(Object.create(layer) as MoeLayer, {
      forward: (x: Tensor, options?: Parameters<MoeLayer['forward']>[1]) => {
        profiles.push(options?.profile);
        return forward(x, options);
      },
    });
    const batcher = new MoeBatcher(spied, { out: 'f32' });
    made.push(batcher);
    await batcher.submit(rows(2));
    expect(profiles).toHaveLength(1);
    expect(profiles[0]).toBeTypeOf('object');
    // The batch's event comes after its requests' continuations (a server's answers), in the same turn.
    expect(events).toHaveLength(0);
    await Promise.resolve();
    expect(events).toHaveLength(1);
    diagnosticsChannel.unsubscribe(BATCH_CHANNEL, onBatch);
    try {
      const x = rows(3);
      expectOwnRows(await batcher.submit(x), x, 3);
      expect(profiles).toHaveLength(2);
      expect(profiles[1]).toBeUndefined();
      expect(events).toHaveLength(1);
    } finally {
      diagnosticsChannel.subscribe(BATCH_CHANNEL, onBatch);
    }
  });

  it(`copies every batch into one reused input buffer per dtype, grown as batches grow ${seedNote}`, async () => {
    const inputs: ArrayBufferLike[] = [];
    const forward = layer.forward.bind(layer);
    const spied = Object.assign(Object.create(layer) as MoeLayer, {
      forward: (x: Tensor, options?: Parameters<MoeLayer['forward']>[1]) => {
        inputs.push(x.data.buffer);
        return forward(x, options);
      },
    });
    const batcher = new MoeBatcher(spied, { out: 'f32', maxBatchTokens: 32 });
    made.push(batcher);
    for (const sizes of [[1], [1], [2, 1], [4, 4, 3], [1], [20, 12], [2]]) {
      const xs = sizes.map(rows);
      const ys = await Promise.all(xs.map((x) => batcher.submit(x)));
      ys.forEach((y, i) => expectOwnRows(y, xs[i], sizes[i], `sizes ${sizes}`));
    }
    const b = bf16FromFloat32(rows(2), [2, H]);
    expect(calcDiff((await batcher.submit(b.data)).data as Float32Array, alone(b.data, 2))).toBeLessThan(1e-4);
    const distinct = [...new Set(inputs)];
    // f32: 2 rows, then 4, 8, 16, 32 as batches grew; bf16: its own.
    expect(distinct.length).toBeLessThanOrEqual(6);
    expect(inputs.length).toBeGreaterThan(distinct.length);
  });

  it(`answers a lone request with the forward's own bits, and leaves the caller's buffer transferable ${seedNote}`, async () => {
    for (const out of ['f32', 'bf16'] as const) {
      const batcher = batcherOf({ out });
      for (let i = 0; i < 3; i++) {
        const x = rows(1 + i);
        const y = await batcher.submit(x);
        const direct = layer.forwardSync(tensor(x, [1 + i, H]), { out });
        expect(y.shape).toEqual([1 + i, H]);
        expect(y.dtype).toBe(out);
        expect(Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength).equals(Buffer.from(direct.data.buffer, direct.data.byteOffset, direct.data.byteLength))).toBe(true);
        // The batch's forward read a copy: the caller's buffer was not pinned (a pinned one is copied, or refused, instead of moved).
        structuredClone(x.buffer, { transfer: [x.buffer as ArrayBuffer] });
        expect(x.byteLength).toBe(0);
      }
      expect(events.every((e) => e.requests === 1)).toBe(true);
      await batcher.close();
      events.length = 0;
    }
  });

  it('settles a lone request aborted or past its deadline while its forward runs at once; the batcher goes on', async () => {
    // A lone request finds the batcher idle: its forward starts in submit, before its signal and timer are watched.
    // 4,096 tokens keep that forward running long enough to act while it runs.
    for (const how of ['abort', 'deadline'] as const) {
      const batcher = batcherOf({ out: 'f32', maxBatchTokens: 4096 });
      const controller = new AbortController();
      const pending = batcher.submit(rows(4096), how === 'abort' ? { signal: controller.signal } : { deadlineMs: 1 });
      expect(batcher.stats()).toMatchObject({ inFlightBatches: 1, queuedRequests: 0 });
      if (how === 'abort') {
        controller.abort();
        await expect(pending).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
      } else {
        await expect(pending).rejects.toMatchObject({ code: 'ERR_MOE_DEADLINE' });
      }
      expect(batcher.stats().inFlightBatches).toBe(1); // settled before the forward finished
      const x = rows(1);
      expectOwnRows(await batcher.submit(x, { signal: new AbortController().signal, deadlineMs: 60_000 }), x, 1);
      expect(batcher.stats()).toMatchObject({ aborted: how === 'abort' ? 1 : 0, deadlineExceeded: how === 'deadline' ? 1 : 0, completed: 1, queuedRequests: 0, inFlightBatches: 0 });
    }
  });

  it('defaults to bf16 output and takes [H] and bf16-byte requests', async () => {
    const batcher = batcherOf();
    const x = rows(1);
    const y = await batcher.submit(tensor(x, [H]));
    expect(y.dtype).toBe('bf16');
    expect(y.shape).toEqual([1, H]);
    const b = bf16FromFloat32(x, [1, H]);
    const fromBytes = await batcher.submit(Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength), { dtype: 'bf16' });
    expect(calcDiff(fromBytes.toFloat32Array(), alone(b.data, 1))).toBeLessThan(1e-4);
    const empty = await batcher.submit(new Float32Array(0));
    expect(empty.shape).toEqual([0, H]);
    await batcher.close();
  });

  it('finds a NaN or an infinity at any position of a row, and passes signed zeros and subnormals', async () => {
    const batcher = batcherOf({ out: 'f32', maxWaitMs: 0 });
    for (const value of [NaN, Infinity, -Infinity]) {
      for (const at of [0, 1, 2, 3, 4, H - 5, H - 1, H + 2, 2 * H - 1]) {
        const x = rows(2);
        x[at] = value;
        await expect(batcher.submit(x)).rejects.toMatchObject({ code: 'ERR_MOE_NONFINITE', message: expect.stringContaining(`x[${Math.floor(at / H)}, ${at % H}]`) });
      }
    }
    const extreme = rows(1);
    extreme.set([-0, 0, 1e-45, -1e-45, -0]);
    expectOwnRows(await batcher.submit(extreme), extreme, 1);
  });

  it('fails a request with a NaN row or the wrong width alone, never its batch', async () => {
    const batcher = heldBatcher();
    const good = Array.from({ length: 10 }, () => rows(2));
    const bad = rows(3);
    bad[H + 17] = NaN;
    const inf = rows(1);
    inf[5] = -Infinity;
    const promises = good.map((x) => batcher.submit(x));
    const nan = batcher.submit(bad);
    const infinite = batcher.submit(inf);
    const narrow = batcher.submit(new Float32Array(H - 1));
    const badBytes = batcher.submit(new Uint8Array(4 * H + 2));
    promises.push(...good.map((x) => batcher.submit(x)));
    await expect(nan).rejects.toMatchObject({ code: 'ERR_MOE_NONFINITE', message: expect.stringContaining(`x[1, 17]`) });
    await expect(infinite).rejects.toMatchObject({ code: 'ERR_MOE_NONFINITE' });
    await expect(narrow).rejects.toMatchObject({ code: 'ERR_MOE_SHAPE' });
    await expect(badBytes).rejects.toMatchObject({ code: 'ERR_MOE_SHAPE' });
    await batcher.close(); // releases the held queue at once
    const results = await Promise.all(promises);
    results.forEach((y, i) => expectOwnRows(y, good[i % 10], 2));
    expect(events.length).toBe(1); // the 20 good requests in one batch
    expect(events[0].tokens).toBe(40);
  });

  it('rejects at once with ERR_MOE_QUEUE_FULL when maxQueueTokens are queued', async () => {
    const batcher = heldBatcher({ maxQueueTokens: 8 });
    const first = batcher.submit(rows(5));
    const second = batcher.submit(rows(3));
    await expect(batcher.submit(rows(1))).rejects.toMatchObject({ code: 'ERR_MOE_QUEUE_FULL' });
    expect(batcher.stats()).toMatchObject({ queuedTokens: 8, queuedRequests: 2, rejectedQueueFull: 1 });
    await batcher.close();
    await expect(Promise.all([first, second])).resolves.toHaveLength(2);
    expect(batcher.stats().queuedTokens).toBe(0);
  });

  it('removes a request aborted before its batch, leaving the others', async () => {
    const batcher = heldBatcher();
    const xs = [rows(1), rows(2), rows(1)];
    const controller = new AbortController();
    const before = batcher.submit(xs[0]);
    const aborted = batcher.submit(xs[1], { signal: controller.signal });
    const after = batcher.submit(xs[2]);
    controller.abort(new Error('client went away'));
    await expect(aborted).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR', cause: { message: 'client went away' } });
    expect(batcher.stats()).toMatchObject({ queuedRequests: 2, queuedTokens: 2, aborted: 1 });
    // An already-aborted signal never enters the queue.
    await expect(batcher.submit(rows(1), { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
    await batcher.close();
    expectOwnRows(await before, xs[0], 1);
    expectOwnRows(await after, xs[2], 1);
    expect(events[0].tokens).toBe(2);
  });

  it('aborts every unsettled request of a signal shared by requests of two batchers, and none settled before', async () => {
    const controller = new AbortController();
    const first = batcherOf({ out: 'f32' });
    const x = rows(1);
    expectOwnRows(await first.submit(x, { signal: controller.signal }), x, 1); // settled: the abort must not reach it
    const held = heldBatcher();
    const aborted = [held.submit(rows(1), { signal: controller.signal }), held.submit(rows(2), { signal: controller.signal })];
    const kept = rows(1);
    const other = held.submit(kept);
    controller.abort(new Error('shutting down'));
    for (const p of aborted) await expect(p).rejects.toMatchObject({ name: 'AbortError', cause: { message: 'shutting down' } });
    expect(held.stats()).toMatchObject({ queuedRequests: 1, queuedTokens: 1, aborted: 2 });
    expect(first.stats()).toMatchObject({ completed: 1, aborted: 0 });
    await held.close();
    expectOwnRows(await other, kept, 1);
  });

  it('fails a queued request whose deadline passes with ERR_MOE_DEADLINE, leaving the others', async () => {
    const batcher = heldBatcher();
    const x = rows(1);
    const kept = batcher.submit(x, { deadlineMs: 60_000 });
    const late = batcher.submit(rows(4), { deadlineMs: 5 });
    await expect(late).rejects.toMatchObject({ code: 'ERR_MOE_DEADLINE' });
    expect(batcher.stats()).toMatchObject({ queuedRequests: 1, queuedTokens: 1, deadlineExceeded: 1 });
    await batcher.close();
    expectOwnRows(await kept, x, 1);
  });

  it('settles a request aborted or past its deadline during its batch at once, and the batch delivers the rest', async () => {
    // A forward of 4,098 tokens keeps the batch running long enough to act while it runs;
    // the batch goes when its third request fills maxBatchTokens.
    const batcher = heldBatcher({ maxBatchTokens: 4098 });
    const big = rows(4096);
    const controller = new AbortController();
    const first = batcher.submit(big);
    const aborted = batcher.submit(rows(1), { signal: controller.signal });
    const late = batcher.submit(rows(1), { deadlineMs: 1 });
    expect(batcher.stats()).toMatchObject({ inFlightBatches: 1, queuedRequests: 0 });
    controller.abort();
    await expect(aborted).rejects.toMatchObject({ name: 'AbortError' });
    await expect(late).rejects.toMatchObject({ code: 'ERR_MOE_DEADLINE' });
    expect(batcher.stats().inFlightBatches).toBe(1); // settled before the forward finished
    const y = await first;
    expect(y.shape).toEqual([4096, H]);
    expect(calcDiff((y.data as Float32Array).subarray(0, 8 * H), alone(big.subarray(0, 8 * H), 8))).toBeLessThan(1e-4);
    await batcher.close();
    expect(events[0]).toMatchObject({ tokens: 4098, requests: 3 });
  });

  it('close() drains queued and running work, then refuses new requests', async () => {
    const batcher = batcherOf({ out: 'f32', maxBatchTokens: 8, maxQueueTokens: 1000 });
    const xs = Array.from({ length: 50 }, () => rows(1 + Math.floor(random() * 3)));
    const promises = xs.map((x) => batcher.submit(x));
    expect(batcher.stats().inFlightBatches).toBe(1);
    const closed = batcher.close();
    await expect(batcher.submit(rows(1))).rejects.toMatchObject({ code: 'ERR_MOE_CLOSED' });
    await closed;
    expect(batcher.stats()).toMatchObject({ queuedRequests: 0, inFlightBatches: 0, completed: 50, closed: true });
    const results = await Promise.all(promises);
    results.forEach((y, i) => expectOwnRows(y, xs[i], xs[i].length / H));
    expect(batcher.close()).toBe(closed);
  });

  it('starves nobody: the oldest request always goes in the next batch, whatever its size or dtype', async () => {
    const batcher = batcherOf({ out: 'f32', maxBatchTokens: 16 });
    const done: string[] = [];
    let flooding = true;
    let batchesAtSubmit = 0;
    // A steady flood of one-row f32 requests, kept at 32 in flight.
    const flood = async () => {
      while (flooding) await batcher.submit(rows(1));
    };
    const floods = Array.from({ length: 32 }, flood);
    await new Promise((r) => setTimeout(r, 20));
    batchesAtSubmit = batcher.stats().batches;
    const large = batcher.submit(rows(16)).then(() => done.push('large'));
    const bf16 = batcher.submit(bf16FromFloat32(rows(1), [1, H])).then(() => done.push('bf16'));
    const oversize = batcher.submit(rows(40)).then(() => done.push('oversize')); // > maxBatchTokens: runs alone
    await Promise.all([large, bf16, oversize]);
    // Queued behind at most 32 one-row requests (two batches) and each other.
    expect(batcher.stats().batches - batchesAtSubmit).toBeLessThanOrEqual(8);
    flooding = false;
    await Promise.all(floods);
    expect(done.sort()).toEqual(['bf16', 'large', 'oversize']);
    expect(events.some((e) => e.tokens === 40 && e.requests === 1)).toBe(true);
    await batcher.close();
  });

  it('never holds a lone client back (adaptive wait)', async () => {
    const batcher = batcherOf();
    for (let i = 0; i < 30; i++) await batcher.submit(rows(1));
    expect(events.every((e) => e.requests === 1)).toBe(true);
    // A fixed wait would show here; the adaptive one is zero for a client that waits for each answer.
    const sorted = events.map((e) => e.maxQueueMs).sort((a, b) => a - b);
    expect(sorted[Math.floor(sorted.length / 2)]).toBeLessThan(1);
    await batcher.close();
  });

  it('rejects bad options and inputs with a MoeError', async () => {
    expect(() => layer.batcher({ maxBatchTokens: 0 })).toThrow(expect.objectContaining({ code: 'ERR_MOE_RANGE' }));
    expect(() => layer.batcher({ maxWaitMs: -1 })).toThrow(expect.objectContaining({ code: 'ERR_MOE_RANGE' }));
    expect(() => layer.batcher({ out: 'fp8' as 'f32' })).toThrow(expect.objectContaining({ code: 'ERR_MOE_RANGE' }));
    expect(() => layer.batcher({ bogus: 1 } as object)).toThrow(expect.objectContaining({ code: 'ERR_MOE_ARGUMENT' }));
    const batcher = batcherOf();
    await expect(batcher.submit([1, 2] as unknown as Float32Array)).rejects.toMatchObject({ code: 'ERR_MOE_ARGUMENT' });
    await expect(batcher.submit(rows(1), { deadlineMs: -5 })).rejects.toMatchObject({ code: 'ERR_MOE_RANGE' });
    await expect(batcher.submit(rows(1), { signal: {} as AbortSignal })).rejects.toMatchObject({ code: 'ERR_MOE_ARGUMENT' });
    await expect(batcher.submit(tensor(new Int32Array(H), [1, H]) as unknown as Tensor)).rejects.toMatchObject({ code: 'ERR_MOE_DTYPE' });
    await expect(batcher.submit(tensor(new Float32Array(2 * H), [1, 2, H]))).rejects.toMatchObject({ code: 'ERR_MOE_SHAPE' });
    await batcher.close();
  });
});
