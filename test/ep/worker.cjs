// One rank of an expert-parallel test run, started by test/ep.test.ts as
// `mpirun -np N node test/ep/worker.cjs <scenario> <json options>`. It builds
// the expert-parallel layer and, for comparison, the whole layer (the same
// seed or checkpoint) in this process, runs the scenario and prints one line
// `RESULT <json>` (or `ERROR <json>` with the MoeError's code) per rank.
'use strict';
const path = require('node:path');
const moe = require(path.join(__dirname, '..', '..', 'dist', 'index.js'));
const { calcDiff } = require(path.join(__dirname, '..', '..', 'dist', 'bench', 'diff.js'));

const [scenario, optionsJson] = process.argv.slice(2);
const options = JSON.parse(optionsJson || '{}');

// Deterministic hidden states for the concatenated batch: token t of the
// whole batch is the same on every rank.
function hidden(tokens, h, seed) {
  let s = seed >>> 0;
  const out = new Float32Array(tokens * h);
  for (let i = 0; i < out.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * 2;
  }
  return out;
}

function config(extra) {
  return {
    ...moe.DEEPSEEK_V3_CONFIG,
    hiddenSize: 256,
    intermediateSize: 128,
    numExperts: 16,
    topK: 4,
    numGroups: 4,
    topKGroups: 2,
    ...extra,
  };
}

function print(kind, value) {
  process.stdout.write(`${kind} ${JSON.stringify(value)}\n`);
}

// Makes every token choose experts of rank `target` only (the bias selects).
function skewTowards(layer, target, size) {
  const e = layer.config.numExperts;
  const local = e / size;
  const bias = layer.weights.bias.data;
  for (let i = target * local; i < (target + 1) * local; i++) bias[i] += 100;
}

async function equality(ep) {
  const cfg = config(options.config || {});
  const batches = options.batches; // tokens per rank
  const first = batches.slice(0, ep.rank).reduce((a, b) => a + b, 0);
  const total = batches.reduce((a, b) => a + b, 0);
  const mine = batches[ep.rank];
  let layer;
  let whole;
  if (options.checkpoint) {
    layer = await moe.MoeLayer.fromSafetensors(options.checkpoint, { layer: options.layer, ep });
    whole = await moe.MoeLayer.fromSafetensors(options.checkpoint, { layer: options.layer });
  } else {
    layer = moe.MoeLayer.random(cfg, { seed: 7, ep, device: options.device });
    whole = moe.MoeLayer.random(cfg, { seed: 7 });
  }
  if (options.skew !== undefined) {
    skewTowards(layer, options.skew, ep.size);
    skewTowards(whole, options.skew, ep.size);
  }
  const h = layer.config.hiddenSize;
  const all = hidden(total, h, 12345);
  const x = moe.tensor(all.slice(first * h, (first + mine) * h), [mine, h]);
  const runs = [];
  for (let i = 0; i < (options.repeats || 3); i++) {
    let y = options.sync ? layer.forwardSync(x) : await layer.forward(x);
    if (y.device !== 'cpu') y = y.to('cpu');
    runs.push(Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength));
  }
  const repeatEqual = runs.every((r) => r.equals(runs[0]));
  const got = moe.tensor(new Uint16Array(runs[0].buffer, runs[0].byteOffset, runs[0].length / 2), [mine, h], 'bf16').toFloat32Array();
  const ref = whole.forwardSync(moe.tensor(all, [total, h])).toFloat32Array().slice(first * h, (first + mine) * h);
  // A sample of tokens against the float64 reference of the same layer.
  let refDiff = 0;
  const sample = Math.min(mine, 3);
  if (sample > 0) {
    const got64 = [];
    const want64 = [];
    for (let t = 0; t < sample; t++) {
      const xt = Float64Array.from(x.data.subarray(t * h, (t + 1) * h));
      want64.push(...moe.referenceForwardToken(whole.config, whole.weights, xt).out);
      got64.push(...got.subarray(t * h, (t + 1) * h));
    }
    refDiff = calcDiff(got64, want64);
  }
  const stats = layer.shard ? require(path.join(__dirname, '..', '..', 'dist', 'native.js')).native().epShardStats(layer['epHandle'].handle) : undefined;
  print('RESULT', {
    rank: ep.rank,
    size: ep.size,
    tokens: mine,
    diff: calcDiff(got, ref),
    refDiff,
    repeatEqual,
    finite: got.every(Number.isFinite),
    memoryBytes: layer.memoryBytes,
    device: layer.device,
    wholeMemoryBytes: whole.memoryBytes,
    localExperts: layer.weights.w13.numExperts,
    sendRows: stats && stats.sendRows,
    deviceRows: stats && stats.deviceRows,
    nccl: ep.comm.nccl,
    recvRows: stats && stats.recvRows,
    digest: require('node:crypto').createHash('sha256').update(runs[0]).digest('hex').slice(0, 16),
  });
}

async function badInput(ep) {
  const layer = moe.MoeLayer.random(config(), { seed: 7, ep, device: options.device });
  const h = layer.config.hiddenSize;
  let x = moe.tensor(hidden(4, h, 99 + ep.rank), [4, h]);
  if (ep.rank === options.badRank) {
    if (options.kind === 'shape') x = moe.tensor(new Float32Array(4 * (h + 16)), [4, h + 16]);
    if (options.kind === 'nan') x.data[5] = NaN;
  }
  try {
    await layer.forward(x);
    print('RESULT', { rank: ep.rank, ok: true });
  } catch (e) {
    print('ERROR', { rank: ep.rank, code: e.code, message: e.message });
  }
  // The communicator is still usable after a reported error: a second forward succeeds everywhere.
  const y = await layer.forward(moe.tensor(hidden(2, h, 5), [2, h]));
  print('AFTER', { rank: ep.rank, ok: y.shape[0] === 2 });
}

async function stall(ep) {
  const layer = moe.MoeLayer.random(config(), { seed: 7, ep });
  const h = layer.config.hiddenSize;
  const x = moe.tensor(hidden(4, h, 3), [4, h]);
  if (ep.rank === options.badRank) {
    if (options.kind === 'kill') {
      setTimeout(() => process.kill(process.pid, 'SIGKILL'), 200);
      await new Promise(() => {}); // dies mid-forward: the others are waiting in its first exchange
    }
    // 'throw': this rank's program throws before its forward (and stays alive, but never joins)
    print('SKIPPED', { rank: ep.rank });
    await new Promise((resolve) => setTimeout(resolve, options.holdMs));
    return;
  }
  const start = Date.now();
  try {
    await layer.forward(x);
    print('RESULT', { rank: ep.rank, ok: true });
  } catch (e) {
    print('ERROR', { rank: ep.rank, code: e.code, message: e.message, ms: Date.now() - start });
  }
}

// Three forwards; the test corrupts what rank badRank receives in the second
// (MOE_EP_TEST_CORRUPT). One line per rank and forward.
async function corrupt(ep) {
  const layer = moe.MoeLayer.random(config(), { seed: 7, ep });
  const h = layer.config.hiddenSize;
  const x = moe.tensor(hidden(8, h, 31 + ep.rank), [8, h]);
  for (let forward = 1; forward <= 3; forward++) {
    const start = Date.now();
    try {
      await layer.forward(x);
      print('RESULT', { rank: ep.rank, forward, ok: true });
    } catch (e) {
      print('ERROR', { rank: ep.rank, forward, code: e.code, message: e.message, ms: Date.now() - start });
    }
  }
}

function mismatch(ep) {
  const cfg = config(ep.rank === options.badRank ? { intermediateSize: 256 } : {});
  try {
    moe.MoeLayer.random(cfg, { seed: 7, ep });
    print('RESULT', { rank: ep.rank, ok: true });
  } catch (e) {
    print('ERROR', { rank: ep.rank, code: e.code, message: e.message });
  }
  try {
    moe.MoeLayer.random(config({ numExperts: 6 * ep.size + 1, numGroups: 1, topKGroups: 1 }), { seed: 7, ep });
  } catch (e) {
    print('UNEVEN', { rank: ep.rank, code: e.code, message: e.message });
  }
}

async function main() {
  const ep = moe.initExpertParallel({ timeoutMs: options.timeoutMs || 30000 });
  if (scenario === 'equality') await equality(ep);
  else if (scenario === 'bad-input') await badInput(ep);
  else if (scenario === 'stall') await stall(ep);
  else if (scenario === 'mismatch') mismatch(ep);
  else if (scenario === 'corrupt') await corrupt(ep);
  else if (scenario === 'nccl') print('RESULT', { rank: ep.rank, nccl: moe.initNccl() });
  else throw new Error(`unknown scenario ${scenario}`);
}

main().catch((e) => {
  print('ERROR', { code: e.code, message: e.message, stack: e.stack });
  process.exitCode = 1;
});
