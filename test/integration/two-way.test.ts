/**
 * Both directions end to end on real services: every operation kind arrives, nothing loops.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { release, setup } from '../../services/cli/setup.js';
import type { PipelineConfig } from '../../shared/config.js';
import { pgClient, testConfig, testLog, uniqueName, waitUntil } from '../support/pipeline.js';
import { counter, startServices, waitServicesReady, type Running } from '../support/services.js';

async function rows(c: pg.Client, sql: string): Promise<string> {
  const r = await c.query(sql);
  return JSON.stringify(r.rows);
}

describe('two-way sync (in-process services, real PostgreSQL/Kafka/registry)', () => {
  const schema = uniqueName('tw');
  let cfg: PipelineConfig;
  let a: pg.Client;
  let b: pg.Client;
  let svc: Running;

  beforeAll(async () => {
    cfg = testConfig(uniqueName('ptw'), schema);
    a = await pgClient(cfg, 'a');
    b = await pgClient(cfg, 'b');
    for (const c of [a, b]) {
      await c.query(`CREATE SCHEMA ${schema}`);
      await c.query(`CREATE TABLE ${schema}.items (id int PRIMARY KEY, name text, qty numeric, doc jsonb, big text)`);
      await c.query(`CREATE TABLE ${schema}.parent (id int PRIMARY KEY)`);
      await c.query(`CREATE TABLE ${schema}.child (id int PRIMARY KEY, parent_id int REFERENCES ${schema}.parent(id))`);
      await c.query(`CREATE TABLE ${schema}.nopk (a int, b text)`);
      await c.query(`ALTER TABLE ${schema}.nopk REPLICA IDENTITY FULL`);
      await c.query(`CREATE TABLE ${schema}.byidx (id int PRIMARY KEY, code text NOT NULL, v text)`);
      await c.query(`CREATE UNIQUE INDEX byidx_code ON ${schema}.byidx (code)`);
      await c.query(`ALTER TABLE ${schema}.byidx REPLICA IDENTITY USING INDEX byidx_code`);
    }
    await setup(cfg, testLog);
    svc = startServices(cfg);
    await waitServicesReady(svc);
  });

  afterAll(async () => {
    await svc?.stop();
    await release(cfg, testLog, { topics: true }).catch(() => undefined);
    for (const c of [a, b]) {
      await c?.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await c?.end();
    }
  });

  it('applies inserts, updates (with unchanged TOAST), PK moves, deletes, FK parent+child in one transaction and truncate from a to b', async () => {
    const big = 'y'.repeat(100_000);
    await a.query(`INSERT INTO ${schema}.items VALUES (1, 'one', 1.50, '{"k": [1, 2]}', $1), (2, 'two', 2, null, null), (3, 'three', 3, null, null)`, [big]);
    await a.query(`UPDATE ${schema}.items SET name = 'uno' WHERE id = 1`);
    await a.query(`UPDATE ${schema}.items SET id = 20 WHERE id = 2`);
    await a.query(`DELETE FROM ${schema}.items WHERE id = 3`);
    await a.query('BEGIN');
    await a.query(`INSERT INTO ${schema}.parent VALUES (1)`);
    await a.query(`INSERT INTO ${schema}.child VALUES (1, 1)`);
    await a.query('COMMIT');
    await a.query(`INSERT INTO ${schema}.nopk VALUES (1, 'x'), (1, 'x'), (2, 'y')`);
    await a.query(`DELETE FROM ${schema}.nopk WHERE b = 'y'`);
    await a.query(`UPDATE ${schema}.nopk SET b = 'z' WHERE ctid = (SELECT ctid FROM ${schema}.nopk LIMIT 1)`);
    const want = await rows(a, `SELECT * FROM ${schema}.items ORDER BY id`);
    await waitUntil('items equal on b', async () => (await rows(b, `SELECT * FROM ${schema}.items ORDER BY id`)) === want).catch(async (e) => {
      throw new Error(`${e.message}\na: ${want.slice(0, 400)}\nb: ${(await rows(b, `SELECT * FROM ${schema}.items ORDER BY id`)).slice(0, 400)}`);
    });
    const wantNopk = await rows(a, `SELECT a, b FROM ${schema}.nopk ORDER BY a, b`);
    await waitUntil('nopk equal on b', async () => (await rows(b, `SELECT a, b FROM ${schema}.nopk ORDER BY a, b`)) === wantNopk);
    expect(JSON.parse(wantNopk)).toEqual([
      { a: '1', b: 'x' },
      { a: '1', b: 'z' },
    ]);
    expect(await rows(b, `SELECT c.id, c.parent_id FROM ${schema}.child c JOIN ${schema}.parent p ON p.id = c.parent_id`)).toBe('[{"id":"1","parent_id":"1"}]');
    expect((await b.query(`SELECT big = $1 AS same, name FROM ${schema}.items WHERE id = 1`, [big])).rows[0]).toEqual({ same: true, name: 'uno' });

    await a.query(`TRUNCATE ${schema}.nopk`);
    await waitUntil('truncate on b', async () => (await b.query(`SELECT count(*)::int AS n FROM ${schema}.nopk`)).rows[0].n === '0');
  });

  it('applies b to a as well, and no change comes back to where it started (zero loop amplification)', async () => {
    await b.query(`INSERT INTO ${schema}.items VALUES (100, 'from b', 7, null, null)`);
    await waitUntil('row from b on a', async () => (await a.query(`SELECT name FROM ${schema}.items WHERE id = 100`)).rows[0]?.name === 'from b');
    // Let heartbeats and any echo travel, then count the row changes each capture published.
    await new Promise((r) => setTimeout(r, 2000));
    const published = (c: string) => counter(svc.captures[c]!.registry, 'pgbridge_capture_events_total', { kind: 'change' });
    // a: 3 inserts, 3 updates (one moves a key), 1 delete, parent+child, 3 PK-less inserts, 1 delete, 1 update, 1 truncate.
    expect(await published('a')).toBe(14);
    // b: its one insert, and nothing of the 14 it received from a.
    expect(await published('b')).toBe(1);
    expect(await counter(svc.captures.b!.registry, 'pgbridge_capture_skipped_transactions_total', { reason: 'foreign-origin' })).toBeGreaterThan(0);
    const items = await rows(a, `SELECT * FROM ${schema}.items ORDER BY id`);
    expect(await rows(b, `SELECT * FROM ${schema}.items ORDER BY id`)).toBe(items);
    expect(svc.errors).toEqual([]);
  });

  it('applies updates and deletes of a REPLICA IDENTITY USING INDEX table (old rows carry only the index columns)', async () => {
    await a.query(`INSERT INTO ${schema}.byidx VALUES (1, 'a1', 'x'), (2, 'a2', 'x'), (3, 'a3', 'x')`);
    await a.query(`UPDATE ${schema}.byidx SET v = 'y' WHERE id = 1`);
    await a.query(`UPDATE ${schema}.byidx SET code = 'a2-moved', v = 'z' WHERE id = 2`);
    await a.query(`DELETE FROM ${schema}.byidx WHERE id = 3`);
    const want = await rows(a, `SELECT * FROM ${schema}.byidx ORDER BY id`);
    expect(JSON.parse(want)).toEqual([
      { id: '1', code: 'a1', v: 'y' },
      { id: '2', code: 'a2-moved', v: 'z' },
    ]);
    await waitUntil('byidx equal on b', async () => (await rows(b, `SELECT * FROM ${schema}.byidx ORDER BY id`)) === want, 30_000).catch(async (e: Error) => {
      throw new Error(`${e.message}\na: ${want}\nb: ${await rows(b, `SELECT * FROM ${schema}.byidx ORDER BY id`)}`);
    });
    // The row was found by its index: no conflict was made up on the way.
    expect(
      (await b.query(`SELECT count(*)::int AS n FROM cdc.conflicts WHERE pipeline = $1 AND table_name = $2`, [cfg.pipeline, `${schema}.byidx`])).rows[0].n,
    ).toBe('0');
    expect(svc.errors).toEqual([]);
  });
});
