import { describe, expect, it } from 'vitest';
import { DEEPSEEK_V3_ROUTING, Tensor, bf16FromFloat32, empty, route, routeSync, tensor } from '../lib/index';
import type { RouteOptions } from '../lib/index';
import { RouteRefOptions, decodeBf16, expectRouting, referenceRoute } from './helpers/moe-reference';
import { randomFloats, rng, seedNote } from './helpers/random';
import { expectMoeError } from './helpers/errors';

const random = rng();


/** Routes `logits` with lib and checks the result against the float64 reference. */
function check(logits: Tensor, options: RouteOptions, label: string) {
  const [tokens, experts] = logits.shape;
  const values = logits.dtype === 'bf16' ? decodeBf16(logits.data as Uint16Array) : (logits.data as Float32Array);
  const refOptions: RouteRefOptions = { ...options, bias: options.bias ? (options.bias.data as Float32Array) : undefined };
  const ref = referenceRoute(values, tokens, experts, refOptions);
  const got = routeSync(logits, options);
  expect(got.ids.dtype).toBe('i32');
  expect(got.weights.dtype).toBe('f32');
  expect(got.ids.shape).toEqual([tokens, options.topK]);
  expect(got.weights.shape).toEqual([tokens, options.topK]);
  expectRouting(got.ids.data, got.weights.data, ref, refOptions, `${label} ${seedNote}`);
  return { got, ref };
}

const logitsOf = (tokens: number, experts: number, scale = 2) => tensor(randomFloats(tokens * experts, random, scale), [tokens, experts]);
const biasOf = (experts: number, scale = 0.1) => tensor(randomFloats(experts, random, scale), [experts]);

describe('route: random logits vs the float64 reference', () => {
  for (const E of [8, 64, 256, 512]) {
    it(`softmax and sigmoid, E=${E}, k=1..8, with and without renormalize/scale`, () => {
      const T = E >= 256 ? 16 : 32;
      for (let k = 1; k <= 8; k++) {
        const logits = logitsOf(T, E);
        const renormalize = k % 2 === 0;
        const scale = k % 3 === 0 ? 2.5 : 1;
        check(logits, { topK: k, renormalize, scale }, `softmax E=${E} k=${k}`);
        check(logits, { scoring: 'sigmoid', topK: k, renormalize, scale }, `sigmoid E=${E} k=${k}`);
        check(logits, { scoring: 'sigmoid', topK: k, renormalize: !renormalize, bias: biasOf(E) }, `sigmoid+bias E=${E} k=${k}`);
      }
    });
  }

  it('group-limited sigmoid (with and without bias) for several group configs', () => {
    const configs: Array<[number, number, number, number]> = [
      // E, numGroups, topKGroups, k
      [8, 4, 2, 3],
      [64, 8, 3, 6],
      [64, 4, 1, 8],
      [256, 8, 4, 8],
      [512, 16, 5, 8],
      [256, 8, 8, 8],
    ];
    for (const [E, numGroups, topKGroups, k] of configs) {
      const logits = logitsOf(24, E);
      const base = { scoring: 'sigmoid', topK: k, numGroups, topKGroups, renormalize: true, scale: 1.5 } as const;
      check(logits, base, `groups E=${E} G=${numGroups}/${topKGroups} k=${k} (no bias: group score = max s)`);
      check(logits, { ...base, bias: biasOf(E) }, `groups E=${E} G=${numGroups}/${topKGroups} k=${k} (bias: top-2 sum)`);
    }
  });

  it('group selection uses the sum of the top-2 biased scores (not the max) when a bias is given', () => {
    // 2 groups of 4: group 0 has one strong expert, group 1 two fairly strong ones.
    // max: group 0 wins (0.95 > 0.9); top-2 sum: group 1 wins (0.9 + 0.88 > 0.95 + ~0).
    const s = [0.95, 0.01, 0.01, 0.01, 0.9, 0.88, 0.01, 0.01];
    const logits = tensor(Float32Array.from(s, (p) => Math.log(p / (1 - p))), [1, 8]);
    const zeroBias = tensor(new Float32Array(8), [8]);
    const options = { scoring: 'sigmoid', topK: 1, numGroups: 2, topKGroups: 1 } as const;
    expect(Array.from(routeSync(logits, options).ids.data), 'no bias: group score = max of s').toEqual([0]);
    expect(Array.from(routeSync(logits, { ...options, bias: zeroBias }).ids.data), 'with bias: sum of top-2').toEqual([4]);
    check(logits, { ...options, bias: zeroBias }, 'top-2 sum');
  });

  it('the bias steers selection but not the weights', () => {
    const E = 16;
    const logits = logitsOf(8, E);
    const bias = tensor(new Float32Array(E), [E]);
    bias.data[E - 1] = 10; // expert E-1 always selected first
    const { got } = check(logits, { scoring: 'sigmoid', topK: 2, bias }, 'big bias on the last expert');
    for (let t = 0; t < 8; t++) {
      expect(got.ids.data[t * 2]).toBe(E - 1);
      const s = 1 / (1 + Math.exp(-logits.data[t * E + E - 1]));
      expect(got.weights.data[t * 2]).toBeCloseTo(s, 6); // unbiased sigmoid, not s + 10
    }
  });
  it('the checker itself rejects a wrong routing (swapped ids, a wrong weight)', () => {
    const logits = logitsOf(4, 32);
    const options = { topK: 4, renormalize: true };
    const ref = referenceRoute(logits.data, 4, 32, options);
    const got = routeSync(logits, options);
    // Swap two neighbours of token 0 whose scores differ by more than the 1e-6 tie tolerance.
    const score = (slot: number) => ref[0].score[ref[0].ids[slot]];
    const j = [0, 1, 2].find((slot) => Math.abs(score(slot) - score(slot + 1)) > 1e-6) ?? 0;
    const swapped = Int32Array.from(got.ids.data);
    [swapped[j], swapped[j + 1]] = [swapped[j + 1], swapped[j]];
    expect(() => expectRouting(swapped, got.weights.data, ref, options, 'swapped')).toThrow();
    const wrongId = Int32Array.from(got.ids.data);
    wrongId[3] = Array.from({ length: 32 }, (_, e) => e).find((e) => !ref[0].ids.includes(e))!; // an expert token 0 did not pick
    expect(() => expectRouting(wrongId, got.weights.data, ref, options, 'wrong id')).toThrow();
    const weights = Float32Array.from(got.weights.data);
    weights[5] *= 1 + 1e-4;
    expect(() => expectRouting(got.ids.data, weights, ref, options, 'weight')).toThrow();
  });
});

describe('route: model configurations', () => {
  it('DeepSeek-V3 (E=256, k=8, 8 groups keep 4, sigmoid + bias, renormalize, scale 2.5) and DEEPSEEK_V3_ROUTING', () => {
    expect(DEEPSEEK_V3_ROUTING).toMatchObject({ scoring: 'sigmoid', topK: 8, numGroups: 8, topKGroups: 4, renormalize: true, scale: 2.5 });
    const logits = logitsOf(64, 256);
    const bias = biasOf(256, 0.5);
    const explicit = { scoring: 'sigmoid', topK: 8, numGroups: 8, topKGroups: 4, renormalize: true, scale: 2.5, bias } as const;
    const { got } = check(logits, explicit, 'DeepSeek-V3 explicit');
    const viaConst = routeSync(logits, { ...DEEPSEEK_V3_ROUTING, bias });
    expect(Array.from(viaConst.ids.data)).toEqual(Array.from(got.ids.data));
    expect(Array.from(viaConst.weights.data)).toEqual(Array.from(got.weights.data));
    // Every token's experts come from at most 4 groups of 32, and renormalized weights sum to the scale.
    for (let t = 0; t < 64; t++) {
      const ids = Array.from(got.ids.data.subarray(t * 8, t * 8 + 8));
      expect(new Set(ids.map((e) => Math.floor(e / 32))).size).toBeLessThanOrEqual(4);
      const sum = got.weights.data.subarray(t * 8, t * 8 + 8).reduce((a, b) => a + b, 0);
      expect(sum).toBeCloseTo(2.5, 5);
    }
  });

  it('Mixtral (softmax, k=2, E=8) and Qwen (softmax, k=8, E=64 and 128) with renormalize', () => {
    check(logitsOf(64, 8), { topK: 2, renormalize: true }, 'Mixtral');
    check(logitsOf(64, 64), { topK: 8, renormalize: false }, 'Qwen1.5-MoE (no renormalize)');
    check(logitsOf(64, 128), { topK: 8, renormalize: true }, 'Qwen3-MoE');
  });

  it('bf16 logits are widened exactly and routed like their f32 values', () => {
    for (const [E, k] of [[8, 2], [64, 8], [256, 8]]) {
      const values = randomFloats(32 * E, random, 2);
      const logits = bf16FromFloat32(values, [32, E]);
      check(logits, { topK: k, renormalize: true }, `bf16 softmax E=${E}`);
      check(logits, { scoring: 'sigmoid', topK: k, bias: biasOf(E) }, `bf16 sigmoid E=${E}`);
      // Same result as the decoded f32 logits.
      const asF32 = tensor(logits.toFloat32Array(), [32, E]);
      const a = routeSync(logits, { topK: k });
      const b = routeSync(asF32, { topK: k });
      expect(Array.from(a.ids.data)).toEqual(Array.from(b.ids.data));
      expect(Array.from(a.weights.data)).toEqual(Array.from(b.weights.data));
    }
  });
});

// The parameter grids that other MoE libraries' routing tests run, here
// against our float64 reference (their values and inputs, not their code).
describe('route: published peer test configurations', () => {
  const uniform = (count: number) => Float32Array.from({ length: count }, () => random());
  const asDtype = (values: Float32Array, shape: number[], dtype: 'f32' | 'bf16') =>
    dtype === 'bf16' ? bf16FromFloat32(values, shape) : tensor(values, shape);

  it('vLLM tests/kernels/moe/test_grouped_topk.py: T 1/33/64, E=16, k=2, 8 groups keep 2, renormalize, scale 1/2.5, bf16 and f32', () => {
    // vLLM draws gating logits and the correction bias from a standard normal.
    for (const tokens of [1, 33, 64]) {
      for (const dtype of ['bf16', 'f32'] as const) {
        const logits = asDtype(randomFloats(tokens * 16, random, 1), [tokens, 16], dtype);
        const bias = tensor(randomFloats(16, random, 1), [16]);
        for (const renormalize of [true, false]) {
          for (const scale of [1, 2.5]) {
            const options = { scoring: 'sigmoid', topK: 2, numGroups: 8, topKGroups: 2, renormalize, scale, bias } as const;
            check(logits, options, `vLLM grouped_topk T=${tokens} ${dtype} renormalize=${renormalize} scale=${scale}`);
          }
        }
      }
    }
  });

  it('vLLM tests/kernels/moe/test_fused_topk.py: T 1/33/56, E 6/16, k 3/4, softmax and sigmoid (+bias), renormalize', () => {
    for (const tokens of [1, 33, 56]) {
      for (const experts of [6, 16]) {
        for (const topK of [3, 4]) {
          for (const renormalize of [true, false]) {
            const logits = asDtype(randomFloats(tokens * experts, random, 1), [tokens, experts], renormalize ? 'bf16' : 'f32');
            const label = `vLLM fused_topk T=${tokens} E=${experts} k=${topK} renormalize=${renormalize}`;
            check(logits, { topK, renormalize }, `${label} softmax`);
            check(logits, { scoring: 'sigmoid', topK, renormalize }, `${label} sigmoid`);
            check(logits, { scoring: 'sigmoid', topK, renormalize, bias: tensor(randomFloats(experts, random, 1), [experts]) }, `${label} sigmoid+bias`);
          }
        }
      }
    }
  });

  it('SGLang sgl-kernel/tests/test_moe_fused_gate.py: DeepSeek-V3 gate (E=256, 8 groups keep 4, k=8) on bf16 uniform logits and bias', () => {
    // SGLang's lengths 1..99 and powers of two up to 65536; here 1..99 and a few of the powers (the rest only repeat rows).
    const lengths = [...Array.from({ length: 99 }, (_, i) => i + 1), 128, 1024, 4096];
    for (const tokens of lengths) {
      const logits = bf16FromFloat32(uniform(tokens * 256), [tokens, 256]);
      const bias = tensor(Float32Array.from(decodeBf16(bf16FromFloat32(uniform(256), [256]).data as Uint16Array)), [256]);  // bf16 values, as SGLang's
      check(logits, { scoring: 'sigmoid', topK: 8, numGroups: 8, topKGroups: 4, renormalize: true, bias }, `SGLang moe_fused_gate T=${tokens}`);
    }
  });
});

describe('route: ties, non-finite logits, edge shapes', () => {
  it('equal logits go to the lower index first (experts and groups)', () => {
    // All equal: ids 0..k-1, equal weights.
    const flat = routeSync(tensor(new Float32Array(2 * 16).fill(0.5), [2, 16]), { topK: 4 });
    expect(Array.from(flat.ids.data)).toEqual([0, 1, 2, 3, 0, 1, 2, 3]);
    for (const w of flat.weights.data) expect(w).toBeCloseTo(1 / 16, 7);

    // Two tied maxima at 5 and 2: order [2, 5], then tied runners-up 1 < 7.
    const row = new Float32Array(8).fill(-3);
    row[5] = 1;
    row[2] = 1;
    row[7] = 0;
    row[1] = 0;
    const tied = routeSync(tensor(row, [1, 8]), { topK: 3 });
    expect(Array.from(tied.ids.data)).toEqual([2, 5, 1]);
    const sig = routeSync(tensor(row, [1, 8]), { scoring: 'sigmoid', topK: 4 });
    expect(Array.from(sig.ids.data)).toEqual([2, 5, 1, 7]);

    // Tied groups: groups 1 and 3 equal and best; topKGroups 1 keeps group 1.
    const groups = new Float32Array(16).fill(-2);
    groups[4 + 2] = 3; // group 1
    groups[12 + 0] = 3; // group 3
    const g = routeSync(tensor(groups, [1, 16]), { scoring: 'sigmoid', topK: 2, numGroups: 4, topKGroups: 1 });
    expect(Array.from(g.ids.data)).toEqual([6, 4]);
    const gb = routeSync(tensor(groups, [1, 16]), {
      scoring: 'sigmoid', topK: 2, numGroups: 4, topKGroups: 1, bias: tensor(new Float32Array(16), [16]),
    });
    expect(Array.from(gb.ids.data)).toEqual([6, 4]);
  });

  it('NaN, +inf and -inf logits are never selected (softmax and sigmoid)', () => {
    const E = 16;
    const T = 24;
    const values = randomFloats(T * E, random, 2);
    const bad = [NaN, Infinity, -Infinity];
    for (let t = 0; t < T; t++) {
      // Put non-finite values on a few experts, including where the largest logit was.
      let argmax = 0;
      for (let e = 1; e < E; e++) if (values[t * E + e] > values[t * E + argmax]) argmax = e;
      values[t * E + argmax] = bad[t % 3];
      values[t * E + ((t * 5) % E)] = bad[(t + 1) % 3];
      values[t * E + ((t * 7 + 3) % E)] = bad[(t + 2) % 3];
    }
    const logits = tensor(values, [T, E]);
    for (const options of [
      { topK: 4, renormalize: true },
      { topK: 4 },
      { scoring: 'sigmoid', topK: 4, renormalize: true, scale: 2 },
      { scoring: 'sigmoid', topK: 6, bias: biasOf(E) },
    ] as RouteOptions[]) {
      const { got } = check(logits, options, `non-finite ${JSON.stringify({ ...options, bias: undefined })}`);
      for (let i = 0; i < got.ids.data.length; i++) {
        const t = Math.floor(i / options.topK);
        const e = got.ids.data[i];
        expect(e).toBeGreaterThanOrEqual(0);
        expect(Number.isFinite(values[t * E + e]), `token ${t} picked expert ${e} with logit ${values[t * E + e]}`).toBe(true);
        expect(Number.isFinite(got.weights.data[i])).toBe(true);
      }
    }
  });

  it('a row with fewer than k finite logits gets trailing -1 ids with weight 0', () => {
    const E = 8;
    const rows = [
      [NaN, 1, Infinity, -Infinity, NaN, 2, NaN, NaN], // 2 finite
      [NaN, NaN, NaN, NaN, NaN, NaN, NaN, NaN], // none
      [-Infinity, -Infinity, 0, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity], // 1 finite
      [1, 2, 3, 4, 5, 6, 7, 8], // all finite
    ];
    const logits = tensor(Float32Array.from(rows.flat()), [rows.length, E]);
    for (const options of [
      { topK: 4, renormalize: true, scale: 3 },
      { scoring: 'sigmoid', topK: 4, renormalize: true },
      { scoring: 'sigmoid', topK: 4, bias: tensor(new Float32Array(E).fill(0.25), [E]) },
    ] as RouteOptions[]) {
      const { got } = check(logits, options, `few finite ${options.scoring ?? 'softmax'}`);
      const ids = Array.from(got.ids.data);
      const w = Array.from(got.weights.data);
      expect(ids.slice(0, 4)).toEqual([5, 1, -1, -1]);
      expect(w.slice(2, 4)).toEqual([0, 0]);
      expect(ids.slice(4, 8)).toEqual([-1, -1, -1, -1]);
      expect(w.slice(4, 8)).toEqual([0, 0, 0, 0]);
      expect(ids.slice(8, 12)).toEqual([2, -1, -1, -1]);
      expect(w.slice(9, 12)).toEqual([0, 0, 0]);
      expect(ids.slice(12, 16)).toEqual([7, 6, 5, 4]);
      if (options.renormalize && options.scoring !== 'sigmoid') {
        expect(w[0] + w[1]).toBeCloseTo(3, 5); // renormalized over the finite ones, times scale
        expect(w[8]).toBeCloseTo(3, 5);
      }
    }
  });

  it('T = 0 gives empty [0, k] outputs; T = 1 works', async () => {
    const zero = routeSync(empty([0, 8], 'f32'), { topK: 2 });
    expect(zero.ids.shape).toEqual([0, 2]);
    expect(zero.weights.shape).toEqual([0, 2]);
    const zeroAsync = await route(empty([0, 256], 'f32'), { ...DEEPSEEK_V3_ROUTING, bias: biasOf(256) });
    expect(zeroAsync.ids.shape).toEqual([0, 8]);
    check(logitsOf(1, 8), { topK: 8, renormalize: true }, 'T=1 k=E');
    check(logitsOf(1, 256), { ...DEEPSEEK_V3_ROUTING, bias: biasOf(256) }, 'T=1 DeepSeek');
    const one = routeSync(tensor(new Float32Array([0, 0, 7, 0]), [1, 4]), { topK: 1 });
    expect(Array.from(one.ids.data)).toEqual([2]);
  });

  it('async equals sync, bit for bit', async () => {
    const logits = logitsOf(64, 256);
    const options = { ...DEEPSEEK_V3_ROUTING, bias: biasOf(256) };
    const sync = routeSync(logits, options);
    const async = await route(logits, options);
    expect(Array.from(async.ids.data)).toEqual(Array.from(sync.ids.data));
    expect(Buffer.compare(Buffer.from(async.weights.data.buffer), Buffer.from(sync.weights.data.buffer))).toBe(0);
    const softSync = routeSync(logits, { topK: 6, renormalize: true });
    const softAsync = await route(logits, { topK: 6, renormalize: true });
    expect(Array.from(softAsync.ids.data)).toEqual(Array.from(softSync.ids.data));
    expect(Array.from(softAsync.weights.data)).toEqual(Array.from(softSync.weights.data));
  });
});

describe('route: bad input', () => {
  const logits = () => logitsOf(4, 16);

  it('wrong dtype, rank or container', async () => {
    expectMoeError(() => routeSync(tensor(new Int32Array(64), [4, 16]), { topK: 2 }), 'ERR_MOE_DTYPE');
    expectMoeError(() => routeSync(empty([4, 16], 'fp8_e4m3'), { topK: 2 }), 'ERR_MOE_DTYPE');
    expectMoeError(() => routeSync(tensor(new Float32Array(16), [16]), { topK: 2 }), 'ERR_MOE_SHAPE');
    expectMoeError(() => routeSync(tensor(new Float32Array(64), [2, 2, 16]), { topK: 2 }), 'ERR_MOE_SHAPE');
    expectMoeError(() => routeSync(new Float32Array(64) as never, { topK: 2 }), 'ERR_MOE_ARGUMENT');
    await expect(route(tensor(new Float32Array(16), [16]), { topK: 2 })).rejects.toMatchObject({ code: 'ERR_MOE_SHAPE' });
  });

  it('topK 0 or > E, non-integer topK, missing options', () => {
    expectMoeError(() => routeSync(logits(), { topK: 0 }), 'ERR_MOE_RANGE');
    expectMoeError(() => routeSync(logits(), { topK: 17 }), 'ERR_MOE_RANGE');
    expectMoeError(() => routeSync(logits(), { topK: 1.5 }), 'ERR_MOE_RANGE');
    expectMoeError(() => routeSync(logits(), {} as never), 'ERR_MOE_RANGE');
  });

  it('group options: numGroups not dividing E, topKGroups > numGroups, groups with softmax, too few experts in kept groups', () => {
    const sig = { scoring: 'sigmoid' as const, topK: 2 };
    expectMoeError(() => routeSync(logits(), { ...sig, numGroups: 3 }), 'ERR_MOE_RANGE');
    expectMoeError(() => routeSync(logits(), { ...sig, numGroups: 4, topKGroups: 5 }), 'ERR_MOE_RANGE');
    expectMoeError(() => routeSync(logits(), { ...sig, numGroups: 4, topKGroups: 0 }), 'ERR_MOE_RANGE');
    expectMoeError(() => routeSync(logits(), { topK: 2, numGroups: 4 }), 'ERR_MOE_RANGE');
    expectMoeError(() => routeSync(logits(), { scoring: 'sigmoid', topK: 5, numGroups: 4, topKGroups: 1 }), 'ERR_MOE_RANGE');
  });

  it('bias of the wrong shape, dtype, with NaN / inf, or with softmax', () => {
    const sig = { scoring: 'sigmoid' as const, topK: 2 };
    expectMoeError(() => routeSync(logits(), { ...sig, bias: tensor(new Float32Array(15), [15]) }), 'ERR_MOE_SHAPE');
    expectMoeError(() => routeSync(logits(), { ...sig, bias: tensor(new Float32Array(16), [1, 16]) }), 'ERR_MOE_SHAPE');
    expectMoeError(() => routeSync(logits(), { ...sig, bias: bf16FromFloat32(new Float32Array(16), [16]) }), 'ERR_MOE_DTYPE');
    expectMoeError(() => routeSync(logits(), { ...sig, bias: new Float32Array(16) as never }), 'ERR_MOE_ARGUMENT');
    const nan = new Float32Array(16);
    nan[9] = NaN;
    expectMoeError(() => routeSync(logits(), { ...sig, bias: tensor(nan, [16]) }), 'ERR_MOE_NONFINITE');
    const inf = new Float32Array(16);
    inf[0] = -Infinity;
    expectMoeError(() => routeSync(logits(), { ...sig, bias: tensor(inf, [16]) }), 'ERR_MOE_NONFINITE');
    expectMoeError(() => routeSync(logits(), { topK: 2, bias: tensor(new Float32Array(16), [16]) }), 'ERR_MOE_RANGE');
  });

  it('unknown option, bad scoring, non-finite scale, non-boolean renormalize', () => {
    expectMoeError(() => routeSync(logits(), { topK: 2, topk: 2 } as never), 'ERR_MOE_ARGUMENT', /unknown option 'topk'/);
    expectMoeError(() => routeSync(logits(), 'top2' as never), 'ERR_MOE_ARGUMENT');
    expectMoeError(() => routeSync(logits(), { topK: 2, scoring: 'relu' as never }), 'ERR_MOE_RANGE');
    expectMoeError(() => routeSync(logits(), { topK: 2, scale: NaN }), 'ERR_MOE_RANGE');
    expectMoeError(() => routeSync(logits(), { topK: 2, renormalize: 1 as never }), 'ERR_MOE_RANGE');
  });
});
