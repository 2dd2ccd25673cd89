/**
 * Argument checks shared by every operation. Each throws a MoeError whose
 * message names the argument, what was expected and what was given — before
 * any native code runs.
 */
import { DType, STORAGE, isDType } from './dtype';
import { MoeError, describe } from './errors';
import { Tensor } from './tensor';

export function expectTensor(value: unknown, what: string): Tensor {
  if (!(value instanceof Tensor)) {
    throw new MoeError('ERR_MOE_ARGUMENT', `${what}: expected a Tensor, got ${describe(value)}`);
  }
  // A Tensor built without tensor()/empty() (or whose fields were redefined)
  // is checked like any other argument: the constructor trusts its callers.
  checkTensorFields(value, what);
  if (value.device !== 'cpu') return value; // device memory: native code checks the handle
  const data = value.data;
  // A transferred ArrayBuffer leaves a zero-length view behind.
  if (data.length !== value.numel) {
    if (data.buffer.byteLength === 0) {
      throw new MoeError('ERR_MOE_DETACHED', `${what}: the tensor's ArrayBuffer is detached (transferred or freed)`);
    }
    throw new MoeError('ERR_MOE_SHAPE', `${what}: data has ${data.length} elements, shape needs ${value.numel}`);
  }
  expectFixedBuffer(data, what);
  return value;
}

/**
 * Resizable ArrayBuffers are refused: one shrunk while a Promise-form
 * operation runs would leave native code reading or writing freed memory
 * (growable SharedArrayBuffers only grow, and are accepted). README, "Buffers
 * and concurrency".
 */
export function expectFixedBuffer(data: ArrayBufferView, what: string): void {
  if ((data.buffer as { resizable?: boolean }).resizable === true) {
    throw new MoeError('ERR_MOE_DTYPE', `${what}: the tensor's data is a view of a resizable ArrayBuffer; use a fixed-length ArrayBuffer`);
  }
}

function checkTensorFields(t: Tensor, what: string): void {
  const shape: unknown = t.shape;
  if (!isDType(t.dtype)) throw new MoeError('ERR_MOE_DTYPE', `${what}: unknown dtype ${describe(t.dtype)}`);
  if (!Array.isArray(shape) || shape.length < 1 || shape.length > 4 || !allExtents(shape)) {
    throw new MoeError('ERR_MOE_SHAPE', `${what}: expected a shape of 1 to 4 non-negative integers, got ${describe(shape)}`);
  }
  if (t.device === 'cuda') return;
  if (t.device !== 'cpu') throw new MoeError('ERR_MOE_DEVICE', `${what}: unknown device ${describe(t.device)}`);
  let data: unknown;
  try {
    data = t.data;
  } catch {
    throw new MoeError('ERR_MOE_ARGUMENT', `${what}: a CPU tensor without data`);
  }
  if (!(data instanceof STORAGE[t.dtype])) {
    throw new MoeError('ERR_MOE_DTYPE', `${what}: data for dtype ${t.dtype} must be a ${STORAGE[t.dtype].name}, got ${describe(data)}`);
  }
}

// Plain loops rather than the array builtins (every, includes, reduce) in
// the checks a forward runs: a decode forward runs them with the caches cold
// (the previous forward streamed its weights through them), and each builtin
// first called then costs 5-20 us of misses on this virtual machine (the
// forward's JS checks: ~160 us cold, ~10 us warm).
export function listed(list: readonly unknown[], value: unknown): boolean {
  for (let i = 0; i < list.length; i++) if (list[i] === value) return true;
  return false;
}

function allExtents(shape: readonly unknown[]): boolean {
  for (let i = 0; i < shape.length; i++) {
    const n = shape[i];
    if (!Number.isSafeInteger(n) || (n as number) < 0) return false;
  }
  return true;
}

export function expectDtype(t: Tensor, allowed: readonly DType[], what: string): void {
  if (!listed(allowed, t.dtype)) {
    throw new MoeError('ERR_MOE_DTYPE', `${what}: expected dtype ${allowed.join(' or ')}, got ${t.dtype}`);
  }
}

export function expectRank(t: Tensor, rank: number, what: string): void {
  if (t.shape.length !== rank) {
    throw new MoeError('ERR_MOE_SHAPE', `${what}: expected a ${rank}-D tensor, got shape ${describe(t.shape)}`);
  }
}

export function expectShape(t: Tensor, shape: readonly number[], what: string): void {
  let same = t.shape.length === shape.length;
  for (let i = 0; same && i < shape.length; i++) same = t.shape[i] === shape[i];
  if (!same) {
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
  if (!listed(allowed, value)) {
    throw new MoeError('ERR_MOE_RANGE', `${what}: expected ${allowed.map(describe).join(' or ')}, got ${describe(value)}`);
  }
  return value as T;
}

/**
 * Options objects are strict: an unknown key is almost always a typo. Only the
 * object's own properties count (a key inherited from Object.prototype is not
 * an option), each read once: the result is a snapshot with no prototype.
 * (Own names, then own symbols, rather than Reflect.ownKeys and a descriptor
 * per key: the same keys, at ~2/3 of the cost with the caches cold, as a
 * decode forward's checks run.)
 */
const isEnumerable = Object.prototype.propertyIsEnumerable;

export function expectOptions<K extends string>(value: unknown, keys: readonly K[], what: string): Partial<Record<K, unknown>> {
  if (value === undefined) return Object.create(null) as Partial<Record<K, unknown>>;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new MoeError('ERR_MOE_ARGUMENT', `${what}: options must be an object, got ${describe(value)}`);
  }
  const snapshot = Object.create(null) as Partial<Record<K, unknown>>;
  const unknown = (key: string | symbol) =>
    new MoeError('ERR_MOE_ARGUMENT', `${what}: unknown option ${typeof key === 'string' ? `'${key}'` : describe(key)} (known: ${keys.join(', ')})`);
  try {
    const names = Object.getOwnPropertyNames(value);
    for (let i = 0; i < names.length; i++) {
      const key = names[i];
      if (!listed(keys, key)) throw unknown(key);
      if (isEnumerable.call(value, key)) snapshot[key as K] = (value as Record<string, unknown>)[key];
    }
    const symbols = Object.getOwnPropertySymbols(value);
    if (symbols.length > 0) throw unknown(symbols[0]);
  } catch (e) {
    if (e instanceof MoeError) throw e;
    throw new MoeError('ERR_MOE_ARGUMENT', `${what}: the options object could not be read (${describe(e)})`);
  }
  return snapshot;
}

/** An optional boolean option: undefined stays undefined. */
export function expectBoolean(value: unknown, what: string): boolean | undefined {
  if (value !== undefined && typeof value !== 'boolean') {
    throw new MoeError('ERR_MOE_ARGUMENT', `${what} must be a boolean, got ${describe(value)}`);
  }
  return value;
}

export function expectInteger(value: unknown, min: number, max: number, what: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new MoeError('ERR_MOE_RANGE', `${what}: expected an integer in [${min}, ${max}], got ${describe(value)}`);
  }
  return value;
}

/** A `{ data, scales }` pair (a QuantizedTensor), read from its own properties only. */
export function expectQuantized(value: unknown, what: string): { data: Tensor; scales: Tensor } {
  if (typeof value !== 'object' || value === null) {
    throw new MoeError('ERR_MOE_ARGUMENT', `${what}: expected { data, scales } tensors, got ${describe(value)}`);
  }
  const own = (key: string) => (Object.prototype.hasOwnProperty.call(value, key) ? (value as Record<string, unknown>)[key] : undefined);
  expectTensor(own('data'), `${what}.data`);
  expectTensor(own('scales'), `${what}.scales`);
  return value as { data: Tensor; scales: Tensor }; // the caller's object: an `into` is returned as given
}
