#!/usr/bin/env node
// Where the CPU goes under `bench serve`'s load, and what that bounds.
//
//   node bench/serve-cpu.mjs [--tokens 30] [--connections 64] [--rounds 6] [--seconds 2]
//
// Alternating in rounds, on the same machine state:
//   - the layer alone at --tokens random tokens, timed as bench moe times it
//     (weights evicted before each forward): tokens/s, and CPU per token
//     (process.cpuUsage over the forwards: both pool threads);
//   - a Fastify server that answers without computing (examples/server's
//     body parser and reply), under autocannon at --connections: the
//     server's CPU and autocannon's per request (the cost of HTTP alone);
//   - examples/server, batched, under the same load: tokens/s, mean batch,
//     experts per batch, and CPU per request of its event loop, of its other
//     threads (the forward) and of autocannon.
// A server's CPU is read per thread from /proc/<pid>/task/*/schedstat (Linux).
// With the load generator on the same cores and the forward keeping them busy,
// no batcher can beat  F / (F + J + A)  of the layer alone, F the layer's CPU
// per token and J + A the CPU per request of HTTP alone: printed as the bound.
// Needs the example server's dependencies (npm --prefix examples/server ci)
// and the built package (npm run build:ts).
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    tokens: { type: 'string', default: '30' },
    connections: { type: 'string', default: '64' },
    rounds: { type: 'string', default: '6' },
    seconds: { type: 'string', default: '2' },
  },
});
const T = Number(args.tokens);
const C = Number(args.connections);
const ROUNDS = Number(args.rounds);
const SECONDS = Number(args.seconds);

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const serverDir = path.join(root, 'examples/server');
const require = createRequire(import.meta.url);
const fromServer = createRequire(path.join(serverDir, 'package.json'));
const autocannon = fromServer('autocannon');
const mk = require('../dist/index.js');
const { weightEvictor } = require('../dist/bench/cache-evictor.js');
const { forwardLoad, randomTokens } = require('../dist/bench/serve.js');
const { fillNormal, seededRandom } = require('../dist/moe/random.js');

// bench serve's layer: scaledDeepSeekV3(8), seed 1 (H = 896).
const layer = mk.MoeLayer.random(mk.scaledDeepSeekV3(8), { seed: 1 });
const h = layer.config.hiddenSize;
const tokens = randomTokens(256, h); // one per connection, as bench serve sends them

/** The layer alone for about `ms`: tokens/s over the forwards, CPU us per token (the evictions left out). */
function layerAlone(ms) {
  const inputs = Array.from({ length: 8 }, (_, k) => mk.bf16FromFloat32(fillNormal(new Float32Array(T * h), seededRandom(100 + k), 1), [T, h])); // [T, H] each
  const into = mk.empty([T, h], 'bf16');
  const evict = weightEvictor(layer);
  let forwards = 0;
  let forwardMs = 0;
  let cpuUs = 0;
  for (const start = performance.now(); performance.now() - start < ms; forwards++) {
    evict?.();
    const u0 = process.cpuUsage();
    const t0 = performance.now();
    layer.forwardSync(inputs[forwards % inputs.length], { into });
    forwardMs += performance.now() - t0;
    const u = process.cpuUsage(u0);
    cpuUs += u.user + u.system;
  }
  return { tokensPerSecond: (forwards * T) / (forwardMs / 1e3), cpuPerToken: cpuUs / (forwards * T) };
}

// HTTP alone: examples/server's octet-stream parser and reply headers, a fixed answer of one row.
const FLOOR_SERVER = `
import Fastify from ${JSON.stringify(pathToFileURL(fromServer.resolve('fastify')).href)};
const answer = Buffer.alloc(${h * 4});
const app = Fastify({ logger: false });
app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (request, body, done) => done(null, body));
app.post('/v1/moe/forward', async (request, reply) => reply.header('content-type', 'application/octet-stream').header('x-moe-shape', '1,${h}').send(answer));
console.log('listening on ' + await app.listen({ port: 0, host: '127.0.0.1' }));
`;

function start(argv) {
  const child = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (m) resolve({ child, address: m[1] });
    });
    child.once('exit', (code) => reject(new Error(`exited (${code}): ${out}`)));
  });
}

/** CPU ns so far of a process's main thread (its event loop) and of its other threads. */
function threadCpu(pid) {
  let main = 0;
  let other = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    if (Number(tid) === pid) main += ns;
    else other += ns;
  }
  return { main, other };
}

async function batchCounters(address) {
  const text = await (await fetch(`${address}/metrics`)).text();
  const sum = (name) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
  return { batches: sum('moe_batch_tokens_count'), tokens: sum('moe_batch_tokens_sum'), experts: sum('moe_batch_experts_hit_sum') };
}

/** One round of load on a server: requests/s and CPU us per request by part; batches if it batches. */
async function loadRound(server, batched) {
  const b0 = batched ? await batchCounters(server.address) : undefined;
  const c0 = threadCpu(server.child.pid);
  const u0 = process.cpuUsage();
  const result = await autocannon(forwardLoad(server.address, tokens, C, SECONDS));
  const u = process.cpuUsage(u0);
  const c1 = threadCpu(server.child.pid);
  const n = result.requests.total;
  const row = { rps: result.requests.average, eventLoop: (c1.main - c0.main) / n / 1e3, others: (c1.other - c0.other) / n / 1e3, autocannon: (u.user + u.system) / n };
  if (batched) {
    const b1 = await batchCounters(server.address);
    row.batch = (b1.tokens - b0.tokens) / (b1.batches - b0.batches);
    row.experts = (b1.experts - b0.experts) / (b1.batches - b0.batches);
  }
  return row;
}

const floor = await start(['--input-type=module', '-e', FLOOR_SERVER]);
const server = await start([path.join(serverDir, 'main.mjs'), '--host', '127.0.0.1', '--port', '0', '--scale', '8', '--seed', '1']);
try {
  for (const s of [floor, server]) await autocannon(forwardLoad(s.address, tokens, 16, 1)); // warm-up
  const rounds = [];
  for (let r = 0; r < ROUNDS; r++) {
    rounds.push({ layer: layerAlone(1000), floor: await loadRound(floor, false), server: await loadRound(server, true) });
  }
  const median = (f) => rounds.map(f).sort((a, b) => a - b)[rounds.length >> 1];
  const F = median((r) => r.layer.cpuPerToken);
  const J = median((r) => r.floor.eventLoop);
  const A = median((r) => r.floor.autocannon);
  console.log(`medians of ${ROUNDS} rounds; CPU in us`);
  console.log(`the layer alone, T=${T}: ${median((r) => r.layer.tokensPerSecond).toFixed(0)} tokens/s, ${F.toFixed(0)} CPU per token`);
  console.log(`Fastify answering without computing, ${C} connections: ${median((r) => r.floor.rps).toFixed(0)} requests/s; CPU per request: server ${J.toFixed(0)}, autocannon ${A.toFixed(0)}`);
  console.log(
    `examples/server batched, ${C} connections: ${median((r) => r.server.rps).toFixed(0)} tokens/s, mean batch ${median((r) => r.server.batch).toFixed(1)}, ${median((r) => r.server.experts).toFixed(0)} experts per batch; ` +
      `CPU per request: event loop ${median((r) => r.server.eventLoop).toFixed(0)}, other threads ${median((r) => r.server.others).toFixed(0)}, autocannon ${median((r) => r.server.autocannon).toFixed(0)}`,
  );
  const ratios = rounds.map((r) => r.server.rps / r.layer.tokensPerSecond);
  console.log(`bound on batched / the layer alone, F / (F + J + A): ${(F / (F + J + A)).toFixed(2)}; measured per round: ${ratios.map((x) => x.toFixed(2)).join(' ')} (median ${median((r) => r.server.rps / r.layer.tokensPerSecond).toFixed(2)})`);
} finally {
  for (const s of [floor, server]) s.child.kill('SIGTERM');
}
