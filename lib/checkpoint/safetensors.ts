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
import { ParsedHeader, SafetensorsDType, TensorInfo, headerLength, parseHeader } from './header';
import { parseHeaderAsync } from './header-thread';
import { expectOptions } from '../validate';

export type { SafetensorsDType, TensorInfo } from './header';

/** Options of SafetensorsFile.load. */
export interface SafetensorsLoadOptions {
  /**
   * Keep only the tensors whose names start with one of these (every entry
   * is still validated): a caller that needs one layer of a shard with a
   * huge header then receives a few entries instead of a million.
   */
  prefixes?: readonly string[];
}

function fail(file: string, message: string): never {
  throw new MoeError('ERR_MOE_CHECKPOINT', `${file}: ${message}`);
}

export class SafetensorsFile {
  readonly path: string;
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  readonly metadata: Readonly<Record<string, string>>;
  /** The file's size when its header was validated against it. */
  readonly size: number;
  private readonly dataStart: number;

  private constructor(path: string, size: number, parsed: ParsedHeader) {
    this.path = path;
    this.size = size;
    this.tensors = parsed.tensors;
    this.metadata = parsed.metadata;
    this.dataStart = parsed.dataStart;
  }

  /**
   * Reads and validates the header (only the header) of `path`. Synchronous:
   * it blocks the event loop for the reads and the parse (seconds for a
   * header near the 100 MB limit); see load() for the asynchronous form.
   */
  static open(path: string): SafetensorsFile {
    expectPath(path, 'SafetensorsFile.open');
    const { fd, size } = openRegularSync(path);
    try {
      const lengthBytes = Buffer.alloc(8);
      if (size >= 8) fs.readSync(fd, lengthBytes, 0, 8, 0);
      const header = Buffer.alloc(headerLength(path, size, lengthBytes));
      if (fs.readSync(fd, header, 0, header.length, 8) !== header.length) fail(path, 'the header is truncated');
      return new SafetensorsFile(path, size, parseHeader(path, size, header));
    } catch (error) {
      if (error instanceof MoeError) throw error;
      fail(path, `cannot read: ${error instanceof Error ? error.message : describe(error)}`);
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * open() without blocking the event loop: asynchronous reads, and a header
   * over 1 MiB parsed and validated in a worker thread (header-thread.ts).
   */
  static async load(path: string, options?: SafetensorsLoadOptions): Promise<SafetensorsFile> {
    expectPath(path, 'SafetensorsFile.load');
    const prefixes = expectOptions(options, ['prefixes'], 'SafetensorsFile.load').prefixes as string[] | undefined;
    if (prefixes !== undefined && (!Array.isArray(prefixes) || !prefixes.every((p) => typeof p === 'string'))) {
      throw new MoeError('ERR_MOE_ARGUMENT', `SafetensorsFile.load: options.prefixes must be an array of strings, got ${describe(prefixes)}`);
    }
    const { handle, size } = await openRegular(path);
    try {
      const lengthBytes = Buffer.alloc(8);
      if (size >= 8) await readFully(handle, path, lengthBytes, 0, 'header length');
      const header = new Uint8Array(headerLength(path, size, lengthBytes));
      await readFully(handle, path, header, 8, 'header');
      return new SafetensorsFile(path, size, await parseHeaderAsync(path, size, header, prefixes));
    } finally {
      await handle.close();
    }
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) fail(this.path, `tensor '${name}' is missing`);
    return t;
  }

  /** Where tensor `name`'s bytes are in the file: [offset, offset + length). */
  byteRange(name: string): { offset: number; length: number } {
    const t = this.info(name);
    return { offset: this.dataStart + t.begin, length: t.end - t.begin };
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
