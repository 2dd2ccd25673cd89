// The GPU check (run by scripts/device-check.sh on a machine with an NVIDIA
// GPU): every CUDA op against the CPU backend on random inputs with poisoned
// outputs, then timings with CUDA events (L2 flushed before every run, median
// of >= 20 runs) on DeepGEMM's published shapes, as TFLOPS, GB/s and ratios.
// Prints a short table last; writes the whole report as JSON to $OUT.
import { createRequire } from 'node:module';
import { randomFillSync } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const m = require(root);
const { native } = require(path.join(root, 'dist', 'native.js'));

const RUNS = 20;
// Dense FP8 tensor-core peaks from NVIDIA's datasheets (no sparsity), TFLOPS:
// the ceiling for the compute-bound ratios (a kernel cannot measure it itself).
const SPEC_FP8_TFLOPS = { H100: 1979, H200: 1979, H800: 1979, H20: 296 };
const DEEPGEMM_TARGET = { dense: 1550, contiguous: 1350 };

function randomCodes(n) {
  const codes = randomFillSync(new Uint8Array(n));
  for (let i = 0; i < n; i++) if ((codes[i] & 0x7f) === 0x7f) codes[i] ^= 1; // no NaN codes
  return codes;
}
function randomScales(n) {
  const s = new Float32Array(n);
  for (let i = 0; i < n; i++) s[i] = (0.5 + Math.random()) / 448;
  return s;
}
function quantized(shape, blockRows) {
  const k = shape[shape.length - 1];
  const rows = shape[shape.length - 2];
  const lead = shape.slice(0, -2);
  const scaleShape = [...lead, Math.ceil(rows / blockRows), Math.ceil(k / 128)];
  return {
    data: m.tensor(randomCodes(shape.reduce((a, b) => a * b, 1)), shape, 'fp8_e4m3'),
    scales: m.tensor(randomScales(scaleShape.reduce((a, b) => a * b, 1)), scaleShape, 'f32'),
  };
}
const toCuda = (q) => ({ data: q.data.to('cuda'), scales: q.scales.to('cuda') });
const poisoned = (shape, dtype) => m.tensor(new (dtype === 'f32' ? Float32Array : Uint16Array)(shape.reduce((a, b) => a * b, 1)).fill(dtype === 'f32' ? NaN : 0x7fc0), shape, dtype).to('cuda');
function calcDiff(x, y) {
  let xy = 0, xx = 0;
  for (let i = 0; i < x.length; i++) { xy += x[i] * y[i]; xx += x[i] * x[i] + y[i] * y[i]; }
  return xx === 0 ? 0 : 1 - (2 * xy) / xx;
}
const sameBits = (a, b) => Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;

const results = [];
function check(name, ok, detail) {
  results.push({ name, ok, detail });
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name} ${detail}`);
}

// ---- correctness: every CUDA op vs the CPU backend ----
function checkCorrectness() {
  for (const [mm, n, k] of [[1, 2112, 7168], [7, 300, 1040], [129, 257, 8208], [256, 4096, 7168], [64, 7168, 2048]]) {
    const a = quantized([mm, k], 1), b = quantized([n, k], 128);
    const cpu = m.gemmFp8Sync(a, b, { out: 'f32' }).data;
    for (const out of ['f32', 'bf16']) {
      const gpu = m.gemmFp8Sync(toCuda(a), toCuda(b), { out, into: poisoned([mm, n], out) }).toFloat32Array();
      const diff = calcDiff(gpu, cpu);
      check(`gemmFp8 M=${mm} N=${n} K=${k} ${out}`, diff < 1e-5 && gpu.every(Number.isFinite), `diff=${diff.toExponential(2)}`);
    }
  }
  for (const [g, rowsPerGroup, n, k] of [[4, 256, 4096, 7168], [3, 128, 512, 1024]]) {
    const rows = g * rowsPerGroup;
    const groupIndex = m.tensor(Int32Array.from({ length: rows }, (_, r) => (r % rowsPerGroup < rowsPerGroup - 40 ? Math.floor(r / rowsPerGroup) : -1)), [rows]);
    const a = quantized([rows, k], 1), b = quantized([g, n, k], 128);
    const cpu = m.groupedGemmFp8Sync(a, b, groupIndex, { out: 'f32' }).data;
    const gpu = m.groupedGemmFp8Sync(toCuda(a), toCuda(b), groupIndex.to('cuda'), { out: 'f32', into: poisoned([rows, n], 'f32') }).toFloat32Array();
    check(`groupedGemmFp8 G=${g} R=${rows} N=${n} K=${k}`, calcDiff(gpu, cpu) < 1e-5 && gpu.every(Number.isFinite), `diff=${calcDiff(gpu, cpu).toExponential(2)}`);
  }
  for (const [g, mmax, n, k] of [[4, 256, 4096, 7168], [2, 64, 300, 1040]]) {
    const maskedM = m.tensor(Int32Array.from({ length: g }, (_, i) => Math.floor((mmax * (i + 1)) / (g + 1))), [g]);
    const a = quantized([g, mmax, k], 1), b = quantized([g, n, k], 128);
    const cpu = m.groupedGemmFp8MaskedSync(a, b, maskedM, { out: 'f32' }).data;
    const gpu = m.groupedGemmFp8MaskedSync(toCuda(a), toCuda(b), maskedM.to('cuda'), { out: 'f32', into: poisoned([g, mmax, n], 'f32') }).toFloat32Array();
    check(`groupedGemmFp8Masked G=${g} Mmax=${mmax} N=${n} K=${k}`, calcDiff(gpu, cpu) < 1e-5 && gpu.every(Number.isFinite), `diff=${calcDiff(gpu, cpu).toExponential(2)}`);
  }
  for (const [rows, cols] of [[1, 16], [129, 1040], [300, 7168]]) {
    const x = m.tensor(Float32Array.from({ length: rows * cols }, () => (Math.random() - 0.5) * 10), [rows, cols]);
    for (const scaleFormat of ['f32', 'ue8m0']) {
      for (const [op, fn] of [['quantizeActivations', m.quantizeActivationsSync], ['quantizeWeights', m.quantizeWeightsSync]]) {
        const cpu = fn(x, { scaleFormat });
        const gpu = fn(x.to('cuda'), { scaleFormat });
        const ok = sameBits(gpu.data.to('cpu').data, cpu.data.data) && sameBits(gpu.scales.to('cpu').data, cpu.scales.data);
        check(`${op} [${rows}, ${cols}] ${scaleFormat}`, ok, 'bit-exact vs CPU');
        const back = m.dequantizeSync(gpu).to('cpu').data;
        check(`dequantize ${op} [${rows}, ${cols}] ${scaleFormat}`, sameBits(back, m.dequantizeSync(cpu).data), 'bit-exact vs CPU');
      }
    }
  }
  const bad = m.tensor(new Float32Array(32).fill(1), [2, 16]);
  bad.data[5] = NaN;
  let code = 'none';
  try { m.quantizeActivationsSync(bad.to('cuda')); } catch (e) { code = e.code; }
  check('quantize NaN on the GPU', code === 'ERR_MOE_NONFINITE', code);
}

// ---- timing ----
async function timeMs(run) {
  const times = [];
  for (let i = 0; i < RUNS + 2; i++) {
    native().cudaFlushL2();
    native().cudaTimerStart();
    const done = run();
    const ms = native().cudaTimerStop();
    await done;
    if (i >= 2) times.push(ms);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

function hbmGBs() {
  const bytes = 2 ** 31;
  const a = m.empty([bytes], 'fp8_e4m3', 'cuda'), b = m.empty([bytes], 'fp8_e4m3', 'cuda');
  const times = [];
  for (let i = 0; i < 10; i++) {
    native().cudaTimerStart();
    native().cudaCopyDeviceToDevice(b.handle, a.handle, bytes);
    times.push(native().cudaTimerStop());
  }
  a.dispose(); b.dispose();
  return (2 * bytes) / (Math.min(...times) / 1e3) / 1e9; // read + write
}

async function timeShapes(peakTflops, hbm) {
  const rows = [];
  const NK = [[2112, 7168], [24576, 1536], [32768, 512], [7168, 16384], [4096, 7168], [7168, 2048]];
  const record = (kind, shape, flops, bytes, ms, target) => {
    const tflops = flops / ms / 1e9;
    const gbs = bytes / ms / 1e6;
    rows.push({ kind, shape, ms, tflops, gbs, peakRatio: tflops / peakTflops, hbmRatio: gbs / hbm, target });
  };
  for (const mm of [64, 128, 4096]) {
    for (const [n, k] of NK) {
      const a = toCuda(quantized([mm, k], 1)), b = toCuda(quantized([n, k], 128));
      const d = m.empty([mm, n], 'bf16', 'cuda');
      const ms = await timeMs(() => m.gemmFp8(a, b, { into: d }));
      record('dense', `M=${mm} N=${n} K=${k}`, 2 * mm * n * k, mm * k + n * k + 2 * mm * n, ms, DEEPGEMM_TARGET.dense);
    }
  }
  for (const [g, per] of [[4, 8192], [8, 4096]]) {
    for (const [n, k] of [[4096, 7168], [7168, 2048]]) {
      const rowsTotal = g * per;
      const groupIndex = m.tensor(Int32Array.from({ length: rowsTotal }, (_, r) => Math.floor(r / per)), [rowsTotal]).to('cuda');
      const a = toCuda(quantized([rowsTotal, k], 1)), b = toCuda(quantized([g, n, k], 128));
      const d = m.empty([rowsTotal, n], 'bf16', 'cuda');
      const ms = await timeMs(() => m.groupedGemmFp8(a, b, groupIndex, { into: d }));
      record('contiguous', `${g}x${per} N=${n} K=${k}`, 2 * rowsTotal * n * k, rowsTotal * k + g * n * k + 2 * rowsTotal * n, ms, DEEPGEMM_TARGET.contiguous);
    }
  }
  for (const [g, expected] of [[1, 1024], [2, 512], [4, 256]]) {
    for (const [n, k] of [[4096, 7168], [7168, 2048]]) {
      const mmax = expected * 2;
      const maskedM = m.tensor(new Int32Array(g).fill(expected), [g]).to('cuda');
      const a = toCuda(quantized([g, mmax, k], 1)), b = toCuda(quantized([g, n, k], 128));
      const d = m.empty([g, mmax, n], 'bf16', 'cuda');
      const ms = await timeMs(() => m.groupedGemmFp8Masked(a, b, maskedM, { into: d }));
      record('masked', `${g}x${expected} N=${n} K=${k}`, 2 * g * expected * n * k, g * expected * k + g * n * k + 2 * g * expected * n, ms, undefined);
    }
  }
  return rows;
}

const cuda = m.backends()[1];
console.log(`CUDA backend: ${cuda.available ? 'available' : 'UNAVAILABLE'}: ${cuda.reason}`);
if (!cuda.available) process.exit(1);
console.log(JSON.stringify(cuda.device));
checkCorrectness();
const family = Object.keys(SPEC_FP8_TFLOPS).find((name) => cuda.device.name.includes(name));
const peak = SPEC_FP8_TFLOPS[family] ?? 1979;
const hbm = hbmGBs();
const timings = await timeShapes(peak, hbm);
const report = { date: new Date().toISOString(), device: cuda.device, hbmGBs: hbm, specFp8Tflops: peak, checks: results, timings };
if (process.env.OUT) fs.writeFileSync(path.join(process.env.OUT, 'device-check.json'), JSON.stringify(report, null, 2));

const failed = results.filter((r) => !r.ok);
console.log(`\n${cuda.device.name}: measured HBM ${hbm.toFixed(0)} GB/s (device-to-device copy); FP8 dense peak ${peak} TFLOPS (datasheet)`);
console.log(['kind', 'shape', 'ms', 'TFLOPS', '% peak', 'GB/s', '% HBM', 'target'].join('\t'));
for (const r of timings) {
  console.log([r.kind, r.shape, r.ms.toFixed(3), r.tflops.toFixed(0), (100 * r.peakRatio).toFixed(0), r.gbs.toFixed(0), (100 * r.hbmRatio).toFixed(0), r.target ?? '-'].join('\t'));
}
console.log(`${results.length - failed.length} passed, ${failed.length} failed`);
process.exitCode = failed.length ? 1 : 0;
