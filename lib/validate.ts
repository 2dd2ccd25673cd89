/**
 * Argument checks shared by every operation. Each throws a MoeError whose
 * message names the argument, what was expected and what was given — before
 * any native code runs.
 */
import type { DType } from './dtype';
import { MoeError, describe } from './errors';
import { Tensor } from './tensor';

export function expectTensor(value: unknown, what: string): Tensor {
  if (!(value instanceof Tensor)) {
    throw new MoeError('ERR_MOE_ARGUMENT', `${what}: expected a Tensor, got ${describe(value)}`);
  }
  if (value.device !== 'cpu') return value; // device memory: native code checks the handle
  // A transferred ArrayBuffer leaves a zero-length view behind.
  if (value.data.length !== value.numel) {
    if (value.data.buffer.byteLength === 0) {
      throw new MoeError('ERR_MOE_DETACHED', `${what}: the tensor's ArrayBuffer is detached (transferred or freed)`);
    }
    throw new MoeError('ERR_MOE_SHAPE', `${what}: data has ${value.data.length} elements, shape needs ${value.numel}`);
  }
  return value;
}

export function expectDtype(t: Tensor, allowed: readonly DType[], what: string): void {
  if (!allowed.includes(t.dtype)) {
    throw new MoeError('ERR_MOE_DTYPE', `${what}: expected dtype ${allowed.join(' or ')}, got ${t.dtype}`);
  }
}

export function expectRank(t: Tensor, rank: number, what: string): void {
  if (t.shape.length !== rank) {
    throw new MoeError('ERR_MOE_SHAPE', `${what}: expected a ${rank}-D tensor, got shape ${describe(t.shape)}`);
  }
}

export function expectShape(t: Tensor, shape: readonly number[], what: string): void {
  if (t.shape.length !== shape.length || t.shape.some((extent, i) => extent !== shape[i])) {
    throw new MoeError('ERR_MOE_SHAPE', `${what}: expected shape ${describe(shape)}, got ${describe(t.shape)}`);
  }
}

/** K, the contiguous dimension of fp8 operands, holds whole 16-byte rows (SPEC.md). */
export function expectInnerMultipleOf16(k: number, what: string): void {
  if (k <= 0 || k % 16 !== 0) {
    throw new MoeError('ERR_MOE_SHAPE', `${what}: the last dimension (K) must be a positive multiple of 16, got ${k}`);
  }
}

/** CPU tensors only: a device tensor's values are not read back for this (it would stall the GPU). */
export function expectFinite(t: Tensor<'f32'> | Tensor<'bf16'>, what: string): void {
  if (t.device !== 'cpu') return;
  if (t.dtype === 'bf16') {
    const bits = t.data as Uint16Array;
    for (let i = 0; i < bits.length; i++) {
      if ((bits[i] & 0x7f80) === 0x7f80) {
        throw new MoeError('ERR_MOE_NONFINITE', `${what}: element ${i} is ${bits[i] & 0x7f ? 'NaN' : 'infinite'}, expected a finite number`);
      }
    }
    return;
  }
  const values = t.data as Float32Array;
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) {
      throw new MoeError('ERR_MOE_NONFINITE', `${what}: element ${i} is ${values[i]}, expected a finite number`);
    }
  }
}

export function expectOneOf<T extends string>(value: unknown, allowed: readonly T[], what: string): T {
  if (!allowed.includes(value as T)) {
    throw new MoeError('ERR_MOE_RANGE', `${what}: expected ${allowed.map(describe).join(' or ')}, got ${describe(value)}`);
  }
  return value as T;
}

/** Options objects are strict: an unknown key is almost always a typo. */
export function expectOptions<K extends string>(value: unknown, keys: readonly K[], what: string): Partial<Record<K, unknown>> {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new MoeError('ERR_MOE_ARGUMENT', `${what}: options must be an object, got ${describe(value)}`);
  }
  for (const key of Object.keys(value)) {
    if (!keys.includes(key as K)) {
      throw new MoeError('ERR_MOE_ARGUMENT', `${what}: unknown option '${key}' (known: ${keys.join(', ')})`);
    }
  }
  return value as Partial<Record<K, unknown>>;
}

export function expectInteger(value: unknown, min: number, max: number, what: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new MoeError('ERR_MOE_RANGE', `${what}: expected an integer in [${min}, ${max}], got ${describe(value)}`);
  }
  return value;
}
