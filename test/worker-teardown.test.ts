/**
 * A Node worker thread that exits (process.exit, worker.terminate) while its
 * operations are in flight must not take the process down: their completions
 * still arrive while the worker's environment is being torn down, when no
 * JavaScript can run and, for the GPU, after the worker's thread-safe
 * functions are gone. Each case runs in a child process, so that a crash
 * fails the test instead of the test runner.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { backends } from '../lib/index';

const root = path.resolve(__dirname, '..');
const cuda = backends().find((b) => b.name === 'cuda')!;

// Six workers each load the backend (concurrently: the plug-in's load must
// serialize them), start 30 Promise-form quantizations and exit at once.
function script(device: 'cpu' | 'cuda', exit: 'process.exit' | 'terminate'): string {
  return `
const { Worker, isMainThread, parentPort } = require('node:worker_threads');
if (isMainThread) {
  let exited = 0;
  for (let i = 0; i < 6; i++) {
    const w = new Worker(__filename);
    w.on('message', () => ${exit === 'terminate' ? 'w.terminate()' : '{}'});
    w.on('error', (e) => { console.error('worker failed:', e && e.message); process.exitCode = 1; });
    w.on('exit', () => { if (++exited === 6) console.log('all workers exited'); });
  }
} else {
  const m = require(${JSON.stringify(root)});
  const x = m.tensor(Float32Array.from({ length: 64 * 512 }, () => Math.random()), [64, 512]).to('${device}');
  for (let i = 0; i < 30; i++) m.quantizeActivations(x);
  ${exit === 'terminate' ? "parentPort.postMessage('started'); setInterval(() => {}, 1000);" : 'process.exit(0);'}
}`;
}

function run(device: 'cpu' | 'cuda', exit: 'process.exit' | 'terminate') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-workers-'));
  const file = path.join(dir, 'workers.cjs');
  fs.writeFileSync(file, script(device, exit));
  try {
    return spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, MOE_EMU_PAUSE_US: '2000' } });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('a worker thread exiting with operations in flight', () => {
  for (const exit of ['process.exit', 'terminate'] as const) {
    it(`CPU: ${exit}() leaves the process running`, () => {
      const r = run('cpu', exit);
      expect(r.stderr).not.toMatch(/FATAL|Segmentation|Aborted/);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toContain('all workers exited');
    });
    it.skipIf(!cuda.available)(`CUDA: ${exit}() leaves the process running (host callbacks arriving after the teardown)`, () => {
      const r = run('cuda', exit);
      expect(r.stderr).not.toMatch(/FATAL|Segmentation|Aborted/);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toContain('all workers exited');
    });
  }
});
