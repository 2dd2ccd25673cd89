/**
 * Ordinary Node features used against the package: worker threads that load
 * it and hit native errors, worker.terminate() in the middle of native calls,
 * process.exit() with operations in flight, SharedArrayBuffer tensors, buffers
 * transferred or written while a Promise-form operation runs, and
 * setNumThreads() with operations queued. Each case runs as a script in a
 * child process (loading dist/, as users do), so that a crash fails the test
 * instead of the test runner; a case passes when the script exits 0 with
 * nothing fatal on stderr.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it, vi } from 'vitest';

const root = path.resolve(__dirname, '..');

// Shared by the scripts: the package, and a few small operands.
const prelude = `
const m = require(${JSON.stringify(root)});
const assert = require('node:assert');
const rand = (n, seed = 1) => { let s = seed; return Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) - 0.5); };
const close = (got, want) => { for (let i = 0; i < want.length; i++) if (!(Math.abs(got[i] - want[i]) <= 1e-3 * (1 + Math.abs(want[i])))) throw new Error('element ' + i + ': ' + got[i] + ' vs ' + want[i]); };
const isMoe = (e, code) => e instanceof m.MoeError && (code === undefined || e.code === code);
const layoutFor = (tokens, k, experts) => m.dispatchLayoutSync(m.tensor(Int32Array.from({ length: tokens * k }, (_, i) => (i * 7) % experts), [tokens, k]), experts, { align: 1 });
`;

// Under the sanitizer build (scripts/sanitize.sh sets ASAN_OPTIONS) the
// child processes run several times slower: the stress cases get more time.
const SANITIZED = process.env.ASAN_OPTIONS !== undefined;
if (SANITIZED) vi.setConfig({ testTimeout: 600_000 });

function runScript(body: string, timeout = SANITIZED ? 480_000 : 90_000) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-hostile-'));
  const file = path.join(dir, 'case.cjs');
  fs.writeFileSync(file, prelude + body);
  try {
    return spawnSync(process.execPath, [file], { encoding: 'utf8', timeout, env: { ...process.env, MOE_NUM_THREADS: '2' } });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function expectClean(r: ReturnType<typeof runScript>, done: string): void {
  expect(r.stderr).not.toMatch(/FATAL|Segmentation|Aborted|AddressSanitizer|runtime error|free\(\)|double free|core dumped/);
  expect(r.status, `exit ${r.status} signal ${r.signal}\n${r.stderr}`).toBe(0);
  expect(r.stdout).toContain(done);
}

describe('worker threads', () => {
  it('native errors raised in several workers (and the main thread) are each MoeErrors of their own thread', () => {
    const r = runScript(`
const { Worker, isMainThread, parentPort } = require('node:worker_threads');
function provoke(n) {
  // rowToken values are checked by native code: the error is built there.
  const layout = layoutFor(8, 2, 4);
  layout.rowToken.data[0] = 1000;
  const x = m.tensor(rand(8 * 32), [8, 32]);
  for (let i = 0; i < n; i++) {
    try { m.dispatchSync(x, layout); throw new Error('no error'); } catch (e) { if (!isMoe(e, 'ERR_MOE_RANGE')) throw e; }
  }
}
if (isMainThread) {
  (async () => {
    provoke(50);
    for (let round = 0; round < 4; round++) {
      await Promise.all(Array.from({ length: 3 }, () => new Promise((resolve, reject) => {
        const w = new Worker(__filename);
        w.on('error', reject);
        w.on('exit', (code) => (code === 0 ? resolve() : reject(new Error('worker exit ' + code))));
      })));
      provoke(50);
    }
    console.log('errors ok');
  })().catch((e) => { console.error(e); process.exit(1); });
} else {
  provoke(200);
}`);
    expectClean(r, 'errors ok');
  });

  it('worker.terminate() while a native call runs, which then fails: its error is made in a terminating environment', () => {
    const r = runScript(`
const { Worker, isMainThread, parentPort } = require('node:worker_threads');
if (isMainThread) {
  (async () => {
    for (let round = 0; round < 4; round++) {
      const w = new Worker(__filename);
      await new Promise((resolve) => w.once('message', resolve)); // the loop has started
      await new Promise((resolve) => setTimeout(resolve, 5 + round * 7));
      await w.terminate();
    }
    console.log('terminate during a failing call ok');
  })().catch((e) => { console.error(e); process.exit(1); });
} else {
  // ~20 ms of native quantization that ends in ERR_MOE_NONFINITE (the NaN is
  // in the last row): the termination lands while the kernel runs, and the
  // MoeError is built after it.
  const values = new Float32Array(256 * 4096).fill(0.5);
  values[values.length - 1] = NaN;
  const x = m.tensor(values, [256, 4096]);
  parentPort.postMessage('started');
  for (;;) {
    try { m.quantizeActivationsSync(x); } catch (e) { if (!isMoe(e, 'ERR_MOE_NONFINITE')) throw e; }
  }
}`);
    expectClean(r, 'terminate during a failing call ok');
  });

  it('worker.terminate() in the middle of native calls leaves the process running', () => {
    const r = runScript(`
const { Worker, isMainThread } = require('node:worker_threads');
if (isMainThread) {
  (async () => {
    for (let round = 0; round < 16; round++) {
      const workers = Array.from({ length: 4 }, () => new Worker(__filename));
      await new Promise((resolve) => setTimeout(resolve, 30 + (round * 17) % 50));
      await Promise.all(workers.map((w, i) => new Promise((resolve) => setTimeout(() => w.terminate().then(resolve), i * 3))));
    }
    console.log('terminate ok');
  })().catch((e) => { console.error(e); process.exit(1); });
} else {
  const layout = layoutFor(8, 2, 4);
  layout.rowToken.data[0] = 1000;
  const x = m.tensor(rand(8 * 32), [8, 32]);
  // Tensor.data is a getter: native code reading it runs JavaScript, which
  // is where a termination lands.
  const q = m.tensor(rand(16), [1, 16]);
  const y = m.tensor(rand(16 * 32), [16, 32]);
  const weights = m.tensor(new Float32Array(16).fill(0.5), [8, 2]);
  const bad = { ...layout, slotRow: m.tensor(new Int32Array(16).fill(99), [8, 2]) };
  for (;;) {
    try { m.dispatchSync(x, layout); } catch (e) { if (!isMoe(e)) throw e; }
    try { m.combineSync(y, bad, weights); } catch (e) { if (!isMoe(e)) throw e; }
    m.combine(y, bad, weights).catch(() => {});
    try { m.quantizeActivationsSync(q, { scaleFormat: 'f32' }); } catch (e) { if (!isMoe(e)) throw e; }
    m.quantizeActivations(q).catch(() => {});
    for (let i = 0; i < 4; i++) m.quantizeActivationsSync(q);
  }
}`);
    expectClean(r, 'terminate ok');
  });

  it('process.exit() in a getter that a Promise-form op reads natively (no Promise can be made) exits cleanly', () => {
    // One read of `data` per call is the addon's own (the others are lib/'s
    // checks): exiting there leaves the op with a failed read in an
    // environment where napi_create_promise fails; at a different call
    // count each round, so the stack holds different leftovers each time.
    const r = runScript(`
const { Worker, isMainThread, workerData } = require('node:worker_threads');
if (isMainThread) {
  (async () => {
    for (let round = 0; round < 12; round++) {
      for (const op of ['quantize', 'dispatch']) {
        await new Promise((resolve, reject) => {
          const w = new Worker(__filename, { workerData: { round, op } });
          w.on('error', reject);
          w.on('exit', resolve);
        });
      }
    }
    console.log('exit in getter ok');
  })().catch((e) => { console.error(e); process.exit(1); });
} else {
  const { round, op } = workerData;
  const tensor = op === 'quantize' ? m.tensor(rand(16), [1, 16]) : m.tensor(rand(8 * 32), [8, 32]);
  const data = tensor.data;
  let reads = 0, nativeRead = 0, exitAt = Infinity;
  Object.defineProperty(tensor, 'data', {
    get() {
      if (++reads === exitAt) process.exit(0);
      // Learning: the addon's read is the one whose JS caller is the op's own
      // file calling native code (lib/'s checks read from validate.js).
      if (exitAt === Infinity && /ops\\/(quantize|dispatch)\\.js/.test(new Error().stack.split('\\n')[2])) nativeRead = reads;
      return data;
    },
  });
  const layout = layoutFor(8, 2, 4);
  const call = () => (op === 'quantize' ? m.quantizeActivations(tensor) : m.dispatch(tensor, layout));
  call().catch(() => {});
  assert(nativeRead > 0, 'no native read of data seen');
  const perCall = reads;
  reads = 0;
  exitAt = (3 + round) * perCall + nativeRead;
  for (let i = 0; i < 5 + round; i++) call().catch(() => {});
  throw new Error('the exit at read ' + exitAt + ' never came');
}`);
    expectClean(r, 'exit in getter ok');
  });

  it('process.exit() in workers with forwards in flight (the last one unloads the addon)', () => {
    const r = runScript(`
const { Worker, isMainThread } = require('node:worker_threads');
if (isMainThread) {
  (async () => {
    for (let round = 0; round < 6; round++) {
      await new Promise((resolve, reject) => {
        const w = new Worker(__filename);
        w.on('error', reject);
        w.on('exit', resolve);
      });
    }
    console.log('exit ok');
  })().catch((e) => { console.error(e); process.exit(1); });
} else {
  const layer = m.MoeLayer.random({ ...m.DEEPSEEK_V3_CONFIG, hiddenSize: 256, intermediateSize: 128, numExperts: 16, numGroups: 4, topKGroups: 2, topK: 4 }, { seed: 2 });
  const x = m.tensor(rand(64 * 256), [64, 256]);
  for (let i = 0; i < 8; i++) layer.forward(x).catch(() => {});
  setTimeout(() => process.exit(0), 5);
}`);
    expectClean(r, 'exit ok');
  });
});

describe('SharedArrayBuffer tensors', () => {
  it('work as inputs and outputs of every operation kind, sync and async, with the same results', () => {
    const r = runScript(`
const shared = (a) => { const s = new a.constructor(new SharedArrayBuffer(a.byteLength)); s.set(a); return s; };
(async () => {
  const xs = rand(16 * 256);
  const x = m.tensor(xs, [16, 256]);
  const xShared = m.tensor(shared(xs), [16, 256]);
  // quantize: SAB input, SAB output
  const q = m.quantizeActivationsSync(x);
  const into = { data: m.tensor(shared(new Uint8Array(16 * 256)), [16, 256], 'fp8_e4m3'), scales: m.tensor(shared(new Float32Array(16 * 2)), [16, 2]) };
  m.quantizeActivationsSync(xShared, { into });
  assert.deepStrictEqual(Array.from(into.data.data), Array.from(q.data.data));
  into.data.data.fill(0);
  await m.quantizeActivations(xShared, { into });
  assert.deepStrictEqual(Array.from(into.data.data), Array.from(q.data.data));
  // gemm into a SAB output
  const w = m.quantizeWeightsSync(m.tensor(rand(64 * 256, 3), [64, 256]));
  const d = m.gemmFp8Sync(q, w, { out: 'f32' });
  const dShared = m.tensor(shared(new Float32Array(16 * 64)), [16, 64]);
  await m.gemmFp8(q, w, { out: 'f32', into: dShared });
  assert.deepStrictEqual(Array.from(dShared.data), Array.from(d.data));
  // the layer forward: SAB x and SAB output
  const layer = m.MoeLayer.random({ ...m.DEEPSEEK_V3_CONFIG, hiddenSize: 256, intermediateSize: 128, numExperts: 16, numGroups: 4, topKGroups: 2, topK: 4 }, { seed: 2 });
  const y = layer.forwardSync(x, { out: 'f32' });
  const yShared = m.tensor(shared(new Float32Array(16 * 256)), [16, 256]);
  layer.forwardSync(xShared, { out: 'f32', into: yShared });
  assert.deepStrictEqual(Array.from(yShared.data), Array.from(y.data));
  yShared.data.fill(0);
  await layer.forward(xShared, { out: 'f32', into: yShared });
  assert.deepStrictEqual(Array.from(yShared.data), Array.from(y.data));
  // dispatch / combine with SAB index tensors and outputs
  const layout = layoutFor(16, 2, 8);
  const rowsShared = m.tensor(shared(new Float32Array(32 * 256)), [32, 256]);
  await m.dispatch(xShared, layout, { into: rowsShared });
  const c = await m.combine(rowsShared, layout, m.tensor(new Float32Array(32).fill(0.5), [16, 2]), { out: 'f32', into: m.tensor(shared(new Float32Array(16 * 256)), [16, 256]) });
  for (let i = 0; i < c.data.length; i++) assert.ok(Math.abs(c.data[i] - xs[i]) < 1e-6);
  console.log('sab ok');
})().catch((e) => { console.error(e); process.exit(1); });`);
    expectClean(r, 'sab ok');
  });
});

describe('buffers changed while a Promise-form operation runs', () => {
  it('a transfer of an input or output buffer is refused or copies (the running op keeps its memory)', () => {
    const r = runScript(`
(async () => {
  const layer = m.MoeLayer.random({ ...m.DEEPSEEK_V3_CONFIG, hiddenSize: 512, intermediateSize: 256, numExperts: 16, numGroups: 4, topKGroups: 2, topK: 4 }, { seed: 2 });
  const xs = rand(256 * 512);
  const expected = layer.forwardSync(m.tensor(xs.slice(), [256, 512]), { out: 'f32' });
  for (let round = 0; round < 4; round++) {
    const x = m.tensor(xs.slice(), [256, 512]);
    const out = m.tensor(new Float32Array(256 * 512), [256, 512]);
    const running = layer.forward(x, { out: 'f32', into: out });
    for (const buffer of [x.data.buffer, out.data.buffer]) {
      try {
        const moved = round % 2 ? structuredClone(buffer, { transfer: [buffer] }) : buffer.transfer?.();
        if (moved) new Uint8Array(moved).fill(0xff); // a transfer that happened must not reach the op's memory
      } catch (e) {
        if (e.name !== 'DataCloneError' && !(e instanceof TypeError)) throw e;
      }
      assert.ok(buffer.byteLength > 0, 'the buffer of a running op was detached');
    }
    await running;
    assert.deepStrictEqual(Array.from(out.data), Array.from(expected.data));
  }
  console.log('transfer ok');
})().catch((e) => { console.error(e); process.exit(1); });`);
    expectClean(r, 'transfer ok');
  });

  it('index tensors written while dispatch / combine / dispatchLayout / the grouped GEMM run give a result or a MoeError', () => {
    const r = runScript(`
const { Worker, isMainThread, workerData } = require('node:worker_threads');
if (!isMainThread) {
  // Flips the shared index values between valid and wildly out of range.
  const view = new Int32Array(workerData);
  const saved = Int32Array.from(view);
  for (let i = 0; ; i++) {
    const j = i % view.length;
    view[j] = (i & 1) ? saved[j] : 0x3fffffff;
  }
}
const shared = (a) => { const s = new a.constructor(new SharedArrayBuffer(a.byteLength)); s.set(a); return s; };
(async () => {
  const tokens = 64, k = 4, experts = 8, hidden = 256;
  const base = layoutFor(tokens, k, experts);
  const layout = { ...base, slotRow: m.tensor(shared(base.slotRow.data), base.slotRow.shape), rowToken: m.tensor(shared(base.rowToken.data), base.rowToken.shape), groupIndex: m.tensor(shared(base.groupIndex.data), base.groupIndex.shape) };
  const ids = m.tensor(shared(Int32Array.from({ length: tokens * k }, (_, i) => i % experts)), [tokens, k]);
  const x = m.tensor(rand(tokens * hidden), [tokens, hidden]);
  const y = m.tensor(rand(layout.numRows * hidden), [layout.numRows, hidden]);
  const weights = m.tensor(new Float32Array(tokens * k).fill(0.25), [tokens, k]);
  const rows = m.quantizeActivationsSync(m.tensor(rand(layout.numRows * hidden), [layout.numRows, hidden]));
  const w = m.quantizeWeightsSync(m.tensor(rand(experts * 128 * hidden), [experts, 128, hidden]));
  const ok = (p) => p.then(() => 'ok', (e) => { if (!isMoe(e)) throw e; return e.code; });
  // Plain typed arrays written by this thread while the ops run on others.
  const plain = layoutFor(tokens, k, experts);
  const plainIds = m.tensor(Int32Array.from({ length: tokens * k }, (_, i) => i % experts), [tokens, k]);
  const targets = [plain.slotRow.data, plain.rowToken.data, plain.groupIndex.data, plainIds.data];
  const saved = targets.map((t) => Int32Array.from(t));
  for (let i = 0; i < 300; i++) {
    const running = Promise.all([
      ok(m.combine(y, plain, weights)),
      ok(m.dispatch(x, plain)),
      ok(m.dispatchLayout(plainIds, experts)),
      ok(m.groupedGemmFp8(rows, w, plain.groupIndex)),
    ]);
    const until = Date.now() + 2;
    for (let n = 0; Date.now() < until; n++) targets.forEach((t, j) => t.fill(n & 1 ? 0x3fffffff : -0x3fffffff));
    targets.forEach((t, j) => t.set(saved[j]));
    await running;
  }
  // SharedArrayBuffer index tensors written by other threads.
  const workers = [layout.slotRow, layout.rowToken, layout.groupIndex, ids].map((t) => new Worker(__filename, { workerData: t.data.buffer }));
  for (let i = 0; i < 300; i++) {
    await Promise.all([
      ok(m.combine(y, layout, weights)),
      ok(m.dispatch(x, layout)),
      ok(m.dispatch(x, layout, { quantize: 'fp8' })),
      ok(m.dispatchLayout(ids, experts)),
      ok(m.groupedGemmFp8(rows, w, layout.groupIndex)),
    ]);
  }
  for (const wk of workers) await wk.terminate();
  console.log('mutation ok');
})().catch((e) => { console.error(e); process.exit(1); });`);
    expectClean(r, 'mutation ok');
  });
});

describe('setNumThreads() while Promise-form operations are queued', () => {
  it('growing the pool under queued GEMMs, router projections and forwards keeps their per-thread scratch in bounds', () => {
    const r = runScript(`
(async () => {
  const a = m.quantizeActivationsSync(m.tensor(rand(96 * 512), [96, 512]));
  const b = m.quantizeWeightsSync(m.tensor(rand(384 * 512, 5), [384, 512]));
  const expected = m.gemmFp8Sync(a, b, { out: 'f32' });
  const layer = m.MoeLayer.random({ ...m.DEEPSEEK_V3_CONFIG, hiddenSize: 256, intermediateSize: 128, numExperts: 16, numGroups: 4, topKGroups: 2, topK: 4 }, { seed: 2 });
  const x = m.tensor(rand(128 * 256), [128, 256]);
  const y = layer.forwardSync(x, { out: 'f32' });
  for (let round = 0; round < 6; round++) {
    m.setNumThreads(1);
    const ops = [];
    for (let i = 0; i < 6; i++) ops.push(m.gemmFp8(a, b, { out: 'f32' }), layer.forward(x, { out: 'f32' }));
    m.setNumThreads(16 + round);
    const results = await Promise.all(ops);
    for (let i = 0; i < results.length; i += 2) {
      close(results[i].data, expected.data);
      close(results[i + 1].data, y.data);
    }
  }
  m.setNumThreads(2);
  console.log('threads ok');
})().catch((e) => { console.error(e); process.exit(1); });`);
    expectClean(r, 'threads ok');
  });
});
