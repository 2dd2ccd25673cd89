/**
 * The package's one error class. Every failure — a bad argument caught in
 * TypeScript, or a status returned by native code — is a MoeError whose
 * `code` says what kind of problem it is and whose message names the argument,
 * what was expected and what was given.
 */
export type MoeErrorCode =
  | 'ERR_MOE_SHAPE' // wrong rank or extent
  | 'ERR_MOE_DTYPE' // wrong element type or container
  | 'ERR_MOE_RANGE' // an index or option outside its range
  | 'ERR_MOE_NONFINITE' // NaN or infinity where finite values are required
  | 'ERR_MOE_DETACHED' // a buffer whose memory was transferred or freed
  | 'ERR_MOE_ARGUMENT' // an argument of the wrong kind altogether
  | 'ERR_MOE_UNSUPPORTED' // the backend cannot run this operation
  | 'ERR_MOE_DEVICE' // tensors on different devices, or a device that is not available
  | 'ERR_MOE_CHECKPOINT' // a checkpoint file is missing, malformed or lacks a tensor
  | 'ERR_MOE_QUEUE_FULL' // a batcher's queue holds maxQueueTokens already: retry later (backpressure)
  | 'ERR_MOE_DEADLINE' // a batcher request's deadline passed before its result was ready
  | 'ERR_MOE_CLOSED' // submitted to a batcher (or a layer) that was closed or disposed
  | 'ERR_MOE_NATIVE' // the native addon could not be loaded
  | 'ERR_MOE_EP_TIMEOUT' // expert parallelism: an exchange did not complete in time (a peer died, hangs or skipped it)
  | 'ERR_MOE_EP_PEER' // expert parallelism: another rank failed this forward (its error is in the message)
  | 'ERR_MOE_EP_CONFIG' // expert parallelism: the ranks disagree on the layer or the rank layout
  | 'ERR_MOE_EP_PROTOCOL' // expert parallelism: a received count, header or payload is malformed
  | 'ERR_MOE_EP_TRANSPORT' // expert parallelism: the transport failed, is absent, or is unusable after a failure
  | 'ERR_MOE_INTERNAL'; // a bug or an allocation failure

export class MoeError extends Error {
  readonly code: MoeErrorCode;

  constructor(code: MoeErrorCode, message: string) {
    super(message);
    this.name = 'MoeError';
    this.code = code;
  }
}

/**
 * Formats a value for an error message: shapes as [a, b], strings quoted.
 * Never throws: it describes hostile values too (Symbols, objects without a
 * prototype, Proxies and getters that throw).
 */
export function describe(value: unknown): string {
  try {
    if (Array.isArray(value)) return value.length > 16 ? `array(${value.length})` : `[${value.map(describe).join(', ')}]`;
    if (typeof value === 'string') return `'${value.length > 64 ? `${value.slice(0, 64)}...` : value}'`;
    if (typeof value === 'symbol' || typeof value === 'bigint') return `${typeof value} ${String(value)}`;
    if (ArrayBuffer.isView(value)) return `${value.constructor.name}(${(value as Uint8Array).length})`;
    if (value === null) return 'null';
    if (typeof value === 'function') return 'function';
    if (typeof value === 'object') {
      const name = (value as { constructor?: { name?: unknown } }).constructor?.name;
      return typeof name === 'string' && name !== '' ? name : 'object';
    }
    return String(value);
  } catch {
    return typeof value;
  }
}
