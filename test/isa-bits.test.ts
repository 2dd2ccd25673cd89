// The row kernels promise the same bits on every SIMD path (AVX-512, AVX2,
// portable): routing's sigmoid and softmax, SwiGLU, fp8 quantization and
// combine. This runs each in child processes with the path forced through
// MOE_CPU_ISA and compares the output bits with this process's (the
// machine's best path).
import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SEED, seedNote } from './helpers/random';

const DIST = resolve(__dirname, '../dist/index.js');

/**
 * Digests of the output bits of each op on seeded inputs, as a child process
 * computes them (source text so that it runs under plain node with any ISA).
 * Shapes are ragged on purpose: E not a multiple of 16, I = 208 (a partial 128-group).
 */
const SCRIPT = `
const m = require(${JSON.stringify(DIST)});
const { createHash } = require('node:crypto');
let state = Number(process.argv[1]) >>> 0;
const random = () => { state = (Math.imul(state, 1664525) + 1013904223) >>> 0; return state / 2 ** 32; };
const floats = (n, scale) => Float32Array.from({ length: n }, () => (random() * 2 - 1) * scale);
const digest = (...arrays) => { const h = createHash('sha256'); for (const a of arrays) h.update(Buffer.from(a.buffer, a.byteOffset, a.byteLength)); return h.digest('hex'); };
const out = {};
const T = 37;
for (const experts of [72, 256]) {
  const logits = floats(T * experts, 6);
  logits[3] = NaN; logits[experts + 5] = Infinity; logits[2 * experts + 1] = -Infinity; logits[3 * experts] = -200;
  const x = m.tensor(logits, [T, experts]);
  const bias = m.tensor(floats(experts, 0.1), [experts]);
  const sig = m.routeSync(x, { scoring: 'sigmoid', topK: 8, numGroups: 8, topKGroups: 4, bias, renormalize: true, scale: 2.5 });
  out['sigmoid E=' + experts] = digest(sig.ids.data, sig.weights.data);
  const soft = m.routeSync(x, { scoring: 'softmax', topK: 6, renormalize: false });
  out['softmax E=' + experts] = digest(soft.ids.data, soft.weights.data);
}
for (const inter of [208, 256]) {
  const hv = floats(T * 2 * inter, 8);
  hv[7] = 95; hv[9] = -120;  // the exp's slow path
  const h = m.tensor(hv, [T, 2 * inter]);
  const q = m.swigluSync(h, { quantize: 'fp8' });
  out['swiglu fp8 I=' + inter] = digest(q.data.data, q.scales.data);
  out['swiglu f32 I=' + inter] = digest(m.swigluSync(h).data);
  const a = m.quantizeActivationsSync(h);
  out['quantize I=' + inter] = digest(a.data.data, a.scales.data);
}
{
  // combine: enough tokens per task for the next tokens' rows to be asked
  // for ahead, H = 200 (tails in every kernel), bf16 and f32 rows.
  const [tokens, experts, hidden] = [300, 64, 200];
  const routing = m.routeSync(m.tensor(floats(tokens * experts, 3), [tokens, experts]), { topK: 8, renormalize: true });
  const layout = m.dispatchLayoutSync(routing.ids, experts);
  const rows = layout.rowToken.shape[0];
  const yv = floats(rows * hidden, 4), sv = floats(tokens * hidden, 4);
  const bf16 = m.combineSync(m.bf16FromFloat32(yv, [rows, hidden]), layout, routing.weights, { shared: m.bf16FromFloat32(sv, [tokens, hidden]) });
  out['combine bf16'] = digest(bf16.data);
  out['combine f32'] = digest(m.combineSync(m.tensor(yv, [rows, hidden]), layout, routing.weights, { shared: m.tensor(sv, [tokens, hidden]), out: 'f32' }).data);
}
const f = m.cpuInfo().features;  // what the forced path left on
process.stdout.write(JSON.stringify({ isa: f.avx512f ? 'avx512' : f.avx2 && f.fma ? 'avx2' : 'portable', out }));
`;

/** The digests, and the row-kernel path the child actually ran (a forced path the CPU lacks falls back). */
function run(isa?: string, seed = SEED): { isa: string; out: Record<string, string> } {
  const env = { ...process.env };
  delete env.MOE_CPU_ISA;
  if (isa) env.MOE_CPU_ISA = isa;
  return JSON.parse(execFileSync(process.execPath, ['-e', SCRIPT, String(seed)], { env, encoding: 'utf8' }));
}

describe('SIMD paths', () => {
  const best = run();

  it('compares digests that depend on the inputs', () => {
    expect(Object.keys(best.out)).toHaveLength(12);
    const other = run(undefined, SEED + 1);
    for (const key of Object.keys(best.out)) expect(other.out[key], key).not.toBe(best.out[key]);
  });

  for (const isa of ['avx2', 'portable']) {
    const forced = run(isa);
    // Forcing a path the CPU lacks would compare the best path with itself.
    it.skipIf(forced.isa !== isa)(`${isa} gives the same bits as the best path${forced.isa !== isa ? ` (skipped: this CPU cannot run ${isa}; it ran ${forced.isa})` : ''}`, () => {
      expect(best.isa, 'the best path is another path').not.toBe(isa);
      expect(forced.out, `${isa} ${seedNote}`).toEqual(best.out);
    });
  }
});
