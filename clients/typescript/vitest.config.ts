import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Each file starts its own brokers on ports the OS picks; files run one at a time so a
    // 2-core CI machine is not oversubscribed.
    fileParallelism: false,
  },
});
