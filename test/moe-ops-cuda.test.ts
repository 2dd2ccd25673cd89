import { describe, expect, it } from 'vitest';
import {
  DEEPSEEK_V3_ROUTING, DispatchLayout, Tensor, backends, bf16FromFloat32, combine, combineSync, dispatch, dispatchLayout, dispatchLayoutSync,
  dispatchSync, quantizeActivations, quantizeActivationsSync, route, routeSync, routerLogits, routerLogitsSync, swiglu, swigluSync, tensor,
} from '../lib/index';
import { native } from '../lib/native';
import { randomFloats, rng } from './helpers/random';

// The MoE layer's ops on the CUDA backend against the CPU backend (the
// reference), on random inputs with every device output poisoned first:
// routing ids and weights exactly (sigmoid and softmax weights bit for bit),
// layouts and every quantized / combined output bit for bit. Skipped, with a
// message, where backends() says CUDA is unavailable (their host-side math
// runs everywhere in scripts/cuda/check-static.sh: moe_math_test.cu).
const cuda = backends().find((b) => b.name === 'cuda')!;

const POISON_I32 = 0x7ead_beef | 0;
const poisonI32 = (n: number) => tensor(new Int32Array(n).fill(POISON_I32), [n], 'i32');
const poisoned = <T extends Tensor>(t: T): T => {
  const host = t.to('cpu');
  const bytes = new Uint8Array(host.data!.buffer, host.data!.byteOffset, host.byteLength);
  bytes.fill(0xA5);
  return host.to('cuda') as T;
};
const bits = (t: Tensor) => {
  const h = t.to('cpu');
  return Buffer.from(h.data!.buffer, h.data!.byteOffset, h.byteLength);
};

function randomLogits(r: () => number, t: number, e: number, opts: { ties?: boolean; nonFinite?: boolean } = {}): Float32Array {
  const v = randomFloats(t * e, r, 1);
  if (opts.ties) for (let i = 0; i < v.length; i++) v[i] = Math.round(v[i] * 2) / 2;
  if (opts.nonFinite) {
    for (let i = 0; i < t; i += 3) {
      v[i * e] = NaN;
      v[i * e + (e > 2 ? 2 : 0)] = Infinity;
    }
  }
  return v;
}

describe.skipIf(!cuda.available)('MoE ops on the CUDA backend equal the CPU backend', () => {
  // routerLogits: bf16 on tensor cores (T > 32), f32 on the tiled SIMT kernel,
  // decode sizes on the warp kernel; f32 sums in another order than the CPU's.
  for (const [t, e, h, dtype] of [[300, 256, 1024, 'bf16'], [77, 72, 200, 'bf16'], [130, 64, 256, 'f32'], [5, 256, 896, 'bf16']] as const) {
    it(`routerLogits T=${t} E=${e} H=${h} ${dtype}`, () => {
      const r = rng(11);
      const x = dtype === 'bf16' ? bf16FromFloat32(randomFloats(t * h, r, 1), [t, h]) : tensor(randomFloats(t * h, r, 1), [t, h], 'f32');
      const w = dtype === 'bf16' ? bf16FromFloat32(randomFloats(e * h, r, 1), [e, h]) : tensor(randomFloats(e * h, r, 1), [e, h], 'f32');
      const want = routerLogitsSync(x, w).data as Float32Array;
      const into = poisoned(tensor(new Float32Array(t * e), [t, e], 'f32').to('cuda'));
      const got = routerLogitsSync(x.to('cuda'), w.to('cuda'), { into }).to('cpu').data as Float32Array;
      const scale = Math.sqrt(h);  // |x| |w| of unit-scale rows, roughly
      for (let i = 0; i < want.length; i++) expect(Math.abs(got[i] - want[i]) / scale, `logit ${i}`).toBeLessThan(1e-5);
    });
  }

  const routeCases = [
    { name: 'DeepSeek-V3 (sigmoid, bias, 8 groups keep 4, k=8)', t: 67, e: 256, opts: { scoring: 'sigmoid', topK: 8, numGroups: 8, topKGroups: 4, renormalize: true, scale: 2.5 }, bias: true },
    { name: 'sigmoid with ties and NaN/inf logits', t: 33, e: 64, opts: { scoring: 'sigmoid', topK: 6, numGroups: 8, topKGroups: 3, renormalize: true, scale: 1 }, bias: true, ties: true, nonFinite: true },
    { name: 'softmax top-2 of 8 (Mixtral)', t: 129, e: 8, opts: { scoring: 'softmax', topK: 2, renormalize: true } },
    { name: 'softmax top-4 of 60, ragged, ties', t: 1, e: 60, opts: { scoring: 'softmax', topK: 4 }, ties: true },
  ] as const;
  for (const c of routeCases) {
    for (const dtype of ['f32', 'bf16'] as const) {
      it(`route: ${c.name}, ${dtype} logits`, () => {
        const r = rng(7);
        const values = randomLogits(r, c.t, c.e, c as { ties?: boolean; nonFinite?: boolean });
        const logits = dtype === 'f32' ? tensor(values, [c.t, c.e], 'f32') : bf16FromFloat32(values, [c.t, c.e]);
        const bias = 'bias' in c ? tensor(randomFloats(c.e, r, 0.05), [c.e], 'f32') : undefined;
        const ref = routeSync(logits, { ...c.opts, bias } as never);
        const k = c.opts.topK;
        const ids = poisonI32(c.t * k).to('cuda');
        const weights = poisoned(tensor(new Float32Array(c.t * k), [c.t * k], 'f32').to('cuda'));
        native().route({ logits: logits.to('cuda'), bias: bias?.to('cuda'), ids: { ...ids, shape: [c.t, k] } as never, weights: { ...weights, shape: [c.t, k] } as never,
          scoring: c.opts.scoring, topK: k, numGroups: 'numGroups' in c.opts ? c.opts.numGroups : 1,
          topKGroups: 'topKGroups' in c.opts ? c.opts.topKGroups : 1, renormalize: 'renormalize' in c.opts ? c.opts.renormalize : false,
          scale: 'scale' in c.opts ? c.opts.scale : 1 } as never, false);
        expect(Array.from(ids.to('cpu').data as Int32Array)).toEqual(Array.from(ref.ids.data as Int32Array));
        const got = weights.to('cpu').data as Float32Array;
        const want = ref.weights.data as Float32Array;
        expect(Buffer.from(got.buffer)).toEqual(Buffer.from(want.buffer));
        // The public API on device tensors gives the same.
        const viaApi = routeSync(logits.to('cuda'), { ...c.opts, bias: bias?.to('cuda') } as never);
        expect(viaApi.ids.device).toBe('cuda');
        expect(Array.from(viaApi.ids.to('cpu').data as Int32Array)).toEqual(Array.from(ref.ids.data as Int32Array));
      });
    }
  }

  function randomIds(r: () => number, t: number, k: number, e: number): Tensor<'i32'> {
    const ids = new Int32Array(t * k);
    for (let i = 0; i < t; i++) {
      const perm = Array.from({ length: e }, (_, j) => j).sort(() => r() - 0.5);
      for (let j = 0; j < k; j++) ids[i * k + j] = r() < 0.08 ? -1 : perm[j % e];
    }
    return tensor(ids, [t, k], 'i32');
  }

  for (const [t, k, e, layout, align] of [[1, 8, 256, 'contiguous', 128], [300, 8, 256, 'contiguous', 128], [77, 6, 64, 'contiguous', 7], [5, 2, 8, 'masked', 1], [130, 8, 32, 'masked', 1]] as const) {
    it(`dispatchLayout ${layout} T=${t} k=${k} E=${e}${layout === 'contiguous' ? ` align ${align}` : ''}: every output bit for bit`, () => {
      const ids = randomIds(rng(t), t, k, e);
      const opts = layout === 'masked' ? { layout } : { layout, align };
      const ref = dispatchLayoutSync(ids, e, opts as never);
      const capacity = layout === 'masked' ? e * t : t * k + e * (align - 1);
      const out = {
        tokensPerExpert: poisonI32(e).to('cuda'), offsets: poisonI32(e + 1).to('cuda'), rowToken: poisonI32(capacity).to('cuda'),
        groupIndex: poisonI32(capacity).to('cuda'), slotRow: poisonI32(t * k).to('cuda'),
      };
      native().dispatchLayout({ ids: ids.to('cuda'), numExperts: e, align, masked: layout === 'masked', maxRowsPerExpert: layout === 'masked' ? t : 0,
        ...out, slotRow: { ...out.slotRow, shape: [t, k] } } as never, false);
      const host = (x: Tensor) => Array.from(x.to('cpu').data as Int32Array);
      expect(host(out.tokensPerExpert)).toEqual(host(ref.tokensPerExpert));
      expect(host(out.offsets)).toEqual(host(ref.offsets));
      expect(host(out.slotRow)).toEqual(host(ref.slotRow));
      expect(host(out.rowToken).slice(0, ref.numRows)).toEqual(host(ref.rowToken));
      expect(host(out.groupIndex).slice(0, ref.numRows)).toEqual(host(ref.groupIndex));
      expect(host(out.rowToken).slice(ref.numRows).every((v) => v === -1)).toBe(true);
      const viaApi = dispatchLayoutSync(ids.to('cuda'), e, opts as never);
      expect(viaApi.numRows).toBe(ref.numRows);
    });
  }

  const toCuda = (l: DispatchLayout): DispatchLayout => ({
    ...l, tokensPerExpert: l.tokensPerExpert.to('cuda'), offsets: l.offsets.to('cuda'), rowToken: l.rowToken.to('cuda'),
    groupIndex: l.groupIndex.to('cuda'), slotRow: l.slotRow.to('cuda'),
  });

  for (const [t, h, dtype] of [[1, 7168, 'bf16'], [37, 272, 'f32'], [130, 1024, 'bf16'], [9, 16, 'f32']] as const) {
    for (const scaleFormat of ['f32', 'ue8m0'] as const) {
      it(`dispatch + fp8 T=${t} H=${h} ${dtype} (${scaleFormat} scales): q and scales bit for bit, padding rows too`, () => {
        const r = rng(h + t);
        const values = randomFloats(t * h, r, 2);
        const x = dtype === 'f32' ? tensor(values, [t, h], 'f32') : bf16FromFloat32(values, [t, h]);
        const layout = dispatchLayoutSync(randomIds(r, t, 8, 16), 16, { align: 128 });
        const ref = dispatchSync(x, layout, { quantize: 'fp8', scaleFormat });
        const into = { data: poisoned(ref.data.to('cuda')), scales: poisoned(ref.scales.to('cuda')) };
        const got = dispatchSync(x.to('cuda'), toCuda(layout), { quantize: 'fp8', scaleFormat, into });
        expect(bits(got.data).equals(bits(ref.data))).toBe(true);
        expect(bits(got.scales).equals(bits(ref.scales))).toBe(true);
        const plain = dispatchSync(x.to('cuda'), toCuda(layout));
        expect(bits(plain).equals(bits(dispatchSync(x, layout)))).toBe(true);
      });
    }
  }

  for (const [rows, inter, dtype, out] of [[1, 2048, 'bf16', 'fp8'], [300, 144, 'f32', 'fp8'], [17, 100, 'bf16', 'f32'], [64, 256, 'f32', 'bf16']] as const) {
    it(`swiglu R=${rows} I=${inter} ${dtype} -> ${out}: bit for bit`, () => {
      const values = randomFloats(rows * 2 * inter, rng(rows * inter), 3);
      const h = dtype === 'f32' ? tensor(values, [rows, 2 * inter], 'f32') : bf16FromFloat32(values, [rows, 2 * inter]);
      if (out === 'fp8') {
        const ref = swigluSync(h, { quantize: 'fp8' });
        const into = { data: poisoned(ref.data.to('cuda')), scales: poisoned(ref.scales.to('cuda')) };
        const got = swigluSync(h.to('cuda'), { quantize: 'fp8', into });
        expect(bits(got.data).equals(bits(ref.data))).toBe(true);
        expect(bits(got.scales).equals(bits(ref.scales))).toBe(true);
      } else {
        const ref = swigluSync(h, { out });
        const got = swigluSync(h.to('cuda'), { out, into: poisoned(ref.to('cuda')) });
        expect(bits(got).equals(bits(ref))).toBe(true);
      }
    });
  }

  for (const [t, h, ydtype, shared, out] of [[1, 7168, 'bf16', 'f32', 'bf16'], [129, 136, 'f32', undefined, 'f32'], [33, 1000, 'bf16', 'bf16', 'f32'], [7, 13, 'f32', 'f32', 'bf16']] as const) {
    it(`combine T=${t} H=${h} y ${ydtype}, shared ${shared ?? 'none'} -> ${out}: bit for bit, deterministic`, () => {
      const r = rng(t * 31 + h);
      const layout = dispatchLayoutSync(randomIds(r, t, 8, 32), 32, { align: 128 });
      const yv = randomFloats(layout.numRows * h, r, 1);
      const y = ydtype === 'f32' ? tensor(yv, [layout.numRows, h], 'f32') : bf16FromFloat32(yv, [layout.numRows, h]);
      const w = tensor(randomFloats(t * 8, r, 0.3), [t, 8], 'f32');
      const sv = randomFloats(t * h, r, 1);
      const sh = shared === undefined ? undefined : shared === 'f32' ? tensor(sv, [t, h], 'f32') : bf16FromFloat32(sv, [t, h]);
      const ref = combineSync(y, layout, w, { shared: sh, out });
      const lc = toCuda(layout);
      const a = combineSync(y.to('cuda'), lc, w.to('cuda'), { shared: sh?.to('cuda'), out, into: poisoned(ref.to('cuda')) });
      const b = combineSync(y.to('cuda'), lc, w.to('cuda'), { shared: sh?.to('cuda'), out });
      expect(bits(a).equals(bits(ref))).toBe(true);
      expect(bits(b).equals(bits(a))).toBe(true);
    });
  }

  it('reports bad input with the CPU backend error codes (ids out of range, NaN in x)', () => {
    const ids = tensor(new Int32Array([0, 99]), [1, 2], 'i32').to('cuda');
    expect(() => dispatchLayoutSync(ids, 4, { align: 1 })).toThrow(expect.objectContaining({ code: 'ERR_MOE_RANGE' }));
    const x = tensor(new Float32Array(16).fill(NaN), [1, 16], 'f32');
    const layout = dispatchLayoutSync(tensor(new Int32Array([1]), [1, 1], 'i32'), 2, { align: 1 });
    expect(() => dispatchSync(x.to('cuda'), toCuda(layout), { quantize: 'fp8' })).toThrow(expect.objectContaining({ code: 'ERR_MOE_NONFINITE' }));
  });

  it('every op\'s Promise form on device tensors gives its Sync form\'s bits, with many calls in flight', async () => {
    const r = rng(91);
    const [T, E, K, H, I] = [33, 32, 8, 256, 128];
    const logits = tensor(randomLogits(r, T, E), [T, E], 'f32');
    const routed = routeSync(logits, { scoring: 'softmax', topK: K });
    const viaPromise = await route(logits.to('cuda'), { scoring: 'softmax', topK: K });
    expect(bits(viaPromise.ids).equals(bits(routed.ids)) && bits(viaPromise.weights).equals(bits(routed.weights))).toBe(true);
    const layout = dispatchLayoutSync(routed.ids, E);
    const deviceLayout = await dispatchLayout(routed.ids.to('cuda'), E);
    expect(deviceLayout.numRows).toBe(layout.numRows);
    for (const key of ['rowToken', 'slotRow', 'offsets', 'groupIndex', 'tokensPerExpert'] as const) expect(bits(deviceLayout[key]).equals(bits(layout[key])), key).toBe(true);
    const x = bf16FromFloat32(randomFloats(T * H, r, 1), [T, H]);
    const d = await dispatch(x.to('cuda'), deviceLayout, { quantize: 'fp8' });
    expect(bits(d.data).equals(bits(dispatchSync(x, layout, { quantize: 'fp8' }).data))).toBe(true);
    const h = bf16FromFloat32(randomFloats(layout.numRows * 2 * I, r, 1), [layout.numRows, 2 * I]);
    const s = await swiglu(h.to('cuda'), { quantize: 'fp8' });
    expect(bits(s.scales).equals(bits(swigluSync(h, { quantize: 'fp8' }).scales))).toBe(true);
    const y = bf16FromFloat32(randomFloats(layout.numRows * H, r, 1), [layout.numRows, H]);
    expect(bits(await combine(y.to('cuda'), deviceLayout, routed.weights.to('cuda'))).equals(bits(combineSync(y, layout, routed.weights)))).toBe(true);
    const w = bf16FromFloat32(randomFloats(E * H, r, 1), [E, H]);
    const gate = (await routerLogits(x.to('cuda'), w.to('cuda'))).to('cpu').data as Float32Array;
    const gateWant = routerLogitsSync(x, w).data as Float32Array;
    gate.forEach((v, i) => expect(Math.abs(v - gateWant[i])).toBeLessThan(1e-4));
    const want = quantizeActivationsSync(x);
    const onGpu = x.to('cuda');
    const many = await Promise.all(Array.from({ length: 20 }, () => quantizeActivations(onGpu)));
    for (const q of many) expect(bits(q.data).equals(bits(want.data)) && bits(q.scales).equals(bits(want.scales))).toBe(true);
  });

  it('Promise forms in flight together each settle with their own outcome (flags read without a host sync)', async () => {
    const r = rng(77);
    const logits = tensor(randomLogits(r, 64, 256), [64, 256], 'f32');
    const good = tensor(randomFloats(256, r, 0.05), [256], 'f32');
    const bad = tensor(Float32Array.from(good.data as Float32Array), [256], 'f32');
    (bad.data as Float32Array)[7] = NaN;
    const want = routeSync(logits, { ...DEEPSEEK_V3_ROUTING, bias: good });
    const onGpu = logits.to('cuda');
    const [a, b, c] = await Promise.allSettled([good, bad, good].map((bias) => route(onGpu, { ...DEEPSEEK_V3_ROUTING, bias: bias.to('cuda') })));
    for (const ok of [a, c]) {
      expect(ok.status).toBe('fulfilled');
      if (ok.status === 'fulfilled') {
        expect(bits(ok.value.ids).equals(bits(want.ids))).toBe(true);
        expect(bits(ok.value.weights).equals(bits(want.weights))).toBe(true);
      }
    }
    expect(b).toMatchObject({ status: 'rejected', reason: expect.objectContaining({ code: 'ERR_MOE_NONFINITE' }) });
  });
});

describe.skipIf(cuda.available)('MoE ops on the CUDA backend (no GPU here)', () => {
  it(`skipped: the CUDA backend is unavailable (${cuda.reason}); moe_math_test.cu checks the kernels' math on the host`, () => {
    expect(cuda.available).toBe(false);
  });
});
