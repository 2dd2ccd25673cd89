/**
 * The safetensors header rule, written once: parsing and validating the JSON
 * header against the file, used inline (SafetensorsFile.open, small headers)
 * and in header-worker.ts (large headers in SafetensorsFile.load), so both
 * paths give the same ERR_MOE_CHECKPOINT errors.
 *
 * Also the compact form in which the worker hands a parsed header back: one
 * string of all names and metadata plus one Float64Array of numbers, because
 * receiving a structured clone of a million small objects would cost the
 * JS thread about as much as parsing them.
 */
import { MoeError, describe } from '../errors';

export type SafetensorsDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'F8_E4M3' | 'F8_E5M2' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const DTYPE_BYTES: Record<SafetensorsDType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, F8_E5M2: 1, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};
const DTYPES = Object.keys(DTYPE_BYTES) as SafetensorsDType[];

/** Header size limit (the reference implementation's is 100 MB). */
export const MAX_HEADER_BYTES = 100_000_000;

export interface TensorInfo {
  readonly name: string;
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  /** Byte range within the data section: [begin, end). */
  readonly begin: number;
  readonly end: number;
}

export interface ParsedHeader {
  /** The tensors whose names start with one of the requested prefixes (all, without prefixes). */
  readonly tensors: Map<string, TensorInfo>;
  readonly metadata: Record<string, string>;
  /** Where the data section starts in the file: 8 + the header's length. */
  readonly dataStart: number;
}

function fail(file: string, message: string): never {
  throw new MoeError('ERR_MOE_CHECKPOINT', `${file}: ${message}`);
}

function parseEntry(file: string, name: string, value: unknown): TensorInfo {
  const entry = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  if (typeof value !== 'object' || value === null) fail(file, `tensor '${name}': header entry is not an object`);
  const dtype = entry.dtype as SafetensorsDType;
  if (typeof dtype !== 'string' || !Object.prototype.hasOwnProperty.call(DTYPE_BYTES, dtype)) fail(file, `tensor '${name}': unknown dtype ${describe(entry.dtype)}`);
  const shape = entry.shape;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    fail(file, `tensor '${name}': shape must be an array of non-negative integers, got ${describe(shape)}`);
  }
  const offsets = entry.data_offsets;
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    fail(file, `tensor '${name}': data_offsets must be two non-negative integers, got ${describe(offsets)}`);
  }
  const [begin, end] = offsets as number[];
  const bytes = (shape as number[]).reduce((n, d) => n * d, 1) * DTYPE_BYTES[dtype];
  if (end < begin || end - begin !== bytes) {
    fail(file, `tensor '${name}': data_offsets [${begin}, ${end}] hold ${end - begin} bytes, ${dtype} ${describe(shape)} needs ${bytes}`);
  }
  return { name, dtype, shape: shape as number[], begin, end };
}

/** The header's length from the file's first 8 bytes, checked against the file and MAX_HEADER_BYTES. */
export function headerLength(path: string, fileSize: number, lengthBytes: Uint8Array): number {
  if (fileSize < 8) fail(path, `file of ${fileSize} bytes is too short for a safetensors header`);
  const length = Buffer.from(lengthBytes.buffer, lengthBytes.byteOffset, 8).readBigUInt64LE(0);
  if (length > BigInt(Math.min(MAX_HEADER_BYTES, fileSize - 8))) {
    fail(path, `header length ${length} exceeds the file (${fileSize} bytes) or the 100 MB limit`);
  }
  return Number(length);
}

/**
 * Parses and validates `header` (the JSON bytes) of a file of `fileSize`
 * bytes: every entry is checked and the data section must be covered
 * exactly, whatever `prefixes` keeps. Blocks its thread for the time the
 * header takes (seconds near the 100 MB limit).
 */
export function parseHeader(path: string, fileSize: number, header: Uint8Array, prefixes?: readonly string[]): ParsedHeader {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(header.buffer, header.byteOffset, header.byteLength).toString('utf8'));
  } catch (error) {
    // (Deep nesting is a RangeError from the parser: reported here as well.)
    fail(path, `header is not valid JSON: ${error instanceof Error ? error.message : describe(error)}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) fail(path, 'header is not a JSON object');
  const dataStart = 8 + header.byteLength;
  const dataSize = fileSize - dataStart;
  const all: TensorInfo[] = [];
  let metadata: Record<string, string> = {};
  const object = parsed as Record<string, unknown>;
  // (Object.keys, not Object.entries: four times faster on a million keys.)
  for (const name of Object.keys(object)) {
    const value = object[name];
    if (name === '__metadata__') {
      metadata = parseMetadata(path, value);
      continue;
    }
    all.push(parseEntry(path, name, value));
  }
  // The data section must be covered exactly: no gaps, no overlaps, nothing past the end.
  const ranges = [...all].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const t of ranges) {
    if (t.begin !== cursor) fail(path, `tensor '${t.name}' starts at byte ${t.begin}, expected ${cursor} (a gap or an overlap)`);
    cursor = t.end;
  }
  if (cursor !== dataSize) fail(path, `tensors cover ${cursor} data bytes, the file holds ${dataSize} (truncated or padded)`);
  const tensors = new Map<string, TensorInfo>();
  for (const t of all) if (!prefixes || prefixes.some((p) => t.name.startsWith(p))) tensors.set(t.name, t);
  return { tensors, metadata, dataStart };
}

/** The format's __metadata__: a string-to-string map. */
function parseMetadata(path: string, value: unknown): Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(path, `__metadata__ must be an object, got ${describe(value)}`);
  for (const [key, v] of Object.entries(value)) {
    if (typeof v !== 'string') fail(path, `__metadata__ '${key}' must be a string, got ${describe(v)}`);
  }
  return value as Record<string, string>;
}

/**
 * The compact form of a ParsedHeader: `text` holds every name, then every
 * metadata key and value, back to back; `numbers` holds
 * [dataStart, tensorCount, metadataCount], then per tensor
 * [nameLength, dtypeIndex, begin, end, rank, ...shape], then per metadata
 * pair [keyLength, valueLength] (lengths in UTF-16 code units).
 */
export interface EncodedHeader {
  text: string;
  numbers: Float64Array;
}

export function encodeHeader(parsed: ParsedHeader): EncodedHeader {
  const meta = Object.entries(parsed.metadata);
  let count = 3 + meta.length * 2;
  for (const t of parsed.tensors.values()) count += 5 + t.shape.length;
  const numbers = new Float64Array(count);
  const text: string[] = [];
  let i = 0;
  numbers[i++] = parsed.dataStart;
  numbers[i++] = parsed.tensors.size;
  numbers[i++] = meta.length;
  for (const t of parsed.tensors.values()) {
    text.push(t.name);
    numbers[i++] = t.name.length;
    numbers[i++] = DTYPES.indexOf(t.dtype);
    numbers[i++] = t.begin;
    numbers[i++] = t.end;
    numbers[i++] = t.shape.length;
    for (const d of t.shape) numbers[i++] = d;
  }
  for (const [key, value] of meta) {
    text.push(key, value);
    numbers[i++] = key.length;
    numbers[i++] = value.length;
  }
  return { text: text.join(''), numbers };
}

/**
 * The inverse of encodeHeader, decoding `slice` tensors at a time and
 * awaiting `pause()` between slices, so that a million entries do not hold
 * the JS thread in one go.
 */
export async function decodeHeader(encoded: EncodedHeader, slice: number, pause: () => Promise<void>): Promise<ParsedHeader> {
  const { text, numbers } = encoded;
  let i = 0;
  let at = 0;
  const dataStart = numbers[i++];
  const count = numbers[i++];
  const metaCount = numbers[i++];
  const tensors = new Map<string, TensorInfo>();
  for (let n = 0; n < count; n++) {
    if (n > 0 && n % slice === 0) await pause();
    const name = text.slice(at, (at += numbers[i++]));
    const dtype = DTYPES[numbers[i++]];
    const begin = numbers[i++];
    const end = numbers[i++];
    const rank = numbers[i++];
    const shape: number[] = new Array(rank);
    for (let d = 0; d < rank; d++) shape[d] = numbers[i++];
    tensors.set(name, { name, dtype, shape, begin, end });
  }
  const metadata: Record<string, string> = {};
  for (let n = 0; n < metaCount; n++) {
    if (n > 0 && n % slice === 0) await pause();
    const key = text.slice(at, (at += numbers[i++]));
    // (defineProperty: a key '__proto__' is an own property, as JSON.parse makes it.)
    Object.defineProperty(metadata, key, { value: text.slice(at, (at += numbers[i++])), enumerable: true, writable: true, configurable: true });
  }
  return { tensors, metadata, dataStart };
}
