/** The options that pick an MoE layer for `demo` and `bench moe`: a random DeepSeek-V3-routed one, or a checkpoint's. */
import { Command } from 'commander';
import { DEEPSEEK_V3_CONFIG, MoeConfig, scaledDeepSeekV3 } from '../moe/config';
import { MoeLayer } from '../moe/layer';
import { parsePositiveInt } from './parse';
import { progressBar } from './progress';

export interface LayerSourceOptions {
  scale: number;
  full?: boolean;
  model?: string;
  layer?: number;
  seed: number;
  threads?: number;
}

export function addLayerSourceOptions(command: Command, defaultScale: number): Command {
  return command
    .option('--scale <n>', 'divide DeepSeek-V3\'s hidden and intermediate sizes by n (kept multiples of 128)', parsePositiveInt, defaultScale)
    .option('--full', 'DeepSeek-V3\'s full size: H=7168, I=2048 (11 GiB of fp8 expert weights)')
    .option('--model <dir>', 'a Hugging Face checkpoint directory (DeepSeek-V3 FP8 layout; Mixtral and Qwen-MoE also load)')
    .option('--layer <n>', 'with --model: the decoder layer to load', (v) => Number.parseInt(v, 10))
    .option('--seed <n>', 'seed of the random weights', parsePositiveInt, 1)
    .option('--threads <n>', 'CPU threads (default: MOE_NUM_THREADS or all)', parsePositiveInt);
}

export async function loadLayer(opts: LayerSourceOptions, showProgress: boolean): Promise<MoeLayer> {
  const progress = progressBar(showProgress);
  try {
    if (opts.model) {
      if (opts.layer === undefined || !Number.isInteger(opts.layer)) throw new Error('--model needs --layer <n>');
      return await MoeLayer.fromSafetensors(opts.model, {
        layer: opts.layer,
        onProgress: (done, total) => progress.update(done, total, 'loading experts'),
      });
    }
    const config: MoeConfig = opts.full ? { ...DEEPSEEK_V3_CONFIG } : scaledDeepSeekV3(opts.scale);
    return MoeLayer.random(config, {
      seed: opts.seed,
      onProgress: (done, total) => progress.update(done, total, 'random fp8 experts'),
    });
  } finally {
    progress.stop();
  }
}
