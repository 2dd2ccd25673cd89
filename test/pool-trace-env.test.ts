// MOE_TRACE_REGIONS=1: each parallel region of more than one thread writes
// one line to stderr with its tasks, wall time, each thread's time in tasks
// and the threads' idle time. Run in child processes (the pool reads the
// variable when it starts; the lines go to the process's stderr).
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const DIST = resolve(__dirname, '../dist/index.js');

// A combine of 300 tokens (several tasks per thread), then a forward of a small layer.
const SCRIPT = `
const m = require(${JSON.stringify(DIST)});
const [tokens, experts, hidden] = [300, 64, 200];
let state = 7;
const random = () => { state = (Math.imul(state, 1664525) + 1013904223) >>> 0; return state / 2 ** 32 - 0.5; };
const floats = (n) => Float32Array.from({ length: n }, random);
const routing = m.routeSync(m.tensor(floats(tokens * experts), [tokens, experts]), { topK: 8, renormalize: true });
const layout = m.dispatchLayoutSync(routing.ids, experts);
m.combineSync(m.tensor(floats(layout.rowToken.shape[0] * hidden), [layout.rowToken.shape[0], hidden]), layout, routing.weights);
process.stderr.write('combine done\\n');
`;

function run(trace: string | undefined): string[] {
  const env: NodeJS.ProcessEnv = { ...process.env, MOE_NUM_THREADS: '2' };
  delete env.MOE_TRACE_REGIONS;
  if (trace !== undefined) env.MOE_TRACE_REGIONS = trace;
  const child = spawnSync(process.execPath, ['-e', SCRIPT], { env, encoding: 'utf8' });
  expect(child.status, child.stderr).toBe(0);
  return child.stderr.split('\n').filter((line) => line.length > 0);
}

const LINE = /^moe-kernels region: tasks (\d+), wall ([\d.]+) ms, busy ((?:[\d.]+ ?)+) ms, idle (-?[\d.]+) ms$/;

describe('MOE_TRACE_REGIONS', () => {
  it('=1: one line per region, busy per thread within the wall time, idle the rest', () => {
    const lines = run('1');
    const regions = lines.filter((line) => line.startsWith('moe-kernels region:'));
    expect(regions.length).toBeGreaterThanOrEqual(1); // at least combine's
    for (const line of regions) {
      const match = LINE.exec(line);
      expect(match, line).not.toBeNull();
      const [, tasks, wall, busy, idle] = match!;
      const busyMs = busy.trim().split(' ').map(Number);
      expect(busyMs).toHaveLength(2);
      expect(Number(tasks)).toBeGreaterThan(1);
      // Printed to 1 us: each thread's busy time within the region's wall time, idle the rest.
      for (const b of busyMs) expect(b).toBeLessThanOrEqual(Number(wall) + 0.002);
      expect(Math.abs(Number(idle) - (2 * Number(wall) - busyMs[0] - busyMs[1]))).toBeLessThanOrEqual(0.004);
    }
    expect(lines.at(-1)).toBe('combine done');
  });

  it('unset or 0: no lines', () => {
    expect(run(undefined)).toEqual(['combine done']);
    expect(run('0')).toEqual(['combine done']);
  });
});
