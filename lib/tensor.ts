/**
 * Tensors: a dtype, a shape and a typed array over the caller's memory
 * (zero-copy; byteOffset respected). Row-major and contiguous.
 */
import { DType, StorageOf, STORAGE, dtypeOfStorage, isDType } from './dtype';
import { expectFixedBuffer, expectTensor } from './validate';
import { MoeError, describe } from './errors';
import { decodeToFloat32 } from './numerics';
import { native } from './native';
import { defaultDevice, requireCuda } from './backends';

export type Device = 'cpu' | 'cuda';

export class Tensor<D extends DType = DType> {
  readonly dtype: D;
  readonly shape: readonly number[];
  readonly device: Device;
  /** CUDA tensors: the device memory (an opaque handle owned by the addon). */
  readonly handle?: unknown;
  private readonly storage?: StorageOf[D];

  /**
   * Use `tensor()` or `empty()`. The constructor checks what makes a tensor
   * well-formed (a dtype, a shape, a device); whether the data matches them is
   * checked where the tensor is used.
   */
  constructor(data: StorageOf[D] | undefined, shape: readonly number[], dtype: D, device: Device = 'cpu', handle?: unknown) {
    checkShape(shape, 'Tensor');
    checkDType(dtype, 'Tensor');
    checkDevice(device, 'Tensor');
    this.storage = data;
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.device = device;
    this.handle = handle;
  }

  /** The raw elements: Float32Array (f32), Uint16Array (bf16 bits), Uint8Array (fp8 codes), Int32Array (i32). */
  get data(): StorageOf[D] {
    if (this.storage === undefined) {
      throw new MoeError('ERR_MOE_DEVICE', `${this}: its memory is on the GPU; use t.to('cpu') to read it`);
    }
    return this.storage;
  }

  get numel(): number {
    return numelOf(this.shape);
  }

  get byteLength(): number {
    return this.numel * STORAGE[this.dtype].BYTES_PER_ELEMENT;
  }

  /**
   * This tensor on `device` (default: the default backend's device): itself
   * when it is already there, else a copy.
   */
  to(device: Device = defaultDevice()): Tensor<D> {
    checkDevice(device, 'to');
    expectTensor(this, 'to: the tensor');
    if (device === this.device) return this;
    if (device === 'cuda') {
      requireCuda("to('cuda')");
      const handle = native().cudaAlloc(this.byteLength);
      native().cudaCopyToDevice(handle, this.data);
      return new Tensor<D>(undefined, this.shape, this.dtype, 'cuda', handle);
    }
    const host = newStorage(this.dtype, this.numel, 'to');
    native().cudaCopyToHost(this.handle, host);
    return new Tensor(host, this.shape, this.dtype);
  }

  /** Frees a CUDA tensor's device memory now instead of at garbage collection; later use is ERR_MOE_DETACHED. */
  dispose(): void {
    if (this.device === 'cuda') native().cudaFree(this.handle);
  }

  /** A decoded copy as f32 (bf16 and fp8 widen exactly). */
  toFloat32Array(): Float32Array {
    if (this.device !== 'cpu') return this.to('cpu').toFloat32Array();
    switch (this.dtype) {
      case 'f32':
        return Float32Array.from(this.data as Float32Array);
      case 'i32':
        return Float32Array.from(this.data as Int32Array);
      default:
        return decodeToFloat32(this.data as Uint8Array | Uint16Array, this.dtype as 'fp8_e4m3' | 'bf16');
    }
  }

  toString(): string {
    // (Also for a Tensor made without its constructor: error messages use this.)
    const shape = Array.isArray(this.shape) ? this.shape.map(describe).join(', ') : '?';
    return `Tensor(${describe(this.dtype)}, [${shape}], ${describe(this.device)})`;
  }
}

export function numelOf(shape: readonly number[]): number {
  let product = 1;
  for (let i = 0; i < shape.length; i++) product *= shape[i];
  return product;
}

function checkDType(dtype: unknown, what: string): asserts dtype is DType {
  if (!isDType(dtype)) throw new MoeError('ERR_MOE_DTYPE', `${what}: dtype must be one of f32, bf16, fp8_e4m3, i32, got ${describe(dtype)}`);
}

function checkDevice(device: unknown, what: string): asserts device is Device {
  if (device !== 'cpu' && device !== 'cuda') throw new MoeError('ERR_MOE_RANGE', `${what}: device must be 'cpu' or 'cuda', got ${describe(device)}`);
}

function checkShape(shape: unknown, what: string): asserts shape is number[] {
  if (!Array.isArray(shape) || shape.length < 1 || shape.length > 4) {
    throw new MoeError('ERR_MOE_SHAPE', `${what}: expected a shape of 1 to 4 extents, got ${describe(shape)}`);
  }
  for (const extent of shape) {
    if (!Number.isSafeInteger(extent) || extent < 0) {
      throw new MoeError('ERR_MOE_SHAPE', `${what}: extents must be non-negative integers, got ${describe(shape)}`);
    }
  }
}

/**
 * Wraps `data` as a tensor of `shape`. The dtype defaults to the one the typed
 * array stores (Float32Array f32, Uint16Array bf16, Uint8Array fp8_e4m3,
 * Int32Array i32); a given dtype must match the array, except that bytes (a
 * Uint8Array or Buffer, e.g. a request body) take any dtype: they are read as
 * little-endian values, in place where their offset is a multiple of the
 * element size, else from an aligned copy.
 */
export function tensor(data: Uint8Array, shape: readonly number[], dtype: 'f32'): Tensor<'f32'>;
export function tensor(data: Uint8Array, shape: readonly number[], dtype: 'bf16'): Tensor<'bf16'>;
export function tensor(data: Uint8Array, shape: readonly number[], dtype: 'i32'): Tensor<'i32'>;
export function tensor(data: Float32Array, shape: readonly number[], dtype?: 'f32'): Tensor<'f32'>;
export function tensor(data: Uint16Array, shape: readonly number[], dtype?: 'bf16'): Tensor<'bf16'>;
export function tensor(data: Uint8Array, shape: readonly number[], dtype?: 'fp8_e4m3'): Tensor<'fp8_e4m3'>;
export function tensor(data: Int32Array, shape: readonly number[], dtype?: 'i32'): Tensor<'i32'>;
export function tensor<D extends DType>(data: StorageOf[D], shape: readonly number[], dtype?: D): Tensor<D>;
export function tensor<D extends DType>(data: StorageOf[D], shape: readonly number[], dtype?: D): Tensor<D> {
  if (!ArrayBuffer.isView(data)) {
    throw new MoeError('ERR_MOE_DTYPE', `tensor: data must be a typed array, got ${describe(data)}`);
  }
  if (dtype !== undefined && !isDType(dtype)) {
    throw new MoeError('ERR_MOE_DTYPE', `tensor: dtype must be one of f32, bf16, fp8_e4m3, i32, got ${describe(dtype)}`);
  }
  if (data instanceof Uint8Array && dtype !== undefined && dtype !== 'fp8_e4m3') data = fromBytes(data, dtype) as StorageOf[D];
  const stored = dtypeOfStorage(data);
  const resolved = (dtype ?? stored) as D | undefined;
  if (resolved === undefined || !(data instanceof STORAGE[resolved])) {
    const expected = resolved ? STORAGE[resolved].name : 'Float32Array, Uint16Array, Uint8Array or Int32Array';
    throw new MoeError('ERR_MOE_DTYPE', `tensor: data for dtype ${resolved ?? '?'} must be ${expected}, got ${describe(data)}`);
  }
  checkShape(shape, 'tensor');
  expectFixedBuffer(data, 'tensor');
  const numel = numelOf(shape);
  if (data.length !== numel) {
    throw new MoeError('ERR_MOE_SHAPE', `tensor: shape ${describe(shape)} needs ${numel} elements, data has ${data.length}`);
  }
  return new Tensor(data, shape, resolved);
}

/**
 * A typed array, zeroed unless `zeroed` is false (then its own ArrayBuffer,
 * not the shared pool, left as allocated); a length V8 cannot allocate is
 * ERR_MOE_RANGE, not a RangeError.
 */
function newStorage<D extends DType>(dtype: D, length: number, what: string, zeroed = true): StorageOf[D] {
  try {
    if (zeroed) return new STORAGE[dtype](length) as StorageOf[D];
    const bytes = Buffer.allocUnsafeSlow(length * STORAGE[dtype].BYTES_PER_ELEMENT);
    const View = STORAGE[dtype] as unknown as new (buffer: ArrayBufferLike, byteOffset: number, length: number) => StorageOf[D];
    return new View(bytes.buffer, bytes.byteOffset, length);
  } catch (e) {
    throw new MoeError('ERR_MOE_RANGE', `${what}: cannot allocate ${length} ${dtype} elements (${e instanceof Error ? e.message : describe(e)})`);
  }
}

/** Little-endian bytes (the host's order on every platform the addon runs on) as `dtype`'s typed array. */
function fromBytes(bytes: Uint8Array, dtype: DType): StorageOf[DType] {
  const Storage = STORAGE[dtype];
  const size = Storage.BYTES_PER_ELEMENT;
  if (bytes.byteLength % size !== 0) {
    throw new MoeError('ERR_MOE_SHAPE', `tensor: ${bytes.byteLength} bytes is not a whole number of ${dtype} values (${size} bytes each)`);
  }
  let aligned = bytes;
  if (bytes.byteOffset % size !== 0) {
    aligned = new Uint8Array(bytes.byteLength);
    aligned.set(bytes);
  }
  const View = Storage as unknown as new (buffer: ArrayBufferLike, byteOffset: number, length: number) => StorageOf[DType];
  return new View(aligned.buffer, aligned.byteOffset, aligned.byteLength / size);
}

/** A new tensor: zero-filled on the CPU, uninitialized on the GPU. */
export function empty<D extends DType>(shape: readonly number[], dtype: D, device: Device = 'cpu'): Tensor<D> {
  checkShape(shape, 'empty');
  checkDType(dtype, 'empty');
  checkDevice(device, 'empty');
  const numel = numelOf(shape);
  if (device === 'cuda') {
    requireCuda('empty');
    return new Tensor<D>(undefined, shape, dtype, 'cuda', native().cudaAlloc(numel * STORAGE[dtype].BYTES_PER_ELEMENT));
  }
  return new Tensor(newStorage(dtype, numel, 'empty'), shape, dtype);
}

/**
 * An op's own output, which the op writes in full before anyone reads it
 * (on a failure it is dropped): on the host its memory is left unzeroed.
 * A 30-token forward's f32 output (H = 896, 107 KB) zeroed on the JS thread
 * took ~40 us of the ~500 us that thread spends per forward on the 2-vCPU
 * EPYC (perf, with the forward's threads streaming weights on the same
 * cores); an HTTP server batching requests pays it for every batch.
 */
export function emptyOutput<D extends DType>(shape: readonly number[], dtype: D, device: Device): Tensor<D> {
  if (device !== 'cpu') return empty(shape, dtype, device);
  checkShape(shape, 'empty');
  checkDType(dtype, 'empty');
  return new Tensor(newStorage(dtype, numelOf(shape), 'empty', false), shape, dtype);
}

/**
 * A zeroed host array of `length` elements for a buffer that lives across
 * many calls (a layer's weights, a workspace). Large ones are offered to the
 * kernel for 2 MiB pages before their first touch: the MoE ops read big
 * buffers at scattered rows, and with 4 KiB pages most such rows are a TLB
 * miss (cpu/huge_pages.h has the measurement and the size below which the
 * advice is not given). Short-lived outputs stay on
 * ordinary pages: faulting in fresh huge pages on every call can stall on
 * the kernel's compaction.
 */
export function allocateLongLived<D extends DType>(dtype: D, length: number): StorageOf[D] {
  const array = newStorage(dtype, length, 'allocate');
  native().adviseHugePages(array);
  return array;
}

function encode<D extends 'bf16' | 'fp8_e4m3'>(values: Float32Array, shape: readonly number[], dtype: D, what: string): Tensor<D> {
  if (!(values instanceof Float32Array)) {
    throw new MoeError('ERR_MOE_DTYPE', `${what}: values must be a Float32Array, got ${describe(values)}`);
  }
  checkShape(shape, what);
  if (values.length !== numelOf(shape)) {
    throw new MoeError('ERR_MOE_SHAPE', `${what}: shape ${describe(shape)} needs ${numelOf(shape)} values, got ${values.length}`);
  }
  const out = empty(shape, dtype);
  native().castFromF32(values, out.data as Uint8Array | Uint16Array, dtype);
  return out;
}

/** A bf16 tensor from f32 values, rounded to nearest even (NaN stays NaN). */
export function bf16FromFloat32(values: Float32Array, shape: readonly number[]): Tensor<'bf16'> {
  return encode(values, shape, 'bf16', 'bf16FromFloat32');
}

/** An fp8 e4m3 tensor from f32 values, CUDA's satfinite round-to-nearest-even conversion. */
export function fp8FromFloat32(values: Float32Array, shape: readonly number[]): Tensor<'fp8_e4m3'> {
  return encode(values, shape, 'fp8_e4m3', 'fp8FromFloat32');
}

