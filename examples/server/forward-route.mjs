// POST /v1/moe/forward: one request's rows [rows, H] in, the layer's output
// rows out.
//   application/octet-stream: little-endian f32 (default) or bf16 values,
//     `?dtype=bf16`; the answer is f32 bytes (`?out=bf16` for bf16) with
//     the header x-moe-shape: rows,H.
//   application/json: { "x": [[...H numbers], ...] } or { "x": [...H numbers] };
//     the answer is { "shape": [rows, H], "y": [[...], ...] }.
// Errors: 400 (bad body, wrong width, NaN), 413 (body or rows over the
// limits), 503 (queue full: retry later; or shutting down), 504 (deadline).
import { setMaxListeners } from 'node:events';
import { bf16FromFloat32, tensor } from 'moe-kernels';

const STATUS = {
  ERR_MOE_QUEUE_FULL: 503,
  ERR_MOE_CLOSED: 503,
  ERR_MOE_DEADLINE: 504,
  ERR_MOE_SHAPE: 400,
  ERR_MOE_DTYPE: 400,
  ERR_MOE_NONFINITE: 400,
  ERR_MOE_ARGUMENT: 400,
  ERR_MOE_RANGE: 400,
};

class HttpError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The request's rows as a Float32Array, a Uint16Array of bf16 bits, or a Buffer with its dtype. */
function rowsOf(request, hidden, maxRows) {
  const body = request.body;
  if (Buffer.isBuffer(body)) {
    const dtype = request.query.dtype ?? 'f32';
    if (dtype !== 'f32' && dtype !== 'bf16') throw new HttpError(400, 'ERR_BAD_DTYPE', `dtype must be f32 or bf16, got ${dtype}`);
    const rowBytes = hidden * (dtype === 'f32' ? 4 : 2);
    if (body.length === 0 || body.length % rowBytes !== 0) {
      throw new HttpError(400, 'ERR_MOE_SHAPE', `the body must hold whole rows of ${hidden} ${dtype} values (${rowBytes} bytes each), got ${body.length} bytes`);
    }
    const rows = body.length / rowBytes;
    if (rows > maxRows) throw new HttpError(413, 'ERR_TOO_MANY_ROWS', `at most ${maxRows} rows per request, got ${rows}`);
    return { input: body, dtype, rows };
  }
  const x = body?.x;
  if (!Array.isArray(x) || x.length === 0) throw new HttpError(400, 'ERR_BAD_BODY', 'expected a JSON body { "x": [[...], ...] } or { "x": [...] }');
  const matrix = Array.isArray(x[0]) ? x : [x];
  if (matrix.length > maxRows) throw new HttpError(413, 'ERR_TOO_MANY_ROWS', `at most ${maxRows} rows per request, got ${matrix.length}`);
  const values = new Float32Array(matrix.length * hidden);
  matrix.forEach((row, r) => {
    if (!Array.isArray(row) || row.length !== hidden) throw new HttpError(400, 'ERR_MOE_SHAPE', `x[${r}] must be an array of ${hidden} numbers`);
    for (let i = 0; i < hidden; i++) {
      if (typeof row[i] !== 'number') throw new HttpError(400, 'ERR_BAD_BODY', `x[${r}][${i}] is not a number`);
      values[r * hidden + i] = row[i];
    }
  });
  return { input: values, dtype: 'f32', rows: matrix.length };
}

// One signal per connection, aborted when it closes: a request still
// unanswered then leaves the queue (or its batch); answered ones have let go
// of the signal. Made once per connection, not per request: an
// AbortController and a 'close' listener per request were a lone client's
// cost on every request.
const connectionSignals = new WeakMap();

/** Aborted when the client goes away before its answer: its rows leave the queue. */
function clientSignal(request) {
  const socket = request.raw.socket;
  let signal = connectionSignals.get(socket);
  if (!signal) {
    const controller = new AbortController();
    signal = controller.signal;
    // Pipelined requests on one connection each listen while they wait.
    setMaxListeners(0, signal);
    socket.once('close', () => controller.abort(new Error('the client closed the connection')));
    connectionSignals.set(socket, signal);
  }
  return signal;
}

export function forwardRoute({ layer, batcher, maxRows, deadlineMs, metrics }) {
  const hidden = layer.config.hiddenSize;

  /** The layer's rows y (Tensor<'f32'> [rows, H]) as the answer, in the request's encoding. */
  // (Counted once the answer is on its way: the count is not the client's wait.)
  function answer(request, reply, y, rows) {
    if (Buffer.isBuffer(request.body)) {
      const data = request.query.out === 'bf16' ? bf16FromFloat32(y.data, y.shape).data : y.data;
      const out = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      reply.header('content-type', 'application/octet-stream').header('x-moe-shape', `${rows},${hidden}`).send(out);
    } else {
      const matrix = [];
      for (let r = 0; r < rows; r++) matrix.push(Array.from(y.data.subarray(r * hidden, (r + 1) * hidden)));
      reply.send({ shape: [rows, hidden], y: matrix });
    }
    metrics?.requests.inc({ status: 200 });
  }

  function fail(reply, e) {
    const status = e instanceof HttpError ? e.status : (STATUS[e.code] ?? (e.name === 'AbortError' ? 499 : 500));
    metrics?.requests.inc({ status });
    if (status === 503) reply.header('retry-after', '1');
    reply.code(status).send({ error: e.code ?? e.name, message: e.message });
  }

  // A callback-style handler: it returns nothing and answers when the rows
  // settle. As an async function it cost every request its promise, and the
  // reply it returned was resolved as a thenable (Reply#then) before Fastify
  // let go of it: three more promise jobs per request on the JS thread.
  return function forward(request, reply) {
    let pending; // Promise<Tensor<'f32'>> [rows, H]
    let rows;
    try {
      const body = rowsOf(request, hidden, maxRows);
      rows = body.rows;
      if (batcher) {
        pending = batcher.submit(body.input, { dtype: body.dtype, signal: clientSignal(request), deadlineMs });
      } else {
        // Unbatched: one forward per request (for comparison). A running
        // forward cannot be called off, so no signal is made for it.
        const x = Buffer.isBuffer(body.input) ? tensor(body.input, [rows, hidden], body.dtype) : tensor(body.input, [rows, hidden]);
        pending = layer.forward(x, { out: 'f32' });
      }
    } catch (e) {
      fail(reply, e);
      return;
    }
    pending.then(
      (y) => {
        try {
          answer(request, reply, y, rows);
        } catch (e) {
          fail(reply, e);
        }
      },
      (e) => fail(reply, e),
    );
  };
}
