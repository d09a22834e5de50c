/**
 * Starts the real services once for the whole run and hands their endpoints to the tests.
 * PGBRIDGE_STACK=containers uses testcontainers (hosts with a Docker engine); otherwise the
 * local process stack of infra/stack (started if it is not running, reused if it is).
 */
import type { TestProject } from 'vitest/node';
import type { StackEndpoints } from '../../infra/stack/settings.js';

declare module 'vitest' {
  export interface ProvidedContext {
    endpoints: StackEndpoints;
  }
}

let stopContainers: (() => Promise<void>) | undefined;

export async function setup(project: TestProject): Promise<void> {
  // The services under test run on this Node too (they are spawned with process.execPath).
  console.log(`[setup] node ${process.version}`);
  if (process.env.PGBRIDGE_STACK === 'containers') {
    const { startContainers } = await import('../../infra/stack/containers.js');
    const started = await startContainers();
    stopContainers = started.stop;
    project.provide('endpoints', started.endpoints);
    return;
  }
  const { stackSettings } = await import('../../infra/stack/settings.js');
  const { up } = await import('../../infra/stack/stack.js');
  const endpoints = await up(stackSettings(), (line) => console.log(`[stack] ${line}`));
  project.provide('endpoints', endpoints);
}

export async function teardown(): Promise<void> {
  // The local stack stays up for the next run (a warm run reuses it); containers go.
  await stopContainers?.();
}
