/** `moe-kernels info`: what this installation is and what it can run on. */
import { Command } from 'commander';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { backends, getDefaultBackend } from '../backends';
import { PACKAGE_ROOT } from '../native';
import { cpuInfo } from '../runtime';

function collectInfo() {
  const pkg = JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string };
  const cpu = cpuInfo();
  return {
    version: pkg.version,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    defaultBackend: getDefaultBackend(),
    backends: backends(),
    cpu: { model: os.cpus()[0]?.model ?? 'unknown', gemmPath: cpu.gemmIsa, threads: cpu.threads, features: cpu.features },
  };
}

function formatInfo(info: ReturnType<typeof collectInfo>): string {
  const lines = [
    `moe-kernels ${info.version} (Node ${info.node}, ${info.platform})`,
    `default backend: ${info.defaultBackend}`,
  ];
  for (const b of info.backends) {
    lines.push(`backend ${b.name}: ${b.available ? 'available' : 'unavailable'}${b.reason ? ` (${b.reason})` : ''}${b.path ? ` [${b.path}]` : ''}`);
    if (b.device) {
      const d = b.device;
      lines.push(
        `  GPU: ${d.name}, compute capability ${d.computeCapability}, ${d.multiprocessors} SMs, ${(d.memoryBytes / 2 ** 30).toFixed(1)} GiB, ` +
          `driver ${d.driverVersion}, runtime ${d.runtimeVersion}, ${d.kernels} kernels`,
      );
    }
  }
  const features = Object.entries(info.cpu.features).filter(([, on]) => on).map(([name]) => name);
  lines.push(`CPU: ${info.cpu.model}; ${info.cpu.threads} threads; GEMM path ${info.cpu.gemmPath}; ${features.join(' ')}`);
  return lines.join('\n');
}

export function registerInfoCommand(program: Command): void {
  program
    .command('info')
    .description('the package version, the backends with availability and reasons, the GPU and the CPU')
    .option('--json', 'print JSON')
    .action((opts: { json?: boolean }) => {
      const info = collectInfo();
      console.log(opts.json ? JSON.stringify(info, null, 2) : formatInfo(info));
    });
}
