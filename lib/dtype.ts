/** Element types and the typed arrays that store them (zero-copy views). */
export type DType = 'f32' | 'bf16' | 'fp8_e4m3' | 'i32';

export const DTYPES: readonly DType[] = ['f32', 'bf16', 'fp8_e4m3', 'i32'];

/** The typed array that holds each dtype's raw bits: bf16 as Uint16, fp8 as Uint8. */
export interface StorageOf {
  f32: Float32Array;
  bf16: Uint16Array;
  fp8_e4m3: Uint8Array;
  i32: Int32Array;
}

export type Storage = StorageOf[DType];

type StorageConstructor = { new (length: number): Storage; readonly name: string; readonly BYTES_PER_ELEMENT: number };

export const STORAGE: Record<DType, StorageConstructor> = {
  f32: Float32Array,
  bf16: Uint16Array,
  fp8_e4m3: Uint8Array,
  i32: Int32Array,
};

export function isDType(value: unknown): value is DType {
  if (typeof value !== 'string') return false;
  for (let i = 0; i < DTYPES.length; i++) if (DTYPES[i] === value) return true;  // (a loop: validate.ts, listed)
  return false;
}

/** The dtype a typed array stores by default (Uint16Array is bf16, Uint8Array fp8). */
export function dtypeOfStorage(data: ArrayBufferView): DType | undefined {
  return DTYPES.find((dtype) => data instanceof STORAGE[dtype]);
}
