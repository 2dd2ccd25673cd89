/**
 * The layer loaded from a DeepSeek-V3-format checkpoint written by a second,
 * independent writer (test/fixtures/write_deepseek_checkpoint.py: Python's
 * standard library, Hugging Face's header order and padding, tensors the
 * loader must skip): every tensor the loader keeps must have the bytes the
 * writer hashed, and the layer must match the float64 reference.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MoeError, MoeLayer, backends, bf16FromFloat32, referenceForwardToken } from '../lib/index';
import { ExpertMatrices, expertSlot } from '../lib/moe/experts';
import { tempDir } from './helpers/checkpoint';
import { calcDiff } from './helpers/reference';
import { randomFloats, rng, SEED } from './helpers/random';

const random = rng();
const cuda = backends().find((b) => b.name === 'cuda')!;
const WRITER = path.join(__dirname, 'fixtures', 'write_deepseek_checkpoint.py');
const [HIDDEN, INTER, EXPERTS, LAYER] = [256, 128, 32, 3];

interface Manifest {
  config: Record<string, unknown>;
  tensors: Record<string, { dtype: string; shape: number[]; sha256: string }>;
}

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

function writeWithPython(shards: number): { dir: string; manifest: Manifest } {
  const dir = tempDir();
  dirs.push(dir);
  const args = [WRITER, dir, HIDDEN, INTER, EXPERTS, LAYER, SEED % 100_000, shards].map(String);
  const manifest = JSON.parse(execFileSync('python3', args, { encoding: 'utf8', maxBuffer: 1 << 26 })) as Manifest;
  return { dir, manifest };
}

const sha256 = (bytes: ArrayBufferView) => createHash('sha256').update(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)).digest('hex');

describe('MoeLayer.fromSafetensors on a checkpoint written by Python', () => {
  it('keeps the bytes of every MoE tensor of the layer and computes the float64 reference', async () => {
    const { dir, manifest } = writeWithPython(3);
    const layer = await MoeLayer.fromSafetensors(dir, { layer: LAYER });
    expect(layer.config).toMatchObject({ hiddenSize: HIDDEN, intermediateSize: INTER, numExperts: EXPERTS, topK: 8, numGroups: 8, topKGroups: 4, scoring: 'sigmoid', numSharedExperts: 1 });

    const prefix = `model.layers.${LAYER}.mlp`;
    const expectBytes = (name: string, bytes: ArrayBufferView) => expect(sha256(bytes), name).toBe(manifest.tensors[name].sha256);
    // w13 holds gate_proj then up_proj rows; with I a multiple of 128 their scale rows split the same way.
    const checkExpert = (m: ExpertMatrices, e: number, base: string, fused: boolean) => {
      const { data, scales } = expertSlot(m, e);
      if (!fused) {
        expectBytes(`${base}.down_proj.weight`, data);
        expectBytes(`${base}.down_proj.weight_scale_inv`, scales);
        return;
      }
      expectBytes(`${base}.gate_proj.weight`, data.subarray(0, data.length / 2));
      expectBytes(`${base}.up_proj.weight`, data.subarray(data.length / 2));
      expectBytes(`${base}.gate_proj.weight_scale_inv`, scales.subarray(0, scales.length / 2));
      expectBytes(`${base}.up_proj.weight_scale_inv`, scales.subarray(scales.length / 2));
    };
    const w = layer.weights;
    for (let e = 0; e < EXPERTS; e++) {
      checkExpert(w.w13, e, `${prefix}.experts.${e}`, true);
      checkExpert(w.w2, e, `${prefix}.experts.${e}`, false);
    }
    checkExpert(w.sharedW13!, 0, `${prefix}.shared_experts`, true);
    checkExpert(w.sharedW2!, 0, `${prefix}.shared_experts`, false);
    expect(w.gate.dtype).toBe('bf16');
    expectBytes(`${prefix}.gate.weight`, w.gate.data);
    expectBytes(`${prefix}.gate.e_score_correction_bias`, w.bias!.data);

    const tokens = 7;
    const x = randomFloats(tokens * HIDDEN, random, 1);
    const got = layer.forwardSync(bf16FromFloat32(x, [tokens, HIDDEN]), { out: 'f32' }).data as Float32Array;
    const xb = bf16FromFloat32(x, [tokens, HIDDEN]).toFloat32Array();
    const ref = new Float64Array(tokens * HIDDEN);
    for (let t = 0; t < tokens; t++) {
      ref.set(referenceForwardToken(layer.config, layer.weights, Float64Array.from(xb.subarray(t * HIDDEN, (t + 1) * HIDDEN))).out, t * HIDDEN);
    }
    expect(calcDiff(got, ref)).toBeLessThan(2e-3);
  });

  // Through the CUDA backend (a GPU, or the plug-in's CPU emulation in CI): the same checkpoint loaded onto
  // the device computes the float64 reference in both of the GPU forward's layouts.
  it.skipIf(!cuda.available)('loads onto the GPU and computes the float64 reference there (both layouts)', async () => {
    const { dir } = writeWithPython(2);
    const layer = await MoeLayer.fromSafetensors(dir, { layer: LAYER, device: 'cuda' });
    expect(layer.device).toBe('cuda');
    const host = await MoeLayer.fromSafetensors(dir, { layer: LAYER });
    const tokens = 9;
    const x = bf16FromFloat32(randomFloats(tokens * HIDDEN, random, 1), [tokens, HIDDEN]);
    const xb = x.toFloat32Array();
    const ref = new Float64Array(tokens * HIDDEN);
    for (let t = 0; t < tokens; t++) {
      ref.set(referenceForwardToken(host.config, host.weights, Float64Array.from(xb.subarray(t * HIDDEN, (t + 1) * HIDDEN))).out, t * HIDDEN);
    }
    for (const layout of ['masked', 'contiguous'] as const) {
      const got = (await layer.forward(x, { out: 'f32', layout })).toFloat32Array();
      expect(calcDiff(got, ref), layout).toBeLessThan(2e-3);
    }
  });

  it('names the file when a shard the layer needs is cut short, and the tensor when one is misshapen', async () => {
    const { dir } = writeWithPython(2);
    const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
    const file = index.weight_map[`model.layers.${LAYER}.mlp.experts.5.down_proj.weight`];
    const shard = path.join(dir, file);
    const whole = fs.readFileSync(shard);
    fs.truncateSync(shard, whole.length - 1000);
    const truncated = await MoeLayer.fromSafetensors(dir, { layer: LAYER }).catch((e: unknown) => e);
    expect(truncated).toBeInstanceOf(MoeError);
    expect((truncated as MoeError).message).toContain(file);

    // The same file whole again, but one expert's down_proj declared [H, I + 1]: its bytes no longer match its shape.
    const name = `model.layers.${LAYER}.mlp.experts.5.down_proj.weight`;
    const headerLength = Number(whole.readBigUInt64LE(0));
    const header = whole.subarray(8, 8 + headerLength).toString('utf8');
    const misshapen = header.replace(`"${name}":{"dtype":"F8_E4M3","shape":[${HIDDEN},${INTER}]`, `"${name}":{"dtype":"F8_E4M3","shape":[${HIDDEN},${INTER + 1}]`);
    expect(misshapen).not.toBe(header);
    fs.writeFileSync(shard, Buffer.concat([whole.subarray(0, 8), Buffer.from(misshapen.padEnd(headerLength)), whole.subarray(8 + headerLength)]));
    const wrong = await MoeLayer.fromSafetensors(dir, { layer: LAYER }).catch((e: unknown) => e);
    expect(wrong).toBeInstanceOf(MoeError);
    expect((wrong as MoeError).message).toContain(name);
    expect((wrong as MoeError).message).toContain(file);
  });
});
