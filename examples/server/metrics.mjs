// Prometheus metrics, fed from the batcher's diagnostics channel: the server
// never times batches itself, it observes what the package publishes.
import diagnosticsChannel from 'node:diagnostics_channel';
import client from 'prom-client';
import { BATCH_CHANNEL } from 'moe-kernels';

// Batches are recorded as they end and folded into the metrics in runs of
// up to FOLD_EVERY, or when /metrics is read. Updated one batch at a time
// (six prom-client calls, label hashing among them), with the caches cold
// from the forward that just ended, they cost a lone client 5-8 us of the
// event loop on every request (perf, 2-vCPU EPYC).
const FOLD_EVERY = 64;

export function createMetrics() {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry });
  const ms = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000];
  let pending = [];
  const fold = () => {
    const events = pending;
    pending = [];
    for (const e of events) {
      batches.inc({ graph: String(e.graph), failed: String(e.failed) });
      tokens.inc(e.tokens);
      batchTokens.observe(e.tokens);
      if (e.expertsHit >= 0) experts.observe(e.expertsHit);
      queue.observe(e.queueMs);
      compute.observe(e.computeMs);
    }
  };
  // The first of these metrics folds what is pending before any of them is read (prom-client reads them in registration order).
  const batches = new client.Counter({ name: 'moe_batches_total', help: 'Forwards run by the batcher', labelNames: ['graph', 'failed'], registers: [registry], collect: fold });
  const tokens = new client.Counter({ name: 'moe_tokens_total', help: 'Rows computed for requests', registers: [registry] });
  const batchTokens = new client.Histogram({ name: 'moe_batch_tokens', help: 'Rows per batch', buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512], registers: [registry] });
  const experts = new client.Histogram({ name: 'moe_batch_experts_hit', help: 'Routed experts that received a token, per batch', buckets: [1, 8, 16, 32, 64, 128, 192, 256], registers: [registry] });
  const queue = new client.Histogram({ name: 'moe_batch_queue_ms', help: 'Mean time the requests of a batch waited in the queue, ms', buckets: ms, registers: [registry] });
  const compute = new client.Histogram({ name: 'moe_batch_compute_ms', help: 'Wall time of a batch forward, ms', buckets: ms, registers: [registry] });
  const requests = new client.Counter({ name: 'moe_requests_total', help: 'HTTP forward requests by outcome', labelNames: ['status'], registers: [registry] });

  const onBatch = (e) => {
    pending.push(e);
    if (pending.length >= FOLD_EVERY) fold();
  };
  diagnosticsChannel.subscribe(BATCH_CHANNEL, onBatch);
  return {
    registry,
    requests,
    close: () => {
      diagnosticsChannel.unsubscribe(BATCH_CHANNEL, onBatch);
      fold();
    },
  };
}
