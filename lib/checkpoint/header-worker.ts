/**
 * The worker thread of header-thread.ts: parses and validates one
 * safetensors header (header.ts, the same rule as inline) and posts it back
 * in the compact form, its numbers transferred, or the error's code and
 * message.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { MoeError } from '../errors';
import { encodeHeader, parseHeader } from './header';

const { path, fileSize, header, prefixes } = workerData as { path: string; fileSize: number; header: Uint8Array; prefixes?: string[] };
try {
  const encoded = encodeHeader(parseHeader(path, fileSize, header, prefixes));
  parentPort!.postMessage({ encoded }, [encoded.numbers.buffer as ArrayBuffer]);
} catch (error) {
  const code = error instanceof MoeError ? error.code : undefined;
  parentPort!.postMessage({ error: { code, message: error instanceof Error ? error.message : String(error) } });
}
