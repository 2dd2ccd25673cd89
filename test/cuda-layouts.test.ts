import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { expect, it } from 'vitest';

// The Hopper kernels' swizzle, descriptor and fragment-layout arithmetic
// (native/cuda/include/sm90_layouts.h) against an independent model of the
// PTX ISA's tables: plain C++, so it runs everywhere, with or without CUDA.
it('the sm_90 layout arithmetic matches the PTX ISA model', () => {
  const src = path.resolve(__dirname, '..', 'native', 'cuda');
  const binary = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'moe-layouts-')), 'layouts_test');
  const build = spawnSync('g++', ['-std=c++17', '-O1', '-Wall', '-Wextra', '-Werror', `-I${src}/include`, `-I${src}/src`,
    `${src}/test/layouts_test.cpp`, `${src}/src/sm90_fp8_gemm_heuristics.cpp`, '-o', binary], { encoding: 'utf8' });
  expect(build.status, build.stderr).toBe(0);
  const run = spawnSync(binary, { encoding: 'utf8' });
  expect(run.status, run.stdout + run.stderr).toBe(0);
  expect(run.stdout).toMatch(/\d+ checks, 0 failures/);
}, 120_000);
