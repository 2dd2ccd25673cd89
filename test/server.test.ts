import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MoeLayer, bf16FromFloat32, scaledDeepSeekV3, tensor } from '../lib/index';
import { startExampleServer } from '../lib/bench/serve';
import { calcDiff } from './helpers/reference';
import { randomFloats, rng, seedNote } from './helpers/random';

// examples/server on 127.0.0.1: binary and JSON bodies compared with the
// layer's own forward, the limits answered with 4xx, /health and /metrics,
// bounded concurrent request loops, and a SIGTERM that drains requests in
// flight. Needs the example's dependencies (`npm --prefix examples/server ci`,
// which CI runs); without them the suite skips with that message.
const root = path.resolve(__dirname, '..');
const serverDir = path.join(root, 'examples/server');
const installed = fs.existsSync(path.join(serverDir, 'node_modules/fastify'));
const random = rng();

/** Starts examples/server/main.mjs with `args`; resolves with the child and its address once it listens. */
function startServer(args: string[]): ReturnType<typeof startExampleServer> {
  return startExampleServer(serverDir, args, 60_000);
}

async function stop(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  return (await exited)[0] as number | null;
}

// The server's random layer (--scale 56 --seed 3: H = 128, I = 128, 256 experts), rebuilt here from the same seed.
const SERVER_ARGS = ['--scale', '56', '--seed', '3'];
const layer = installed ? MoeLayer.random(scaledDeepSeekV3(56), { seed: 3 }) : undefined!;
const H = installed ? layer.config.hiddenSize : 0;

describe.skipIf(!installed)('examples/server', () => {
  let server: Awaited<ReturnType<typeof startServer>>;
  let base: string;

  beforeAll(async () => {
    server = await startServer([...SERVER_ARGS, '--max-rows', '8']);
    base = server.address;
  }, 90_000);
  afterAll(async () => {
    if (server) expect(await stop(server.child)).toBe(0);
  });

  async function alone(x: Float32Array): Promise<Float32Array> {
    return (await layer.forward(tensor(x, [x.length / H, H]), { out: 'f32' })).data;
  }

  function post(body: string | Buffer, type: string, query = ''): Promise<Response> {
    return fetch(`${base}/v1/moe/forward${query}`, { method: 'POST', body, headers: { 'content-type': type } });
  }

  it(`answers f32 and bf16 binary bodies and JSON with the layer's rows ${seedNote}`, async () => {
    const x = randomFloats(3 * H, random);
    const res = await post(Buffer.from(x.buffer), 'application/octet-stream');
    expect(res.status).toBe(200);
    expect(res.headers.get('x-moe-shape')).toBe(`3,${H}`);
    const y = new Float32Array(await res.arrayBuffer());
    expect(calcDiff(y, await alone(x))).toBeLessThan(1e-4);

    const xb = bf16FromFloat32(x, [3, H]);
    const resB = await post(Buffer.from(xb.data.buffer), 'application/octet-stream', '?dtype=bf16&out=bf16');
    expect(resB.status).toBe(200);
    expect((await resB.arrayBuffer()).byteLength).toBe(3 * H * 2);

    const resJ = await post(JSON.stringify({ x: Array.from(x.subarray(0, H)) }), 'application/json');
    expect(resJ.status).toBe(200);
    const json = (await resJ.json()) as { shape: number[]; y: number[][] };
    expect(json.shape).toEqual([1, H]);
    expect(calcDiff(Float32Array.from(json.y[0]), await alone(x.subarray(0, H)))).toBeLessThan(1e-4);
  });

  /** The status of a POST that declares `bytes` of body and sends none (a server that reads it would wait). */
  function statusForDeclaredLength(bytes: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const req = http.request(`${base}/v1/moe/forward`, { method: 'POST', headers: { 'content-type': 'application/octet-stream', 'content-length': bytes } });
      req.on('response', (res) => {
        resolve(res.statusCode!);
        req.destroy();
      });
      req.on('error', reject);
      req.flushHeaders();
    });
  }

  it('answers bad bodies and the limits with 4xx, and the others are unaffected', async () => {
    const nan = randomFloats(H, random);
    nan[7] = NaN;
    expect((await post(Buffer.from(nan.buffer), 'application/octet-stream')).status).toBe(400);
    expect((await post(Buffer.alloc(4 * H + 4), 'application/octet-stream')).status).toBe(400); // not whole rows
    expect((await post(Buffer.alloc(4 * H * 9), 'application/octet-stream')).status).toBe(413); // 9 rows > maxRows 8
    expect((await post(Buffer.alloc(4 * H), 'application/octet-stream', '?dtype=f16')).status).toBe(400);
    expect((await post(JSON.stringify({ x: [1, 2, 3] }), 'application/json')).status).toBe(400);
    expect((await post(JSON.stringify({ y: 1 }), 'application/json')).status).toBe(400);
    expect(await statusForDeclaredLength(4 << 20)).toBe(413); // over bodyLimit: refused from the header, before the body
    const x = randomFloats(H, random);
    const ok = await post(Buffer.from(x.buffer), 'application/octet-stream');
    expect(calcDiff(new Float32Array(await ok.arrayBuffer()), await alone(x))).toBeLessThan(1e-4);
  });

  it(`gives 32 concurrent clients, 8 requests each, their own rows ${seedNote}`, async () => {
    const client = async () => {
      for (let i = 0; i < 8; i++) {
        const x = randomFloats(H * (1 + Math.floor(random() * 2)), random);
        const res = await post(Buffer.from(x.buffer), 'application/octet-stream');
        expect(res.status).toBe(200);
        expect(calcDiff(new Float32Array(await res.arrayBuffer()), await alone(x))).toBeLessThan(1e-4);
      }
    };
    await Promise.all(Array.from({ length: 32 }, client));
    const health = (await (await fetch(`${base}/health`)).json()) as { meanBatchTokens: number };
    expect(health).toMatchObject({ status: 'ok', batched: true, hiddenSize: H });
    expect(health.meanBatchTokens).toBeGreaterThan(1);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toMatch(/^moe_batches_total\{graph="false",failed="false"\} \d+/m);
    expect(metrics).toMatch(/^moe_batch_compute_ms_count \d+/m);
  });

  it('drains requests in flight on SIGTERM, then exits 0', async () => {
    // A batcher that holds its queue (--max-wait-ms): the requests are all queued when SIGTERM comes.
    const { child, address, output } = await startServer([...SERVER_ARGS, '--max-wait-ms', '600000']);
    const bodies = Array.from({ length: 24 }, () => randomFloats(H * 4, random));
    const inFlight = bodies.map((x) => fetch(`${address}/v1/moe/forward`, { method: 'POST', body: Buffer.from(x.buffer), headers: { 'content-type': 'application/octet-stream' } }));
    for (let tries = 0; ; tries++) {
      const health = (await (await fetch(`${address}/health`)).json()) as { queuedRequests: number };
      if (health.queuedRequests === bodies.length) break;
      expect(tries, 'the requests never all reached the queue').toBeLessThan(600);
      await new Promise((r) => setTimeout(r, 50));
    }
    const code = stop(child);
    const statuses = await Promise.all(inFlight.map(async (p) => (await p).status));
    expect(statuses.every((s) => s === 200), `statuses ${statuses.join(',')}`).toBe(true);
    expect(await code).toBe(0);
    expect(output()).toMatch(/drained, exiting/);
  }, 90_000);
});

describe.skipIf(!installed)('examples/server --unbatched', () => {
  it(`answers each request with the bits of its own forward, binary and JSON, and a bad row with 400 ${seedNote}`, async () => {
    const server = await startServer([...SERVER_ARGS, '--unbatched']);
    try {
      const post = (body: string | Buffer, type: string) => fetch(`${server.address}/v1/moe/forward`, { method: 'POST', body, headers: { 'content-type': type } });
      const x = randomFloats(2 * H, random);
      const own = (await layer.forward(tensor(x, [2, H]), { out: 'f32' })).data;
      const res = await post(Buffer.from(x.buffer), 'application/octet-stream');
      expect(res.status).toBe(200);
      expect(res.headers.get('x-moe-shape')).toBe(`2,${H}`);
      expect(Buffer.from(await res.arrayBuffer()).equals(Buffer.from(own.buffer, own.byteOffset, own.byteLength))).toBe(true);
      const resJ = await post(JSON.stringify({ x: [Array.from(x.subarray(0, H)), Array.from(x.subarray(H))] }), 'application/json');
      expect(resJ.status).toBe(200);
      const json = (await resJ.json()) as { shape: number[]; y: number[][] };
      expect(json.shape).toEqual([2, H]);
      expect(Float32Array.from(json.y.flat())).toEqual(own);
      const nan = randomFloats(H, random);
      nan[3] = NaN;
      const bad = await post(Buffer.from(nan.buffer), 'application/octet-stream');
      expect(bad.status).toBe(400);
      expect(((await bad.json()) as { error: string }).error).toBe('ERR_MOE_NONFINITE');
    } finally {
      expect(await stop(server.child)).toBe(0);
    }
  }, 90_000);
});

describe.skipIf(!installed)('examples/server: a client that goes away', () => {
  it('takes its queued request out of the queue; its connection\'s earlier answers are unaffected', async () => {
    // A fixed 60 s wait for company: a lone request stays queued until its client leaves.
    const { child, address } = await startServer([...SERVER_ARGS, '--max-wait-ms', '60000', '--max-batch-tokens', '2']);
    try {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      const x = Buffer.from(randomFloats(H, random).buffer);
      const send = (rows: Buffer) =>
        new Promise<{ req: http.ClientRequest; status: Promise<number> }>((resolve) => {
          const req = http.request(`${address}/v1/moe/forward`, { method: 'POST', agent, headers: { 'content-type': 'application/octet-stream' } });
          const status = new Promise<number>((ok, fail) => {
            req.on('response', (res) => {
              res.resume();
              res.on('end', () => ok(res.statusCode!));
            });
            req.on('error', fail);
          });
          req.end(rows, () => resolve({ req, status }));
        });
      const health = async () => ((await (await fetch(`${address}/health`)).json()) as { queuedRequests: number }).queuedRequests;
      // Two rows fill a batch: answered at once, on the connection used next.
      expect(await (await send(Buffer.concat([x, x]))).status).toBe(200);
      const { req, status } = await send(x);
      status.catch(() => {});
      /** Polls /health until `n` requests are queued; false after 10 s (the wait for company is 60 s). */
      const queued = async (n: number) => {
        for (const end = Date.now() + 10_000; Date.now() < end; await new Promise((r) => setTimeout(r, 10))) if ((await health()) === n) return true;
        return false;
      };
      expect(await queued(1)).toBe(true);
      req.destroy();
      expect(await queued(0)).toBe(true);
      agent.destroy();
    } finally {
      expect(await stop(child)).toBe(0);
    }
  }, 90_000);
});

describe.skipIf(installed)('examples/server (skipped)', () => {
  it.skip('needs `npm --prefix examples/server ci` (CI installs it)', () => {});
});
