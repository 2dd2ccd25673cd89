/**
 * A small, strict reader of the safetensors format: an 8-byte little-endian
 * header length, a JSON header, then the tensors' bytes. Written here because
 * no maintained Node package reads safetensors (the official implementation
 * is Rust/Python); strictness matters because checkpoints come from anywhere.
 *
 * Everything in the header is checked against the file before any tensor is
 * read: known dtypes, integral shapes, offsets inside the file, byte counts
 * that match the shapes, and no gaps or overlaps between tensors. Tensors are
 * read one at a time with positioned reads, so a caller that needs a few
 * tensors of a large shard never reads the rest of it.
 */
import * as fs from 'node:fs';
import { MoeError, describe } from '../errors';
import { expectPath, openRegular, openRegularSync, readFully } from './files';

export type SafetensorsDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'F8_E4M3' | 'F8_E5M2' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

const DTYPE_BYTES: Record<SafetensorsDType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, F8_E5M2: 1, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/** Header size limit (the reference implementation's is 100 MB). */
const MAX_HEADER_BYTES = 100_000_000;

export interface TensorInfo {
  readonly name: string;
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  /** Byte range within the data section: [begin, end). */
  readonly begin: number;
  readonly end: number;
}

function fail(file: string, message: string): never {
  throw new MoeError('ERR_MOE_CHECKPOINT', `${file}: ${message}`);
}

function parseEntry(file: string, name: string, value: unknown): TensorInfo {
  const entry = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  if (typeof value !== 'object' || value === null) fail(file, `tensor '${name}': header entry is not an object`);
  const dtype = entry.dtype as SafetensorsDType;
  if (typeof dtype !== 'string' || !(dtype in DTYPE_BYTES)) fail(file, `tensor '${name}': unknown dtype ${describe(entry.dtype)}`);
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
function headerLength(path: string, fileSize: number, lengthBytes: Buffer): number {
  if (fileSize < 8) fail(path, `file of ${fileSize} bytes is too short for a safetensors header`);
  const length = lengthBytes.readBigUInt64LE(0);
  if (length > BigInt(Math.min(MAX_HEADER_BYTES, fileSize - 8))) {
    fail(path, `header length ${length} exceeds the file (${fileSize} bytes) or the 100 MB limit`);
  }
  return Number(length);
}

export class SafetensorsFile {
  readonly path: string;
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  readonly metadata: Readonly<Record<string, string>>;
  private readonly dataStart: number;

  private constructor(path: string, tensors: Map<string, TensorInfo>, metadata: Record<string, string>, dataStart: number) {
    this.path = path;
    this.tensors = tensors;
    this.metadata = metadata;
    this.dataStart = dataStart;
  }

  /** Reads and validates the header (only the header) of `path`; see load() for the asynchronous form. */
  static open(path: string): SafetensorsFile {
    expectPath(path, 'SafetensorsFile.open');
    const { fd, size } = openRegularSync(path);
    try {
      const lengthBytes = Buffer.alloc(8);
      if (size >= 8) fs.readSync(fd, lengthBytes, 0, 8, 0);
      const header = Buffer.alloc(headerLength(path, size, lengthBytes));
      if (fs.readSync(fd, header, 0, header.length, 8) !== header.length) fail(path, 'the header is truncated');
      return SafetensorsFile.parse(path, size, header);
    } catch (error) {
      if (error instanceof MoeError) throw error;
      fail(path, `cannot read: ${error instanceof Error ? error.message : describe(error)}`);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** open() without blocking the event loop on the file system. */
  static async load(path: string): Promise<SafetensorsFile> {
    expectPath(path, 'SafetensorsFile.load');
    const { handle, size } = await openRegular(path);
    try {
      const lengthBytes = Buffer.alloc(8);
      if (size >= 8) await readFully(handle, path, lengthBytes, 0, 'header length');
      const header = Buffer.alloc(headerLength(path, size, lengthBytes));
      await readFully(handle, path, header, 8, 'header');
      return SafetensorsFile.parse(path, size, header);
    } finally {
      await handle.close();
    }
  }

  private static parse(path: string, fileSize: number, header: Buffer): SafetensorsFile {
    let parsed: unknown;
    try {
      parsed = JSON.parse(header.toString('utf8'));
    } catch (error) {
      // (Deep nesting is a RangeError from the parser: reported here as well.)
      fail(path, `header is not valid JSON: ${error instanceof Error ? error.message : describe(error)}`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) fail(path, 'header is not a JSON object');
    const dataStart = 8 + header.length;
    const dataSize = fileSize - dataStart;
    const tensors = new Map<string, TensorInfo>();
    let metadata: Record<string, string> = {};
    for (const [name, value] of Object.entries(parsed as Record<string, unknown>)) {
      if (name === '__metadata__') {
        metadata = value as Record<string, string>;
        continue;
      }
      tensors.set(name, parseEntry(path, name, value));
    }
    // The data section must be covered exactly: no gaps, no overlaps, nothing past the end.
    const ranges = [...tensors.values()].sort((a, b) => a.begin - b.begin || a.end - b.end);
    let cursor = 0;
    for (const t of ranges) {
      if (t.begin !== cursor) fail(path, `tensor '${t.name}' starts at byte ${t.begin}, expected ${cursor} (a gap or an overlap)`);
      cursor = t.end;
    }
    if (cursor !== dataSize) fail(path, `tensors cover ${cursor} data bytes, the file holds ${dataSize} (truncated or padded)`);
    return new SafetensorsFile(path, tensors, metadata, dataStart);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) fail(this.path, `tensor '${name}' is missing`);
    return t;
  }

  /**
   * Reads tensor `name` into `into` (a view of exactly its byte length), or
   * into a new buffer, without blocking the event loop. Returns the bytes.
   */
  async read(name: string, into?: Uint8Array): Promise<Uint8Array> {
    const t = this.info(name);
    const length = t.end - t.begin;
    const target = into ?? new Uint8Array(length);
    if (target.byteLength !== length) fail(this.path, `tensor '${name}' has ${length} bytes, the destination ${target.byteLength}`);
    const { handle } = await openRegular(this.path);
    try {
      await readFully(handle, this.path, target, this.dataStart + t.begin, `tensor '${name}'`);
    } finally {
      await handle.close();
    }
    return target;
  }
}

/**
 * Writes tensors in the safetensors format (for tests and tools; the header
 * is padded with spaces to an 8-byte boundary, as the reference writer does).
 */
export function writeSafetensors(
  path: string,
  tensors: Record<string, { dtype: SafetensorsDType; shape: readonly number[]; bytes: Uint8Array }>,
  metadata?: Record<string, string>,
): void {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes.byteLength] };
    offset += t.bytes.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const fd = fs.openSync(path, 'w');
  try {
    fs.writeSync(fd, length);
    fs.writeSync(fd, json);
    for (const t of Object.values(tensors)) fs.writeSync(fd, t.bytes);
  } finally {
    fs.closeSync(fd);
  }
}

export function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}
