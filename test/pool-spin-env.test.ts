// MOE_CPU_SPIN_US=0: pool threads never watch for work, every wait sleeps
// (condition variables only). Read when the addon first loads.
process.env.MOE_CPU_SPIN_US = '0';
process.env.MOE_NUM_THREADS = '2';
const { MoeLayer, bf16FromFloat32, cpuInfo } = await import('../lib/index');
const { separateOps, smallDeepSeekConfig } = await import('./helpers/moe-config');
const { randomFloats, rng, seedNote, SEED } = await import('./helpers/random');
const { expect, it } = await import('vitest');

it('MOE_CPU_SPIN_US=0: the chained experts give the separate ops\' bits with sleeping waits only', () => {
  expect(cpuInfo().spinMicros).toBe(0);
  expect(cpuInfo().wakeSpinMicros).toBe(0); // a forward's wake-up watch too
  const config = smallDeepSeekConfig(592, 384);
  const layer = MoeLayer.random(config, { seed: SEED });
  const random = rng();
  for (const tokens of [1, 5, 64]) {
    const x = bf16FromFloat32(randomFloats(tokens * config.hiddenSize, random), [tokens, config.hiddenSize]);
    const want = separateOps(() => layer.forwardSync(x, { out: 'f32' }).data as Float32Array);
    for (let rep = 0; rep < 5; rep++) {
      const got = layer.forwardSync(x, { out: 'f32' }).data as Float32Array;
      expect(Buffer.compare(Buffer.from(got.buffer), Buffer.from(want.buffer)), `T=${tokens} rep=${rep} ${seedNote}`).toBe(0);
    }
  }
});

export {}; // a module: top-level await
