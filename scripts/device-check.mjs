// The GPU check (run by scripts/device-check.sh on a machine with an NVIDIA
// GPU): every CUDA op against the CPU backend on random inputs with poisoned
// outputs, then timings with CUDA events (L2 flushed before every run, median
// of >= 20 runs) on DeepGEMM's published shapes, as TFLOPS, GB/s and ratios;
// the MoE layer's ops (route, layout, dispatch, swiglu, combine) and the
// whole layer (plus CUDA graph replay) against the CPU backend, dispatch and
// combine in GB/s against the measured HBM bandwidth, and the layer at
// DeepSeek-V3's full shape against the sum of its GEMMs' times.
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

// ---- correctness: the MoE layer's ops and the layer vs the CPU backend ----
const hostBits = (t) => (t.device === 'cuda' ? t.to('cpu') : t).data;
function balancedIds(t, k, e) {
  const ids = new Int32Array(t * k);
  for (let i = 0; i < t; i++) {
    const start = Math.floor(Math.random() * e);
    for (let j = 0; j < k; j++) ids[i * k + j] = (start + j * 7) % e;
  }
  return m.tensor(ids, [t, k], 'i32');
}
const layoutToCuda = (l) => ({ ...l, tokensPerExpert: l.tokensPerExpert.to('cuda'), offsets: l.offsets.to('cuda'), rowToken: l.rowToken.to('cuda'), groupIndex: l.groupIndex.to('cuda'), slotRow: l.slotRow.to('cuda') });
const poisonedFp8 = (shape) => m.tensor(new Uint8Array(shape.reduce((a, b) => a * b, 1)).fill(0x7f), shape, 'fp8_e4m3').to('cuda');

function checkMoeOps() {
  // routerLogits: the tensor-core kernel (bf16 x and w, T > 32), the f32 tiled
  // kernel and the decode kernel, ragged shapes; f32 sums in another order than
  // the CPU's, so within 1e-5 of the dot products' magnitude.
  for (const [t, e, h, dtype] of [[300, 256, 7168, 'bf16'], [77, 72, 200, 'bf16'], [4096, 256, 896, 'bf16'], [130, 64, 256, 'f32'], [5, 256, 7168, 'bf16']]) {
    const make = (n) => Float32Array.from({ length: n }, () => Math.random() - 0.5);
    const x = dtype === 'bf16' ? m.bf16FromFloat32(make(t * h), [t, h]) : m.tensor(make(t * h), [t, h], 'f32');
    const w = dtype === 'bf16' ? m.bf16FromFloat32(make(e * h), [e, h]) : m.tensor(make(e * h), [e, h], 'f32');
    const cpu = m.routerLogitsSync(x, w).data;
    const gpu = hostBits(m.routerLogitsSync(x.to('cuda'), w.to('cuda')));
    const scale = Math.sqrt(h) * 0.3;
    const worst = gpu.reduce((acc, v, i) => Math.max(acc, Math.abs(v - cpu[i]) / scale), 0);
    check(`routerLogits T=${t} E=${e} H=${h} ${dtype}`, worst < 1e-5 && gpu.every(Number.isFinite), `max err / |x||w| ${worst.toExponential(2)}`);
  }
  for (const [t, e, opts, withBias] of [[257, 256, m.DEEPSEEK_V3_ROUTING, true], [1, 256, m.DEEPSEEK_V3_ROUTING, true], [300, 8, { scoring: 'softmax', topK: 2, renormalize: true }, false], [77, 60, { scoring: 'softmax', topK: 4 }, false]]) {
    const values = Float32Array.from({ length: t * e }, () => Math.round((Math.random() - 0.5) * 8) / 2); // ties
    for (let i = 0; i < t; i += 5) values[i * e + 3] = NaN;
    const logits = m.tensor(values, [t, e], 'f32');
    const bias = withBias ? m.tensor(Float32Array.from({ length: e }, () => Math.round((Math.random() - 0.5) * 8) / 64), [e], 'f32') : undefined;
    const cpu = m.routeSync(logits, { ...opts, bias });
    const gpu = m.routeSync(logits.to('cuda'), { ...opts, bias: bias?.to('cuda') });
    check(`route ${opts.scoring} T=${t} E=${e} k=${opts.topK}`, sameBits(hostBits(gpu.ids), cpu.ids.data), 'ids exact');
    const gw = hostBits(gpu.weights), cw = cpu.weights.data;
    const ok = opts.scoring === 'sigmoid' ? sameBits(gw, cw) : gw.every((v, i) => Math.abs(v - cw[i]) <= 1e-5 * Math.abs(cw[i]));
    check(`route ${opts.scoring} T=${t} E=${e} weights`, ok, opts.scoring === 'sigmoid' ? 'bit-exact' : 'within 1e-5');
  }
  for (const [t, k, e, layout] of [[4096, 8, 256, 'contiguous'], [1, 8, 256, 'contiguous'], [33, 6, 64, 'masked']]) {
    const ids = balancedIds(t, k, e);
    const cpu = m.dispatchLayoutSync(ids, e, { layout });
    const gpu = m.dispatchLayoutSync(ids.to('cuda'), e, { layout });
    const ok = gpu.numRows === cpu.numRows && ['tokensPerExpert', 'offsets', 'slotRow', 'rowToken', 'groupIndex'].every((key) => sameBits(hostBits(gpu[key]), cpu[key].data));
    check(`dispatchLayout ${layout} T=${t} k=${k} E=${e}`, ok, `R=${cpu.numRows}`);
  }
  for (const [t, h, dtype] of [[129, 7168, 'bf16'], [7, 272, 'f32']]) {
    const ids = balancedIds(t, 8, 32);
    const layout = m.dispatchLayoutSync(ids, 32, { align: 128 });
    const values = Float32Array.from({ length: t * h }, () => (Math.random() - 0.5) * 6);
    const x = dtype === 'bf16' ? m.bf16FromFloat32(values, [t, h]) : m.tensor(values, [t, h], 'f32');
    const cpu = m.dispatchSync(x, layout, { quantize: 'fp8' });
    const into = { data: poisonedFp8(cpu.data.shape), scales: poisoned(cpu.scales.shape, 'f32') };
    const gpu = m.dispatchSync(x.to('cuda'), layoutToCuda(layout), { quantize: 'fp8', into });
    check(`dispatch fp8 T=${t} H=${h} ${dtype}`, sameBits(hostBits(gpu.data), cpu.data.data) && sameBits(hostBits(gpu.scales), cpu.scales.data), 'bit-exact');
  }
  for (const [rows, inter] of [[640, 2048], [33, 144]]) {
    const h = m.bf16FromFloat32(Float32Array.from({ length: rows * 2 * inter }, () => (Math.random() - 0.5) * 8), [rows, 2 * inter]);
    const cpu = m.swigluSync(h, { quantize: 'fp8' });
    const into = { data: poisonedFp8(cpu.data.shape), scales: poisoned(cpu.scales.shape, 'f32') };
    const gpu = m.swigluSync(h.to('cuda'), { quantize: 'fp8', into });
    check(`swiglu fp8 R=${rows} I=${inter}`, sameBits(hostBits(gpu.data), cpu.data.data) && sameBits(hostBits(gpu.scales), cpu.scales.data), 'bit-exact');
  }
  for (const [t, h, shared] of [[257, 7168, true], [5, 136, false]]) {
    const layout = m.dispatchLayoutSync(balancedIds(t, 8, 32), 32, { align: 128 });
    const y = m.bf16FromFloat32(Float32Array.from({ length: layout.numRows * h }, () => Math.random() - 0.5), [layout.numRows, h]);
    const w = m.tensor(Float32Array.from({ length: t * 8 }, () => Math.random()), [t, 8], 'f32');
    const s = shared ? m.tensor(Float32Array.from({ length: t * h }, () => Math.random() - 0.5), [t, h], 'f32') : undefined;
    const cpu = m.combineSync(y, layout, w, { shared: s });
    const gpu = m.combineSync(y.to('cuda'), layoutToCuda(layout), w.to('cuda'), { shared: s?.to('cuda'), into: poisoned([t, h], 'bf16') });
    check(`combine T=${t} H=${h} shared=${shared}`, sameBits(hostBits(gpu), cpu.data), 'bit-exact');
  }
  // The whole layer: a small DeepSeek-V3-form layer on both backends, and a captured decode forward.
  const config = { ...m.DEEPSEEK_V3_CONFIG, hiddenSize: 1024, intermediateSize: 512, numExperts: 64 };
  const cpuLayer = m.MoeLayer.random(config, { seed: 3 });
  const gpuLayer = cpuLayer.to('cuda');
  for (const [t, layout] of [[1, 'masked'], [16, 'masked'], [300, 'contiguous']]) {
    const x = m.bf16FromFloat32(Float32Array.from({ length: t * 1024 }, () => Math.random() * 2 - 1), [t, 1024]);
    const want = cpuLayer.forwardSync(x, { out: 'f32' }).data;
    const got = gpuLayer.forwardSync(x, { out: 'f32', layout }).toFloat32Array();
    check(`MoeLayer T=${t} ${layout} vs CPU`, calcDiff(got, want) < 1e-3, `diff=${calcDiff(got, want).toExponential(2)}`);
  }
  const graph = gpuLayer.capture({ maxTokens: 4 });
  const x = m.bf16FromFloat32(Float32Array.from({ length: 4 * 1024 }, () => Math.random() * 2 - 1), [4, 1024]);
  const replayed = graph.replaySync(x).toFloat32Array();
  const direct = gpuLayer.forwardSync(x, { layout: 'masked' }).toFloat32Array();
  check('MoeLayer CUDA graph replay == uncaptured forward', sameBits(replayed, direct), 'bit-exact');
  graph.dispose();
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

// dispatch and combine at DeepSeek-V3's prefill size (T = 4096, H = 7168,
// k = 8, E = 256) in GB/s against the measured HBM bandwidth (target >= 85%),
// with the per-call error-flag readback off so that the events time the kernels.
async function timeMoeOps(hbm) {
  const rows = [];
  const t = 4096, h = 7168, k = 8, e = 256;
  native().cudaSetDataChecks(false);
  try {
    const layout = m.dispatchLayoutSync(balancedIds(t, k, e).to('cuda'), e, { align: 128 });
    const used = t * k, r = layout.numRows, groups = Math.ceil(h / 128);
    const x = m.bf16FromFloat32(Float32Array.from({ length: t * h }, () => Math.random() - 0.5), [t, h]).to('cuda');
    const into = { data: m.empty([r, h], 'fp8_e4m3', 'cuda'), scales: m.empty([r, groups], 'f32', 'cuda') };
    let ms = await timeMs(() => m.dispatch(x, layout, { quantize: 'fp8', into }));
    // gathered bf16 rows in, fp8 rows and scales out (padding rows are written too)
    let bytes = used * h * 2 + r * h + r * groups * 4;
    rows.push({ kind: 'dispatch', shape: `T=${t} H=${h} k=${k} R=${r}`, ms, tflops: 0, gbs: bytes / ms / 1e6, peakRatio: 0, hbmRatio: bytes / ms / 1e6 / hbm, target: '85% HBM' });
    // The router projection (bf16 tensor cores): TFLOPS, for the layer's GEMM budget.
    const gate = m.bf16FromFloat32(Float32Array.from({ length: e * h }, () => Math.random() - 0.5), [e, h]).to('cuda');
    const logits = m.empty([t, e], 'f32', 'cuda');
    ms = await timeMs(() => m.routerLogits(x, gate, { into: logits }));
    rows.push({ kind: 'routerLogits', shape: `T=${t} E=${e} H=${h} bf16`, ms, tflops: (2 * t * e * h) / ms / 1e9, gbs: (t * h * 2 + e * h * 2 + t * e * 4) / ms / 1e6, peakRatio: 0, hbmRatio: 0, target: '-' });
    gate.dispose(); logits.dispose();
    const y = m.empty([r, h], 'bf16', 'cuda');
    const w = m.tensor(Float32Array.from({ length: t * k }, () => Math.random()), [t, k], 'f32').to('cuda');
    const shared = m.empty([t, h], 'f32', 'cuda');
    const out = m.empty([t, h], 'bf16', 'cuda');
    ms = await timeMs(() => m.combine(y, layout, w, { shared, into: out }));
    bytes = used * h * 2 + t * h * 4 + t * h * 2;
    rows.push({ kind: 'combine', shape: `T=${t} H=${h} k=${k} +shared`, ms, tflops: 0, gbs: bytes / ms / 1e6, peakRatio: 0, hbmRatio: bytes / ms / 1e6 / hbm, target: '85% HBM' });
    for (const tensor of [x, into.data, into.scales, y, w, shared, out]) tensor.dispose();
  } finally {
    native().cudaSetDataChecks(true);
  }
  return rows;
}

// The layer at DeepSeek-V3's full shape: ms, tokens/s and the ratio to its GEMMs (target <= 1.2 at T >= 1024).
async function timeLayer() {
  const { benchMoeCuda, randomDeviceLayer } = require(path.join(root, 'dist', 'bench', 'moe-cuda.js'));
  const layer = randomDeviceLayer(m.DEEPSEEK_V3_CONFIG);
  return benchMoeCuda(layer, [1, 16, 128, 1024, 4096], (row) => console.log(`layer T=${row.tokens}: ${row.ms.toFixed(3)} ms, ratio ${row.ratio.toFixed(2)}`));
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
checkMoeOps();
const family = Object.keys(SPEC_FP8_TFLOPS).find((name) => cuda.device.name.includes(name));
const peak = SPEC_FP8_TFLOPS[family] ?? 1979;
const hbm = hbmGBs();
const timings = [...(await timeShapes(peak, hbm)), ...(await timeMoeOps(hbm))];
const layerRows = await timeLayer();
const report = { date: new Date().toISOString(), device: cuda.device, hbmGBs: hbm, specFp8Tflops: peak, checks: results, timings, layer: layerRows };
if (process.env.OUT) fs.writeFileSync(path.join(process.env.OUT, 'device-check.json'), JSON.stringify(report, null, 2));

const failed = results.filter((r) => !r.ok);
console.log(`\n${cuda.device.name}: measured HBM ${hbm.toFixed(0)} GB/s (device-to-device copy); FP8 dense peak ${peak} TFLOPS (datasheet)`);
console.log(['kind', 'shape', 'ms', 'TFLOPS', '% peak', 'GB/s', '% HBM', 'target'].join('\t'));
for (const r of timings) {
  console.log([r.kind, r.shape, r.ms.toFixed(3), r.tflops.toFixed(0), (100 * r.peakRatio).toFixed(0), r.gbs.toFixed(0), (100 * r.hbmRatio).toFixed(0), r.target ?? '-'].join('\t'));
}
console.log('\nMoE layer, DeepSeek-V3 full shape (H=7168 I=2048 E=256 k=8, 1 shared expert)');
console.log(['T', 'layout', 'ms', 'tokens/s', 'GEMMs ms', 'layer/GEMMs', 'graph ms', 'target'].join('\t'));
for (const r of layerRows) {
  console.log([r.tokens, r.layout, r.ms.toFixed(3), r.tokensPerSecond.toFixed(0), r.gemmMs.toFixed(3), r.ratio.toFixed(2), r.graphMs?.toFixed(3) ?? '-', r.tokens >= 1024 ? '<= 1.2' : '-'].join('\t'));
}
console.log(`${results.length - failed.length} passed, ${failed.length} failed`);
process.exitCode = failed.length ? 1 : 0;
