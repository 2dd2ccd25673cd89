// Every fp8 GEMM path (AMX, AVX512_BF16, AVX-512, AVX2 and portable, each
// forced through MOE_CPU_ISA in a child process) on the same seeded inputs at
// ragged shapes: M = 1 .. 257 (every kernel's row blocking and each switch
// of kernel by M: 8/9, on AVX512_BF16 4/5 (and the row-lane kernel's 8 rows
// of two k-pairs per zmm, 1..4 zmm of 16 and the tail past them: 8/9,
// 11/12, 16/17, 24/25 (three zmm of 8 rows and a tail), 26/27, 32/33, 37/38,
// 40/41, 48/49, 56/57, then its lane groups:
// 64/65, 72/73, 97, 130, and row tiles: 256/257), on AVX2 4/5 (blocks of rows
// in registers), 10/11 and 32/33), N
// and K off multiples of 128 (a second dense K spans several of the AVX2
// streaming kernel's 512-wide K chunks; both have K % 32 = 16), dense and
// grouped (one segment per expert, segments of 1 .. 150 rows, one per
// AVX512_BF16 kernel, tail and lane
// group count). Each path's output must match the
// float64 reference (SPEC: diff < 1e-5) and the portable path's output; the
// outputs are poisoned with NaN before every call. A path the CPU lacks is
// skipped with a message.
import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { calcDiff, referenceGemm } from './helpers/reference';
import { SEED, seedNote } from './helpers/random';

const DIST = resolve(__dirname, '../dist/index.js');

const MS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 16, 17, 20, 24, 25, 26, 27, 31, 32, 33, 37, 38, 40, 41, 48, 49, 56, 57, 64, 65, 72, 73, 97, 130, 256, 257];
const [N, K] = [161, 400];
const [N2, K2] = [140, 1168];  // dense only
const MS2 = [1, 5, 12, 13, 20, 32, 33, 40, 64, 65, 130, 257];
const SEGMENTS = [1, 5, 37, 2, 9, 0, 17, 14, 64, 70, 22, 150];  // rows per expert (one expert gets none)

/** Runs in a child process: the inputs (seeded) and each GEMM's f32 output, base64. */
const SCRIPT = `
const m = require(${JSON.stringify(DIST)});
let state = Number(process.argv[1]) >>> 0;
const random = () => { state = (Math.imul(state, 1664525) + 1013904223) >>> 0; return state / 2 ** 32; };
const floats = (n, scale) => Float32Array.from({ length: n }, () => (random() + random() + random() - 1.5) * 2 * scale);
const b64 = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
const poisoned = (shape) => { const t = m.empty(shape, 'f32'); t.data.fill(NaN); return t; };
const [N, K] = [${N}, ${K}];
const out = { isa: m.cpuInfo().gemmIsa, dense: {}, inputs: {} };
const b = m.quantizeWeightsSync(m.tensor(floats(N * K, 0.05), [N, K]));
out.inputs.b = [b64(b.data.data), b64(b.scales.data)];
for (const M of ${JSON.stringify(MS)}) {
  const x = floats(M * K, 1);
  for (let i = 0; i < x.length; i += 97) x[i] *= 30;
  const a = m.quantizeActivationsSync(m.tensor(x, [M, K]));
  const d = m.gemmFp8Sync(a, b, { out: 'f32', into: poisoned([M, N]) });
  out.inputs['a' + M] = [b64(a.data.data), b64(a.scales.data)];
  out.dense[M] = b64(d.data);
}
// An fp8 NaN code in b (0x7F / 0xFF), in a row's 32-byte body or its 16-byte
// K tail, must be reported by every kernel (streamed, decoded, packed).
out.nanMissed = [];
for (const M of [1, 2, 3, 4, 5, 7, 10, 11, 12, 33, 64, 65, 130, 257]) {
  const a = m.quantizeActivationsSync(m.tensor(floats(M * K, 1), [M, K]));
  for (const code of [0x7f, 0xff]) {
    for (const at of [150 * K + 37, 150 * K + K - 5]) {
      const data = b.data.data.slice();
      data[at] = code;
      const bad = { data: m.tensor(data, [N, K], 'fp8_e4m3'), scales: b.scales };
      let caught = '';
      try { m.gemmFp8Sync(a, bad, { out: 'f32' }); } catch (e) { caught = e.code + ' ' + e.message; }
      if (!/ERR_MOE_NONFINITE .*b contains an fp8 NaN/.test(caught)) out.nanMissed.push({ M, code, at, caught });
    }
  }
}
const b2 = m.quantizeWeightsSync(m.tensor(floats(${N2} * ${K2}, 0.05), [${N2}, ${K2}]));
out.inputs.b2 = [b64(b2.data.data), b64(b2.scales.data)];
out.dense2 = {};
for (const M of ${JSON.stringify(MS2)}) {
  const a = m.quantizeActivationsSync(m.tensor(floats(M * ${K2}, 1), [M, ${K2}]));
  out.inputs['a2_' + M] = [b64(a.data.data), b64(a.scales.data)];
  out.dense2[M] = b64(m.gemmFp8Sync(a, b2, { out: 'f32', into: poisoned([M, ${N2}]) }).data);
}
const segments = ${JSON.stringify(SEGMENTS)};
const G = segments.length, R = segments.reduce((s, r) => s + r, 0);
const nb = Math.ceil(N / 128), kg = Math.ceil(K / 128);
const wq = new Uint8Array(G * N * K), ws = new Float32Array(G * nb * kg);
for (let g = 0; g < G; g++) {  // each expert quantized on its own: its own 128-row scale blocks
  const w = m.quantizeWeightsSync(m.tensor(floats(N * K, 0.05), [N, K]));
  wq.set(w.data.data, g * N * K);
  ws.set(w.scales.data, g * nb * kg);
}
const bg = { data: m.tensor(wq, [G, N, K], 'fp8_e4m3'), scales: m.tensor(ws, [G, nb, kg]) };
const ag = m.quantizeActivationsSync(m.tensor(floats(R * K, 1), [R, K]));
const groupIndex = new Int32Array(R);
let r = 0;
segments.forEach((rows, g) => { for (let i = 0; i < rows; i++) groupIndex[r++] = g; });
groupIndex[3] = -1;  // a padding row inside a segment: its output is zero
const dg = m.groupedGemmFp8Sync(ag, bg, m.tensor(groupIndex, [R]), { out: 'f32', into: poisoned([R, N]) });
out.inputs.grouped = [b64(ag.data.data), b64(ag.scales.data), b64(bg.data.data), b64(bg.scales.data), b64(groupIndex)];
out.grouped = b64(dg.data);
process.stdout.write(JSON.stringify(out));
`;

interface PathRun {
  isa: string;
  dense: Record<string, string>;
  dense2: Record<string, string>;
  nanMissed: unknown[];
  grouped: string;
  inputs: Record<string, string[]>;
}

function run(isa?: string): PathRun {
  const env = { ...process.env };
  delete env.MOE_CPU_ISA;
  if (isa) env.MOE_CPU_ISA = isa;
  return JSON.parse(execFileSync(process.execPath, ['-e', SCRIPT, String(SEED)], { env, encoding: 'utf8', maxBuffer: 1 << 28 }));
}

// Copies (a decoded Buffer may sit at any offset of a shared pool).
const bytes = (s: string) => new Uint8Array(Buffer.from(s, 'base64'));
const floats = (s: string) => new Float32Array(bytes(s).buffer);

/** The float64 reference of every output of a run, from the inputs it printed (the same for every path: seeded). */
function references(ref: PathRun): { dense: Record<string, Float64Array>; dense2: Record<string, Float64Array>; grouped: Float64Array } {
  const [bq, bs] = ref.inputs.b;
  const dense: Record<string, Float64Array> = {};
  for (const m of MS) {
    const [aq, as] = ref.inputs[`a${m}`];
    dense[m] = referenceGemm(bytes(aq), floats(as), bytes(bq), floats(bs), m, N, K);
  }
  const [b2q, b2s] = ref.inputs.b2;
  const dense2: Record<string, Float64Array> = {};
  for (const m of MS2) {
    const [aq, as] = ref.inputs[`a2_${m}`];
    dense2[m] = referenceGemm(bytes(aq), floats(as), bytes(b2q), floats(b2s), m, N2, K2);
  }
  const [aq, as, gq, gs, gi] = ref.inputs.grouped;
  const a = bytes(aq), sa = floats(as), b = bytes(gq), sb = floats(gs);
  const groupIndex = new Int32Array(bytes(gi).buffer);
  const groups = Math.ceil(K / 128), nBlocks = Math.ceil(N / 128);
  const R = groupIndex.length;
  const grouped = new Float64Array(R * N);
  for (let r = 0; r < R; r++) {
    const g = groupIndex[r];
    if (g < 0) continue;
    const row = referenceGemm(a.subarray(r * K, (r + 1) * K), sa.subarray(r * groups, (r + 1) * groups),
      b.subarray(g * N * K, (g + 1) * N * K), sb.subarray(g * nBlocks * groups, (g + 1) * nBlocks * groups), 1, N, K);
    grouped.set(row, r * N);
  }
  return { dense, dense2, grouped };
}

describe('fp8 GEMM paths against the float64 reference and the portable path', () => {
  const portable = run('portable');
  const reference = references(portable);

  it(`the portable path matches the reference ${seedNote}`, () => {
    expect(portable.isa).toBe('portable');
    expect(portable.nanMissed, 'fp8 NaN codes in b reported').toEqual([]);
    for (const m of MS) expect(calcDiff(floats(portable.dense[m]), reference.dense[m]), `M=${m}`).toBeLessThan(1e-5);
    for (const m of MS2) expect(calcDiff(floats(portable.dense2[m]), reference.dense2[m]), `K=${K2} M=${m}`).toBeLessThan(1e-5);
    expect(calcDiff(floats(portable.grouped), reference.grouped), 'grouped').toBeLessThan(1e-5);
  });

  for (const isa of ['avx2', 'avx512', 'avx512bf16', 'amx']) {
    const forced = run(isa);
    const ran = forced.isa === isa;
    it.skipIf(!ran)(`${isa} matches the reference and the portable path${ran ? '' : ` (skipped: this CPU cannot run ${isa}; it ran ${forced.isa})`}`, () => {
      for (const m of MS) {
        const d = floats(forced.dense[m]);
        expect(d.every(Number.isFinite), `M=${m}: every element written ${seedNote}`).toBe(true);
        expect(calcDiff(d, reference.dense[m]), `M=${m} vs float64 ${seedNote}`).toBeLessThan(1e-5);
        expect(calcDiff(d, floats(portable.dense[m])), `M=${m} vs portable ${seedNote}`).toBeLessThan(1e-5);
      }
      for (const m of MS2) {
        const d = floats(forced.dense2[m]);
        expect(d.every(Number.isFinite), `K=${K2} M=${m}: every element written ${seedNote}`).toBe(true);
        expect(calcDiff(d, reference.dense2[m]), `K=${K2} M=${m} vs float64 ${seedNote}`).toBeLessThan(1e-5);
        expect(calcDiff(d, floats(portable.dense2[m])), `K=${K2} M=${m} vs portable ${seedNote}`).toBeLessThan(1e-5);
      }
      expect(forced.nanMissed, `fp8 NaN codes in b reported ${seedNote}`).toEqual([]);
      const g = floats(forced.grouped);
      expect(g.every(Number.isFinite), `grouped: every element written ${seedNote}`).toBe(true);
      expect(Array.from(g.subarray(3 * N, 4 * N)).every((v) => v === 0), 'grouped: the padding row is zero').toBe(true);
      expect(calcDiff(g, reference.grouped), `grouped vs float64 ${seedNote}`).toBeLessThan(1e-5);
      expect(calcDiff(g, floats(portable.grouped)), `grouped vs portable ${seedNote}`).toBeLessThan(1e-5);
    });
  }
});
