/**
 * Checkpoint bytes mapped instead of read: a view of a file range through
 * the page cache, so that every process that maps the same checkpoint
 * (node:cluster workers, several services on one host) holds one copy of
 * its pages. The mapping is copy-on-write: a write through a view copies
 * that page into the process; the file is never changed.
 *
 * The rule that comes with it: a checkpoint file must not be truncated or
 * rewritten in place while a layer maps it (replacing it with a new file,
 * rename over the old path, is fine). The size is checked when the range is
 * mapped, but a file truncated afterwards takes its pages with it and the
 * next read of them is a SIGBUS, which no library can turn into an error.
 *
 * A mapping is released when the garbage collector frees its buffer.
 */
import { MoeError } from '../errors';
import { native } from '../native';
import { checkpointError } from './files';
import type { SafetensorsFile } from './safetensors';

/** The buffers made here: what memory accounting reports as mapped (shared) rather than private. */
const mappedBuffers = new WeakSet<ArrayBufferLike>();

/**
 * Maps the bytes of tensors `first` through `last` of `file`, which must lie
 * back to back in it (gate_proj then up_proj, say); the file's size must
 * still be the one its header was validated against.
 */
export function mapTensors(file: SafetensorsFile, first: string, last = first): Uint8Array {
  const from = file.byteRange(first);
  const to = file.byteRange(last);
  if (to.offset < from.offset) checkpointError(file.path, `cannot map '${first}' through '${last}': '${last}' comes first`);
  const length = to.offset + to.length - from.offset;
  let buffer: ArrayBuffer;
  try {
    buffer = native().mapFileRange(file.path, from.offset, length, file.size);
  } catch (error) {
    // The native error names the file and the cause (a changed size, ENOMEM, ...): one code for all of them.
    if (error instanceof MoeError) checkpointError(file.path, `cannot map '${first}': ${error.message.replace(`${file.path}: `, '')}`);
    throw error;
  }
  mappedBuffers.add(buffer);
  return new Uint8Array(buffer);
}

/** Whether `view`'s memory is mapped from a checkpoint file (shared page cache) rather than the process's own. */
export function isMapped(view: ArrayBufferView): boolean {
  return mappedBuffers.has(view.buffer);
}
