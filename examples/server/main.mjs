#!/usr/bin/env node
// The MoE layer as an HTTP service. See README.md in this folder.
//   node main.mjs [--model DIR --layer N | --scale 8 --seed 1] [--port 3000] [--host 127.0.0.1] [--unbatched]
//                 [--max-batch-tokens 256] [--max-rows 64] [--max-wait-ms N] [--deadline-ms N] [--device cuda] [--log]
//                 [--workers N] [--no-mmap]
import cluster from 'node:cluster';
import { parseArgs } from 'node:util';
import { buildServer } from './app.mjs';
import { reportListening, runPrimary } from './cluster.mjs';
import { loadLayer } from './layer.mjs';

const { values: args } = parseArgs({
  options: {
    model: { type: 'string' },
    layer: { type: 'string', default: '3' },
    scale: { type: 'string', default: '8' },
    seed: { type: 'string', default: '1' },
    device: { type: 'string', default: 'cpu' },
    port: { type: 'string', default: '3000' },
    host: { type: 'string', default: '127.0.0.1' },
    unbatched: { type: 'boolean', default: false },
    'max-batch-tokens': { type: 'string', default: '256' },
    'max-rows': { type: 'string', default: '64' },
    'max-wait-ms': { type: 'string' },
    'deadline-ms': { type: 'string' },
    log: { type: 'boolean', default: false },
    workers: { type: 'string', default: '0' },
    'no-mmap': { type: 'boolean', default: false },
  },
});

const int = (name) => {
  const n = Number(args[name]);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer, got ${args[name]}`);
  return n;
};

// The CPU kernels' pool threads watch for the next parallel region for a
// while before they sleep (MOE_CPU_SPIN_US, 100 us by default): good for a
// process that only runs forwards, but here they share the cores with the
// event loop, which has each batch's answers to write and the next requests
// to read as a forward ends. Side by side on 2 vCPUs (H = 896), without the
// watch the server took 60-290 us less CPU per request for a lone client
// and gave 1.02-1.43x its requests/s; at 64 connections 0.84-1.26x (noisy,
// a shared machine). So this server lets its threads sleep unless told
// otherwise (set before the first forward creates the pool; cluster
// workers inherit it).
process.env.MOE_CPU_SPIN_US ??= '0';

if (int('workers') > 0 && cluster.isPrimary) {
  runPrimary(int('workers'));
} else {
  await serve();
}

async function serve() {
  const layer = await loadLayer({ model: args.model, layer: int('layer'), scale: int('scale'), seed: int('seed'), device: args.device, mmap: !args['no-mmap'] });
  const app = buildServer({
    layer,
    batched: !args.unbatched,
    maxBatchTokens: int('max-batch-tokens'),
    maxRows: int('max-rows'),
    maxWaitMs: args['max-wait-ms'] === undefined ? undefined : int('max-wait-ms'),
    deadlineMs: args['deadline-ms'] === undefined ? undefined : int('deadline-ms'),
    logger: args.log,
  });
  const address = await app.listen({ port: int('port'), host: args.host });
  const c = layer.config;
  // One line on stdout that tools (bench serve) wait for.
  console.log(`moe-server listening on ${address} (H=${c.hiddenSize} I=${c.intermediateSize} E=${c.numExperts}, ${args.unbatched ? 'unbatched' : 'batched'})`);
  reportListening(address);

  let stopping = false;
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.on(signal, async () => {
      if (stopping) return;
      stopping = true;
      console.log(`moe-server: ${signal}: draining`);
      await app.drain();
      console.log('moe-server: drained, exiting');
      process.exit(0);
    });
  }
}
