import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

// The built package (dist/, made by `npm install` through the prepare script),
// loaded the two ways users load it.
const root = path.resolve(__dirname, '..');
const built = fs.existsSync(path.join(root, 'dist', 'index.mjs'));

const script = `
  const x = m.tensor(new Float32Array(2 * 32).map((_, i) => Math.sin(i)), [2, 32]);
  const w = m.tensor(new Float32Array(3 * 32).map((_, i) => Math.cos(i)), [3, 32]);
  const d = m.gemmFp8Sync(m.quantizeActivationsSync(x), m.quantizeWeightsSync(w), { out: 'f32' });
  console.log(JSON.stringify({ shape: d.shape, finite: Array.from(d.data).every(Number.isFinite), error: new m.MoeError('ERR_MOE_SHAPE', 'x') instanceof Error }));
`;

describe('the package entry points', () => {
  it('are built (npm install runs the prepare script)', () => {
    expect(built, 'dist/ is missing: run `npm run build:ts`').toBe(true);
  });

  it('works with require', () => {
    const out = execFileSync(process.execPath, ['-e', `const m = require(${JSON.stringify(root)});${script}`], { encoding: 'utf8' });
    expect(JSON.parse(out)).toEqual({ shape: [2, 3], finite: true, error: true });
  });

  it('works with import, sharing one module instance with require', () => {
    const esm = `import * as m from ${JSON.stringify(path.join(root, 'dist', 'index.mjs'))};
      import { createRequire } from 'node:module';
      const cjs = createRequire(import.meta.url)(${JSON.stringify(root)});
      if (cjs.MoeError !== m.MoeError) throw new Error('two MoeError classes');
      ${script}`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', esm], { encoding: 'utf8' });
    expect(JSON.parse(out)).toEqual({ shape: [2, 3], finite: true, error: true });
  });
});
