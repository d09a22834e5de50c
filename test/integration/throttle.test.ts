/**
 * Incremental throttling (DTS parity): apply keeps to the pipeline file's rows per second,
 * and `pgbridge throttle` changes the limit while apply runs, without a restart. Rates are
 * measured on the destination, between two row counts, so apply's start-up is left out.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { setThrottle, throttles } from '../../services/cli/throttle.js';
import type { PipelineConfig } from '../../shared/config.js';
import { waitUntil } from '../support/pipeline.js';
import { counter, startServices, tablesPipeline, type Running, type TablesPipeline } from '../support/services.js';

describe('incremental throttle (real PostgreSQL, Kafka, registry)', () => {
  let p: TablesPipeline;
  let cfg: PipelineConfig;
  let schema: string;
  let a: pg.Client;
  let b: pg.Client;
  let svc: Running | undefined;

  beforeAll(async () => {
    p = await tablesPipeline('th', (s) => `CREATE TABLE ${s}.t (id int PRIMARY KEY, v text)`, { apply: { throttle: { rowsPerSecond: 300, directions: {} } } });
    ({ cfg, schema, a, b } = p);
  });

  afterAll(async () => {
    await svc?.stop();
    await p?.close();
  });

  /** Writes rows from..to on a in transactions of 100 rows. */
  async function write(from: number, to: number): Promise<void> {
    for (let i = from; i <= to; i += 100)
      await a.query(`INSERT INTO ${schema}.t SELECT g, 'x' FROM generate_series($1::int, $2::int) g`, [i, Math.min(to, i + 99)]);
  }

  const onB = async (): Promise<number> => Number((await b.query(`SELECT count(*) AS n FROM ${schema}.t`)).rows[0].n);

  /** Rows per second applied from the moment b holds `lo` rows to the moment it holds `hi` (counts as seen, not as asked). */
  async function rate(lo: number, hi: number): Promise<number> {
    const seen = async (n: number): Promise<{ rows: number; at: number }> => {
      const rows = await waitUntil(
        `${n} rows on b`,
        async () => {
          const c = await onB();
          return c >= n ? c : null;
        },
        120_000,
        20,
      );
      return { rows, at: performance.now() };
    };
    const first = await seen(lo);
    const last = await seen(hi);
    return ((last.rows - first.rows) * 1000) / (last.at - first.at);
  }

  it('holds the configured rate within ±20 %, and a new rate set by pgbridge throttle takes effect without a restart', async () => {
    // Rates well below what capture and apply do in this test process (about 1,200 rows/s here).
    await write(1, 2000);
    svc = startServices(cfg, { captures: ['a'], applies: ['a-b'] });
    // Past the first second's burst (the bucket starts full).
    const configured = await rate(600, 1500);
    expect(configured).toBeGreaterThan(300 * 0.8);
    expect(configured).toBeLessThan(300 * 1.2);
    await waitUntil('2000 rows on b', async () => (await onB()) >= 2000, 60_000);

    // A backlog builds up in the topic under the old limit; then the limit changes.
    await write(2001, 12000);
    await setThrottle(cfg, 'a-b', { rowsPerSecond: 900 });
    expect((await throttles(cfg)).find((t) => t.direction === 'a-b')!.inForce).toMatchObject({ rowsPerSecond: 900, source: 'cdc.apply_throttle' });
    const at = await onB();
    expect(at).toBeLessThan(7500);
    // Past the refresh (within 2 s, at the old rate) and the new limit's one-second burst.
    const changed = await rate(at + 1500, at + 4500);
    expect(changed).toBeGreaterThan(900 * 0.8);
    expect(changed).toBeLessThan(900 * 1.2);
    const reg = svc.applies['a-b']!.registry;
    expect(await counter(reg, 'pgbridge_apply_throttle_rows_per_second')).toBe(900);
    expect(await counter(reg, 'pgbridge_apply_throttled_seconds_total')).toBeGreaterThan(5);
    expect(svc.errors).toEqual([]);
  });
});
