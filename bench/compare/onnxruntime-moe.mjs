#!/usr/bin/env node
// Side-by-side speed of moe-kernels' CPU MoE layer and onnxruntime-node's CPU
// MoE operator (com.microsoft MoE, f32 weights) and QMoE (8-bit weights), on
// the same layer: the same routing function, the same weights, the same inputs.
//
//   node bench/compare/onnxruntime-moe.mjs [--scale 4] [--tokens 1,8,64,512] [--time 1000]
//
// Needs `npm run build:ts` (dist/) and the native addon at the repository root,
// and this folder's own dependencies (README.md).
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

const require = createRequire(import.meta.url);
const mk = require('../../dist/index.js');
const { seededRandom, fillNormal } = require('../../dist/moe/random.js');
const timing = require('../../dist/bench/timing.js');
const ort = require('onnxruntime-node');
const { onnx } = require('onnx-proto');

const BLOCK = 128; // our fp8 weight blocks are 128x128; QMoE's int8 blocks are 1x128 along K
// An ORT output further than this from the float64 reference of the function
// it should compute (max |diff| / max |reference|) means a wrong layout or
// attribute, or a different computation: that side is not timed. Right ones
// land near 1e-6 (f32 rounding).
const MAX_REL_DIFF = 1e-3;
const LABELS = { moe: 'MoE', qmoe: 'QMoE' };

const { values: args } = parseArgs({
  options: {
    scale: { type: 'string', default: '4' },
    tokens: { type: 'string', default: '1,8,64,512' },
    time: { type: 'string', default: '1000' },
  },
});
const scale = Number(args.scale);
const tokenCounts = args.tokens.split(',').map(Number);
const timeMs = Number(args.time);
if (!(scale > 0) || tokenCounts.some((t) => !Number.isInteger(t) || t < 1) || !(timeMs > 0)) {
  throw new Error('usage: onnxruntime-moe.mjs [--scale N] [--tokens 1,8,64,512] [--time ms]');
}

// DeepSeek-V3's sizes divided by `scale`, routed as Mixtral / Qwen-MoE: ORT's
// MoE scores by softmax over all experts and renormalizes the top k, with no
// groups, bias, scaling or shared experts.
const config = {
  ...mk.scaledDeepSeekV3(scale),
  scoring: 'softmax',
  numGroups: 1,
  topKGroups: 1,
  numSharedExperts: 0,
  normTopKProb: true,
  routedScalingFactor: 1,
};
const { hiddenSize: H, intermediateSize: I, numExperts: E, topK: K } = config;
const cpus = os.availableParallelism();

console.log(`config: H=${H} I=${I} E=${E} top-${K}, softmax routing, renormalized, no shared expert (scaledDeepSeekV3(${scale}))`);
console.log(`onnxruntime-node ${ort.env.versions.node} (CPU execution provider, intraOpNumThreads=${cpus}); moe-kernels ${mk.getNumThreads()} threads, GEMM path ${mk.cpuInfo().gemmIsa}`);
console.log('ours: router projection + routing + experts; bf16 x and output, fp8 weights (128x128 block scales), fp8 activations (1x128)');
console.log('ORT MoE: routing from the given router logits + experts; f32 x, weights and output (our fp8 weights dequantized exactly)');
console.log('ORT QMoE: as MoE, with those f32 weights requantized to int8 per 1x128 block (symmetric, zero point 128)');

let started = performance.now();
const layer = mk.MoeLayer.random(config, { seed: 1 });
console.log(`\nbuilt our layer in ${((performance.now() - started) / 1e3).toFixed(1)} s`);

// ORT reads initializers of more than 2 GB (protobuf's limit) only as external
// data, so the weights go to a file, one expert at a time, and are never all
// in JS memory at once.
const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-ort-'));
let sessions;
try {
  started = performance.now();
  const tensors = writeWeights(path.join(workDir, 'weights.bin'));
  console.log(`wrote ORT's weights in ${((performance.now() - started) / 1e3).toFixed(1)} s`);
  started = performance.now();
  sessions = await createSessions(workDir, tensors);
  console.log(`created ORT sessions in ${((performance.now() - started) / 1e3).toFixed(1)} s`);
} finally {
  // The sessions hold their own copy (or mapping) of the weights by now.
  fs.rmSync(workDir, { recursive: true, force: true });
}

const rows = [];
for (const tokens of tokenCounts) rows.push(await compare(tokens));
printTable(rows);

// ---------------------------------------------------------------------------

/** Expert e's fp8 matrix [N, K] and its scales [ceil(N/128), ceil(K/128)], as views into the shards. */
function expertSlot(m, e) {
  const perShard = m.data[0].shape[0];
  const shard = Math.floor(e / perShard);
  const local = e - shard * perShard;
  const scaleRows = Math.ceil(m.n / BLOCK);
  const scaleCols = Math.ceil(m.k / BLOCK);
  return {
    data: mk.tensor(m.data[shard].data.subarray(local * m.n * m.k, (local + 1) * m.n * m.k), [m.n, m.k], 'fp8_e4m3'),
    scales: mk.tensor(m.scales[shard].data.subarray(local * scaleRows * scaleCols, (local + 1) * scaleRows * scaleCols), [scaleRows, scaleCols], 'f32'),
  };
}

/** Expert e's matrix [N, K] as f32: exactly fp8 value * block scale. */
function dequantizeExpert(m, e, into /* [N, K] f32 */) {
  mk.dequantizeSync(expertSlot(m, e), { into: mk.tensor(into, [m.n, m.k], 'f32') });
  return into;
}

/**
 * QMoE's 8-bit weights of one [N, K] f32 matrix: q = round(w / s) + 128 with
 * s = max |w| / 127 per row and 128 columns (QMoE's default zero point is 128).
 */
function quantizeInt8(w /* [N, K] f32 */, n, k, q /* [N, K] u8 */, s /* [N, K/128] f32 */) {
  const blocks = k / BLOCK;
  for (let r = 0; r < n; r++) {
    for (let b = 0; b < blocks; b++) {
      const start = r * k + b * BLOCK;
      let max = 0;
      for (let c = start; c < start + BLOCK; c++) max = Math.max(max, Math.abs(w[c]));
      s[r * blocks + b] = max / 127;
      const inverse = max === 0 ? 0 : 127 / max;
      // In [1.5, 255.5]: the store into a Uint8Array truncates, which rounds half up.
      for (let c = start; c < start + BLOCK; c++) q[c] = w[c] * inverse + 128.5;
    }
  }
}

/**
 * Writes every ORT weight into one file, each tensor at a page-aligned offset,
 * and returns their TensorProtos (external data) by name.
 */
function writeWeights(file) {
  const specs = [
    // MoE: fc1 [E, 2I, H] with gate and up rows interleaved (swiglu_fusion = 1), fc2 [E, H, I]
    ['fc1_f32', onnx.TensorProto.DataType.FLOAT, [E, 2 * I, H], 4],
    ['fc2_f32', onnx.TensorProto.DataType.FLOAT, [E, H, I], 4],
    // QMoE: the same matrices as uint8 (pack size 1 at 8 bits), scales per 1x128 block along K
    ['fc1_u8', onnx.TensorProto.DataType.UINT8, [E, 2 * I, H], 1],
    ['fc1_scales', onnx.TensorProto.DataType.FLOAT, [E, 2 * I, H / BLOCK], 4],
    ['fc2_u8', onnx.TensorProto.DataType.UINT8, [E, H, I], 1],
    ['fc2_scales', onnx.TensorProto.DataType.FLOAT, [E, H, I / BLOCK], 4],
  ];
  const tensors = {};
  const places = {}; // name -> { offset, perExpert }: where this script writes each tensor, bytes
  let offset = 0;
  for (const [name, dataType, dims, bytesPerValue] of specs) {
    const length = dims.reduce((a, b) => a * b) * bytesPerValue;
    tensors[name] = onnx.TensorProto.create({
      name,
      dataType,
      dims,
      dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
      externalData: [
        { key: 'location', value: path.basename(file) },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(length) },
      ],
    });
    places[name] = { offset, perExpert: length / E };
    offset += Math.ceil(length / 65536) * 65536;
  }

  const fd = fs.openSync(file, 'w');
  const write = (name, e, array) => {
    const { offset, perExpert } = places[name];
    fs.writeSync(fd, Buffer.from(array.buffer, array.byteOffset, array.byteLength), 0, array.byteLength, offset + e * perExpert);
  };
  const { w13, w2 } = layer.weights;
  const gateUp = new Float32Array(2 * I * H); // [2I, H]: our w13, gate rows then up rows
  const fc1 = new Float32Array(2 * I * H); // [2I, H]: ORT's fc1, row 2i gate i, row 2i + 1 up i
  const down = new Float32Array(H * I); // [H, I]: w2, the same layout in both
  const fc1Q = new Uint8Array(2 * I * H); // [2I, H]
  const fc1S = new Float32Array((2 * I * H) / BLOCK); // [2I, H/128]
  const fc2Q = new Uint8Array(H * I); // [H, I]
  const fc2S = new Float32Array((H * I) / BLOCK); // [H, I/128]
  try {
    for (let e = 0; e < E; e++) {
      dequantizeExpert(w13, e, gateUp);
      for (let i = 0; i < I; i++) {
        fc1.set(gateUp.subarray(i * H, (i + 1) * H), 2 * i * H);
        fc1.set(gateUp.subarray((I + i) * H, (I + i + 1) * H), (2 * i + 1) * H);
      }
      dequantizeExpert(w2, e, down);
      quantizeInt8(fc1, 2 * I, H, fc1Q, fc1S);
      quantizeInt8(down, H, I, fc2Q, fc2S);
      write('fc1_f32', e, fc1);
      write('fc2_f32', e, down);
      write('fc1_u8', e, fc1Q);
      write('fc1_scales', e, fc1S);
      write('fc2_u8', e, fc2Q);
      write('fc2_scales', e, fc2S);
    }
  } finally {
    fs.closeSync(fd);
  }
  return tensors;
}

function int(name, i) {
  return { name, type: onnx.AttributeProto.AttributeType.INT, i };
}

function float(name, f) {
  return { name, type: onnx.AttributeProto.AttributeType.FLOAT, f };
}

function string(name, s) {
  return { name, type: onnx.AttributeProto.AttributeType.STRING, s: Buffer.from(s) };
}

function valueInfo(name, dims) {
  return {
    name,
    type: {
      tensorType: {
        elemType: onnx.TensorProto.DataType.FLOAT,
        shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) },
      },
    },
  };
}

/** A model of one com.microsoft node (MoE or QMoE) with inputs input [T, H] and router_probs [T, E]. */
function modelOf(opType, inputs, attributes, initializers) {
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'moe-kernels bench/compare',
    opsetImport: [
      { domain: '', version: 17 },
      { domain: 'com.microsoft', version: 1 },
    ],
    graph: {
      name: opType,
      node: [
        {
          opType,
          domain: 'com.microsoft',
          input: inputs,
          output: ['output'],
          attribute: attributes,
        },
      ],
      initializer: initializers,
      input: [valueInfo('input', ['T', H]), valueInfo('router_probs', ['T', E])],
      output: [valueInfo('output', ['T', H])],
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

async function createSessions(dir, tensors) {
  // Standard SwiGLU, silu(gate) * up: ORT computes G * sigmoid(alpha * G) * (L + beta) with
  // G, L clamped to swiglu_limit, which is infinite (no clamp) when the attribute is absent.
  const moeAttributes = [
    int('k', K),
    string('activation_type', 'swiglu'),
    int('swiglu_fusion', 1), // fused fc1, gate and up interleaved per row (the only form ORT's CPU kernels take)
    float('activation_alpha', 1),
    float('activation_beta', 0),
    int('normalize_routing_weights', 1),
  ];
  const options = {
    executionProviders: ['cpu'],
    intraOpNumThreads: cpus,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3,
  };
  const result = {};
  const moeFile = path.join(dir, 'moe.onnx');
  fs.writeFileSync(
    moeFile,
    modelOf(
      'MoE',
      ['input', 'router_probs', 'fc1_f32', '', 'fc2_f32'], // input, router_probs, fc1_experts_weights, fc1_experts_bias, fc2_experts_weights
      moeAttributes,
      [tensors.fc1_f32, tensors.fc2_f32],
    ),
  );
  result.moe = await ort.InferenceSession.create(moeFile, options);

  const qmoeFile = path.join(dir, 'qmoe.onnx');
  fs.writeFileSync(
    qmoeFile,
    modelOf(
      'QMoE',
      // input, router_probs, fc1_experts_weights, fc1_scales, fc1_experts_bias, fc2_experts_weights, fc2_scales
      ['input', 'router_probs', 'fc1_u8', 'fc1_scales', '', 'fc2_u8', 'fc2_scales'],
      [...moeAttributes, int('expert_weight_bits', 8), int('block_size', BLOCK)],
      [tensors.fc1_u8, tensors.fc1_scales, tensors.fc2_u8, tensors.fc2_scales],
    ),
  );
  try {
    result.qmoe = await ort.InferenceSession.create(qmoeFile, options);
  } catch (error) {
    console.log(`ORT QMoE: session not created: ${error.message}`);
  }
  return result;
}

/** Median of `fn`'s wall times, ms, through the package's timing helper (tinybench), for at least `timeMs` and 5 calls. */
async function medianMs(fn) {
  // ORT's pool threads spin-wait for work for a while after a run: let them
  // go to sleep so that they do not take the cores from the next measurement.
  await new Promise((resolve) => setTimeout(resolve, 100));
  return timing.medianMs(fn, { timeMs, iterations: 5 });
}

/** max |a - b| / max |b| */
function relativeDiff(a, b) {
  let diff = 0;
  let max = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    max = Math.max(max, Math.abs(b[i]));
  }
  return diff / max;
}

/**
 * What ORT computes for one token, in float64: softmax over the given logits,
 * the top k renormalized, and per expert W2 (silu(gate) * up) with
 * [gate; up] = W13 x, on our weights dequantized (MoE) or on QMoE's int8
 * requantization of them (QMoE); activations are not quantized.
 */
function exactReference(x /* [H] */, logits /* [E] */, int8) {
  let max = -Infinity;
  for (const l of logits) max = Math.max(max, l);
  const prob = Array.from(logits, (l) => Math.exp(l - max));
  const ids = prob.map((_, e) => e).sort((a, b) => prob[b] - prob[a] || a - b).slice(0, K);
  const sum = ids.reduce((total, e) => total + prob[e], 0);
  const out = new Float64Array(H); // [H]
  const w13 = new Float32Array(2 * I * H); // [2I, H]: gate rows, then up rows
  const w2 = new Float32Array(H * I); // [H, I]
  const act = new Float64Array(I); // [I]
  for (const e of ids) {
    dequantizeExpert(layer.weights.w13, e, w13);
    dequantizeExpert(layer.weights.w2, e, w2);
    if (int8) {
      // QMoE's blocks are 1x128 along rows: the order of the rows plays no part.
      for (const [w, n, k] of [[w13, 2 * I, H], [w2, H, I]]) {
        const q = new Uint8Array(n * k); // [N, K]
        const scales = new Float32Array((n * k) / BLOCK); // [N, K/128]
        quantizeInt8(w, n, k, q, scales);
        for (let i = 0; i < n * k; i++) w[i] = (q[i] - 128) * scales[Math.floor(i / BLOCK)];
      }
    }
    for (let i = 0; i < I; i++) {
      let gate = 0;
      let up = 0;
      for (let h = 0; h < H; h++) {
        gate += w13[i * H + h] * x[h];
        up += w13[(I + i) * H + h] * x[h];
      }
      act[i] = (gate / (1 + Math.exp(-gate))) * up;
    }
    for (let h = 0; h < H; h++) {
      let y = 0;
      for (let i = 0; i < I; i++) y += w2[h * I + i] * act[i];
      out[h] += (prob[e] / sum) * y;
    }
  }
  return { out, ids };
}

async function compare(tokens) {
  // Distinct inputs, cycled through by the timing loops, so that small T do
  // not find the same few experts' weights in the last-level cache on every call.
  const random = seededRandom(1000 + tokens);
  const inputs = Array.from({ length: Math.ceil(32 / tokens) }, () => {
    const x = mk.bf16FromFloat32(fillNormal(new Float32Array(tokens * H), random, 1), [tokens, H]); // [T, H] bf16
    const logits = mk.routerLogitsSync(x, layer.weights.gate); // [T, E] f32: what our forward computes first
    return {
      x,
      feeds: {
        input: new ort.Tensor('float32', x.toFloat32Array(), [tokens, H]), // [T, H]: the same bf16 values as f32
        router_probs: new ort.Tensor('float32', logits.data, [tokens, E]), // [T, E]
      },
    };
  });

  // Every side against ours over all T tokens; and token 0 against float64
  // references: of the function each ORT operator should compute (f32
  // activations), and of ours (fp8 activations, quantized as the layer does
  // it: referenceForwardToken).
  const { feeds, x } = inputs[0];
  const ours = layer.forwardSync(x).toFloat32Array(); // [T, H]
  const x0 = Float64Array.from(feeds.input.data.subarray(0, H)); // [H]
  const logits0 = feeds.router_probs.data.subarray(0, E); // [E]
  const exact = exactReference(x0, logits0, false);
  const fp8 = mk.referenceForwardToken(config, layer.weights, x0, exact.ids).out; // [H]
  const row = { tokens };
  const notes = [];
  for (const [name, session] of Object.entries(sessions)) {
    const out = (await session.run(feeds)).output.data; // [T, H] f32
    const reference = name === 'moe' ? exact.out : exactReference(x0, logits0, true).out;
    row[`${name}Diff`] = relativeDiff(out, ours);
    row[`${name}Exact`] = relativeDiff(out.subarray(0, H), reference);
    notes.push(`ORT ${LABELS[name]} ${row[`${name}Exact`].toExponential(1)}`);
  }
  notes.push(`ours ${relativeDiff(ours.subarray(0, H), fp8).toExponential(1)}`);
  console.log(`T=${tokens}, token 0 against its float64 reference, max |diff| / max |reference|: ${notes.join(', ')}`);
  console.log(`T=${tokens}, token 0: fp8 activations vs f32 activations (the two float64 references): ${relativeDiff(fp8, exact.out).toExponential(1)}`);

  let next = 0;
  row.ours = await medianMs(() => layer.forwardSync(inputs[next++ % inputs.length].x));
  for (const [name, session] of Object.entries(sessions)) {
    if (!(row[`${name}Exact`] <= MAX_REL_DIFF)) {
      console.log(`T=${tokens}: ORT ${LABELS[name]} does not compute the reference function: not timed`);
      continue;
    }
    row[name] = await medianMs(() => session.run(inputs[next++ % inputs.length].feeds));
  }
  return row;
}

function printTable(rows) {
  const ms = (v) => (v === undefined ? '-' : v < 10 ? v.toFixed(3) : v.toFixed(1));
  const ratio = (v, ours) => (v === undefined ? '-' : `${(v / ours).toFixed(2)}x`);
  const exp = (v) => (v === undefined ? '-' : v.toExponential(1));
  const header = ['T', 'ours ms', 'ORT MoE ms', 'MoE/ours', 'MoE diff', 'ORT QMoE ms', 'QMoE/ours', 'QMoE diff'];
  const body = rows.map((r) => [
    String(r.tokens),
    ms(r.ours),
    ms(r.moe),
    ratio(r.moe, r.ours),
    exp(r.moeDiff),
    ms(r.qmoe),
    ratio(r.qmoe, r.ours),
    exp(r.qmoeDiff),
  ]);
  const widths = header.map((h, c) => Math.max(h.length, ...body.map((b) => b[c].length)));
  const line = (cells) => `| ${cells.map((cell, c) => cell.padStart(widths[c])).join(' | ')} |`;
  console.log(`\nmedian wall time per forward; X/ours > 1: ours is faster; diff = max |ORT - ours| / max |ours|`);
  console.log(line(header));
  console.log(`|${widths.map((w) => '-'.repeat(w + 1) + ':').join('|')}|`);
  for (const b of body) console.log(line(b));
}
