/**
 * A fresh pipeline per test: its own name (slots, publications, topics, consumer groups) and
 * its own schema on both clusters, so test files can run side by side on one stack.
 */
import { randomBytes } from 'node:crypto';
import { inject } from 'vitest';
import pg from 'pg';
import { parseConfig, type PipelineConfig, type PipelineConfigInput } from '../../shared/config.js';
import { stackConnections } from '../../infra/stack/settings.js';
import { RAW_TYPES, SESSION_OPTIONS } from '../../shared/pg.js';
import { createLogger } from '../../shared/log.js';

export const testLog = createLogger('test', process.env.PGBRIDGE_TEST_LOG_LEVEL ?? 'warn');

export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(4).toString('hex')}`;
}

export interface TestPipeline {
  readonly cfg: PipelineConfig;
  readonly schema: string;
  client(cluster: 'a' | 'b'): Promise<pg.Client>;
}

export function testConfig(name: string, schema: string, over: Partial<PipelineConfigInput> = {}): PipelineConfig {
  const ep = inject('endpoints');
  return parseConfig({
    pipeline: name,
    ...stackConnections(ep),
    selection: { schemas: [schema] },
    metrics: { basePort: 0 },
    capture: { heartbeatSeconds: 1, batch: { maxTransactions: 100, maxRows: 2000, lingerMs: 5 } },
    retry: { connectionMinutes: 2, otherMinutes: 1 },
    ...over,
  });
}

/** A pg client with the pinned session and raw text values. */
export async function pgClient(cfg: PipelineConfig, cluster: string): Promise<pg.Client> {
  const c = cfg.clusters[cluster]!;
  const client = new pg.Client({ host: c.host, port: c.port, user: c.user, database: c.database, options: SESSION_OPTIONS, types: RAW_TYPES });
  // A server restart ends idle sessions with an 'error' event: the next query reports it instead.
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

export async function waitUntil<T>(what: string, fn: () => Promise<T | undefined | null | false>, timeoutMs = 60_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}
