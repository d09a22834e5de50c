import { configDefaults, defineConfig } from 'vitest/config';

// `npm run test:interop` (PGBRIDGE_TEST_SET=interop) runs test/interop, which `npm test` leaves out:
// it starts a Kafka Connect worker (about a minute).
const interop = process.env.PGBRIDGE_TEST_SET === 'interop';

export default defineConfig({
  test: {
    include: interop ? ['test/interop/**/*.test.ts'] : ['test/**/*.test.ts'],
    exclude: interop ? configDefaults.exclude : [...configDefaults.exclude, 'test/interop/**'],
    globalSetup: ['test/support/global-setup.ts'],
    // Two cores: integration and fault files share one stack; run files two at a time.
    maxWorkers: 2,
    testTimeout: 120_000,
    hookTimeout: 180_000,
    teardownTimeout: 60_000,
    reporters: ['default'],
  },
});
