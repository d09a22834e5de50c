import { configDefaults, defineConfig, type TestProjectInlineConfiguration } from 'vitest/config';

// Two projects. `unit` (test/unit) is pure logic: no stack, no globalSetup, `npm run test:unit`
// runs it alone. `stack` (integration, faults) shares one local stack that its globalSetup
// starts or reuses. `npm test` runs both.
// `npm run test:interop` (PGBRIDGE_TEST_SET=interop) runs test/interop only, which `npm test`
// leaves out: it starts a Kafka Connect worker (about a minute).
const interop = process.env.PGBRIDGE_TEST_SET === 'interop';

const unit: TestProjectInlineConfiguration = {
  extends: true,
  test: {
    name: 'unit',
    include: ['test/unit/**/*.test.ts'],
    testTimeout: 10_000,
    // Pure modules without global state: one module cache per worker, not per file (the
    // imports dominate a unit run).
    isolate: false,
  },
};

const stack: TestProjectInlineConfiguration = {
  extends: true,
  test: {
    name: 'stack',
    include: interop ? ['test/interop/**/*.test.ts'] : ['test/**/*.test.ts'],
    exclude: interop ? configDefaults.exclude : [...configDefaults.exclude, 'test/interop/**', 'test/unit/**'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
  },
};

export default defineConfig({
  test: {
    projects: interop ? [stack] : [unit, stack],
    // Two cores: integration and fault files share one stack; run files two at a time.
    maxWorkers: 2,
    teardownTimeout: 60_000,
    reporters: ['default'],
  },
});
