// --workers N: N node:cluster worker processes sharing the port, each with
// its own layer. With a checkpoint (--model) the workers map the same fp8
// expert weights, so the page cache holds one copy of them for all; a
// random layer (or --no-mmap) is a private copy per worker.
import cluster from 'node:cluster';

/** In the primary: forks `count` workers, forwards SIGTERM/SIGINT to them, prints one line once all listen. */
export function runPrimary(count) {
  let listening = 0;
  let address = '';
  for (let i = 0; i < count; i++) cluster.fork();
  cluster.on('message', (_worker, message) => {
    if (message?.type !== 'listening') return;
    address = message.address;
    if (++listening === count) {
      const pids = Object.values(cluster.workers).map((w) => w.process.pid).join(',');
      console.log(`moe-server primary: ${count} workers (pids ${pids}) listening on ${address}`);
    }
  });
  cluster.on('exit', (worker, code, signal) => {
    if (!stopping) console.error(`moe-server primary: worker ${worker.process.pid} exited (${signal ?? code})`);
    if (Object.keys(cluster.workers).length === 0) process.exit(stopping ? 0 : 1);
  });
  let stopping = false;
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.on(signal, () => {
      stopping = true;
      for (const worker of Object.values(cluster.workers)) worker.process.kill(signal);  // each drains, then exits
    });
  }
}

/** In a worker: tells the primary it listens. */
export function reportListening(address) {
  if (cluster.isWorker) process.send({ type: 'listening', address });
}
