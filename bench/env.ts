/**
 * Where the benchmarks run: the local stack's clusters, but a database of their own
 * (pgbridge_bench, or PGBRIDGE_BENCH_DATABASE) so the tests sharing the stack's `postgres`
 * database and the benchmarks never see each other's cdc helper schema; unique names for
 * everything cluster-wide (slots, origins, subscriptions); small PostgreSQL helpers.
 * pg types stay here.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { endpointsOf, stackSettings, type PgEndpoint, type StackEndpoints } from '../infra/stack/settings.js';

export type Side = 'a' | 'b';
export type Db = pg.Client;

export const endpoints: StackEndpoints = endpointsOf(stackSettings());
export const benchDatabase = process.env.PGBRIDGE_BENCH_DATABASE || 'pgbridge_bench';

/** A short random id: schema, pipeline, slot, subscription and topic names all carry it. */
export function uniqueId(): string {
  return randomBytes(3).toString('hex');
}

export function endpoint(side: Side): PgEndpoint {
  return { ...endpoints.pg[side], database: benchDatabase };
}

/** Creates the benchmark database on both clusters when missing. */
export async function ensureDatabases(): Promise<void> {
  for (const side of ['a', 'b'] as const) {
    const ep = endpoints.pg[side];
    const c = new pg.Client({ host: ep.host, port: ep.port, user: ep.user, database: ep.database, application_name: 'pgbridge-bench' });
    await c.connect();
    try {
      const r = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [benchDatabase]);
      if (r.rowCount === 0) {
        await c.query(`CREATE DATABASE "${benchDatabase.replaceAll('"', '""')}"`).catch((err: { code?: string }) => {
          if (err.code !== '42P04' && err.code !== '23505') throw err; // created meanwhile by another run
        });
      }
    } finally {
      await c.end();
    }
  }
}

/** libpq connection string of a side, as a subscription on the other side uses it. */
export function conninfo(side: Side): string {
  const ep = endpoint(side);
  return `host=${ep.host} port=${ep.port} user=${ep.user} dbname=${ep.database}`;
}

export async function db(side: Side, app = 'pgbridge-bench'): Promise<Db> {
  const ep = endpoint(side);
  const c = new pg.Client({ host: ep.host, port: ep.port, user: ep.user, database: ep.database, application_name: app });
  await c.connect();
  // A lost connection must fail the scenario, not crash the process.
  c.on('error', () => undefined);
  return c;
}

/** Runs fn with fresh connections to both clusters and always closes them. */
export async function withBoth<T>(fn: (a: Db, b: Db) => Promise<T>): Promise<T> {
  const a = await db('a');
  try {
    const b = await db('b');
    try {
      return await fn(a, b);
    } finally {
      await b.end().catch(() => undefined);
    }
  } finally {
    await a.end().catch(() => undefined);
  }
}

export async function scalar<T = unknown>(c: Db, sql: string, params: unknown[] = []): Promise<T> {
  const r = await c.query(sql, params);
  const row = r.rows[0] as Record<string, unknown> | undefined;
  return (row ? Object.values(row)[0] : undefined) as T;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Seconds since `t0` (a performance.now() reading). */
export function since(t0: number): number {
  return (performance.now() - t0) / 1000;
}

export async function serverVersion(): Promise<string> {
  const c = await db('a');
  try {
    return await scalar<string>(c, 'SHOW server_version');
  } finally {
    await c.end();
  }
}
