#!/usr/bin/env node
// Memory per worker of `main.mjs --workers N` (Linux): starts the server
// with the given options, sends requests until every worker has run
// forwards over (nearly) all experts, then prints each worker's Rss, Pss,
// and private and shared bytes from /proc/<pid>/smaps_rollup. Pss charges a
// page shared by n processes 1/n to each: the memory a worker really adds.
//   node measure-memory.mjs [--requests-per-worker 20] -- <main.mjs options, e.g. --model DIR --workers 4>
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values: args, positionals: serverArgs } = parseArgs({
  allowPositionals: true,
  options: { 'requests-per-worker': { type: 'string', default: '20' }, port: { type: 'string', default: '3071' } },
});
const main = fileURLToPath(new URL('./main.mjs', import.meta.url));
const server = spawn(process.execPath, [main, '--port', args.port, ...serverArgs], { stdio: ['ignore', 'pipe', 'inherit'] });
const ready = await new Promise((resolve, reject) => {
  let text = '';
  server.stdout.on('data', (d) => {
    text += d;
    const line = text.split('\n').find((l) => l.startsWith('moe-server primary:'));
    if (line) resolve(line);
  });
  server.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
});
const pids = ready.match(/pids ([\d,]+)/)[1].split(',').map(Number);

const url = `http://127.0.0.1:${args.port}`;
const { hiddenSize } = await (await fetch(`${url}/health`)).json();
const rows = 64;
const x = new Float32Array(rows * hiddenSize); // [rows, H]
for (let r = 0; r < Number(args['requests-per-worker']) * pids.length; r++) {
  for (let i = 0; i < x.length; i++) x[i] = Math.random() * 2 - 1; // fresh rows each time: other experts
  await post(`${url}/v1/moe/forward`, Buffer.from(x.buffer));
}

const mib = (kb) => (kb / 1024).toFixed(1);
console.log(`${serverArgs.join(' ')}`);
console.log('worker  Rss MiB  Pss MiB  private MiB  shared MiB');
for (const pid of pids) {
  const fields = Object.fromEntries(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8').split('\n')
    .map((l) => l.match(/^(\w+):\s+(\d+) kB/)).filter(Boolean).map((m) => [m[1], Number(m[2])]));
  console.log(`${String(pid).padStart(6)}  ${mib(fields.Rss).padStart(7)}  ${mib(fields.Pss).padStart(7)}  ${mib(fields.Private_Clean + fields.Private_Dirty).padStart(11)}  ${mib(fields.Shared_Clean + fields.Shared_Dirty).padStart(10)}`);
}
server.kill('SIGTERM');


// One request on a connection of its own (no keep-alive): the cluster's
// round-robin then spreads the requests over every worker.
function post(target, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(target, { method: 'POST', agent: false, headers: { 'content-type': 'application/octet-stream' } }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`forward: HTTP ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end(body);
  });
}
