import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Starts one Postgres (or uses TEST_DATABASE_URL) and migrates the template every test file clones.
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // CI machines have 2 cores, shared with Postgres; more workers only add contention.
    maxWorkers: 2,
  },
});
