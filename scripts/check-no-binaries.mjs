#!/usr/bin/env node
// CI gate: no compiled binary is committed. Build outputs (object files,
// shared libraries, the addon, executables, archives) belong in ignored
// folders; one slipped in once as a file named `-O2` at the repository root,
// so the check reads every tracked file's first bytes, not only its name.
import { execFileSync } from 'node:child_process';
import { openSync, readSync, closeSync, lstatSync } from 'node:fs';

const MAGICS = [
  [Buffer.from([0x7f, 0x45, 0x4c, 0x46]), 'ELF object, library or executable'],
  [Buffer.from('!<arch>\n'), 'ar archive (static library)'],
  [Buffer.from([0xcf, 0xfa, 0xed, 0xfe]), 'Mach-O binary'],
  [Buffer.from([0x50, 0x4b, 0x03, 0x04]), 'zip archive'],
  [Buffer.from([0x1f, 0x8b]), 'gzip archive'],
  [Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), 'xz archive'],
];
const EXTENSIONS = /\.(o|obj|a|so(\.\d+)*|node|dylib|dll|exe|cubin|fatbin|tgz)$/;

const root = execFileSync('git', ['rev-parse', '--show-toplevel'], { encoding: 'utf8' }).trim();
const files = execFileSync('git', ['ls-files', '-z'], { cwd: root, encoding: 'utf8' }).split('\0').filter(Boolean);
const head = Buffer.alloc(8);
const found = [];
for (const file of files) {
  const full = `${root}/${file}`;
  let stat;
  try { stat = lstatSync(full); } catch { continue; }  // deleted in the work tree
  if (!stat.isFile()) continue;
  if (EXTENSIONS.test(file)) { found.push(`${file}: binary file name`); continue; }
  const fd = openSync(full, 'r');
  const n = readSync(fd, head, 0, head.length, 0);
  closeSync(fd);
  for (const [magic, what] of MAGICS) {
    if (n >= magic.length && head.subarray(0, magic.length).equals(magic)) { found.push(`${file}: ${what}`); break; }
  }
}
if (found.length > 0) {
  console.error(`check-no-binaries: ${found.length} committed binary file(s):\n  ${found.join('\n  ')}`);
  process.exit(1);
}
console.log(`check-no-binaries: ${files.length} tracked files, no binaries`);
