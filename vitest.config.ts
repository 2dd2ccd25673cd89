import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Builds dist/ first when lib/ is newer (tests that spawn node load dist/).
    globalSetup: ['test/global-setup.ts'],
    // One process per test file: some files force a SIMD path through the
    // environment before the addon loads, and the addon is process-wide.
    pool: 'forks',
    isolate: true,
    // Two cores: run files one at a time so the multi-threaded kernels and the
    // float64 references do not fight over them.
    fileParallelism: false,
    testTimeout: 120_000,
  },
});
