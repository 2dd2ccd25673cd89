// Expert parallelism's GPU exchange on real GPUs: run with one rank per GPU,
//   mpirun -np 2 node scripts/ep/nccl-check.mjs      (needs 2+ GPUs, MPI,
//   libnccl.so.2, build-mpi/libmoe_mpi.so and build-cuda/libmoe_cuda.so)
// Each rank picks GPU = its local rank, joins the NCCL communicator (unique
// id broadcast over MPI), sends a different number of rows to every rank,
// bytes that name (source, destination, row, byte), and checks every
// received byte; then runs the expert-parallel layer on the GPUs (its rows
// over NCCL) and compares each rank's output with the whole layer run on the
// CPU over the concatenated batch. Prints `ep-nccl: ok ...` and
// `ep-nccl layer: ok ...` on every rank, or the failure.
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const localRank = process.env.OMPI_COMM_WORLD_LOCAL_RANK ?? process.env.MPI_LOCALRANKID ?? '0';
process.env.MOE_CUDA_DEVICE = localRank; // before the plug-in is loaded
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const moe = createRequire(import.meta.url)(root);
const { native } = createRequire(import.meta.url)(path.join(root, 'dist', 'native.js'));

const ep = moe.initExpertParallel({ timeoutMs: 30000 });
const cuda = moe.backends().find((b) => b.name === 'cuda');
if (!cuda.available) {
  console.log(`ep-nccl: rank ${ep.rank}: CUDA unavailable: ${cuda.reason}`);
  process.exit(1);
}
const nccl = native().epNcclInit();
if (!nccl.available) {
  console.log(`ep-nccl: rank ${ep.rank}: NCCL unavailable: ${nccl.reason}`);
  process.exit(1);
}
const rowBytes = 272; // not a multiple of 256: no alignment is assumed
const rows = (from, to) => 3 + from + 2 * to; // rows rank `from` sends to rank `to`
const byte = (from, to, row, i) => (from * 37 + to * 11 + row * 5 + i) & 0xff;
const sendRows = Array.from({ length: ep.size }, (_, d) => rows(ep.rank, d));
const recvRows = Array.from({ length: ep.size }, (_, s) => rows(s, ep.rank));
const total = (a) => a.reduce((x, y) => x + y, 0);
const host = new Uint8Array(total(sendRows) * rowBytes);
let offset = 0;
for (let d = 0; d < ep.size; d++) {
  for (let r = 0; r < sendRows[d]; r++) for (let i = 0; i < rowBytes; i++) host[offset++] = byte(ep.rank, d, r, i);
}
const send = moe.tensor(host, [host.length], 'fp8_e4m3').to('cuda');
const recv = moe.tensor(new Uint8Array(total(recvRows) * rowBytes).fill(0xee), [total(recvRows) * rowBytes], 'fp8_e4m3').to('cuda');
const start = performance.now();
native().epNcclExchange({ send, recv, rowBytes, sendRows, recvRows });
const ms = performance.now() - start;
const got = recv.to('cpu').data;
let bad = 0;
offset = 0;
for (let s = 0; s < ep.size; s++) {
  for (let r = 0; r < recvRows[s]; r++) for (let i = 0; i < rowBytes; i++) if (got[offset++] !== byte(s, ep.rank, r, i)) bad++;
}
console.log(`ep-nccl: rank ${ep.rank}/${ep.size} GPU ${localRank} NCCL ${nccl.version}: ${bad === 0 ? 'ok' : `${bad} WRONG bytes`} (${got.length} bytes received, ${ms.toFixed(2)} ms)`);

// The layer forward with its rows over NCCL, against the whole layer on the CPU.
const config = { ...moe.DEEPSEEK_V3_CONFIG, hiddenSize: 512, intermediateSize: 256, numExperts: 16, topK: 4, numGroups: 4, topKGroups: 2 };
const batches = Array.from({ length: ep.size }, (_, r) => 5 + 7 * r);
const h = config.hiddenSize;
const all = new Float32Array(total(batches) * h);
for (let i = 0, s = 12345; i < all.length; i++) all[i] = ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5) * 2;
const first = total(batches.slice(0, ep.rank));
const layer = moe.MoeLayer.random(config, { seed: 7, ep, device: 'cuda' });
const whole = moe.MoeLayer.random(config, { seed: 7, device: 'cpu' });
const y = (await layer.forward(moe.tensor(all.slice(first * h, (first + batches[ep.rank]) * h), [batches[ep.rank], h]))).to('cpu').toFloat32Array();
const want = whole.forwardSync(moe.tensor(all, [total(batches), h])).toFloat32Array().subarray(first * h, (first + batches[ep.rank]) * h);
const { calcDiff } = createRequire(import.meta.url)(path.join(root, 'dist', 'bench', 'diff.js'));
const diff = calcDiff(y, want);
const { deviceRows } = native().epShardStats(layer.epHandle.handle);
const layerOk = diff < 2e-3 && deviceRows && y.every(Number.isFinite);
console.log(`ep-nccl layer: rank ${ep.rank}: ${layerOk ? 'ok' : 'FAILED'} (${batches[ep.rank]} tokens, diff ${diff.toExponential(2)} against the whole layer, rows over NCCL: ${deviceRows})`);
process.exitCode = bad === 0 && layerOk ? 0 : 1;
