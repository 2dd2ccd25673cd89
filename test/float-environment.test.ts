// The kernels run in the default floating-point environment whatever the
// process's own: a shared library linked with -ffast-math turns on
// flush-to-zero and denormals-are-zero when it is loaded (GCC's
// crtfastmath.o), and threads created afterwards inherit them. Such a library
// is imitated here by a preloaded one that sets both bits in a constructor;
// fp8 subnormal weight codes must still count, bit for bit as without it.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { cpuInfo } from '../lib/index';
import { tempDirs } from './helpers/checkpoint';

const root = path.resolve(__dirname, '..');
const fresh = tempDirs();

/** Builds the preload library, or says why it cannot. */
function buildFtzDazLibrary(): { lib?: string; why?: string } {
  if (process.platform !== 'linux' || process.arch !== 'x64') return { why: 'needs Linux on x86-64 (MXCSR, LD_PRELOAD)' };
  const dir = fresh();
  const source = path.join(dir, 'ftz_daz.c');
  fs.writeFileSync(source, [
    '#include <xmmintrin.h>',
    '__attribute__((constructor)) static void flushSubnormals(void) { _mm_setcsr(_mm_getcsr() | 0x8040); }',
    '',
  ].join('\n'));
  const lib = path.join(dir, 'libftz_daz.so');
  const cc = spawnSync('cc', ['-shared', '-fPIC', '-O2', '-o', lib, source], { encoding: 'utf8' });
  if (cc.error || cc.status !== 0) return { why: `no C compiler to build the preload library (${cc.error?.message ?? cc.stderr})` };
  return { lib };
}

// A [64, 512] weight whose blocks hold one value of 1 and the rest ~1e-5 of
// it: those quantize to fp8 subnormal codes. One row of x, all ones.
const script = `
const { gemmFp8Sync, quantizeActivationsSync, quantizeWeightsSync, tensor } = require(${JSON.stringify(root)});
const n = 64, k = 512;
const w = new Float32Array(n * k);
for (let i = 0; i < n * k; i++) w[i] = i % 128 === 0 ? 1 : 1e-5 * (1 + (i % 7));
const b = quantizeWeightsSync(tensor(w, [n, k]));
const x = quantizeActivationsSync(tensor(new Float32Array(k).fill(1), [1, k]));
const y = gemmFp8Sync(x, b, { out: 'f32' }).data;
// V8 computes doubles with SSE: under DAZ or FTZ this product is 0.
const flushed = Number.MIN_VALUE * Number(process.argv[1]) === 0;
process.stdout.write(JSON.stringify({ flushed, y: Buffer.from(y.buffer, y.byteOffset, y.byteLength).toString('hex') }));
`;

function run(isa: string, preload?: string): { flushed: boolean; y: string } {
  const env: NodeJS.ProcessEnv = { ...process.env, MOE_CPU_ISA: isa };
  if (preload) env.LD_PRELOAD = preload;
  else delete env.LD_PRELOAD;
  const child = spawnSync(process.execPath, ['-e', script, '2'], { encoding: 'utf8', env, timeout: 60_000 });
  expect(child.status, child.stderr).toBe(0);
  return JSON.parse(child.stdout);
}

const { lib, why } = buildFtzDazLibrary();
// Every path this CPU can run (MOE_CPU_ISA forces a lower one).
const { features } = cpuInfo();
const isas = ['portable', ...(features.avx2 && features.fma ? ['avx2'] : []), ...(features.avx512f ? ['avx512'] : []),
  ...(features.avx512bf16 ? ['avx512bf16'] : []), ...(features.amx ? ['amx'] : [])];

describe.skipIf(!lib)(`kernels under a process with flush-to-zero and denormals-are-zero${lib ? '' : ` (skipped: ${why})`}`, () => {
  it.each(isas)('%s path: fp8 subnormal weights count, bit for bit as in a default process', (isa) => {
    const plain = run(isa);
    const flushing = run(isa, lib);
    expect(plain.flushed, 'the plain process flushes subnormals').toBe(false);
    expect(flushing.flushed, 'the preloaded library did not set FTZ/DAZ: the test would prove nothing').toBe(true);
    expect(flushing.y).toBe(plain.y);
  });
});
