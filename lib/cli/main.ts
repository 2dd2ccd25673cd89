#!/usr/bin/env node
/** The `moe-kernels` command line. */
import { Command } from 'commander';
import { registerBenchCommands } from './bench';
import { registerDemoCommand } from './demo';
import { registerInfoCommand } from './info';

const program = new Command()
  .name('moe-kernels')
  .description('DeepSeek-style Mixture-of-Experts kernels for Node.js');
registerDemoCommand(program);
registerInfoCommand(program);
registerBenchCommands(program);
program.parseAsync(process.argv).catch((error: Error) => {
  console.error(`moe-kernels: ${error.message}`);
  process.exitCode = 1;
});
