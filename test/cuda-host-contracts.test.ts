/**
 * Two host-side rules of the CUDA plug-in's Hopper kernels, on a GPU or on
 * the emulator (which keeps those kernels' host contracts: see
 * native/cuda/test/emulator/device.h):
 *   - a split-K dense GEMM passes its partials through the plug-in's one
 *     workspace between two launches; split GEMMs from several threads at
 *     once must not interleave those launches;
 *   - the contiguous grouped GEMM's Hopper kernel reads a whole block of rows
 *     as the group of its first row; calls whose segments are not aligned to
 *     its blocks (any align, a bare groupIndex) must run a kernel that honors
 *     every row, or be refused with a clear error.
 * Each child-process case runs in its own process (worker threads, an
 * environment read at the plug-in's probe).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  backends,
  dispatchLayoutSync,
  groupedGemmFp8Sync,
  quantizeActivationsSync,
  quantizeWeightsSync,
  tensor,
  type QuantizedTensor,
  type Tensor,
} from '../lib/index';
import { randomFloats, rng } from './helpers/random';

const root = path.resolve(__dirname, '..');
const cuda = backends().find((b) => b.name === 'cuda')!;

function runScript(source: string, env: Record<string, string> = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-cuda-host-'));
  const file = path.join(dir, 'case.cjs');
  fs.writeFileSync(file, source);
  try {
    return spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, ...env } });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe.skipIf(!cuda.available)('the CUDA plug-in under concurrent threads', () => {
  it('split-K GEMMs enqueued by 4 worker threads at once each get their own product', () => {
    // M = 8, N = 256, K = 2048: 2 tiles of a 132-SM GPU, so the Hopper dense
    // GEMM splits K; f32 out, so the result equals the CPU's bit for bit.
    const source = `
const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads');
if (isMainThread) {
  let done = 0, bad = 0;
  for (let w = 0; w < 4; w++) {
    const worker = new Worker(__filename, { workerData: w });
    worker.on('message', (m) => { if (m !== 'ok') { bad++; console.error(m); } });
    worker.on('error', (e) => { bad++; console.error('worker failed:', e && e.message); });
    worker.on('exit', () => { if (++done === 4) { console.log(bad === 0 ? 'all equal' : 'mismatch'); process.exitCode = bad ? 1 : 0; } });
  }
} else {
  const m = require(${JSON.stringify(root)});
  let seed = 1 + workerData * 7919;
  const rand = () => ((seed = (seed * 16807) % 2147483647) / 2147483647) - 0.5;
  const x = m.tensor(Float32Array.from({ length: 8 * 2048 }, rand), [8, 2048]);
  const w = m.tensor(Float32Array.from({ length: 256 * 2048 }, rand), [256, 2048]);
  const a = m.quantizeActivationsSync(x), b = m.quantizeWeightsSync(w);
  const want = Buffer.from(m.gemmFp8Sync(a, b, { out: 'f32' }).data.buffer);
  const ad = { data: a.data.to('cuda'), scales: a.scales.to('cuda') };
  const bd = { data: b.data.to('cuda'), scales: b.scales.to('cuda') };
  Promise.all(Array.from({ length: 12 }, () => m.gemmFp8(ad, bd, { out: 'f32' }))).then((outs) => {
    const wrong = outs.filter((d) => !Buffer.from(d.to('cpu').data.buffer).equals(want)).length;
    parentPort.postMessage(wrong === 0 ? 'ok' : 'worker ' + workerData + ': ' + wrong + ' of 12 products differ from its own');
  }, (e) => parentPort.postMessage('worker ' + workerData + ': ' + e.message));
}`;
    const r = runScript(source, { MOE_EMU_PAUSE_US: '300' });
    expect(r.stderr).not.toMatch(/FATAL|Segmentation|Aborted/);
    expect(r.stdout + r.stderr).toContain('all equal');
    expect(r.status, r.stderr).toBe(0);
  });
});

describe.skipIf(!cuda.available)('the contiguous grouped GEMM on the GPU: segments the Hopper kernel cannot take', () => {
  const random = rng();
  const e = 4;
  const n = 256;
  const k = 256;

  function operands(rows: number) {
    const a = quantizeActivationsSync(tensor(randomFloats(rows * k, random), [rows, k]));
    const b = quantizeWeightsSync(tensor(randomFloats(e * n * k, random, 0.05), [e * n, k]));
    const experts: QuantizedTensor = { data: tensor(b.data.data as Uint8Array, [e, n, k], 'fp8_e4m3'), scales: tensor(b.scales.data as Float32Array, [e, 2, 2], 'f32') };
    const toCuda = (q: QuantizedTensor): QuantizedTensor => ({ data: q.data.to('cuda'), scales: q.scales.to('cuda') }) as QuantizedTensor;
    return { a, experts, aCuda: toCuda(a), expertsCuda: toCuda(experts) };
  }
  const same = (got: Tensor, want: Tensor) => expect(Buffer.from(got.to('cpu').data!.buffer).equals(Buffer.from(want.data!.buffer))).toBe(true);

  it('a bare groupIndex whose groups change inside a 128-row block: every row computed (equal to the CPU)', () => {
    const rows = 300;
    const index = Int32Array.from({ length: rows }, (_, r) => (r % 23 === 0 ? -1 : Math.floor(r / 37) % e)); // a new group every 37 rows
    const { a, experts, aCuda, expertsCuda } = operands(rows);
    const want = groupedGemmFp8Sync(a, experts, tensor(index, [rows], 'i32'), { out: 'f32' });
    same(groupedGemmFp8Sync(aCuda, expertsCuda, tensor(index, [rows], 'i32').to('cuda'), { out: 'f32' }), want);
  });

  it('a dispatch layout aligned to 7 rows: every row computed (equal to the CPU)', () => {
    const t = 61;
    const ids = tensor(Int32Array.from({ length: t * 2 }, (_, i) => (i * 5 + (i >> 3)) % e), [t, 2], 'i32');
    const layout = dispatchLayoutSync(ids, e, { align: 7 });
    const rows = layout.groupIndex.shape[0];
    const { a, experts, aCuda, expertsCuda } = operands(rows);
    const want = groupedGemmFp8Sync(a, experts, layout, { out: 'f32' });
    const onGpu = dispatchLayoutSync(ids.to('cuda'), e, { align: 7 });
    same(groupedGemmFp8Sync(aCuda, expertsCuda, onGpu, { out: 'f32' }), want);
  });

  it.skipIf(cuda.device?.kernels !== 'hopper')('forcing the Hopper kernel on such a call is ERR_MOE_UNSUPPORTED naming the alignment', () => {
    const source = `
const m = require(${JSON.stringify(root)});
const rows = 256, k = 256, n = 256, e = 4;
const a = m.quantizeActivationsSync(m.tensor(new Float32Array(rows * k).fill(0.5), [rows, k]));
const b = m.quantizeWeightsSync(m.tensor(new Float32Array(e * n * k).fill(0.25), [e * n, k]));
const experts = { data: m.tensor(b.data.data, [e, n, k], 'fp8_e4m3').to('cuda'), scales: m.tensor(b.scales.data, [e, 2, 2], 'f32').to('cuda') };
const index = m.tensor(Int32Array.from({ length: rows }, (_, r) => r % e), [rows], 'i32').to('cuda');
try {
  m.groupedGemmFp8Sync({ data: a.data.to('cuda'), scales: a.scales.to('cuda') }, experts, index);
  console.log('ran');
} catch (e) {
  console.log(e.code + ': ' + e.message);
}`;
    const r = runScript(source, { MOE_CUDA_GEMM_KERNEL: 'hopper' });
    expect(r.stdout).toMatch(/ERR_MOE_UNSUPPORTED: .*aligned to 1 rows, not to a multiple of 64/);
  });
});
