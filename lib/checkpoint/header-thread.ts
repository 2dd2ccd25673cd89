/**
 * Parsing a large safetensors header off the JS thread: JSON.parse and the
 * per-entry checks of a header near the format's 100 MB limit take seconds,
 * so SafetensorsFile.load hands headers over OFF_THREAD_BYTES to a worker
 * thread (header-worker.ts) and decodes its compact answer in slices,
 * yielding to the event loop between them. Smaller headers are parsed
 * inline: a worker costs tens of milliseconds to start.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import { MoeError, MoeErrorCode } from '../errors';
import { EncodedHeader, ParsedHeader, decodeHeader, parseHeader } from './header';

/** Headers over this many bytes are parsed in a worker thread. */
export const OFF_THREAD_BYTES = 2 ** 20;

/** Tensors decoded per turn of the event loop (a few milliseconds' work). */
const DECODE_SLICE = 5_000;

/**
 * The compiled worker: next to this file in dist/; when lib/ runs from
 * source (vitest), the one in dist/ (the test setup rebuilds dist/ when
 * lib/ is newer).
 */
function workerFile(): string {
  const beside = path.join(__dirname, 'header-worker.js');
  return fs.existsSync(beside) ? beside : path.resolve(__dirname, '..', '..', 'dist', 'checkpoint', 'header-worker.js');
}

/** parseHeader in a worker thread; `header` is transferred (detached here). */
export function parseHeaderInWorker(file: string, fileSize: number, header: Uint8Array, prefixes?: readonly string[]): Promise<ParsedHeader> {
  return new Promise<EncodedHeader>((resolve, reject) => {
    // A fresh ArrayBuffer of exactly the header, so that only it is transferred.
    const own = header.byteOffset === 0 && header.byteLength === header.buffer.byteLength ? header : header.slice();
    const worker = new Worker(workerFile(), {
      workerData: { path: file, fileSize, header: own, prefixes: prefixes ? [...prefixes] : undefined },
      transferList: [own.buffer as ArrayBuffer],
    });
    let settled = false;
    worker.once('message', (answer: { encoded?: EncodedHeader; error?: { code?: MoeErrorCode; message: string } }) => {
      settled = true;
      if (answer.encoded) resolve(answer.encoded);
      else reject(new MoeError(answer.error?.code ?? 'ERR_MOE_CHECKPOINT', answer.error?.code ? answer.error.message : `${file}: cannot parse the header: ${answer.error?.message}`));
    });
    worker.once('error', (error) => {
      if (!settled) reject(new MoeError('ERR_MOE_CHECKPOINT', `${file}: cannot parse the header: ${error.message}`));
      settled = true;
    });
    worker.once('exit', (code) => {
      if (!settled) reject(new MoeError('ERR_MOE_CHECKPOINT', `${file}: the header parser stopped (exit code ${code})`));
      settled = true;
    });
  }).then((encoded) => decodeHeader(encoded, DECODE_SLICE, () => yieldToLoop()));
}

/** The asynchronous load's rule: inline up to OFF_THREAD_BYTES, in a worker beyond. */
export function parseHeaderAsync(file: string, fileSize: number, header: Uint8Array, prefixes?: readonly string[]): Promise<ParsedHeader> {
  if (header.byteLength <= OFF_THREAD_BYTES) return Promise.resolve().then(() => parseHeader(file, fileSize, header, prefixes));
  return parseHeaderInWorker(file, fileSize, header, prefixes);
}
