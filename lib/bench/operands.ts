/** Random benchmark operands: fp8 codes (never NaN) with positive scales. */
import { randomFillSync } from 'node:crypto';
import * as fs from 'node:fs';
import { QuantizedTensor, QUANT_GROUP, WEIGHT_BLOCK_ROWS } from '../ops/quantize';
import { allocateLongLived, tensor } from '../tensor';

export function randomFp8Codes(count: number): Uint8Array {
  const codes = randomFillSync(new Uint8Array(count));
  for (let i = 0; i < count; i++) if ((codes[i] & 0x7f) === 0x7f) codes[i] ^= 1; // 0x7F/0xFF are NaN: use +-448
  return codes;
}

function randomScales(count: number): Float32Array {
  const scales = new Float32Array(count);
  for (let i = 0; i < count; i++) scales[i] = (0.5 + Math.random()) / 448;
  return scales;
}

/** A random quantized operand [rows, k] with scales per `blockRows` rows (1: activations, 128: weights). */
export function randomQuantized(rows: number, k: number, blockRows: number): QuantizedTensor {
  const scaleShape = [Math.ceil(rows / blockRows), Math.ceil(k / QUANT_GROUP)];
  return {
    data: tensor(randomFp8Codes(rows * k), [rows, k], 'fp8_e4m3'),
    scales: tensor(randomScales(scaleShape[0] * scaleShape[1]), scaleShape, 'f32'),
  };
}

/** The last-level cache size from sysfs, or 64 MiB where it cannot be read. */
export function lastLevelCacheBytes(): number {
  const dir = '/sys/devices/system/cpu/cpu0/cache';
  let largest = 0;
  try {
    for (const index of fs.readdirSync(dir)) {
      const text = fs.readFileSync(`${dir}/${index}/size`, 'utf8').trim(); // "300M", "2048K"
      const value = parseInt(text, 10) * (text.endsWith('M') ? 1 << 20 : text.endsWith('K') ? 1 << 10 : 1);
      largest = Math.max(largest, value);
    }
  } catch {
    return 64 << 20;
  }
  return largest || 64 << 20;
}

/**
 * Copies of one weight operand [n, k] whose total exceeds twice the
 * last-level cache: cycling through them makes every run stream its weights
 * from memory, as an MoE layer whose experts do not fit in cache does. Each
 * copy's fp8 codes are allocated as a layer's weights are (allocateLongLived:
 * 2 MiB pages where the kernel grants them), so the GEMM streams them as it
 * would in the layer, and as the bandwidth ceiling's buffer is read.
 */
export function coldWeightCopies(n: number, k: number): QuantizedTensor[] {
  const codes = randomFp8Codes(n * k);
  const scales = randomScales(Math.ceil(n / WEIGHT_BLOCK_ROWS) * Math.ceil(k / QUANT_GROUP));
  const scaleShape = [Math.ceil(n / WEIGHT_BLOCK_ROWS), Math.ceil(k / QUANT_GROUP)];
  const copies = Math.min(256, Math.max(2, Math.ceil((2 * lastLevelCacheBytes()) / (n * k))));
  const all: QuantizedTensor[] = [];
  for (let i = 0; i < copies; i++) {
    const data = allocateLongLived('fp8_e4m3', n * k);
    data.set(codes);
    all.push({ data: tensor(data, [n, k], 'fp8_e4m3'), scales: tensor(scales.slice(), scaleShape, 'f32') });
  }
  return all;
}
