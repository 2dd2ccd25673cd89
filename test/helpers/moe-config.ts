import { DEEPSEEK_V3_CONFIG, MoeConfig } from '../../lib/index';

// DeepSeek-V3's routing (sigmoid, bias, 8 groups of which 4 kept, top-8,
// scale 2.5, one shared expert) with 32 experts and the given H and I: the
// layer tests' model at a size a test can afford. Spread from the library's
// config, so the routing cannot drift from the real model's.
export function smallDeepSeekConfig(hiddenSize: number, intermediateSize: number): MoeConfig {
  return { ...DEEPSEEK_V3_CONFIG, hiddenSize, intermediateSize, numExperts: 32 };
}

/** Runs `run` with MOE_FUSED_EXPERTS=0: the layer's separate ops, each its own parallel region (the bits the fused paths must give). */
export function separateOps<T>(run: () => T): T {
  process.env.MOE_FUSED_EXPERTS = '0';
  try {
    return run();
  } finally {
    delete process.env.MOE_FUSED_EXPERTS;
  }
}
