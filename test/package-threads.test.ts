import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { MoeLayer, getNumThreads, tensor } from '../lib/index';
import { smallDeepSeekConfig } from './helpers/moe-config';
import { randomFloats, rng } from './helpers/random';

// The Promise forms run on the package's own threads, not on libuv's pool
// (4 threads shared with fs, dns.lookup, crypto, zlib): fs.readFile must not
// queue behind forwards in flight. On libuv's pool, 8 forwards of ~250 ms
// held a read for ~300 ms.
describe('the Promise forms run on threads the package owns', () => {
  it('leave fs.readFile as fast behind 8 or more forwards in flight as when idle (within 20 ms)', async () => {
    const config = smallDeepSeekConfig(1024, 512);
    const layer = MoeLayer.random(config, { seed: 1 });
    const tokens = 256;
    const x = tensor(randomFloats(tokens * config.hiddenSize, rng()), [tokens, config.hiddenSize]);
    await layer.forward(x); // workspaces and weights prepared
    const read = async () => {
      const start = performance.now();
      await readFile(__filename);
      return performance.now() - start;
    };
    const median = (a: number[]) => [...a].sort((p, q) => p - q)[a.length >> 1];
    const idle: number[] = [];
    for (let i = 0; i < 9; i++) idle.push(await read());
    // 16 forwards queued, so that 8 or more are still in flight when the last
    // read ends, however fast the kernels are and however long the reads wait
    // for the JS thread (a loaded 2-vCPU machine: ~5-15 ms per read).
    let settled = 0;
    const forwards = Array.from({ length: 16 }, () => layer.forward(x).then(() => settled++));
    const busy: number[] = [];
    for (let i = 0; i < 9; i++) busy.push(await read());
    const settledDuringReads = settled;
    await Promise.all(forwards);
    expect(settledDuringReads, 'the reads must run while 8 or more forwards are in flight').toBeLessThanOrEqual(8);
    expect(median(busy), `idle reads ${idle.map((t) => t.toFixed(2)).join(', ')} ms; busy ${busy.map((t) => t.toFixed(2)).join(', ')} ms`).toBeLessThan(median(idle) + 20);
  });
});

// The package's threads carry names (`top -H`, perf, /proc/<pid>/task/*/comm),
// so that profiles of a server tell them from Node's and V8's own.
describe('the package names its threads', () => {
  it.skipIf(!existsSync('/proc/self/task'))('moe-async (the Promise forms) and moe-pool-N (the CPU pool\'s workers), in /proc/self/task (Linux only)', async () => {
    const config = smallDeepSeekConfig(256, 128);
    const layer = MoeLayer.random(config, { seed: 2 });
    await layer.forward(tensor(randomFloats(8 * config.hiddenSize, rng()), [8, config.hiddenSize]));
    const names = readdirSync('/proc/self/task').map((t) => {
      try {
        return readFileSync(`/proc/self/task/${t}/comm`, 'utf8').trim();
      } catch {
        return ''; // a thread that ended meanwhile
      }
    });
    expect(names).toContain('moe-async');
    for (let t = 1; t < getNumThreads(); t++) expect(names).toContain(`moe-pool-${t}`);
  });
});
