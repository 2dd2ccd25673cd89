// The layer the server runs: one MoE layer of a Hugging Face checkpoint
// (--model DIR --layer N), or a random DeepSeek-V3-routed layer scaled down
// by --scale (default 8: H = 896, I = 256, 256 experts), reproducible from
// --seed.
import { MoeLayer, scaledDeepSeekV3 } from 'moe-kernels';

export async function loadLayer({ model, layer, scale, seed, device }) {
  if (model) return MoeLayer.fromSafetensors(model, { layer, device });
  return MoeLayer.random(scaledDeepSeekV3(scale), { seed, device });
}
