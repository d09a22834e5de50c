/**
 * Set-based apply (docs/decisions.md, "Set-based apply"): a source transaction that touches many rows of one table is
 * written with one statement per shape, and every row the statement could not write without a
 * conflict is resolved one by one exactly as if it had come alone. Checked on b, row by row,
 * against what the policy must give; and a key touched several times in one transaction
 * (a sequence point inside a batch) ends as the source ends.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import type { PipelineConfig } from '../../shared/config.js';
import { waitUntil } from '../support/pipeline.js';
import { counter, startServices, tablesPipeline, type Running, type TablesPipeline } from '../support/services.js';

const N = 3000;

describe('set-based apply a→b (real PostgreSQL, Kafka, registry)', () => {
  let p: TablesPipeline;
  let cfg: PipelineConfig;
  let schema: string;
  let a: pg.Client;
  let b: pg.Client;
  let svc: Running | undefined;

  beforeAll(async () => {
    p = await tablesPipeline(
      'sb',
      (s) => `
      CREATE TABLE ${s}.t (id int PRIMARY KEY, v text, n int, raw bytea);
      CREATE TABLE ${s}.u (id uuid PRIMARY KEY, tag text NOT NULL UNIQUE, v int);
      INSERT INTO ${s}.t SELECT g, 'seed', g, '\\x00ff'::bytea FROM generate_series(1, ${N}) g`,
      { conflicts: { policy: 'last-writer-wins', tables: {} } },
    );
    ({ cfg, schema, a, b } = p);
  });

  afterAll(async () => {
    await svc?.stop();
    await p?.close();
  });

  it('writes large transactions in sets, resolves the conflicting rows one by one, and keeps the order of a key touched twice', async () => {
    // Older changes on a (apply not running yet): one transaction each of updates, deletes, inserts.
    await a.query(`UPDATE ${schema}.t SET v = 'from a', n = n + 1, raw = '\\x0102'::bytea`);
    await a.query(`DELETE FROM ${schema}.t WHERE id % 10 = 0`);
    await a.query(`INSERT INTO ${schema}.t SELECT g, 'new', g, NULL FROM generate_series(${N + 1}, ${N + 500}) g`);
    // One transaction touching key 1 four times and key 2 twice, between other rows.
    await a.query('BEGIN');
    await a.query(`UPDATE ${schema}.t SET v = 'k1 first' WHERE id = 1`);
    await a.query(`UPDATE ${schema}.t SET v = 'other' WHERE id = 3`);
    await a.query(`DELETE FROM ${schema}.t WHERE id = 1`);
    await a.query(`INSERT INTO ${schema}.t VALUES (1, 'k1 again', -1, NULL)`);
    await a.query(`UPDATE ${schema}.t SET v = 'k1 last' WHERE id = 1`);
    await a.query(`UPDATE ${schema}.t SET v = 'k2 first' WHERE id = 2`);
    await a.query(`UPDATE ${schema}.t SET v = 'k2 last' WHERE id = 2`);
    await a.query('COMMIT');
    // A table with a second unique key: its updates go one by one.
    await a.query(`INSERT INTO ${schema}.u SELECT md5(g::text)::uuid, 'tag' || g, g FROM generate_series(1, 200) g`);
    await a.query(`UPDATE ${schema}.u SET tag = 'x' || tag`);
    // Newer changes on b behind the pipeline's back: they win under last-writer-wins.
    await b.query(`UPDATE ${schema}.t SET v = 'b newer' WHERE id BETWEEN 101 AND 150`);
    await b.query(`DELETE FROM ${schema}.t WHERE id BETWEEN 201 AND 220`);
    await b.query(`INSERT INTO ${schema}.t VALUES (${N + 1}, 'b has it', 0, NULL)`);

    svc = startServices(cfg, { captures: ['a'], applies: ['a-b'] });
    await waitUntil('u on b', async () => Number((await b.query(`SELECT count(*) AS n FROM ${schema}.u WHERE tag LIKE 'x%'`)).rows[0].n) === 200, 120_000);

    const rows = new Map(
      (await b.query<{ id: string; v: string; n: string; raw: string | null }>(`SELECT id, v, n, raw FROM ${schema}.t`)).rows.map((r) => [Number(r.id), r]),
    );
    const expected = (id: number): { v: string; n: string; raw: string | null } | null => {
      if (id === 1) return { v: 'k1 last', n: '-1', raw: null };
      if (id === 2) return { v: 'k2 last', n: '3', raw: '\\x0102' };
      if (id === 3) return { v: 'other', n: '4', raw: '\\x0102' };
      if (id > N) return id === N + 1 ? { v: 'b has it', n: '0', raw: null } : { v: 'new', n: String(id), raw: null };
      // b's newer update also wins over a's older delete (delete_origin_differs).
      if (id >= 101 && id <= 150) return { v: 'b newer', n: String(id), raw: '\\x00ff' };
      if (id % 10 === 0) return null;
      // Deleted on b after a's update: update_missing becomes an insert of a's row (DTS).
      return { v: 'from a', n: String(id + 1), raw: '\\x0102' };
    };
    const wrong: string[] = [];
    for (let id = 1; id <= N + 500; id++) {
      const got = rows.get(id);
      const want = expected(id);
      const g = got ? { v: got.v, n: got.n, raw: got.raw } : null;
      if (JSON.stringify(g) !== JSON.stringify(want)) wrong.push(`${id}: ${JSON.stringify(g)} ≠ ${JSON.stringify(want)}`);
    }
    expect(wrong.slice(0, 10)).toEqual([]);
    expect(rows.size).toBe(N + 500 - N / 10 + 5);
    // Conflicts recorded: 50 update_origin_differs, 5 delete_origin_differs, 20 update_missing, 1 insert_exists.
    const kinds = (
      await b.query<{ kind: string; n: string }>(`SELECT kind, count(*)::text AS n FROM cdc.conflicts WHERE pipeline = $1 GROUP BY kind ORDER BY kind`, [
        cfg.pipeline,
      ])
    ).rows;
    expect(kinds).toEqual([
      { kind: 'delete_origin_differs', n: '5' },
      { kind: 'insert_exists', n: '1' },
      { kind: 'update_missing', n: '20' },
      { kind: 'update_origin_differs', n: '50' },
    ]);
    expect(await counter(svc.applies['a-b']!.registry, 'pgbridge_apply_conflicts_total')).toBe(76);
    // Most rows went in sets: everything but the conflicting rows, key 1's and 2's repeats and table u's updates.
    expect(await counter(svc.applies['a-b']!.registry, 'pgbridge_apply_set_rows_total')).toBeGreaterThan(N + 400);
    expect(svc.errors).toEqual([]);
  });
});
