// The layer the server runs: one MoE layer of a Hugging Face checkpoint
// (--model DIR --layer N), or a random DeepSeek-V3-routed layer scaled down
// by --scale (default 8: H = 896, I = 256, 256 experts), reproducible from
// --seed. A checkpoint's fp8 expert weights are memory-mapped (shared by
// every process serving the same checkpoint, node:cluster workers included)
// unless mmap is false.
import { MoeLayer, scaledDeepSeekV3 } from 'moe-kernels';

export async function loadLayer({ model, layer, scale, seed, device, mmap = true }) {
  if (model) return MoeLayer.fromSafetensors(model, { layer, device, ...(device === 'cuda' ? {} : { mmap }) });
  return MoeLayer.random(scaledDeepSeekV3(scale), { seed, device });
}
