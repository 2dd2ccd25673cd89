import { describe, expect, it } from 'vitest';
import { dispatchLayout, dispatchLayoutSync, empty, tensor } from '../lib/index';
import type { DispatchLayout } from '../lib/index';
import { LayoutRef, referenceLayout } from './helpers/moe-reference';
import { rng, seedNote } from './helpers/random';
import { expectMoeError } from './helpers/errors';

const random = rng();


/**
 * Random ids [T, k] over E experts: distinct per token by default; with
 * `repeats`, a token may pick the same expert twice; `dropRate` of entries -1.
 */
function randomIds(tokens: number, topK: number, experts: number, opts: { repeats?: boolean; dropRate?: number; skew?: boolean } = {}): Int32Array {
  const ids = new Int32Array(tokens * topK);
  for (let t = 0; t < tokens; t++) {
    const used = new Set<number>();
    for (let j = 0; j < topK; j++) {
      let e: number;
      do {
        // skew: low experts are much more popular (a realistic, unbalanced routing)
        e = opts.skew ? Math.floor(experts * random() ** 3) : Math.floor(experts * random());
      } while (!opts.repeats && used.has(e) && used.size < experts);
      used.add(e);
      ids[t * topK + j] = random() < (opts.dropRate ?? 0) ? -1 : e;
    }
  }
  return ids;
}

function expectLayout(got: DispatchLayout, want: LayoutRef, label: string): void {
  const note = `${label} ${seedNote}`;
  expect(got.numRows, `numRows ${note}`).toBe(want.numRows);
  expect(Array.from(got.tokensPerExpert.data), `tokensPerExpert ${note}`).toEqual(want.tokensPerExpert);
  expect(Array.from(got.offsets.data), `offsets ${note}`).toEqual(want.offsets);
  expect(got.rowToken.shape, `rowToken shape ${note}`).toEqual([want.numRows]);
  expect(got.groupIndex.shape, `groupIndex shape ${note}`).toEqual([want.numRows]);
  expect(Array.from(got.rowToken.data), `rowToken ${note}`).toEqual(want.rowToken);
  expect(Array.from(got.groupIndex.data), `groupIndex ${note}`).toEqual(want.groupIndex);
  expect(Array.from(got.slotRow.data), `slotRow ${note}`).toEqual(want.slotRow);
  for (const key of ['tokensPerExpert', 'offsets', 'rowToken', 'groupIndex', 'slotRow'] as const) {
    expect(got[key].dtype, key).toBe('i32');
  }
}

describe('dispatchLayout: contiguous', () => {
  const cases: Array<[number, number, number, string, Parameters<typeof randomIds>[3]]> = [
    [1, 1, 1, 'T=1 k=1 E=1', {}],
    [1, 8, 256, 'T=1 DeepSeek decode', {}],
    [64, 8, 256, 'DeepSeek prefill', {}],
    [64, 2, 8, 'Mixtral', {}],
    [57, 6, 64, 'with -1 entries', { dropRate: 0.2 }],
    [40, 4, 16, 'with repeated experts', { repeats: true }],
    [33, 8, 32, 'skewed, repeats and -1', { repeats: true, dropRate: 0.1, skew: true }],
    [50, 3, 7, 'all -1', { dropRate: 1 }],
  ];
  for (const align of [1, 16, 128]) {
    for (const [T, k, E, name, opts] of cases) {
      it(`align ${align}: ${name} (T=${T}, k=${k}, E=${E})`, () => {
        const ids = randomIds(T, k, E, opts);
        const got = dispatchLayoutSync(tensor(ids, [T, k]), E, { align });
        expect(got.kind).toBe('contiguous');
        expect(got.align).toBe(align);
        expect([got.numTokens, got.topK, got.numExperts]).toEqual([T, k, E]);
        const want = referenceLayout(ids, T, k, E, { masked: false, align });
        expectLayout(got, want, `align ${align} ${name}`);
        // Structural facts, independent of the reference.
        for (let e = 0; e <= E; e++) expect(got.offsets.data[e] % align).toBe(0);
        for (let i = 0; i < T * k; i++) {
          const row = got.slotRow.data[i];
          if (ids[i] < 0) expect(row).toBe(-1);
          else {
            expect(got.rowToken.data[row]).toBe(Math.floor(i / k));
            expect(got.groupIndex.data[row]).toBe(ids[i]);
          }
        }
      });
    }
  }

  it('default alignment is 128', () => {
    const ids = randomIds(20, 4, 8);
    const got = dispatchLayoutSync(tensor(ids, [20, 4]), 8);
    expect(got.align).toBe(128);
    expectLayout(got, referenceLayout(ids, 20, 4, 8, { masked: false, align: 128 }), 'default align');
  });

  it('a hand-checked layout: token-then-slot order, padding rows -1, empty experts take no rows', () => {
    // T=3, k=2, E=4; expert 2 unused; token 1 picks expert 0 twice; one -1.
    const ids = Int32Array.from([3, 0, 0, 0, -1, 3]);
    const got = dispatchLayoutSync(tensor(ids, [3, 2]), 4, { align: 4 });
    expect(Array.from(got.tokensPerExpert.data)).toEqual([3, 0, 0, 2]);
    expect(Array.from(got.offsets.data)).toEqual([0, 4, 4, 4, 8]);
    expect(got.numRows).toBe(8);
    expect(Array.from(got.rowToken.data)).toEqual([0, 1, 1, -1, 0, 2, -1, -1]);
    expect(Array.from(got.groupIndex.data)).toEqual([0, 0, 0, -1, 3, 3, -1, -1]);
    expect(Array.from(got.slotRow.data)).toEqual([4, 0, 1, 2, -1, 5]);
  });

  it('is deterministic: repeated calls (sync and async) give identical layouts', async () => {
    const ids = tensor(randomIds(64, 8, 256, { dropRate: 0.05, skew: true }), [64, 8]);
    const first = dispatchLayoutSync(ids, 256, { align: 16 });
    for (let i = 0; i < 3; i++) {
      const again = i === 1 ? await dispatchLayout(ids, 256, { align: 16 }) : dispatchLayoutSync(ids, 256, { align: 16 });
      for (const key of ['tokensPerExpert', 'offsets', 'rowToken', 'groupIndex', 'slotRow'] as const) {
        expect(Array.from(again[key].data), key).toEqual(Array.from(first[key].data));
      }
      expect(again.numRows).toBe(first.numRows);
    }
  });

  it('T = 0 gives an empty layout', async () => {
    const got = await dispatchLayout(empty([0, 8], 'i32'), 16, { align: 16 });
    expect(got.numRows).toBe(0);
    expect(Array.from(got.tokensPerExpert.data)).toEqual(new Array(16).fill(0));
    expect(Array.from(got.offsets.data)).toEqual(new Array(17).fill(0));
    expect(got.slotRow.shape).toEqual([0, 8]);
    expect(got.rowToken.shape).toEqual([0]);
  });
});

describe('dispatchLayout: masked', () => {
  const cases: Array<[number, number, number, number | undefined, string, Parameters<typeof randomIds>[3]]> = [
    [1, 8, 256, undefined, 'decode T=1', {}],
    [16, 8, 64, undefined, 'default Mmax = T', { dropRate: 0.1 }],
    [32, 2, 8, 24, 'Mmax < T', {}],
    [20, 4, 16, 40, 'repeats, Mmax 2T', { repeats: true }],
    [10, 3, 5, 0, 'all -1 with Mmax 0', { dropRate: 1 }],
  ];
  for (const [T, k, E, maxTokensPerExpert, name, opts] of cases) {
    it(`${name} (T=${T}, k=${k}, E=${E}, Mmax=${maxTokensPerExpert ?? 'T'})`, () => {
      let ids = randomIds(T, k, E, opts);
      const maxRows = maxTokensPerExpert ?? T;
      // Keep every count within Mmax (drop the excess as -1).
      const counts = new Array(E).fill(0);
      ids = ids.map((e) => (e >= 0 && ++counts[e] > maxRows ? -1 : e));
      const options = maxTokensPerExpert === undefined ? { layout: 'masked' as const } : { layout: 'masked' as const, maxTokensPerExpert };
      const got = dispatchLayoutSync(tensor(ids, [T, k]), E, options);
      expect(got.kind).toBe('masked');
      expect(got.maxRowsPerExpert).toBe(maxRows);
      expect(got.numRows).toBe(E * maxRows);
      expectLayout(got, referenceLayout(ids, T, k, E, { masked: true, maxRows }), `masked ${name}`);
    });
  }

  it('overflow (an expert with more than maxTokensPerExpert tokens) is ERR_MOE_RANGE', async () => {
    const ids = tensor(Int32Array.from([1, 2, 1, 3, 1, 0]), [3, 2]); // expert 1: 3 tokens
    expectMoeError(() => dispatchLayoutSync(ids, 4, { layout: 'masked', maxTokensPerExpert: 2 }), 'ERR_MOE_RANGE', /expert 1/);
    await expect(dispatchLayout(ids, 4, { layout: 'masked', maxTokensPerExpert: 2 })).rejects.toMatchObject({ code: 'ERR_MOE_RANGE' });
    // Repeats overflow the default Mmax = T.
    const repeats = tensor(Int32Array.from([0, 0, 0, 0, 0, 0]), [2, 3]);
    expectMoeError(() => dispatchLayoutSync(repeats, 2, { layout: 'masked' }), 'ERR_MOE_RANGE');
    // Exactly at the limit is fine.
    const fits = dispatchLayoutSync(ids, 4, { layout: 'masked', maxTokensPerExpert: 3 });
    expect(Array.from(fits.tokensPerExpert.data)).toEqual([1, 3, 1, 1]);
  });
});

describe('dispatchLayout: bad input', () => {
  const ids = () => tensor(Int32Array.from([0, 1, 2, 3]), [2, 2]);

  it('out-of-range ids are ERR_MOE_RANGE (>= E and < -1)', async () => {
    expectMoeError(() => dispatchLayoutSync(tensor(Int32Array.from([0, 4]), [1, 2]), 4), 'ERR_MOE_RANGE', /out of range/);
    expectMoeError(() => dispatchLayoutSync(tensor(Int32Array.from([-2, 1]), [1, 2]), 4), 'ERR_MOE_RANGE');
    expectMoeError(() => dispatchLayoutSync(tensor(Int32Array.from([0, 1, 2, 2 ** 31 - 1]), [2, 2]), 4, { layout: 'masked' }), 'ERR_MOE_RANGE');
    await expect(dispatchLayout(tensor(Int32Array.from([7, 1]), [1, 2]), 4)).rejects.toMatchObject({ code: 'ERR_MOE_RANGE' });
  });

  it('wrong dtype, rank, numExperts, options', () => {
    expectMoeError(() => dispatchLayoutSync(tensor(Float32Array.from([0, 1, 2, 3]), [2, 2]), 4), 'ERR_MOE_DTYPE');
    expectMoeError(() => dispatchLayoutSync(tensor(Int32Array.from([0, 1, 2, 3]), [4]), 4), 'ERR_MOE_SHAPE');
    expectMoeError(() => dispatchLayoutSync(Int32Array.from([0, 1]) as never, 4), 'ERR_MOE_ARGUMENT');
    expectMoeError(() => dispatchLayoutSync(ids(), 0), 'ERR_MOE_RANGE');
    expectMoeError(() => dispatchLayoutSync(ids(), 2.5), 'ERR_MOE_RANGE');
    expectMoeError(() => dispatchLayoutSync(ids(), 4, { align: 0 }), 'ERR_MOE_RANGE');
    expectMoeError(() => dispatchLayoutSync(ids(), 4, { align: 3.5 }), 'ERR_MOE_RANGE');
    expectMoeError(() => dispatchLayoutSync(ids(), 4, { layout: 'ragged' as never }), 'ERR_MOE_RANGE');
    expectMoeError(() => dispatchLayoutSync(ids(), 4, { layout: 'masked', align: 16 }), 'ERR_MOE_ARGUMENT');
    expectMoeError(() => dispatchLayoutSync(ids(), 4, { maxTokensPerExpert: 4 }), 'ERR_MOE_ARGUMENT');
    expectMoeError(() => dispatchLayoutSync(ids(), 4, { layout: 'masked', maxTokensPerExpert: -1 }), 'ERR_MOE_RANGE');
    expectMoeError(() => dispatchLayoutSync(ids(), 4, { aling: 16 } as never), 'ERR_MOE_ARGUMENT', /unknown option 'aling'/);
  });
});
