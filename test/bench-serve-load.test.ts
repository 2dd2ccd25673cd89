import * as fs from 'node:fs';
import * as http from 'node:http';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { forwardLoad, randomTokens } from '../lib/bench/serve';

// bench serve's load sends a random token per connection, as bench moe times
// random tokens: one token for every connection routed every batch to the
// same 8 experts. Checked against a plain HTTP server that records what each
// connection sent. Needs the example server's dependencies (autocannon).
const serverDir = path.resolve(__dirname, '..', 'examples/server');
const installed = fs.existsSync(path.join(serverDir, 'node_modules/autocannon'));

describe.skipIf(!installed)("bench serve's load", () => {
  it('gives every connection its own token, the same on each of its requests', async () => {
    const autocannon = createRequire(path.join(serverDir, 'package.json'))('autocannon') as (opts: object) => Promise<{ non2xx: number; errors: number }>;
    const hidden = 64;
    const tokens = randomTokens(6, hidden); // [6, H] as 6 bodies
    const seen = new Map<object, Set<string>>(); // socket -> the bodies it sent, as hex
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const bodies = seen.get(req.socket) ?? new Set<string>();
        bodies.add(Buffer.concat(chunks).toString('hex'));
        seen.set(req.socket, bodies);
        res.end('ok');
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as { port: number };
    try {
      const result = await autocannon(forwardLoad(`http://127.0.0.1:${port}`, tokens, 4, 1));
      expect(result.non2xx + result.errors).toBe(0);
    } finally {
      server.close();
    }
    const perConnection = [...seen.values()];
    expect(perConnection).toHaveLength(4);
    for (const bodies of perConnection) expect(bodies.size).toBe(1);
    const sent = perConnection.map((bodies) => [...bodies][0]).sort();
    expect(sent).toEqual(tokens.slice(0, 4).map((t) => t.toString('hex')).sort());
    // Distinct random values, H of them per token.
    for (const t of tokens) expect(t.length).toBe(hidden * 4);
    expect(new Set(tokens.map((t) => t.toString('hex'))).size).toBe(tokens.length);
  }, 20_000);
});
