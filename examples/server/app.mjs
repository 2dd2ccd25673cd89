// The HTTP service: POST /v1/moe/forward, GET /health, GET /metrics.
import Fastify from 'fastify';
import { forwardRoute } from './forward-route.mjs';
import { createMetrics } from './metrics.mjs';

/**
 * options: { layer, batched (default true), maxBatchTokens, maxQueueTokens, maxWaitMs,
 * maxRows (rows per request), bodyLimit (bytes), deadlineMs, logger }.
 */
export function buildServer(options) {
  const { layer, batched = true, maxRows = 64, deadlineMs, logger = false } = options;
  const hidden = layer.config.hiddenSize;
  // The largest body: maxRows rows of f32, or the same as JSON (~12 bytes a number).
  const bodyLimit = options.bodyLimit ?? Math.max(1 << 20, maxRows * hidden * 12);
  const app = Fastify({ logger, bodyLimit });
  const batcher = batched
    ? layer.batcher({ out: 'f32', maxBatchTokens: options.maxBatchTokens ?? 256, maxQueueTokens: options.maxQueueTokens, maxWaitMs: options.maxWaitMs })
    : undefined;
  const metrics = createMetrics();
  let draining = false;

  // While draining, every answer closes its connection: a keep-alive
  // connection left idle would hold the shutdown for keepAliveTimeout (72 s).
  // (A callback hook: an async one costs every answer a Promise and its turns.)
  app.addHook('onSend', (request, reply, payload, done) => {
    if (draining) reply.header('connection', 'close');
    done(null, payload);
  });
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer', bodyLimit }, (request, body, done) => done(null, body));
  app.post('/v1/moe/forward', forwardRoute({ layer, batcher, maxRows, deadlineMs, metrics }));
  app.get('/health', async (request, reply) => {
    const stats = batcher?.stats();
    if (draining) reply.code(503);
    return {
      status: draining ? 'draining' : 'ok',
      batched: Boolean(batcher),
      hiddenSize: hidden,
      ...(stats && { queuedRequests: stats.queuedRequests, batches: stats.batches, batchedTokens: stats.batchedTokens, meanBatchTokens: stats.meanBatchTokens }),
    };
  });
  app.get('/metrics', async (request, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });

  /** Graceful shutdown: /health says draining, no new connections, in-flight requests answered, then the batcher drained. */
  app.drain = async () => {
    draining = true;
    const closed = app.close(); // stops listening; resolves once in-flight requests are answered
    await batcher?.close(); // queued requests go now, without waiting for company
    await closed;
    metrics.close();
  };
  return app;
}
