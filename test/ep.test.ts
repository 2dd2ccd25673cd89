// Expert parallelism across processes: each test starts `mpirun -np N` with
// test/ep/worker.cjs (one rank per process, the compiled package from dist/)
// and reads one line per rank. Every rank compares its output with the whole
// layer run single-process on the concatenated batch (SPEC.md's layer
// tolerance) and with the float64 reference on a sample of tokens. Skipped,
// with a message, where mpirun or the MPI plug-in (npm run build:mpi) is absent.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEEPSEEK_V3_CONFIG, MoeLayer, backends } from '../lib/index';
import { layerTensors, tempDir, writeCheckpoint } from './helpers/checkpoint';

const root = path.resolve(__dirname, '..');
const worker = path.join(root, 'test', 'ep', 'worker.cjs');
const mpi = backends().find((b) => b.name === 'mpi')!;

function hasMpirun(): boolean {
  return spawnSync('mpirun', ['--version'], { encoding: 'utf8' }).status === 0;
}
const skipReason = !hasMpirun() ? 'mpirun is not installed (Debian: openmpi-bin)' : !mpi.available ? `the MPI transport is unavailable: ${mpi.reason}` : '';
if (skipReason) console.warn(`ep.test.ts: skipped: ${skipReason}`);

function cudaAvailable(): boolean {
  const cuda = backends().find((b) => b.name === 'cuda')!;
  if (!cuda.available) console.warn(`ep.test.ts: the CUDA expert-parallel test is skipped: ${cuda.reason}`);
  return cuda.available;
}

interface Line {
  kind: string;
  rank: number;
  [key: string]: unknown;
}

/** Runs `mpirun -np <ranks> node worker.cjs <scenario> <options>`; the ranks' lines, sorted by rank. */
function mpirun(ranks: number, scenario: string, options: Record<string, unknown>, flags: string[] = []): { lines: Line[]; status: number | null; output: string } {
  const child = spawnSync('mpirun', ['--oversubscribe', ...flags, '-np', String(ranks), process.execPath, worker, scenario, JSON.stringify(options)], {
    encoding: 'utf8',
    timeout: 120_000,
    // mpirun refuses root unless told; CI runs as root.
    env: { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1', OMPI_MCA_btl_vader_single_copy_mechanism: 'none' },
  });
  const output = `${child.stdout}\n${child.stderr}`;
  const lines = child.stdout
    .split('\n')
    .map((l) => /^([A-Z]+) (\{.*\})$/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ kind: m[1], ...(JSON.parse(m[2]) as { rank: number }) }))
    .sort((a, b) => a.rank - b.rank || a.kind.localeCompare(b.kind));
  return { lines, status: child.status, output };
}

function results(ranks: number, options: Record<string, unknown>): Line[] {
  const run = mpirun(ranks, 'equality', options);
  const lines = run.lines.filter((l) => l.kind === 'RESULT');
  expect(lines.length, run.output).toBe(ranks);
  expect(run.status, run.output).toBe(0);
  return lines;
}

function expectMatchesWholeLayer(lines: Line[], batches: number[]): void {
  for (const line of lines) {
    const note = JSON.stringify(line);
    expect(line.tokens, note).toBe(batches[line.rank]);
    expect(line.diff as number, note).toBeLessThan(2e-3);
    expect(line.refDiff as number, note).toBeLessThan(2e-3);
    expect(line.repeatEqual, note).toBe(true);
    expect(line.finite, note).toBe(true);
  }
}

describe.skipIf(skipReason !== '')('expert parallelism over MPI', () => {
  for (const ranks of [2, 4]) {
    it(`${ranks} ranks, uneven batches and a rank without tokens: each rank's rows equal the whole layer's on the concatenated batch`, () => {
      const batches = ranks === 2 ? [13, 0] : [5, 0, 17, 3];
      const lines = results(ranks, { batches });
      expectMatchesWholeLayer(lines, batches);
      // Each rank holds E / size experts; the router and shared expert are replicated.
      for (const line of lines) {
        expect(line.localExperts).toBe(16 / ranks);
        expect(line.memoryBytes as number).toBeLessThan(line.wholeMemoryBytes as number);
      }
      // A token goes at most once to each rank: rows sent to rank d <= tokens.
      for (const line of lines) for (const rows of line.sendRows as number[]) expect(rows).toBeLessThanOrEqual(line.tokens as number);
    });

    it(`${ranks} ranks: the same bits on every run (within a process, and in a second mpirun)`, () => {
      const batches = ranks === 2 ? [7, 11] : [3, 8, 1, 6];
      const first = results(ranks, { batches, repeats: 3 });
      const second = results(ranks, { batches, repeats: 1, sync: true });
      expectMatchesWholeLayer(first, batches);
      expect(second.map((l) => l.digest)).toEqual(first.map((l) => l.digest));
    });
  }

  it('all tokens routed to one rank (the others\' experts get none), and one token in all', () => {
    const skew = results(4, { batches: [6, 2, 0, 9], skew: 3, config: { topK: 2, numGroups: 1, topKGroups: 1 } });
    expectMatchesWholeLayer(skew, [6, 2, 0, 9]);
    for (const line of skew) expect((line.sendRows as number[]).slice(0, 3)).toEqual([0, 0, 0]);
    expect(skew.map((l) => (l.recvRows as number[]).reduce((a, b) => a + b, 0))).toEqual([0, 0, 0, 17]);
    expectMatchesWholeLayer(results(4, { batches: [0, 0, 1, 0] }), [0, 0, 1, 0]);
  });

  it('the unfused expert path gives the same bits (MOE_FUSED_EXPERTS=0)', () => {
    const batches = [5, 9];
    const fused = results(2, { batches, repeats: 1 });
    process.env.MOE_FUSED_EXPERTS = '0';
    try {
      expect(results(2, { batches, repeats: 1 }).map((l) => l.digest)).toEqual(fused.map((l) => l.digest));
    } finally {
      delete process.env.MOE_FUSED_EXPERTS;
    }
  });

  it('a checkpoint loaded sharded (each rank reads its experts) equals the whole checkpoint', () => {
    const config = { ...DEEPSEEK_V3_CONFIG, hiddenSize: 256, intermediateSize: 128, numExperts: 16, topK: 4, numGroups: 4, topKGroups: 2 };
    const whole = MoeLayer.random(config, { seed: 21 });
    const dir = writeCheckpoint(tempDir(), config, layerTensors(config, whole.weights, 3), 3);
    try {
      for (const ranks of [2, 4]) {
        const batches = ranks === 2 ? [9, 4] : [4, 0, 6, 2];
        const lines = results(ranks, { batches, checkpoint: dir, layer: 3 });
        expectMatchesWholeLayer(lines, batches);
        for (const line of lines) expect(line.localExperts).toBe(16 / ranks);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  // A CUDA layer's exchanges are staged through host memory over MPI. Where
  // MOE_CUDA_PLUGIN names the plug-in's CPU emulation (CI) or a GPU is
  // there, the ranks run the GPU forward and must match the CPU's bits.
  it.skipIf(!cudaAvailable())('the CUDA backend: the same forward, staged through host memory, matches the whole layer', () => {
    const batches = [6, 0, 11, 3];
    const cpu = results(4, { batches, repeats: 1 });
    const gpu = results(4, { batches, repeats: 2, device: 'cuda' });
    expectMatchesWholeLayer(gpu, batches);
    for (const line of gpu) expect(line.device).toBe('cuda');
    // The emulation's kernels are the CPU backend's: the same bits. (A GPU's
    // own kernels agree within the tolerance above, checked per rank.)
    if (process.env.MOE_CUDA_PLUGIN?.includes('build-emu')) expect(gpu.map((l) => l.digest)).toEqual(cpu.map((l) => l.digest));
  });

  // With the test double of libnccl.so.2 (scripts/ep/build-fake-nccl.sh:
  // NCCL's entry points over MPI on host memory, its transfers ordered on the
  // emulated GPU's stream), a CUDA layer's rows move between "devices" over
  // NCCL: the gathers, the grouped ncclSend/ncclRecv and the checks of what
  // arrived, end to end.
  const fakeNccl = path.join(root, 'build-emu', 'libnccl.so.2');
  const withFakeNccl = <T>(run: () => T): T => {
    process.env.MOE_NCCL_LIBRARY = fakeNccl;
    try {
      return run();
    } finally {
      delete process.env.MOE_NCCL_LIBRARY;
    }
  };
  const ncclSkip = !cudaAvailable() || !fs.existsSync(fakeNccl);
  if (cudaAvailable() && !fs.existsSync(fakeNccl)) console.warn('ep.test.ts: the NCCL-path tests are skipped: bash scripts/ep/build-fake-nccl.sh builds the test double of libnccl.so.2');
  it.skipIf(ncclSkip)('the CUDA backend over NCCL: rows move between devices, with the same bits as the staged forward', () => {
    const batches = [6, 0, 11, 3];
    const staged = results(4, { batches, repeats: 1, device: 'cuda' });
    const nccl = withFakeNccl(() => results(4, { batches, repeats: 2, device: 'cuda' }));
    expectMatchesWholeLayer(nccl, batches);
    for (const line of staged) expect(line.deviceRows, JSON.stringify(line)).toBe(false);
    for (const line of nccl) {
      expect(line.nccl, JSON.stringify(line)).toMatchObject({ available: true, reason: 'usable' });
      expect(line.deviceRows, JSON.stringify(line)).toBe(true);
    }
    expect(nccl.map((l) => l.digest)).toEqual(staged.map((l) => l.digest));
    const two = withFakeNccl(() => results(2, { batches: [9, 4], repeats: 1, device: 'cuda' }));
    expectMatchesWholeLayer(two, [9, 4]);
  });

  for (const [kind, device] of [['shape', 'cpu'], ['nan', 'cpu'], ['nan', 'cuda'], ['nan', 'cuda+nccl']]) {
    it.skipIf((device === 'cuda' && !cudaAvailable()) || (device === 'cuda+nccl' && ncclSkip))(`bad input on one rank (${kind}, ${device}) is reported on every rank, and the next forward works`, () => {
      const launch = () => mpirun(4, 'bad-input', { badRank: 1, kind, device: device.replace('+nccl', '') });
      const run = device.endsWith('+nccl') ? withFakeNccl(launch) : launch();
      const errors = run.lines.filter((l) => l.kind === 'ERROR');
      expect(errors.length, run.output).toBe(4);
      for (const e of errors) {
        if (e.rank === 1) expect(e.code).toBe(kind === 'shape' ? 'ERR_MOE_SHAPE' : 'ERR_MOE_NONFINITE');
        else expect(e.code, JSON.stringify(e)).toBe('ERR_MOE_EP_PEER');
        if (e.rank !== 1) expect(e.message).toMatch(/rank 1 failed/);
      }
      expect(run.lines.filter((l) => l.kind === 'AFTER' && l.ok === true).length, run.output).toBe(4);
    });
  }

  // What rank 1 receives in the second forward is overwritten after the
  // transport delivered it (MOE_EP_TEST_CORRUPT: rank:forward:step:offset:hex
  // bytes). The worker's layer: H = 256 (2 scale groups), k = 4; a dispatch
  // record is [fp8 row 256 | scales 8 | local ids 16 | weights 16] bytes; a
  // counts record is [magic 4 | 4 | forward 8 | rows 8 | tokens 8].
  const le64 = (v: bigint) => Buffer.from(BigInt64Array.of(v).buffer).toString('hex');
  const corruptions: [string, string, RegExp][] = [
    ['a count over the sender\'s batch', `1:2:counts:16:${le64(1n << 40n)}`, /rank 0 announces 1099511627776 rows of a 8-token batch/],
    ['a negative count', `1:2:counts:16:${le64(-3n)}`, /rank 0 announces -3 rows/],
    ['a counts header', '1:2:counts:0:00000000', /counts from rank 0 have a bad header/],
    ['a local expert id out of range', '1:2:dispatch:264:08000000', /received row 0 slot 0 holds expert 8 \(this rank holds 8\)/],
    ['a non-finite weight', '1:2:dispatch:280:0000c07f', /received row 0 slot 0 .* or a non-finite weight/],
    ['a zero scale', '1:2:dispatch:256:00000000', /received row 0 has a bad scale in group 0/],
  ];
  for (const [what, spec, message] of corruptions) {
    it(`a corrupt record on receipt (${what}): ERR_MOE_EP_PROTOCOL there, ERR_MOE_EP_PEER elsewhere, and the next forward works`, () => {
      process.env.MOE_EP_TEST_CORRUPT = spec;
      let run: ReturnType<typeof mpirun>;
      try {
        run = mpirun(2, 'corrupt', { timeoutMs: 10_000 });
      } finally {
        delete process.env.MOE_EP_TEST_CORRUPT;
      }
      expect(run.status, run.output).toBe(0);
      const at = (forward: number) => run.lines.filter((l) => l.forward === forward);
      for (const forward of [1, 3]) expect(at(forward).map((l) => l.kind), run.output).toEqual(['RESULT', 'RESULT']);
      const [peer, bad] = at(2);
      expect(bad, run.output).toMatchObject({ kind: 'ERROR', rank: 1, code: 'ERR_MOE_EP_PROTOCOL' });
      expect(bad.message).toMatch(message);
      expect(peer, run.output).toMatchObject({ kind: 'ERROR', rank: 0, code: 'ERR_MOE_EP_PEER' });
      expect(peer.message).toMatch(/rank 1 failed the (dispatch|experts) of this forward with ERR_MOE_EP_PROTOCOL/);
      for (const line of at(2)) expect(line.ms as number).toBeLessThan(5_000);
    });
  }

  it('a rank that throws before its forward (and stays alive) makes the others fail with ERR_MOE_EP_TIMEOUT in time', () => {
    const run = mpirun(2, 'stall', { badRank: 1, kind: 'throw', timeoutMs: 1500, holdMs: 4000 });
    const error = run.lines.find((l) => l.kind === 'ERROR' && l.rank === 0);
    expect(error, run.output).toBeDefined();
    expect(error!.code).toBe('ERR_MOE_EP_TIMEOUT');
    expect(error!.ms as number).toBeGreaterThanOrEqual(1400);
    expect(error!.ms as number).toBeLessThan(10_000);
  });

  it('a rank killed mid-run: the survivors fail with ERR_MOE_EP_TIMEOUT (mpirun --enable-recovery keeps them alive)', () => {
    const run = mpirun(2, 'stall', { badRank: 1, kind: 'kill', timeoutMs: 1500 }, ['--enable-recovery']);
    const error = run.lines.find((l) => l.kind === 'ERROR' && l.rank === 0);
    expect(error, run.output).toBeDefined();
    expect(error!.code).toBe('ERR_MOE_EP_TIMEOUT');
    expect(error!.ms as number).toBeLessThan(10_000);
  });

  it('ranks that built different layers fail at build time with ERR_MOE_EP_CONFIG; E % size != 0 names both', () => {
    const run = mpirun(2, 'mismatch', { badRank: 1 });
    const errors = run.lines.filter((l) => l.kind === 'ERROR');
    expect(errors.length, run.output).toBe(2);
    for (const e of errors) {
      expect(e.code).toBe('ERR_MOE_EP_CONFIG');
      expect(e.message).toMatch(/intermediateSize = (128|256), rank \d has (128|256)/);
    }
    const uneven = run.lines.filter((l) => l.kind === 'UNEVEN');
    expect(uneven.length).toBe(2);
    for (const e of uneven) expect(e.message).toMatch(/13 experts cannot be split evenly over 2 ranks/);
  });
});

describe.skipIf(skipReason !== '')('NCCL between GPUs, where it cannot run', () => {
  it('initNccl() gives every rank the same reason instead of leaving one waiting', () => {
    const nccl = backends().find((b) => b.name === 'nccl')!;
    const run = mpirun(2, 'nccl', {});
    const lines = run.lines.filter((l) => l.kind === 'RESULT');
    expect(lines.length, run.output).toBe(2);
    const results = lines.map((l) => l.nccl as { available: boolean; reason: string });
    if (nccl.available) return; // a machine with NCCL: scripts/ep/nccl-check.mjs checks the exchange on its GPUs
    for (const r of results) expect(r.available).toBe(false);
    expect(results[0].reason).toMatch(/NCCL is not installed|CUDA backend is not available|cannot use NCCL/);
  });
});

describe('the MPI transport when it is absent', () => {
  it('backends() gives the reason and initExpertParallel throws ERR_MOE_EP_TRANSPORT', () => {
    const script = `const m = require(${JSON.stringify(root)});
      const info = m.backends().find((b) => b.name === 'mpi');
      let code; try { m.initExpertParallel(); } catch (e) { code = e.code + ': ' + e.message; }
      console.log(JSON.stringify({ info, code }));`;
    const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, MOE_MPI_PLUGIN: '/nonexistent/libmoe_mpi.so' } }));
    expect(out.info).toMatchObject({ name: 'mpi', available: false });
    expect(out.info.reason).toMatch(/not built.*npm run build:mpi/);
    expect(out.code).toMatch(/^ERR_MOE_EP_TRANSPORT: initExpertParallel: the MPI transport is not available/);
  });

  it('backends() lists NCCL with the reason it cannot be loaded', () => {
    const script = `console.log(JSON.stringify(require(${JSON.stringify(root)}).backends().find((b) => b.name === 'nccl')))`;
    const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, MOE_NCCL_LIBRARY: '/nonexistent/libnccl.so.2' } }));
    expect(out).toMatchObject({ name: 'nccl', available: false });
    expect(out.reason).toMatch(/NCCL is not installed.*\/nonexistent\/libnccl\.so\.2/);
  });
});
