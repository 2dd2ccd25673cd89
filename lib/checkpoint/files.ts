/**
 * Opening checkpoint files, which come from anywhere: only regular files are
 * read (a FIFO would block an open or a read forever, a directory gives raw
 * EISDIR, a symlink to /dev/zero never ends), each up to a size limit, and
 * every failure is an ERR_MOE_CHECKPOINT naming the file. Symlinks to regular
 * files are followed: Hugging Face's cache links snapshots to blobs.
 */
import * as fs from 'node:fs';
import { MoeError, describe } from '../errors';

/** config.json and model.safetensors.index.json: DeepSeek-V3's index is ~9 MB. */
export const MAX_JSON_BYTES = 64 * 2 ** 20;

export function checkpointError(file: string, message: string): never {
  throw new MoeError('ERR_MOE_CHECKPOINT', `${file}: ${message}`);
}

/** A path argument: a non-empty string without NUL bytes. */
export function expectPath(file: unknown, what: string): string {
  if (typeof file !== 'string' || file === '' || file.includes('\0')) {
    throw new MoeError('ERR_MOE_ARGUMENT', `${what}: expected a file or directory path, got ${describe(file)}`);
  }
  return file;
}

// O_NONBLOCK: opening a FIFO without a writer returns at once instead of
// waiting for one (reads of a regular file ignore the flag).
const OPEN_FLAGS = fs.constants.O_RDONLY | fs.constants.O_NONBLOCK;

function notRegular(file: string, stats: fs.Stats): never {
  const kind = stats.isDirectory() ? 'a directory' : stats.isFIFO() ? 'a FIFO' : stats.isCharacterDevice() ? 'a character device' : stats.isSocket() ? 'a socket' : 'not a regular file';
  checkpointError(file, `expected a regular file, found ${kind}`);
}

/** Opens `file` for reading (a regular file only); the caller closes the handle. */
export async function openRegular(file: string): Promise<{ handle: fs.promises.FileHandle; size: number }> {
  let handle: fs.promises.FileHandle;
  try {
    handle = await fs.promises.open(file, OPEN_FLAGS);
  } catch (error) {
    checkpointError(file, `cannot open: ${(error as Error).message}`);
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) notRegular(file, stats);
    return { handle, size: stats.size };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/** The synchronous form, for SafetensorsFile.open. */
export function openRegularSync(file: string): { fd: number; size: number } {
  let fd: number;
  try {
    fd = fs.openSync(file, OPEN_FLAGS);
  } catch (error) {
    checkpointError(file, `cannot open: ${(error as Error).message}`);
  }
  const stats = fs.fstatSync(fd);
  if (!stats.isFile()) {
    fs.closeSync(fd);
    notRegular(file, stats);
  }
  return { fd, size: stats.size };
}

/** Reads exactly `length` bytes at `position` (a short file is an error). */
export async function readFully(handle: fs.promises.FileHandle, file: string, target: Uint8Array, position: number, what: string): Promise<void> {
  let done = 0;
  while (done < target.byteLength) {
    // A single read moves at most 2 GiB.
    const chunk = Math.min(target.byteLength - done, 1 << 30);
    let bytesRead: number;
    try {
      ({ bytesRead } = await handle.read(target, done, chunk, position + done));
    } catch (error) {
      checkpointError(file, `${what}: cannot read: ${(error as Error).message}`);
    }
    if (bytesRead === 0) checkpointError(file, `${what}: unexpected end of file (truncated?)`);
    done += bytesRead;
  }
}

/** A JSON object from a regular file of at most MAX_JSON_BYTES, read asynchronously. */
export async function readJsonObject(file: string): Promise<Record<string, unknown>> {
  const { handle, size } = await openRegular(file);
  let text: string;
  try {
    if (size > MAX_JSON_BYTES) checkpointError(file, `${size} bytes is over the ${MAX_JSON_BYTES}-byte limit for a JSON file`);
    const bytes = new Uint8Array(size);
    await readFully(handle, file, bytes, 0, 'JSON');
    text = Buffer.from(bytes.buffer, 0, size).toString('utf8');
  } finally {
    await handle.close();
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    // (Deep nesting is a RangeError from the parser: reported here as well.)
    checkpointError(file, `invalid JSON: ${error instanceof Error ? error.message : describe(error)}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) checkpointError(file, 'expected a JSON object');
  return value as Record<string, unknown>;
}
