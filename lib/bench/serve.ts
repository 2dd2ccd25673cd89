/**
 * `bench serve`: the example HTTP server (examples/server) under load on
 * 127.0.0.1, batched and unbatched, driven by autocannon's programmatic API
 * with one-token binary requests; `/health` is timed under the same load
 * (probed 100 times a second).
 * Every run is bounded by its duration. The layer's own tokens/s at the
 * batch size the server reached (`bench moe`'s measurement) is the yardstick,
 * timed between the rounds (the servers idle) at each round's mean batch, so
 * that it sees the same machine as the server it is compared with: on a
 * shared machine, the layer timed once after all the rounds could run at
 * three times the rate the machine gave the servers minutes before.
 *
 * Each connection sends its own random token, as bench moe times random
 * tokens: a batch then routes to as many experts as bench moe's batch of the
 * same size (~125 of 256 at T = 30). With one token for every connection,
 * every batch went to the same 8 experts, whose weights stayed cached: the
 * server ran a cheaper forward than the one it was compared with.
 */
import { ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { MoeError } from '../errors';
import { ForwardProfile, MoeLayer } from '../moe/layer';
import { scaledDeepSeekV3 } from '../moe/config';
import { seededRandom, fillNormal } from '../moe/random';
import { bf16FromFloat32, empty, tensor } from '../tensor';
import { weightEvictor } from './cache-evictor';
import { calcDiff } from './diff';
import { forwardMedianMs } from './moe';
import { formatTable } from './table';

export interface ServeBenchOptions {
  /** autocannon connections per run (default 1, 16, 64, 256) */
  connections: number[];
  /** seconds per (connections, mode), split into rounds that alternate the two modes */
  durationS: number;
  /** the server's random layer: scaledDeepSeekV3(scale), seed */
  scale: number;
  seed: number;
  onProgress?: (what: string) => void;
}

export interface ServeRow {
  mode: 'batched' | 'unbatched';
  connections: number;
  requestsPerSecond: number;
  tokensPerSecond: number;
  /** rows per forward over the run (1 unbatched) */
  meanBatch: number;
  /** routed experts that received a token, per batch (batched; from the server's /metrics) */
  expertsPerBatch?: number;
  p50Ms: number;
  p99Ms: number;
  /** GET /health's p99 latency under the same load, ms */
  healthP99Ms: number;
  /** answers other than 2xx, and connection errors or timeouts */
  non2xx: number;
  errors: number;
  /** batched rows: the layer alone at the rounds' mean batches (medians over the rounds) */
  layer?: LayerAlone & {
    /** median over the rounds of the round's tokens/s over the layer's right after it */
    ratio: number;
  };
}

/** The layer alone at `tokens` tokens, as bench moe times it (random tokens, weights evicted before each forward). */
export interface LayerAlone {
  tokens: number;
  tokensPerSecond: number;
  /** routed experts the tokens were sent to */
  expertsHit: number;
}

export interface ServeTarget {
  name: string;
  value: number;
  target: number;
  pass: boolean;
}

export interface ServeBenchReport {
  hiddenSize: number;
  rows: ServeRow[];
  targets: ServeTarget[];
}

/** The example server's folder, its dependencies installed, or a MoeError saying how to get them. */
function exampleServer(): { dir: string; autocannon: (opts: object) => Promise<AutocannonResult> } {
  const dir = path.resolve(__dirname, '..', '..', 'examples', 'server');
  if (!fs.existsSync(path.join(dir, 'main.mjs'))) {
    throw new MoeError('ERR_MOE_UNSUPPORTED', `bench serve: the example server is not here (${dir}); run it from a clone of the repository`);
  }
  const requireFromServer = createRequire(path.join(dir, 'package.json'));
  try {
    requireFromServer.resolve('fastify');
    return { dir, autocannon: requireFromServer('autocannon') };
  } catch {
    throw new MoeError('ERR_MOE_UNSUPPORTED', `bench serve: the example server's dependencies are missing: run \`npm --prefix ${path.relative(process.cwd(), dir) || '.'} ci\``);
  }
}

/** The fields of autocannon's result that the bench reads. */
interface AutocannonResult {
  requests: { average: number };
  latency: { p50: number; p99: number };
  non2xx: number;
  errors: number;
  timeouts: number;
}

/** The server's batch counters (zero for the unbatched server, which runs no batcher). */
interface BatchCounters {
  batches: number;
  tokens: number;
  expertsHit: number;
}

/**
 * Starts examples/server (its main.mjs in `dir`) on 127.0.0.1 at a free port;
 * resolves once it prints its address, rejects if it exits or stays silent
 * for `timeoutMs`. Also used by the server's tests.
 */
export async function startExampleServer(
  dir: string,
  args: string[],
  timeoutMs = 300_000,
): Promise<{ child: ChildProcess; address: string; output: () => string }> {
  const child = spawn(process.execPath, [path.join(dir, 'main.mjs'), '--host', '127.0.0.1', '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.setEncoding('utf8');
  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new MoeError('ERR_MOE_INTERNAL', `bench serve: the server did not start in ${timeoutMs} ms: ${out}`)), timeoutMs);
    child.once('exit', (code) => reject(new MoeError('ERR_MOE_INTERNAL', `bench serve: the server exited (${code}): ${out}`)));
    child.stdout!.on('data', (chunk: string) => {
      out += chunk;
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
  });
  return { child, address, output: () => out };
}

async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  await exited;
}

/** Batches, their tokens and the experts they hit, from the server's /metrics (fed by the batcher's diagnostics channel). */
async function batchCounters(address: string): Promise<BatchCounters> {
  const text = await (await fetch(`${address}/metrics`)).text();
  const sum = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
  return { batches: sum('moe_batch_tokens_count'), tokens: sum('moe_batch_tokens_sum'), expertsHit: sum('moe_batch_experts_hit_sum') };
}

/** Distinct random tokens [count, H] as one request body each, from a fixed seed. */
export function randomTokens(count: number, hidden: number): Buffer[] {
  const x = fillNormal(new Float32Array(count * hidden), seededRandom(11), 1); // [count, H]
  return Array.from({ length: count }, (_, i) => Buffer.from(x.buffer, i * hidden * 4, hidden * 4));
}

/**
 * autocannon's options for `connections` clients of POST /v1/moe/forward,
 * client i sending token i (of `tokens`, cycled) on every request.
 */
export function forwardLoad(address: string, tokens: Buffer[], connections: number, seconds: number): object {
  let next = 0;
  return {
    url: `${address}/v1/moe/forward`,
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream' },
    body: tokens[0],
    setupClient: (client: { setBody(body: Buffer): void }) => client.setBody(tokens[next++ % tokens.length]),
    connections,
    duration: seconds,
  };
}

const MODES = ['unbatched', 'batched'] as const;
/**
 * Unmeasured load on each fresh server before the runs, one second per
 * connection count: a server's first seconds run at a fraction of its later
 * rate (V8 compiling its request path, first use of its threads and
 * buffers; a lone client saw 25-50% of its later rate in its first 2 s
 * here), and the first rows measured (a lone client) would otherwise time
 * whichever server warmed up faster.
 */
const WARMUP = [{ connections: 1, seconds: 1 }, { connections: 16, seconds: 1 }];
/** Rounds per (connections, mode): each runs durationS / ROUNDS seconds. */
const ROUNDS = 4;

interface RunResult {
  load: AutocannonResult;
  probe: AutocannonResult;
  batches: BatchCounters;
  /** batched: the layer alone at this round's mean batch, timed right after the round */
  layer?: LayerAlone;
}

/** Measuring time of the layer alone after each round, ms (at least 3 forwards). */
const LAYER_ROUND_MS = 400;

/** Times the layer alone at `tokens` random tokens as bench moe does (forwardMedianMs, weights evicted first). */
function timeLayerAlone(layer: MoeLayer, evict: (() => void) | undefined, tokens: number): Promise<LayerAlone> {
  const h = layer.config.hiddenSize;
  const x = bf16FromFloat32(fillNormal(new Float32Array(tokens * h), seededRandom(7 + tokens), 1), [tokens, h]); // [T, H]
  const into = empty([tokens, h], 'bf16');
  const profile = {} as ForwardProfile;
  return forwardMedianMs(() => layer.forwardSync(x, { into, profile }), LAYER_ROUND_MS, evict).then((ms) => ({
    tokens,
    tokensPerSecond: (tokens / ms) * 1e3,
    expertsHit: profile.activeExperts,
  }));
}

/**
 * Requests per second of the /health probe: a health checker's pace, not a
 * second load. A probe in a closed loop (each request sent as the last one
 * was answered) sent 2,400-4,600 requests/s beside a lone client's 600-1,200
 * and 800-4,400 beside 64 clients: the "lone" client had company, and each
 * server's /health traffic grew with its own speed. 100 per second give
 * each run a p99 of its own (200 samples in a 2 s round).
 */
const HEALTH_PROBE_RATE = 100;

/** One bounded run: the forward load and a /health probe side by side; the batches the server ran meanwhile. */
async function loadRun(autocannon: (opts: object) => Promise<AutocannonResult>, address: string, tokens: Buffer[], connections: number, seconds: number): Promise<RunResult> {
  const before = await batchCounters(address);
  const [load, probe] = await Promise.all([
    autocannon(forwardLoad(address, tokens, connections, seconds)),
    autocannon({ url: `${address}/health`, connections: 1, overallRate: HEALTH_PROBE_RATE, duration: seconds }),
  ]);
  const after = await batchCounters(address);
  return { load, probe, batches: { batches: after.batches - before.batches, tokens: after.tokens - before.tokens, expertsHit: after.expertsHit - before.expertsHit } };
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1];

/** A mode's row from its rounds: mean rates, median latencies, the worst /health p99, summed failures. */
function summarize(mode: ServeRow['mode'], connections: number, runs: RunResult[]): ServeRow {
  const rate = runs.reduce((n, r) => n + r.load.requests.average, 0) / runs.length;
  const batches = runs.reduce((n, r) => n + r.batches.batches, 0);
  const tokens = runs.reduce((n, r) => n + r.batches.tokens, 0);
  const expertsHit = runs.reduce((n, r) => n + r.batches.expertsHit, 0);
  const batched = mode === 'batched' && batches > 0;
  const alone = runs.flatMap((r) => (r.layer ? [{ layer: r.layer, ratio: r.load.requests.average / r.layer.tokensPerSecond }] : []));
  return {
    mode,
    connections,
    requestsPerSecond: rate,
    tokensPerSecond: rate, // one token per request
    meanBatch: batched ? tokens / batches : 1,
    ...(batched && { expertsPerBatch: expertsHit / batches }),
    p50Ms: median(runs.map((r) => r.load.latency.p50)),
    p99Ms: median(runs.map((r) => r.load.latency.p99)),
    healthP99Ms: Math.max(...runs.map((r) => r.probe.latency.p99)),
    non2xx: runs.reduce((n, r) => n + r.load.non2xx, 0),
    errors: runs.reduce((n, r) => n + r.load.errors + r.load.timeouts, 0),
    ...(alone.length > 0 && {
      layer: {
        tokens: median(alone.map((a) => a.layer.tokens)),
        tokensPerSecond: median(alone.map((a) => a.layer.tokensPerSecond)),
        expertsHit: median(alone.map((a) => a.layer.expertsHit)),
        ratio: median(alone.map((a) => a.ratio)),
      },
    }),
  };
}

export async function benchServe(options: ServeBenchOptions): Promise<ServeBenchReport> {
  const { dir, autocannon } = exampleServer();
  const progress = options.onProgress ?? (() => {});
  const serverArgs = ['--scale', String(options.scale), '--seed', String(options.seed)];
  // The server's layer, rebuilt here from the same seed: to check an answer and to time the layer alone.
  progress('building the layer');
  const layer = MoeLayer.random(scaledDeepSeekV3(options.scale), { seed: options.seed });
  const evict = weightEvictor(layer);
  const h = layer.config.hiddenSize;
  const tokens = randomTokens(Math.max(...options.connections), h); // one per connection
  const checked = tokens.slice(0, 4);
  const expected = checked.map((body) => layer.forwardSync(tensor(body, [1, h], 'f32'), { out: 'f32' }).data as Float32Array);
  // Both servers run at once and the two modes alternate in short rounds, so
  // that both see the same machine (a shared one drifts from minute to minute).
  const servers: Partial<Record<ServeRow['mode'], { child: ChildProcess; address: string }>> = {};
  const rows: ServeRow[] = [];
  try {
    for (const mode of MODES) {
      progress(`starting the ${mode} server`);
      const server = await startExampleServer(dir, mode === 'unbatched' ? [...serverArgs, '--unbatched'] : serverArgs);
      servers[mode] = server;
      for (const [i, body] of checked.entries()) {
        const check = await fetch(`${server.address}/v1/moe/forward`, { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } });
        const answer = new Float32Array(await check.arrayBuffer());
        if (check.status !== 200 || answer.length !== h || !(calcDiff(answer, expected[i]) < 1e-4)) {
          throw new MoeError('ERR_MOE_INTERNAL', `bench serve: the ${mode} server's answer to token ${i} (${check.status}, ${answer.length} values) is not the layer's output`);
        }
      }
    }
    for (const mode of MODES) {
      progress(`warming up the ${mode} server`);
      for (const { connections, seconds } of WARMUP) {
        await autocannon(forwardLoad(servers[mode]!.address, tokens, connections, seconds));
      }
    }
    for (const connections of options.connections) {
      const runs: Record<ServeRow['mode'], RunResult[]> = { unbatched: [], batched: [] };
      for (let round = 0; round < ROUNDS; round++) {
        // The order alternates too: neither mode always runs right after the other.
        for (const mode of round % 2 === 0 ? MODES : [...MODES].reverse()) {
          progress(`${connections} connections, ${mode}, round ${round + 1} of ${ROUNDS}`);
          runs[mode].push(await loadRun(autocannon, servers[mode]!.address, tokens, connections, options.durationS / ROUNDS));
        }
        const batched = runs.batched[round];
        if (batched.batches.batches > 0) {
          progress(`${connections} connections, the layer alone, round ${round + 1} of ${ROUNDS}`);
          batched.layer = await timeLayerAlone(layer, evict, Math.max(1, Math.round(batched.batches.tokens / batched.batches.batches)));
        }
      }
      for (const mode of MODES) rows.push(summarize(mode, connections, runs[mode]));
    }
  } finally {
    for (const server of Object.values(servers)) await stopServer(server.child);
  }
  return { hiddenSize: h, rows, targets: serveTargets(rows) };
}

function serveTargets(rows: ServeRow[]): ServeTarget[] {
  const find = (mode: ServeRow['mode'], connections: number) => rows.find((r) => r.mode === mode && r.connections === connections);
  const targets: ServeTarget[] = [];
  const add = (name: string, value: number, target: number, below = false) =>
    targets.push({ name, value, target, pass: below ? value <= target : value >= target });
  const b64 = find('batched', 64);
  const u64 = find('unbatched', 64);
  if (b64 && u64) add('batched / unbatched tokens/s at 64 connections', b64.tokensPerSecond / u64.tokensPerSecond, 5);
  for (const r of rows.filter((row) => row.mode === 'batched' && row.connections >= 16 && row.layer)) {
    add(`batched tokens/s / the layer's (bench moe) at its mean batch ${r.meanBatch.toFixed(1)}, ${r.connections} connections (median of the rounds)`, r.layer!.ratio, 0.8);
  }
  const b1 = find('batched', 1);
  const u1 = find('unbatched', 1);
  // Separate runs on a shared machine: "no slower" is read as within 5%.
  if (b1 && u1) add('a lone client: batched / unbatched requests/s (>= 0.95: no slower, within run-to-run noise)', b1.requestsPerSecond / u1.requestsPerSecond, 0.95);
  add('/health p99 under load, ms (worst run)', Math.max(...rows.map((r) => r.healthP99Ms)), 50, true);
  return targets;
}

export function formatServeReport(report: ServeBenchReport): string {
  const lines = [
    `examples/server on 127.0.0.1, one-token binary requests (H=${report.hiddenSize}, a random token per connection), autocannon`,
    ...formatTable(
      ['mode', 'connections', 'req/s', 'tokens/s', 'mean batch', 'experts/batch', 'p50 ms', 'p99 ms', '/health p99 ms', 'non-2xx', 'errors'],
      report.rows.map((r) => [
        r.mode,
        String(r.connections),
        r.requestsPerSecond.toFixed(0),
        r.tokensPerSecond.toFixed(0),
        r.meanBatch.toFixed(1),
        r.expertsPerBatch === undefined ? '-' : r.expertsPerBatch.toFixed(0),
        r.p50Ms.toFixed(1),
        r.p99Ms.toFixed(1),
        r.healthP99Ms.toFixed(1),
        String(r.non2xx),
        String(r.errors),
      ]),
    ),
    `the layer alone (bench moe's timing, weights from memory), after each round at its mean batch (medians): ${report.rows
      .filter((r) => r.layer)
      .map((r) => `${r.connections} connections: T=${r.layer!.tokens} ${r.layer!.tokensPerSecond.toFixed(0)} tokens/s (${r.layer!.expertsHit} experts)`)
      .join(', ')}`,
  ];
  for (const t of report.targets) lines.push(`${t.pass ? 'PASS' : 'MISS'}  ${t.name}: ${t.value.toFixed(2)} (target ${t.name.includes('ms') ? '<=' : '>='} ${t.target})`);
  return lines.join('\n');
}
