// The GPU check (run by scripts/device-check.sh on a machine with an NVIDIA
// GPU): every CUDA op against the CPU backend on random inputs with poisoned
// outputs, then timings with CUDA events (L2 flushed before every run, median
// of >= 20 runs) on DeepGEMM's published shapes, as TFLOPS, GB/s and ratios;
// the MoE layer's ops (route, layout, dispatch, swiglu, combine) and the
// whole layer (plus CUDA graph replay) against the CPU backend, dispatch and
// combine in GB/s against the measured HBM bandwidth, and the layer at
// DeepSeek-V3's full shape against the sum of its GEMMs' times.
//
// One phase per process: `node scripts/device-check.mjs <phase>` with phase in
// PHASES below. A kernel that faults or traps leaves the process's CUDA
// context unusable, and a hang must cost one phase's time limit rather than
// the whole device budget, so scripts/device-check.sh runs each phase in its
// own process under `timeout`. Each phase writes $OUT/phase-<name>.json;
// `report` prints the short table from all of them last.
import { createRequire } from 'node:module';
import { randomFillSync } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const m = require(root);
const { native } = require(path.join(root, 'dist', 'native.js'));

// Without a GPU, the correctness phases run against the CPU emulation of the
// plug-in (MOE_CUDA_PLUGIN=build-emu/libmoe_cuda.so, scripts/cuda/
// build-emulator.sh): the real addon code paths, the CPU backend as "kernels".

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
// Runs one check's (or timing's) body; an exception (a MoeError from the GPU
// side, a CUDA error) is that check's failure and the phase goes on.
async function guarded(name, body) {
  try {
    await body();
  } catch (e) {
    check(name, false, `threw ${e.code ?? e.name}: ${e.message}`);
  }
}

// ---- correctness: the FP8 GEMMs vs the CPU backend ----
// Run once per kernel (MOE_CUDA_GEMM_KERNEL=simt, then hopper): the SIMT
// kernel is the first comparison for the Hopper one. Forced Hopper takes only
// the shapes it is eligible for (K % 128 == 0, N % 8 == 0).
const forcedKernel = process.env.MOE_CUDA_GEMM_KERNEL ?? 'auto';
const noSplitK = process.env.MOE_CUDA_SPLIT_K === '0';
// How this process's GEMMs were configured, for phase and row labels.
const variant = [process.env.MOE_CUDA_GEMM_KERNEL && `${forcedKernel} kernel`, noSplitK && 'no split-K'].filter(Boolean).join(', ');
const kernelTakes = (n, k) => forcedKernel !== 'hopper' || (k % 128 === 0 && n % 8 === 0);
async function checkGemms() {
  // On 132 SMs the Hopper kernel splits K for M = 1, 64, 128 and 256 here (their tiles fill under half the
  // GPU; sm90_layouts.h, choose_k_splits), not for K = 256; MOE_CUDA_SPLIT_K=0 runs them in one pass.
  // M = 4096, N = 7168, K = 2048: 1,792 tiles, more than any GPU's SMs, so the
  // persistent scheduler walks several tiles per CTA (the others fit one wave).
  for (const [mm, n, k] of [[1, 2112, 7168], [7, 300, 1040], [129, 257, 8208], [256, 4096, 7168], [64, 7168, 2048], [200, 2112, 256], [64, 2112, 7168], [128, 1024, 16384], [4096, 7168, 2048]]) {
    if (!kernelTakes(n, k)) continue;
    let a, b, cpu;  // one CPU reference for both outputs
    for (const out of ['f32', 'bf16']) {
      const name = `gemmFp8 M=${mm} N=${n} K=${k} ${out}`;
      await guarded(name, () => {
        if (!cpu) {
          a = quantized([mm, k], 1);
          b = quantized([n, k], 128);
          cpu = m.gemmFp8Sync(a, b, { out: 'f32' }).data;
        }
        const gpu = m.gemmFp8Sync(toCuda(a), toCuda(b), { out, into: poisoned([mm, n], out) }).toFloat32Array();
        const diff = calcDiff(gpu, cpu);
        check(name, diff < 1e-5 && gpu.every(Number.isFinite), `diff=${diff.toExponential(2)}`);
      });
    }
  }
  for (const [g, rowsPerGroup, n, k] of [[4, 256, 4096, 7168], [3, 128, 512, 1024], [2, 384, 296, 384]]) {
    if (!kernelTakes(n, k)) continue;
    const name = `groupedGemmFp8 G=${g} R=${g * rowsPerGroup} N=${n} K=${k}`;
    await guarded(name, () => {
      const rows = g * rowsPerGroup;
      const groupIndex = m.tensor(Int32Array.from({ length: rows }, (_, r) => (r % rowsPerGroup < rowsPerGroup - 40 ? Math.floor(r / rowsPerGroup) : -1)), [rows]);
      const a = quantized([rows, k], 1), b = quantized([g, n, k], 128);
      const cpu = m.groupedGemmFp8Sync(a, b, groupIndex, { out: 'f32' }).data;
      // Segments of rowsPerGroup (a multiple of 128) rows: the Hopper kernel's contract.
      const gpu = m.groupedGemmFp8Sync(toCuda(a), toCuda(b), groupIndex.to('cuda'), { out: 'f32', into: poisoned([rows, n], 'f32'), align: 128 }).toFloat32Array();
      check(name, calcDiff(gpu, cpu) < 1e-5 && gpu.every(Number.isFinite), `diff=${calcDiff(gpu, cpu).toExponential(2)}`);
    });
  }
  for (const [g, mmax, n, k] of [[4, 256, 4096, 7168], [2, 64, 300, 1040], [3, 200, 1024, 512]]) {
    if (!kernelTakes(n, k)) continue;
    const name = `groupedGemmFp8Masked G=${g} Mmax=${mmax} N=${n} K=${k}`;
    await guarded(name, () => {
      const maskedM = m.tensor(Int32Array.from({ length: g }, (_, i) => Math.floor((mmax * (i + 1)) / (g + 1))), [g]);
      const a = quantized([g, mmax, k], 1), b = quantized([g, n, k], 128);
      const cpu = m.groupedGemmFp8MaskedSync(a, b, maskedM, { out: 'f32' }).data;
      const gpu = m.groupedGemmFp8MaskedSync(toCuda(a), toCuda(b), maskedM.to('cuda'), { out: 'f32', into: poisoned([g, mmax, n], 'f32') }).toFloat32Array();
      check(name, calcDiff(gpu, cpu) < 1e-5 && gpu.every(Number.isFinite), `diff=${calcDiff(gpu, cpu).toExponential(2)}`);
    });
  }
}

// ---- correctness: quantize and dequantize, bit for bit ----
async function checkQuantize() {
  for (const [rows, cols] of [[1, 16], [129, 1040], [300, 7168]]) {
    const x = m.tensor(Float32Array.from({ length: rows * cols }, () => (Math.random() - 0.5) * 10), [rows, cols]);
    for (const scaleFormat of ['f32', 'ue8m0']) {
      for (const [op, fn] of [['quantizeActivations', m.quantizeActivationsSync], ['quantizeWeights', m.quantizeWeightsSync]]) {
        await guarded(`${op} [${rows}, ${cols}] ${scaleFormat}`, () => {
          const cpu = fn(x, { scaleFormat });
          const gpu = fn(x.to('cuda'), { scaleFormat });
          const ok = sameBits(gpu.data.to('cpu').data, cpu.data.data) && sameBits(gpu.scales.to('cpu').data, cpu.scales.data);
          check(`${op} [${rows}, ${cols}] ${scaleFormat}`, ok, 'bit-exact vs CPU');
          const back = m.dequantizeSync(gpu).to('cpu').data;
          check(`dequantize ${op} [${rows}, ${cols}] ${scaleFormat}`, sameBits(back, m.dequantizeSync(cpu).data), 'bit-exact vs CPU');
        });
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
// balancedIds with about one slot in five unused (-1), as routing leaves them when few experts are selectable.
function idsWithHoles(t, k, e) {
  const ids = balancedIds(t, k, e);
  for (let i = 0; i < ids.data.length; i++) if (Math.random() < 0.2) ids.data[i] = -1;
  return ids;
}
const sameQuantized = (gpu, cpu) => sameBits(hostBits(gpu.data), cpu.data.data) && sameBits(hostBits(gpu.scales), cpu.scales.data);
const layoutToCuda = (l) => ({ ...l, tokensPerExpert: l.tokensPerExpert.to('cuda'), offsets: l.offsets.to('cuda'), rowToken: l.rowToken.to('cuda'), groupIndex: l.groupIndex.to('cuda'), slotRow: l.slotRow.to('cuda') });
const poisonedFp8 = (shape) => m.tensor(new Uint8Array(shape.reduce((a, b) => a * b, 1)).fill(0x7f), shape, 'fp8_e4m3').to('cuda');

async function checkMoeOps() {
  // routerLogits: the tensor-core kernel (bf16 x and w, T > 32), the f32 tiled
  // kernel and the decode kernel, ragged shapes; f32 sums in another order than
  // the CPU's, so within 1e-5 of the dot products' magnitude.
  for (const [t, e, h, dtype] of [[300, 256, 7168, 'bf16'], [77, 72, 200, 'bf16'], [4096, 256, 896, 'bf16'], [130, 64, 256, 'f32'], [5, 256, 7168, 'bf16']]) {
    await guarded(`routerLogits T=${t} E=${e} H=${h} ${dtype}`, () => {
      const make = (n) => Float32Array.from({ length: n }, () => Math.random() - 0.5);
      const x = dtype === 'bf16' ? m.bf16FromFloat32(make(t * h), [t, h]) : m.tensor(make(t * h), [t, h], 'f32');
      const w = dtype === 'bf16' ? m.bf16FromFloat32(make(e * h), [e, h]) : m.tensor(make(e * h), [e, h], 'f32');
      const cpu = m.routerLogitsSync(x, w).data;
      const gpu = hostBits(m.routerLogitsSync(x.to('cuda'), w.to('cuda')));
      const scale = Math.sqrt(h) * 0.3;
      const worst = gpu.reduce((acc, v, i) => Math.max(acc, Math.abs(v - cpu[i]) / scale), 0);
      check(`routerLogits T=${t} E=${e} H=${h} ${dtype}`, worst < 1e-5 && gpu.every(Number.isFinite), `max err / |x||w| ${worst.toExponential(2)}`);
    });
  }
  for (const [t, e, opts, withBias, dtype] of [[257, 256, m.DEEPSEEK_V3_ROUTING, true, 'f32'], [1, 256, m.DEEPSEEK_V3_ROUTING, true, 'f32'], [64, 256, m.DEEPSEEK_V3_ROUTING, true, 'bf16'], [300, 8, { scoring: 'softmax', topK: 2, renormalize: true }, false, 'f32'], [77, 60, { scoring: 'softmax', topK: 4 }, false, 'bf16'], [50, 96, { scoring: 'softmax', topK: 8 }, false, 'wide']]) {
    await guarded(`route ${opts.scoring} T=${t} E=${e} k=${opts.topK} ${dtype}`, () => {
      // ties (or, 'wide': logits spread over +-160, so that softmax weights go subnormal and zero)
      const values = Float32Array.from({ length: t * e }, () => (dtype === 'wide' ? (Math.random() - 0.5) * 320 : Math.round((Math.random() - 0.5) * 8) / 2));
      for (let i = 0; i < t; i += 5) values[i * e + 3] = NaN;
      const logits = dtype === 'bf16' ? m.bf16FromFloat32(values, [t, e]) : m.tensor(values, [t, e], 'f32');
      const bias = withBias ? m.tensor(Float32Array.from({ length: e }, () => Math.round((Math.random() - 0.5) * 8) / 64), [e], 'f32') : undefined;
      const cpu = m.routeSync(logits, { ...opts, bias });
      const gpu = m.routeSync(logits.to('cuda'), { ...opts, bias: bias?.to('cuda') });
      check(`route ${opts.scoring} T=${t} E=${e} k=${opts.topK} ${dtype}`, sameBits(hostBits(gpu.ids), cpu.ids.data), 'ids exact');
      const gw = hostBits(gpu.weights), cw = cpu.weights.data;
      check(`route ${opts.scoring} T=${t} E=${e} ${dtype} weights`, sameBits(gw, cw), 'bit-exact');
    });
  }
  for (const [t, k, e, layout, holes] of [[4096, 8, 256, 'contiguous', false], [1, 8, 256, 'contiguous', false], [33, 6, 64, 'masked', false], [517, 8, 256, 'contiguous', true], [40, 8, 64, 'masked', true]]) {
    await guarded(`dispatchLayout ${layout} T=${t} k=${k} E=${e}${holes ? ' with -1 ids' : ''}`, () => {
      const ids = (holes ? idsWithHoles : balancedIds)(t, k, e);
      const cpu = m.dispatchLayoutSync(ids, e, { layout });
      const gpu = m.dispatchLayoutSync(ids.to('cuda'), e, { layout });
      const ok = gpu.numRows === cpu.numRows && ['tokensPerExpert', 'offsets', 'slotRow', 'rowToken', 'groupIndex'].every((key) => sameBits(hostBits(gpu[key]), cpu[key].data));
      check(`dispatchLayout ${layout} T=${t} k=${k} E=${e}${holes ? ' with -1 ids' : ''}`, ok, `R=${cpu.numRows}`);
    });
  }
  // dispatch: fp8 (f32 and ue8m0 scales) and plain copies, contiguous and masked layouts, -1 ids.
  for (const [t, h, dtype, layoutKind, mode] of [[129, 7168, 'bf16', 'contiguous', 'fp8'], [7, 272, 'f32', 'contiguous', 'fp8'], [65, 1040, 'bf16', 'contiguous', 'ue8m0'], [33, 512, 'bf16', 'masked', 'fp8'], [129, 7168, 'bf16', 'contiguous', 'plain'], [9, 136, 'f32', 'masked', 'plain']]) {
    await guarded(`dispatch ${mode} ${layoutKind} T=${t} H=${h} ${dtype}`, () => {
      const layout = m.dispatchLayoutSync(idsWithHoles(t, 8, 32), 32, layoutKind === 'masked' ? { layout: 'masked' } : { align: 128 });
      const values = Float32Array.from({ length: t * h }, () => (Math.random() - 0.5) * 6);
      const x = dtype === 'bf16' ? m.bf16FromFloat32(values, [t, h]) : m.tensor(values, [t, h], 'f32');
      let ok;
      if (mode === 'plain') {
        const cpu = m.dispatchSync(x, layout);
        const gpu = m.dispatchSync(x.to('cuda'), layoutToCuda(layout), { into: poisoned(cpu.shape, dtype) });
        ok = sameBits(hostBits(gpu), cpu.data);
      } else {
        const opts = { quantize: 'fp8', scaleFormat: mode === 'ue8m0' ? 'ue8m0' : 'f32' };
        const cpu = m.dispatchSync(x, layout, opts);
        const into = { data: poisonedFp8(cpu.data.shape), scales: poisoned(cpu.scales.shape, 'f32') };
        ok = sameQuantized(m.dispatchSync(x.to('cuda'), layoutToCuda(layout), { ...opts, into }), cpu);
      }
      check(`dispatch ${mode} ${layoutKind} T=${t} H=${h} ${dtype}`, ok, 'bit-exact');
    });
  }
  // swiglu: fp8 (f32 and ue8m0 scales) and plain bf16 / f32 outputs, from bf16 and f32 h.
  for (const [rows, inter, dtype, mode] of [[640, 2048, 'bf16', 'fp8'], [33, 144, 'bf16', 'fp8'], [100, 1040, 'f32', 'ue8m0'], [77, 2048, 'bf16', 'bf16'], [31, 136, 'f32', 'f32'], [64, 520, 'bf16', 'f32']]) {
    await guarded(`swiglu ${mode} R=${rows} I=${inter} ${dtype}`, () => {
      const values = Float32Array.from({ length: rows * 2 * inter }, () => (Math.random() - 0.5) * 8);
      const h = dtype === 'bf16' ? m.bf16FromFloat32(values, [rows, 2 * inter]) : m.tensor(values, [rows, 2 * inter], 'f32');
      let ok;
      if (mode === 'bf16' || mode === 'f32') {
        const cpu = m.swigluSync(h, { out: mode });
        ok = sameBits(hostBits(m.swigluSync(h.to('cuda'), { out: mode, into: poisoned(cpu.shape, mode) })), cpu.data);
      } else {
        const opts = { quantize: 'fp8', scaleFormat: mode === 'ue8m0' ? 'ue8m0' : 'f32' };
        const cpu = m.swigluSync(h, opts);
        const into = { data: poisonedFp8(cpu.data.shape), scales: poisoned(cpu.scales.shape, 'f32') };
        ok = sameQuantized(m.swigluSync(h.to('cuda'), { ...opts, into }), cpu);
      }
      check(`swiglu ${mode} R=${rows} I=${inter} ${dtype}`, ok, 'bit-exact');
    });
  }
  // combine: bf16 and f32 y and outputs, a shared term in either dtype, -1 ids, and H % 8 != 0 (the one-column path).
  for (const [t, h, yType, outType, sharedType] of [[257, 7168, 'bf16', 'bf16', 'f32'], [5, 136, 'bf16', 'bf16', null], [33, 1024, 'f32', 'f32', 'bf16'], [17, 130, 'bf16', 'f32', 'f32'], [9, 77, 'f32', 'bf16', null]]) {
    const name = `combine T=${t} H=${h} y=${yType} out=${outType} shared=${sharedType ?? 'none'}`;
    await guarded(name, () => {
      const layout = m.dispatchLayoutSync(idsWithHoles(t, 8, 32), 32, { align: 128 });
      const make = (n, shape, dtype) => (dtype === 'bf16' ? m.bf16FromFloat32(Float32Array.from({ length: n }, () => Math.random() - 0.5), shape) : m.tensor(Float32Array.from({ length: n }, () => Math.random() - 0.5), shape, 'f32'));
      const y = make(layout.numRows * h, [layout.numRows, h], yType);
      const w = m.tensor(Float32Array.from({ length: t * 8 }, () => Math.random()), [t, 8], 'f32');
      const s = sharedType ? make(t * h, [t, h], sharedType) : undefined;
      const cpu = m.combineSync(y, layout, w, { shared: s, out: outType });
      const gpu = m.combineSync(y.to('cuda'), layoutToCuda(layout), w.to('cuda'), { shared: s?.to('cuda'), out: outType, into: poisoned([t, h], outType) });
      check(name, sameBits(hostBits(gpu), cpu.data), 'bit-exact');
    });
  }
  // Promise forms: calls in flight together each settle with their own
  // outcome; a bad bias is found by the kernel's flag, read without a host
  // synchronization (a copy into a page-locked slot behind the op).
  await guarded('async route: concurrent good and bad calls', async () => {
    const logits = m.tensor(Float32Array.from({ length: 64 * 256 }, () => Math.random() - 0.5), [64, 256], 'f32');
    const goodBias = m.tensor(Float32Array.from({ length: 256 }, () => (Math.random() - 0.5) / 16), [256], 'f32');
    const badBias = m.tensor(Float32Array.from(goodBias.data), [256], 'f32');
    badBias.data[7] = NaN;
    const want = m.routeSync(logits, { ...m.DEEPSEEK_V3_ROUTING, bias: goodBias });
    const dl = logits.to('cuda');
    const calls = [goodBias, badBias, goodBias].map((b) => m.route(dl, { ...m.DEEPSEEK_V3_ROUTING, bias: b.to('cuda') }));
    const [a, bad, c] = await Promise.allSettled(calls);
    const same = (r) => r.status === 'fulfilled' && sameBits(hostBits(r.value.ids), want.ids.data) && sameBits(hostBits(r.value.weights), want.weights.data);
    check('async route: concurrent good and bad calls', same(a) && same(c) && bad.status === 'rejected' && bad.reason.code === 'ERR_MOE_NONFINITE', `bad call: ${bad.status} ${bad.reason?.code ?? ''}`);
  });
}

// A replay of t tokens runs the captured forward on x zero-padded to
// maxTokens rows: bit for bit the uncaptured masked forward of that padded
// input, first t rows (a forward of t rows alone may take other GEMM paths).
function directPadded(layer, x, maxTokens) {
  const [t, h] = x.shape;
  const padded = new Uint16Array(maxTokens * h);
  padded.set(x.data);
  const out = layer.forwardSync(m.tensor(padded, [maxTokens, h], 'bf16'), { layout: 'masked' }).toFloat32Array();
  return out.subarray(0, t * h);
}

// ---- correctness: the whole layer (a small DeepSeek-V3-form layer) on both backends, and a captured decode forward ----
async function checkLayer() {
  const config = { ...m.DEEPSEEK_V3_CONFIG, hiddenSize: 1024, intermediateSize: 512, numExperts: 64 };
  const cpuLayer = m.MoeLayer.random(config, { seed: 3 });
  const gpuLayer = cpuLayer.to('cuda');
  for (const [t, layout] of [[1, 'masked'], [16, 'masked'], [300, 'contiguous'], [300, 'masked']]) {
    await guarded(`MoeLayer T=${t} ${layout} vs CPU`, () => {
      const x = m.bf16FromFloat32(Float32Array.from({ length: t * 1024 }, () => Math.random() * 2 - 1), [t, 1024]);
      const want = cpuLayer.forwardSync(x, { out: 'f32' }).data;
      const got = gpuLayer.forwardSync(x, { out: 'f32', layout }).toFloat32Array();
      check(`MoeLayer T=${t} ${layout} vs CPU`, calcDiff(got, want) < 1e-3, `diff=${calcDiff(got, want).toExponential(2)}`);
    });
  }
  await guarded('MoeLayer CUDA graph replay == uncaptured forward', () => {
    const graph = gpuLayer.capture({ maxTokens: 4 });
    for (const t of [4, 3]) {
      const x = m.bf16FromFloat32(Float32Array.from({ length: t * 1024 }, () => Math.random() * 2 - 1), [t, 1024]);
      const replayed = graph.replaySync(x).toFloat32Array();
      check(`MoeLayer CUDA graph replay == uncaptured forward (T=${t} of 4)`, sameBits(replayed, directPadded(gpuLayer, x, 4)), 'bit-exact');
    }
    graph.dispose();
  });
  await guarded('MoeLayer CUDA graph: concurrent replays', async () => {
    const graph = gpuLayer.capture({ maxTokens: 4 });
    const xs = [4, 2, 3].map((t) => m.bf16FromFloat32(Float32Array.from({ length: t * 1024 }, () => Math.random() * 2 - 1), [t, 1024]));
    const outs = await Promise.all(xs.map((x) => graph.replay(x)));
    const ok = xs.every((x, i) => sameBits(outs[i].toFloat32Array(), directPadded(gpuLayer, x, 4)));
    check('MoeLayer CUDA graph: concurrent replays each return their own output', ok, 'bit-exact');
    graph.dispose();
  });
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
    rows.push({ kind: noSplitK ? `${kind} (no split-K)` : kind, shape, ms, tflops, gbs, peakRatio: tflops / peakTflops, hbmRatio: gbs / hbm, target });
  };
  for (const mm of [64, 128, 4096]) {
    for (const [n, k] of NK) {
      await guarded(`time dense M=${mm} N=${n} K=${k}`, async () => {
        const a = toCuda(quantized([mm, k], 1)), b = toCuda(quantized([n, k], 128));
        const d = m.empty([mm, n], 'bf16', 'cuda');
        const ms = await timeMs(() => m.gemmFp8(a, b, { into: d }));
        record('dense', `M=${mm} N=${n} K=${k}`, 2 * mm * n * k, mm * k + n * k + 2 * mm * n, ms, DEEPGEMM_TARGET.dense);
        for (const t of [a.data, a.scales, b.data, b.scales, d]) t.dispose();
      });
    }
  }
  if (noSplitK) return rows; // split-K changes the dense GEMMs only
  for (const [g, per] of [[4, 8192], [8, 4096]]) {
    for (const [n, k] of [[4096, 7168], [7168, 2048]]) {
      await guarded(`time contiguous ${g}x${per} N=${n} K=${k}`, async () => {
        const rowsTotal = g * per;
        const groupIndex = m.tensor(Int32Array.from({ length: rowsTotal }, (_, r) => Math.floor(r / per)), [rowsTotal]).to('cuda');
        const a = toCuda(quantized([rowsTotal, k], 1)), b = toCuda(quantized([g, n, k], 128));
        const d = m.empty([rowsTotal, n], 'bf16', 'cuda');
        const ms = await timeMs(() => m.groupedGemmFp8(a, b, groupIndex, { into: d, align: 128 }));
        record('contiguous', `${g}x${per} N=${n} K=${k}`, 2 * rowsTotal * n * k, rowsTotal * k + g * n * k + 2 * rowsTotal * n, ms, DEEPGEMM_TARGET.contiguous);
        for (const t of [groupIndex, a.data, a.scales, b.data, b.scales, d]) t.dispose();
      });
    }
  }
  for (const [g, expected] of [[1, 1024], [2, 512], [4, 256]]) {
    for (const [n, k] of [[4096, 7168], [7168, 2048]]) {
      await guarded(`time masked ${g}x${expected} N=${n} K=${k}`, async () => {
        const mmax = expected * 2;
        const maskedM = m.tensor(new Int32Array(g).fill(expected), [g]).to('cuda');
        const a = toCuda(quantized([g, mmax, k], 1)), b = toCuda(quantized([g, n, k], 128));
        const d = m.empty([g, mmax, n], 'bf16', 'cuda');
        const ms = await timeMs(() => m.groupedGemmFp8Masked(a, b, maskedM, { into: d }));
        record('masked', `${g}x${expected} N=${n} K=${k}`, 2 * g * expected * n * k, g * expected * k + g * n * k + 2 * g * expected * n, ms, undefined);
        for (const t of [maskedM, a.data, a.scales, b.data, b.scales, d]) t.dispose();
      });
    }
  }
  return rows;
}

// ---- under compute-sanitizer: every sm_90a kernel once, small ----
// (device-check.sh runs this phase under memcheck, racecheck and synccheck
// with MOE_CUDA_GEMM_KERNEL=hopper and the pipeline-wait trap off: the tools
// slow kernels down by orders of magnitude). Dense with and without split-K,
// contiguous grouped, masked grouped, and the MoE ops' kernels via one small
// layer forward; each result against the CPU backend.
async function checkUnderSanitizer() {
  for (const [mm, n, k] of [[64, 256, 1024], [200, 512, 256]]) {
    const name = `sanitized gemmFp8 M=${mm} N=${n} K=${k}${mm === 64 ? ' (split-K)' : ''}`;
    await guarded(name, () => {
      const a = quantized([mm, k], 1), b = quantized([n, k], 128);
      const cpu = m.gemmFp8Sync(a, b, { out: 'f32' }).data;
      const gpu = m.gemmFp8Sync(toCuda(a), toCuda(b), { out: 'f32', into: poisoned([mm, n], 'f32') }).toFloat32Array();
      check(name, calcDiff(gpu, cpu) < 1e-5, `diff=${calcDiff(gpu, cpu).toExponential(2)}`);
    });
  }
  await guarded('sanitized groupedGemmFp8 G=2 R=256 N=256 K=256', () => {
    const rows = 256, n = 256, k = 256;
    const groupIndex = m.tensor(Int32Array.from({ length: rows }, (_, r) => (r % 128 < 100 ? r >> 7 : -1)), [rows]);
    const a = quantized([rows, k], 1), b = quantized([2, n, k], 128);
    const cpu = m.groupedGemmFp8Sync(a, b, groupIndex, { out: 'f32' }).data;
    const gpu = m.groupedGemmFp8Sync(toCuda(a), toCuda(b), groupIndex.to('cuda'), { out: 'f32', into: poisoned([rows, n], 'f32'), align: 128 }).toFloat32Array();
    check('sanitized groupedGemmFp8 G=2 R=256 N=256 K=256', calcDiff(gpu, cpu) < 1e-5, `diff=${calcDiff(gpu, cpu).toExponential(2)}`);
  });
  await guarded('sanitized groupedGemmFp8Masked G=2 Mmax=64 N=256 K=256', () => {
    const maskedM = m.tensor(Int32Array.from([17, 64]), [2]);
    const a = quantized([2, 64, 256], 1), b = quantized([2, 256, 256], 128);
    const cpu = m.groupedGemmFp8MaskedSync(a, b, maskedM, { out: 'f32' }).data;
    const gpu = m.groupedGemmFp8MaskedSync(toCuda(a), toCuda(b), maskedM.to('cuda'), { out: 'f32', into: poisoned([2, 64, 256], 'f32') }).toFloat32Array();
    check('sanitized groupedGemmFp8Masked G=2 Mmax=64 N=256 K=256', calcDiff(gpu, cpu) < 1e-5, `diff=${calcDiff(gpu, cpu).toExponential(2)}`);
  });
  await guarded('sanitized layer forward T=5 (masked) and T=40 (contiguous)', async () => {
    const config = { ...m.DEEPSEEK_V3_CONFIG, hiddenSize: 256, intermediateSize: 128, numExperts: 16 };
    const cpuLayer = m.MoeLayer.random(config, { seed: 3 });
    const layer = cpuLayer.to('cuda');
    for (const t of [5, 40]) {
      const x = m.bf16FromFloat32(Float32Array.from({ length: t * 256 }, () => Math.random() * 2 - 1), [t, 256]);
      const want = cpuLayer.forwardSync(x, { out: 'f32' }).data;
      const got = (await layer.forward(x, { out: 'f32' })).toFloat32Array();
      check(`sanitized layer forward T=${t}`, calcDiff(got, want) < 1e-3, `diff=${calcDiff(got, want).toExponential(2)}`);
    }
  });
}

// ---- phases ----
const PHASES = {
  sanitize: async () => { await checkUnderSanitizer(); return {}; },
  gemm: async () => { await checkGemms(); return {}; },
  ops: async () => { await checkQuantize(); await checkMoeOps(); return {}; },
  layer: async () => { await checkLayer(); return {}; },
  'time-gemm': async (env) => ({ timings: await timeShapes(env.peak, env.hbm) }),
  'time-ops': async (env) => ({ timings: await timeMoeOps(env.hbm) }),
  'time-layer': async () => ({ layer: await timeLayer() }),
};
const outDir = process.env.OUT ?? '/tmp/moe-device-out';

function cudaEnv() {
  const cuda = m.backends()[1];
  console.log(`CUDA backend: ${cuda.available ? 'available' : 'UNAVAILABLE'}: ${cuda.reason}`);
  if (!cuda.available) process.exit(1);
  const family = Object.keys(SPEC_FP8_TFLOPS).find((name) => cuda.device.name.includes(name));
  return { device: cuda.device, peak: SPEC_FP8_TFLOPS[family] ?? 1979 };
}

async function runPhase(name) {
  const env = cudaEnv();
  if (name.startsWith('time-')) env.hbm = hbmGBs();
  const started = Date.now();
  const part = await PHASES[name](env);
  const tags = [process.env.DEVICE_CHECK_LABEL, variant].filter(Boolean).join(', ');
  const label = tags ? `${name} (${tags})` : name;
  const report = { phase: label, date: new Date().toISOString(), seconds: (Date.now() - started) / 1e3, device: env.device, hbmGBs: env.hbm, specFp8Tflops: env.peak, checks: results, ...part };
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, `phase-${label.replace(/[^a-z0-9-]+/gi, '_')}.json`), JSON.stringify(report, null, 2));
  process.exitCode = results.some((r) => !r.ok) ? 1 : 0;
}

// The short table, from every phase's JSON and device-check.sh's phase log
// (which also names the phases that timed out or died without writing one).
function printReport() {
  const reports = fs.readdirSync(outDir).filter((f) => /^phase-.*\.json$/.test(f)).map((f) => JSON.parse(fs.readFileSync(path.join(outDir, f), 'utf8')));
  const checks = reports.flatMap((r) => r.checks.map((c) => ({ ...c, phase: r.phase })));
  const timings = reports.flatMap((r) => r.timings ?? []);
  const layerRows = reports.flatMap((r) => r.layer ?? []);
  const device = reports.find((r) => r.device)?.device;
  const timed = reports.find((r) => r.hbmGBs);
  fs.writeFileSync(path.join(outDir, 'device-check.json'), JSON.stringify({ date: new Date().toISOString(), device, phases: reports }, null, 2));

  console.log(`\n==== device check: ${device?.name ?? 'no device report'} ====`);
  const log = path.join(outDir, 'phases.txt');
  if (fs.existsSync(log)) console.log(fs.readFileSync(log, 'utf8').trimEnd());
  for (const c of checks.filter((c) => !c.ok)) console.log(`FAIL [${c.phase}] ${c.name} ${c.detail}`);
  if (timed) console.log(`measured HBM ${timed.hbmGBs.toFixed(0)} GB/s (device-to-device copy); FP8 dense peak ${timed.specFp8Tflops} TFLOPS (datasheet)`);
  if (timings.length) {
    console.log(['kind', 'shape', 'ms', 'TFLOPS', '% peak', 'GB/s', '% HBM', 'target'].join('\t'));
    for (const r of timings) {
      console.log([r.kind, r.shape, r.ms.toFixed(3), r.tflops.toFixed(0), (100 * r.peakRatio).toFixed(0), r.gbs.toFixed(0), (100 * r.hbmRatio).toFixed(0), r.target ?? '-'].join('\t'));
    }
  }
  if (layerRows.length) {
    console.log('MoE layer, DeepSeek-V3 full shape (H=7168 I=2048 E=256 k=8, 1 shared expert)');
    console.log(['T', 'layout', 'ms', 'tokens/s', 'GEMMs ms', 'layer/GEMMs', 'graph ms', 'target'].join('\t'));
    for (const r of layerRows) {
      console.log([r.tokens, r.layout, r.ms.toFixed(3), r.tokensPerSecond.toFixed(0), r.gemmMs.toFixed(3), r.ratio.toFixed(2), r.graphMs?.toFixed(3) ?? '-', r.tokens >= 1024 ? '<= 1.2' : '-'].join('\t'));
    }
  }
  const failed = checks.filter((c) => !c.ok).length;
  // A phase that timed out or died wrote no checks for what it did not reach.
  const brokenPhases = fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n').filter((line) => /TIMED OUT|died|FAILED/.test(line)) : [];
  console.log(`checks: ${checks.length - failed} passed, ${failed} failed; phases timed out, died or failed to build: ${brokenPhases.length}`);
  process.exitCode = failed || brokenPhases.length ? 1 : 0;
}

const phase = process.argv[2];
if (phase === 'report') printReport();
else if (phase in PHASES) await runPhase(phase);
else {
  console.error(`usage: node scripts/device-check.mjs <${[...Object.keys(PHASES), 'report'].join('|')}>`);
  process.exit(2);
}
