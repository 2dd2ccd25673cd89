import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

// The packed addon must load on glibc 2.28 (scripts/check-symbols.sh, run by
// `npm pack`). A glibc function newer than that, called for the first time,
// needs its trampoline (scripts/gen-glibc-compat.sh); the development build
// links with the same list, so the suite catches the miss before a pack does.
const root = path.resolve(__dirname, '..');
const addon = path.join(root, 'build/Release/moe_kernels.node');
const objdump = spawnSync('objdump', ['--version']).status === 0;
const linuxX64 = process.platform === 'linux' && process.arch === 'x64';
const why = !linuxX64 ? 'not Linux x64' : !objdump ? 'objdump is not installed' : !fs.existsSync(addon) ? 'no source build in build/Release' : '';

describe(`the addon's symbol versions${why ? ` (skipped: ${why})` : ''}`, () => {
  it.skipIf(why !== '')('need no glibc newer than 2.28 and no system libstdc++', () => {
    const run = spawnSync('bash', [path.join(root, 'scripts/check-symbols.sh'), addon], { encoding: 'utf8' });
    expect(run.status, run.stdout + run.stderr).toBe(0);
  });
});
