/**
 * pgbridge replay --rebuild: an empty third database, named as the destination of a pipeline
 * file of its own that reads the original pipeline's topics, is built from the forward topic
 * alone (schema from the source, the initial sync's snapshot chunks, the stream after them)
 * and ends equal to the source by verify's checksums; it then keeps following. A replay from
 * the log start over the filled copy re-loads the chunks into tables that hold rows without
 * setting a later row back (under fail, which then stops at the stream's first conflict) and,
 * under last-writer-wins, converges.
 */
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drainBarrier } from '../../services/cli/barrier.js';
import { initialSync } from '../../services/cli/initial-sync.js';
import { release } from '../../services/cli/setup.js';
import { formatVerifyReport, verify } from '../../services/cli/verify.js';
import type { PipelineConfig } from '../../shared/config.js';
import { withClient } from '../../shared/pg.js';
import { configInput, writeConfigFile, type ConfigFile } from '../support/processes.js';
import { pgClient, testConfig, testLog, uniqueName, waitUntil } from '../support/pipeline.js';
import { startServices, waitServicesReady, type Running } from '../support/services.js';

const CLI = 'dist/services/cli/main.js';

function cli(args: string[]): { code: number | null; out: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

describe('pgbridge replay --rebuild of a third database', () => {
  const schema = uniqueName('rb');
  const third = uniqueName('rbdb');
  let cfg: PipelineConfig;
  let copy: PipelineConfig;
  let copyOver: Parameters<typeof testConfig>[2];
  let file: ConfigFile;
  const running: Running[] = [];

  beforeAll(async () => {
    cfg = testConfig(uniqueName('prb'), schema, { sync: { workers: 2, events: 'chunks' } });
    const input = configInput(cfg);
    // The copy's own pipeline name (its consumer group, origin and helper rows), the original's topics.
    copyOver = {
      clusters: { a: input.clusters.a!, b: { ...input.clusters.b!, database: third } },
      topics: { pattern: `${cfg.pipeline}.{from}.to.{to}`, partitions: 1, replicationFactor: 1 },
    };
    copy = testConfig(uniqueName('prbc'), schema, copyOver);
    file = writeConfigFile(copy);
    await withClient(cfg.clusters.a!, 'test', (c) =>
      c.query(`
      CREATE SCHEMA ${schema};
      CREATE TABLE ${schema}.t (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0);
      CREATE TABLE ${schema}.w (id bigint PRIMARY KEY, doc jsonb, at timestamptz, price numeric(12,2));
      CREATE TABLE ${schema}.k (v text);
      INSERT INTO ${schema}.t SELECT g, 'v' || g FROM generate_series(1, 3000) g;
      INSERT INTO ${schema}.w SELECT g, jsonb_build_object('g', g), '2026-01-01'::timestamptz + g * interval '1 minute', g / 7.0 FROM generate_series(1, 500) g;
      INSERT INTO ${schema}.k SELECT 'k' || (g % 10) FROM generate_series(1, 100) g;`),
    );
    await withClient(cfg.clusters.b!, 'test', (c) => c.query(`CREATE DATABASE ${third}`));
  });

  afterAll(async () => {
    for (const r of running) await r.stop().catch(() => undefined);
    file?.remove();
    await release(copy, testLog, { topics: false }).catch(() => undefined);
    await release(cfg, testLog, { topics: true }).catch(() => undefined);
    for (const c of cfg.clusterNames)
      await withClient(cfg.clusters[c]!, 'test', (cl) => cl.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)).catch(() => undefined);
    await withClient(cfg.clusters.b!, 'test', (c) => c.query(`DROP DATABASE IF EXISTS ${third} WITH (FORCE)`)).catch(() => undefined);
  });

  it('builds the empty database from the topic alone, equal to the source, and follows on', async () => {
    // The original pipeline: initial sync (snapshot chunks), then the stream.
    await initialSync(cfg, testLog, { chunkRows: 1000 });
    const svc = startServices(cfg);
    running.push(svc);
    await waitServicesReady(svc);
    await withClient(cfg.clusters.a!, 'test', (c) =>
      c.query(`
      UPDATE ${schema}.t SET v = 'changed', n = n + 1 WHERE id % 10 = 0;
      DELETE FROM ${schema}.t WHERE id BETWEEN 100 AND 199;
      INSERT INTO ${schema}.t SELECT g, 'new' FROM generate_series(5001, 5200) g;
      UPDATE ${schema}.w SET doc = doc || '{"x": 1}', price = price + 1 WHERE id % 3 = 0;
      DELETE FROM ${schema}.w WHERE id > 450;
      INSERT INTO ${schema}.k SELECT 'streamed' FROM generate_series(1, 5);`),
    );
    await drainBarrier(cfg, 120_000);
    expect((await verify(cfg)).equal).toBe(true);

    const dry = cli(['replay', '-c', file.path, '--direction', 'a-b', '--from', 'earliest', '--rebuild', '--dry-run']);
    expect(dry.code, dry.out).toBe(0);
    expect(dry.out).toMatch(/would rebuild a-b from .*: offsets 0 to/);
    expect(dry.out).toContain(`${schema}.k: 105 row(s)`);
    const r = cli(['replay', '-c', file.path, '--direction', 'a-b', '--from', 'earliest', '--rebuild']);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain('schema: 3 table(s) copied from the source');

    const target = await pgClient(copy, 'b');
    try {
      const progress = async (): Promise<{ next: bigint; until: string | null } | null> => {
        const p = await target.query<{ next: string; until: string | null }>(
          `SELECT next_offset::text AS next, replay_until::text AS until FROM cdc.apply_progress WHERE pipeline = $1 AND direction = 'a-b'`,
          [copy.pipeline],
        );
        return p.rows[0] ? { next: BigInt(p.rows[0].next), until: p.rows[0].until } : null;
      };
      const original = await withClient(cfg.clusters.b!, 'test', (c) =>
        c.query<{ next: string }>(`SELECT next_offset::text AS next FROM cdc.apply_progress WHERE pipeline = $1 AND direction = 'a-b'`, [cfg.pipeline]),
      );
      const caughtUp = async (at: bigint): Promise<boolean> => {
        const p = await progress();
        return !!p && p.until === null && p.next >= at;
      };
      const rebuilt = startServices(copy, { captures: [], applies: ['a-b'] });
      running.push(rebuilt);
      await waitServicesReady(rebuilt);
      await waitUntil('the third database caught up with the topic', () => caughtUp(BigInt(original.rows[0]!.next)), 120_000, 200);
      const v = await verify(copy);
      expect(v.equal, formatVerifyReport(v)).toBe(true);
      expect(v.tables.map((t) => [t.table, t.rowsA]).sort()).toEqual([
        [`${schema}.k`, 105],
        [`${schema}.t`, 3100],
        [`${schema}.w`, 450],
      ]);

      // It keeps following the topic.
      await withClient(cfg.clusters.a!, 'test', (c) => c.query(`INSERT INTO ${schema}.t VALUES (9001, 'after the rebuild')`));
      await waitUntil(
        'a change made after the rebuild',
        async () => (await target.query(`SELECT 1 FROM ${schema}.t WHERE id = 9001`)).rowCount === 1,
        60_000,
        200,
      );
      expect(rebuilt.errors).toEqual([]);

      // A second rebuild into the database that now holds rows is refused.
      await rebuilt.stop();
      const again = cli(['replay', '-c', file.path, '--direction', 'a-b', '--from', 'earliest', '--rebuild']);
      expect(again.code).toBe(1);
      expect(again.out).toMatch(/--rebuild needs an empty destination/);

      // A replay from the log start over the filled copy re-loads the snapshot chunks into
      // tables that hold rows. Under fail: rows deleted by hand come back from the chunks, a
      // row changed after the sync is not set back to the snapshot, and apply stops at the
      // stream's first conflict (an insert of a row the copy holds) with nothing of it applied.
      await target.query(`DELETE FROM ${schema}.t WHERE id <= 50; DELETE FROM ${schema}.w WHERE id <= 20`);
      // One source transaction (or chunk) per destination transaction: the chunks commit before the stop.
      const failing = testConfig(copy.pipeline, schema, {
        ...copyOver,
        conflicts: { policy: 'fail' },
        apply: { batch: { maxTransactions: 1, maxRows: 5000, lingerMs: 20 } },
      });
      const failFile = writeConfigFile(failing);
      try {
        const rp = cli(['replay', '-c', failFile.path, '--direction', 'a-b', '--from', 'earliest']);
        expect(rp.code, rp.out).toBe(0);
        const stops = startServices(failing, { captures: [], applies: ['a-b'] });
        running.push(stops);
        await waitUntil('apply stops on the replayed stream', async () => stops.errors.length > 0, 60_000, 200);
        expect(String(stops.errors[0]?.message)).toMatch(/insert_exists on .*during replay replay-/);
        await stops.stop();
        expect((await target.query(`SELECT 1 FROM ${schema}.t WHERE id <= 50`)).rowCount).toBe(50);
        expect((await target.query(`SELECT 1 FROM ${schema}.w WHERE id <= 20`)).rowCount).toBe(20);
        expect((await target.query<{ v: string }>(`SELECT v FROM ${schema}.t WHERE id = 60`)).rows[0]?.v).toBe('changed');
        expect((await target.query(`SELECT 1 FROM ${schema}.k`)).rowCount).toBe(105);
        expect(cli(['replay', '-c', failFile.path, '--direction', 'a-b', '--cancel']).code).toBe(0);
      } finally {
        failFile.remove();
      }
      // Under the copy's last-writer-wins a replay from the log start converges: equal again.
      expect(cli(['replay', '-c', file.path, '--direction', 'a-b', '--from', 'earliest']).code).toBe(0);
      const after = startServices(copy, { captures: [], applies: ['a-b'] });
      running.push(after);
      await waitUntil('the replay over the copy applied', () => caughtUp(BigInt(original.rows[0]!.next)), 120_000, 200);
      const v2 = await verify(copy);
      expect(v2.equal, formatVerifyReport(v2)).toBe(true);
      expect(after.errors).toEqual([]);
    } finally {
      await target.end();
    }
    expect(svc.errors).toEqual([]);
  }, 300_000);
});
