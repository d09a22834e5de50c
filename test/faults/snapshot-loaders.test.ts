/**
 * Snapshot chunks loaded side by side (apply.snapshotLoaders), with apply a real process killed
 * (SIGKILL) in the middle of the load. What a user checks afterwards: every row once on b, in
 * a table with a key and in one without (where a chunk loaded twice would show as doubled
 * rows); nothing of the load sent back to a by capture b (loop prevention through the
 * loaders' own replication origins); both loaders did load; changes made on a after the
 * snapshot, before and after the load, reach b under last-writer-wins without being taken
 * for conflicts; and nothing is
 * left in cdc.chunk_loads once apply's position has passed the chunks.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { initialSync } from '../../services/cli/initial-sync.js';
import { release } from '../../services/cli/setup.js';
import { withClient } from '../../shared/pg.js';
import { ServiceProcess, writeConfigFile } from '../support/processes.js';
import { pgClient, testConfig, testLog, uniqueName, waitUntil } from '../support/pipeline.js';

const KEYED = 200_000;
const KEYLESS = 30_000;

describe('snapshot chunks on parallel loaders', () => {
  const schema = uniqueName('ldr');
  const cfg = testConfig(uniqueName('pld'), schema, { conflicts: { policy: 'last-writer-wins' }, apply: { snapshotLoaders: 2 } });
  const file = writeConfigFile(cfg);
  const procs: ServiceProcess[] = [];

  afterAll(async () => {
    for (const p of procs) await p.crash().catch(() => undefined);
    await release(cfg, testLog, { topics: true }).catch(() => undefined);
    for (const c of cfg.clusterNames)
      await withClient(cfg.clusters[c]!, 'test', (x) => x.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)).catch(() => undefined);
    file.remove();
  });

  it('loads every row once across an apply SIGKILL, sends nothing back, and streams on without false conflicts', async () => {
    await withClient(cfg.clusters.a!, 'test', (x) =>
      x.query(`CREATE SCHEMA ${schema};
      CREATE TABLE ${schema}.t (id int PRIMARY KEY, v text NOT NULL);
      INSERT INTO ${schema}.t SELECT g, repeat(md5(g::text), 2) FROM generate_series(1, ${KEYED}) g;
      CREATE TABLE ${schema}.n (a int, b text); ALTER TABLE ${schema}.n REPLICA IDENTITY FULL;
      INSERT INTO ${schema}.n SELECT g % 100, md5(g::text) FROM generate_series(1, ${KEYLESS}) g;
      ANALYZE ${schema}.t, ${schema}.n;`),
    );
    // Everything into Kafka first (ranges of 10,000 rows read by two workers): apply then
    // has a long run of chunk records to spread over its loaders.
    const sync = await initialSync(cfg, testLog, { chunkRows: 10_000 });
    expect(sync.rows).toBe(KEYED + KEYLESS);

    const a = await pgClient(cfg, 'a');
    const b = await pgClient(cfg, 'b');
    try {
      // A change on a made after the snapshot but before apply loads it: its commit time is
      // older than the loads, and it must still win over the loaded row.
      const captureA = await ServiceProcess.capture(file, 'a');
      const captureB = await ServiceProcess.capture(file, 'b');
      const apply = await ServiceProcess.apply(file, 'a-b');
      procs.push(captureA, captureB, apply);
      captureA.start();
      await captureA.waitReady();
      await a.query(`UPDATE ${schema}.t SET v = 'changed before the load' WHERE id IN (3, 120003)`);
      await waitUntil('the early change in Kafka', async () => (await captureA.metric('pgbridge_capture_transactions_total')) > 0, 60_000, 100);
      await new Promise((r) => setTimeout(r, 1500));
      captureB.start();
      apply.start();
      const count = async (t: string): Promise<number> => Number((await b.query<{ n: string }>(`SELECT count(*) AS n FROM ${schema}.${t}`)).rows[0]!.n);
      await waitUntil('part of the load on b', async () => (await count('t')) >= 10_000, 120_000, 20);
      const before = await count('t');
      await apply.crash();
      expect(before, 'killed before the load ended').toBeLessThan(KEYED);

      apply.start();
      await waitUntil('every row on b', async () => (await count('t')) >= KEYED && (await count('n')) >= KEYLESS, 180_000, 200);
      const b1 = await b.query<{ t: string; ids: string; n: string; nd: string }>(
        `SELECT (SELECT count(*) FROM ${schema}.t)::text AS t, (SELECT count(DISTINCT id) FROM ${schema}.t)::text AS ids,
                (SELECT count(*) FROM ${schema}.n)::text AS n, (SELECT count(*) FROM (SELECT a, b, count(*) FROM ${schema}.n GROUP BY 1, 2) s)::text AS nd`,
      );
      expect(b1.rows[0]).toEqual({ t: String(KEYED), ids: String(KEYED), n: String(KEYLESS), nd: String(KEYLESS) });

      // Both loaders loaded (their origins moved), and capture b skipped their transactions.
      const loaders = await b.query<{ n: string }>(`SELECT count(*) AS n FROM pg_replication_origin_status WHERE external_id LIKE $1 AND remote_lsn <> '0/0'`, [
        `cdc\\_${cfg.pipeline.replace(/_/g, '\\_')}\\_a~load%`,
      ]);
      expect(Number(loaders.rows[0]!.n)).toBe(2);
      await waitUntil(
        'capture b skipped foreign transactions',
        async () => (await captureB.metric('pgbridge_capture_skipped_transactions_total', { reason: 'foreign-origin' })) > 0,
        30_000,
        200,
      );

      // The change from before the load, and one after it: applied over loaded rows, no conflict.
      await waitUntil(
        'the early change on b',
        async () => (await b.query<{ n: string }>(`SELECT count(*) AS n FROM ${schema}.t WHERE v = 'changed before the load'`)).rows[0]!.n === '2',
        60_000,
        100,
      );
      await a.query(`UPDATE ${schema}.t SET v = 'changed after the sync' WHERE id IN (7, 150001)`);
      await waitUntil(
        'the change on b',
        async () => (await b.query<{ n: string }>(`SELECT count(*) AS n FROM ${schema}.t WHERE v = 'changed after the sync'`)).rows[0]!.n === '2',
        60_000,
        100,
      );
      const conflicts = await b.query<{ n: string }>('SELECT count(*) AS n FROM cdc.conflicts WHERE pipeline = $1', [cfg.pipeline]);
      expect(conflicts.rows[0]!.n).toBe('0');
      await waitUntil(
        'no chunk markers left',
        async () => (await b.query<{ n: string }>('SELECT count(*) AS n FROM cdc.chunk_loads WHERE pipeline = $1', [cfg.pipeline])).rows[0]!.n === '0',
        30_000,
        200,
      );

      // Nothing came back to a.
      const a1 = await a.query<{ t: string; n: string }>(`SELECT (SELECT count(*) FROM ${schema}.t)::text AS t, (SELECT count(*) FROM ${schema}.n)::text AS n`);
      expect(a1.rows[0]).toEqual({ t: String(KEYED), n: String(KEYLESS) });
    } finally {
      await a.end();
      await b.end();
    }
  }, 420_000);
});
