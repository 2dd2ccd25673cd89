import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  backends, empty, gemmFp8, gemmFp8Sync, getDefaultBackend, groupedGemmFp8Sync, quantizeActivationsSync,
  quantizeWeightsSync, setDefaultBackend, tensor,
} from '../lib/index';
import { cudaPluginCandidates } from '../lib/backends';
import { expectMoeError } from './helpers/errors';
import { calcDiff } from './helpers/reference';
import { randomFloats, rng } from './helpers/random';

const root = path.resolve(__dirname, '..');
const cuda = backends().find((b) => b.name === 'cuda')!;
const pluginBuilt = cudaPluginCandidates().some((p) => fs.existsSync(p));

/** backends() as a fresh process with `env` sees it (the plug-in is loaded once per process). */
function cudaStatusWith(env: Record<string, string>): { available: boolean; reason: string } {
  const out = execFileSync(process.execPath, ['-e', `console.log(JSON.stringify(require(${JSON.stringify(root)}).backends()[1]))`], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
  });
  return JSON.parse(out);
}

describe('the CUDA backend on this machine', () => {
  it('is listed with availability and, when unavailable, the right reason — never a crash', () => {
    expect(backends().map((b) => b.name)).toEqual(['cpu', 'cuda', 'mpi', 'nccl']);
    expect(backends()[0].available).toBe(true);
    if (cuda.available) {
      expect(cuda.device?.name).toBeTruthy();
      return;
    }
    if (!pluginBuilt) expect(cuda.reason).toMatch(/not built \(npm run build:cuda/);
    else expect(cuda.reason).toMatch(/no NVIDIA driver|no CUDA device|driver too old|GPU is sm_/);
  });

  // The real plug-in's environment; the CPU emulation (MOE_CUDA_PLUGIN=build-emu/...) does not read it.
  it.skipIf(!pluginBuilt || /emulated/.test(cuda.reason ?? ''))('names a mistyped MOE_CUDA_GEMM_KERNEL, MOE_CUDA_HANG_TRAP_S or MOE_CUDA_SPLIT_K as the reason, on any machine', () => {
    expect(cudaStatusWith({ MOE_CUDA_GEMM_KERNEL: 'tensorcore' })).toMatchObject({
      available: false,
      reason: expect.stringMatching(/MOE_CUDA_GEMM_KERNEL='tensorcore' is not auto, simt or hopper/),
    });
    expect(cudaStatusWith({ MOE_CUDA_GEMM_KERNEL: 'simt' }).reason).not.toMatch(/MOE_CUDA_GEMM_KERNEL/);
    for (const bad of ['-1', '10s', 'NaN']) {
      expect(cudaStatusWith({ MOE_CUDA_HANG_TRAP_S: bad }).reason).toBe(`MOE_CUDA_HANG_TRAP_S='${bad}' is not a number of seconds in [0, 1e6]`);
    }
    expect(cudaStatusWith({ MOE_CUDA_HANG_TRAP_S: '0' }).reason).not.toMatch(/MOE_CUDA_HANG_TRAP_S/);
    expect(cudaStatusWith({ MOE_CUDA_SPLIT_K: 'yes' }).reason).toBe("MOE_CUDA_SPLIT_K='yes' is not 0 or 1");
  });

  it('reports a broken or foreign plug-in file as a reason', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-plugin-'));
    try {
      const garbage = path.join(dir, 'libmoe_cuda.so');
      fs.writeFileSync(garbage, 'not an ELF file');
      expect(cudaStatusWith({ MOE_CUDA_PLUGIN: garbage })).toMatchObject({ available: false, reason: expect.stringMatching(/cannot load the CUDA plug-in/) });
      const foreign = ['/lib/x86_64-linux-gnu/libm.so.6', '/usr/lib/x86_64-linux-gnu/libm.so.6'].find((p) => fs.existsSync(p));
      if (foreign) {
        expect(cudaStatusWith({ MOE_CUDA_PLUGIN: foreign }).reason).toMatch(/lacks moe_cuda_get_api/);
      }
      expect(cudaStatusWith({ MOE_CUDA_PLUGIN: path.join(dir, 'missing.so') }).reason).toMatch(/not built/);

      // A plug-in that crashes its process on load: only the probe child dies.
      const source = path.join(dir, 'crash.c');
      fs.writeFileSync(source, '#include <stdlib.h>\n__attribute__((constructor)) static void crash(void) { abort(); }\nconst void* moe_cuda_get_api(unsigned v) { (void)v; return 0; }\n');
      const crashing = path.join(dir, 'libcrash.so');
      execFileSync('cc', ['-shared', '-fPIC', '-o', crashing, source]);
      expect(cudaStatusWith({ MOE_CUDA_PLUGIN: crashing }).reason).toMatch(/probing the CUDA plug-in in a child process failed \(it was killed by SIGABRT\)/);

      // A plug-in of another ABI: its table is refused by version, not called.
      const other = path.join(dir, 'other.c');
      fs.writeFileSync(other, 'const void* moe_cuda_get_api(unsigned v) { (void)v; return 0; }\n');
      const older = path.join(dir, 'libother.so');
      execFileSync('cc', ['-shared', '-fPIC', '-o', older, other]);
      expect(cudaStatusWith({ MOE_CUDA_PLUGIN: older }).reason).toMatch(/does not speak ABI \d+/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(cuda.available)('refuses CUDA tensors and a CUDA default with ERR_MOE_DEVICE naming the reason', () => {
    expectMoeError(() => tensor(new Float32Array(4), [2, 2]).to('cuda'), 'ERR_MOE_DEVICE', /CUDA backend is not available/);
    expectMoeError(() => empty([2], 'f32', 'cuda'), 'ERR_MOE_DEVICE');
    expectMoeError(() => setDefaultBackend('cuda'), 'ERR_MOE_DEVICE');
    expectMoeError(() => setDefaultBackend('tpu' as never), 'ERR_MOE_RANGE', /'cpu' or 'cuda'/);
    setDefaultBackend('cpu');
    expect(getDefaultBackend()).toBe('cpu');
    const env = { ...process.env, MOE_BACKEND: 'cuda' };
    const run = () => execFileSync(process.execPath, ['-e', `require(${JSON.stringify(root)}).getDefaultBackend()`], { env, stdio: 'pipe' });
    expect(run).toThrow(/MOE_BACKEND: the CUDA backend is not available/);
  });
});

// These run where a GPU is; elsewhere they are skipped, with the reason as their title.
describe.skipIf(!cuda.available)(`on the GPU (${cuda.available ? cuda.device?.name : `skipped: ${cuda.reason}`})`, () => {
  const random = rng();

  it('moves tensors to the GPU and back', () => {
    const x = tensor(randomFloats(1000, random), [10, 100]);
    const back = x.to('cuda').to('cpu');
    expect(Array.from(back.data as Float32Array)).toEqual(Array.from(x.data as Float32Array));
    const d = x.to('cuda');
    d.dispose();
    expectMoeError(() => d.to('cpu'), 'ERR_MOE_DETACHED');
  });

  it('gemmFp8 on device tensors equals the CPU backend (sync and async)', async () => {
    for (const [m, n, k] of [[1, 2112, 7168], [129, 300, 1040], [256, 512, 512]]) {
      const a = quantizeActivationsSync(tensor(randomFloats(m * k, random), [m, k]));
      const b = quantizeWeightsSync(tensor(randomFloats(n * k, random), [n, k]));
      const cpu = gemmFp8Sync(a, b, { out: 'f32' }).data as Float32Array;
      const da = { data: a.data.to('cuda'), scales: a.scales.to('cuda') };
      const db = { data: b.data.to('cuda'), scales: b.scales.to('cuda') };
      const out = gemmFp8Sync(da, db, { out: 'f32' });
      expect(out.device).toBe('cuda');
      expect(calcDiff(out.toFloat32Array(), cpu)).toBeLessThan(1e-5);
      expect(calcDiff((await gemmFp8(da, db, { out: 'f32' })).toFloat32Array(), cpu)).toBeLessThan(1e-5);
    }
  });

  it('the contiguous grouped GEMM on device tensors equals the CPU backend', () => {
    const [g, n, k, rows] = [4, 256, 512, 512];
    const groupIndex = tensor(Int32Array.from({ length: rows }, (_, r) => (r % 128 < 100 ? Math.floor(r / 128) : -1)), [rows]);
    const a = quantizeActivationsSync(tensor(randomFloats(rows * k, random), [rows, k]));
    const b = quantizeWeightsSync(tensor(randomFloats(g * n * k, random), [g, n, k]));
    const cpu = groupedGemmFp8Sync(a, b, groupIndex, { out: 'f32' }).data as Float32Array;
    const gpu = groupedGemmFp8Sync(
      { data: a.data.to('cuda'), scales: a.scales.to('cuda') },
      { data: b.data.to('cuda'), scales: b.scales.to('cuda') },
      groupIndex.to('cuda'),
      { out: 'f32' },
    );
    expect(calcDiff(gpu.toFloat32Array(), cpu)).toBeLessThan(1e-5);
  });

  it('refuses batchInvariant (CPU GEMMs only)', () => {
    const a = quantizeActivationsSync(tensor(randomFloats(2 * 64, random), [2, 64]));
    const b = quantizeWeightsSync(tensor(randomFloats(2 * 64, random), [2, 64]));
    expectMoeError(() => gemmFp8Sync({ data: a.data.to('cuda'), scales: a.scales.to('cuda') }, { data: b.data.to('cuda'), scales: b.scales.to('cuda') }, { batchInvariant: true }), 'ERR_MOE_UNSUPPORTED');
  });

  it('mixing devices is ERR_MOE_DEVICE', () => {
    const a = quantizeActivationsSync(tensor(randomFloats(2 * 64, random), [2, 64]));
    const b = quantizeWeightsSync(tensor(randomFloats(2 * 64, random), [2, 64]));
    expectMoeError(() => gemmFp8Sync({ data: a.data.to('cuda'), scales: a.scales.to('cuda') }, b), 'ERR_MOE_DEVICE');
  });
});
