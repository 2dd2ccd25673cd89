import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

// Static checks of the CUDA plug-in that need no GPU (scripts/cuda/check-static.sh):
// it builds native/cuda (unless build-cuda/libmoe_cuda.so is newer than every
// source), gates the sm_90a kernels on ptxas -v (no spills, no local memory,
// no wgmma serialization), checks the PTX for wgmma e4m3 and TMA, the
// library's linkage, runs the CPU layout test, the MoE kernels' host math
// test against the CPU backend (and their ptxas gate), and a dlopen smoke test.
// Skipped only where the CUDA toolkit is absent.

const root = path.resolve(__dirname, '..');
const script = path.join(root, 'scripts', 'cuda', 'check-static.sh');
const hasNvcc = spawnSync('nvcc', ['--version'], { encoding: 'utf8' }).status === 0;

describe('CUDA plug-in static checks', () => {
  if (!hasNvcc) {
    it.skip('need nvcc (the CUDA toolkit) on PATH: skipped', () => {});
    return;
  }

  // A cold build takes about a minute on two cores; leave ample room.
  it(
    'builds, and the Hopper kernels pass the ptxas, PTX, linkage and layout checks',
    () => {
      const run = spawnSync('bash', [script], {
        cwd: root,
        encoding: 'utf8',
        env: { ...process.env, MOE_CUDA_JOBS: process.env.MOE_CUDA_JOBS ?? '2' },
        maxBuffer: 64 * 1024 * 1024,
      });
      const output = `${run.stdout ?? ''}${run.stderr ?? ''}`;
      expect(run.error, output).toBeUndefined();
      expect(run.status, output).toBe(0);
      expect(run.stdout).toContain('CUDA plug-in static checks passed');
      expect(run.stdout).toMatch(/0 spills, 0 stack, no wgmma serialization/);
      expect(run.stdout).toMatch(/layouts_test: \d+ checks, 0 failures/);
      expect(run.stdout).toMatch(/moe_math_test: \d+ checks vs the CPU backend, \d+ check\(s\), 0 failure\(s\)/);
      expect(run.stdout).toMatch(/MoE kernel compilations \(sm_80\/89\/90\), 0 spills, 0 stack/);
    },
    15 * 60 * 1000,
  );
});
