// The documentation that users read keeps up with the code: every error code
// the package can throw is in MoeErrorCode and in README's table, and the
// specification the code comments cite is in the repository.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.resolve(__dirname, '..');
const read = (file: string) => fs.readFileSync(path.join(root, file), 'utf8');

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(path.join(root, dir), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(path.join(dir, e.name)) : /\.(ts|cpp|h|mjs)$/.test(e.name) ? [path.join(dir, e.name)] : [],
  );
}

const codesIn = (text: string) => new Set(text.match(/ERR_MOE_[A-Z0-9_]+/g) ?? []);

describe('error codes', () => {
  const declared = codesIn(read('lib/errors.ts').split('export class')[0]);
  const readme = read('README.md');
  const table = new Set([...readme.matchAll(/^\s*\| `(ERR_MOE_[A-Z0-9_]+)` \|/gm)].map((m) => m[1]));

  it('README lists exactly the declared codes', () => {
    expect(declared.size).toBeGreaterThan(5);
    expect([...table].sort()).toEqual([...declared].sort());
  });

  it('every code used in lib/ and native/src is declared', () => {
    for (const file of [...sourceFiles('lib'), ...sourceFiles('native/src')]) {
      for (const code of codesIn(read(file))) expect(declared.has(code), `${file} uses ${code}`).toBe(true);
    }
  });
});

describe('the specification', () => {
  it('lives in docs/ with every section the code cites', () => {
    const spec = read('docs/SPEC.md');
    const headings = new Set([...spec.matchAll(/^#+ (.+)$/gm)].map((m) => m[1].trim()));
    for (const cited of ['Number formats', 'Quantization', 'FP8 GEMM', 'Routing', 'Dispatch layout, dispatch, combine', 'The MoE layer', 'Tolerances', 'Choices']) {
      expect(headings.has(cited), cited).toBe(true);
    }
  });
});
