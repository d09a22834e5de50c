/**
 * verify against the two real PostgreSQL clusters of the stack: equal tables, each kind of
 * difference reported under exactly its key, PK-less duplicates, missing tables, schema
 * differences, truncation, and the exactness decisions (float -0, json text).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { formatVerifyReport, verify, type TableReport } from '../../services/cli/verify.js';
import type { PipelineConfig } from '../../shared/config.js';
import { pgClient, testConfig, uniqueName } from '../support/pipeline.js';

describe('verify (real PostgreSQL x2)', () => {
  const schema = uniqueName('ver');
  let cfg: PipelineConfig;
  let a: pg.Client;
  let b: pg.Client;
  const both = async (sql: string): Promise<void> => {
    await a.query(sql);
    await b.query(sql);
  };
  const one = async (table: string, opts: { buckets?: number; maxKeys?: number } = {}): Promise<TableReport> => {
    const r = await verify(cfg, { ...opts, tables: [`${schema}.${table}`] });
    expect(r.tables).toHaveLength(1);
    return r.tables[0]!;
  };

  beforeAll(async () => {
    cfg = testConfig(uniqueName('pver'), schema);
    a = await pgClient(cfg, 'a');
    b = await pgClient(cfg, 'b');
    await both(`CREATE SCHEMA ${schema}`);
    const fill = (t: string): string =>
      `INSERT INTO ${schema}.${t} (id, name, amount, ts, data, tags, f, j)
       SELECT i, 'n' || i || E' \\'quoted\\' ☃', i * 1.25, timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second',
              decode(md5(i::text), 'hex'), ARRAY['x' || i, NULL], i / 3.0::float8, jsonb_build_object('i', i, 'k', 'v')
         FROM generate_series(1, 2000) i`;
    // Same data, columns in another order on b (to_jsonb keys are names): still equal.
    await a.query(
      `CREATE TABLE ${schema}.same (id int PRIMARY KEY, name text, amount numeric, ts timestamptz, data bytea, tags text[], f float8, j jsonb, g int GENERATED ALWAYS AS (id * 2) STORED)`,
    );
    await b.query(
      `CREATE TABLE ${schema}.same (g int GENERATED ALWAYS AS (id * 2) STORED, j jsonb, f float8, tags text[], data bytea, ts timestamptz, amount numeric, name text, id int PRIMARY KEY)`,
    );
    await a.query(fill('same'));
    await b.query(fill('same'));

    await both(`CREATE TABLE ${schema}.kv (region text, id int, val text, PRIMARY KEY (region, id))`);
    await both(`INSERT INTO ${schema}.kv SELECT r, i, 'v' || i FROM unnest(ARRAY['eu', 'us', 'a"b''c']) r, generate_series(1, 500) i`);
    await b.query(`UPDATE ${schema}.kv SET val = 'changed' WHERE region = 'eu' AND id = 7`);
    await b.query(`DELETE FROM ${schema}.kv WHERE region = 'a"b''c' AND id = 300`);
    await b.query(`INSERT INTO ${schema}.kv VALUES ('us', 501, 'extra')`);

    await both(`CREATE TABLE ${schema}.bag (x int, y text)`);
    await a.query(`INSERT INTO ${schema}.bag VALUES (1, 'a'), (2, 'b'), (2, 'b'), (4, NULL)`);
    await b.query(`INSERT INTO ${schema}.bag VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, NULL)`);

    await a.query(`CREATE TABLE ${schema}.only_a (id int PRIMARY KEY)`);
    await a.query(`INSERT INTO ${schema}.only_a VALUES (1), (2)`);
    await b.query(`CREATE TABLE ${schema}.only_b (id int PRIMARY KEY)`);

    await both(`CREATE TABLE ${schema}.floats (id int PRIMARY KEY, f float8, r real[])`);
    await a.query(`INSERT INTO ${schema}.floats VALUES (1, '-0', '{1.5}'), (2, 0.1, '{-0}'), (3, 'NaN', '{Infinity}')`);
    await b.query(`INSERT INTO ${schema}.floats VALUES (1, '0', '{1.5}'), (2, 0.1, '{0}'), (3, 'NaN', '{Infinity}')`);

    await both(`CREATE TABLE ${schema}.docs (id int PRIMARY KEY, j json, jb jsonb)`);
    await a.query(`INSERT INTO ${schema}.docs VALUES (1, '{"a": 1}', '{}'), (2, '[1]', '{"a": 1, "b": 2}')`);
    await b.query(`INSERT INTO ${schema}.docs VALUES (1, '{"a":1}', '{}'), (2, '[1]', '{"b":2,"a":1}')`);

    await both(`CREATE TABLE ${schema}.many (id int PRIMARY KEY)`);
    await a.query(`INSERT INTO ${schema}.many SELECT generate_series(1, 300)`);

    await both(`CREATE TABLE ${schema}."Odd Name" ("Größe" text PRIMARY KEY, "select" int)`);
    await both(`INSERT INTO ${schema}."Odd Name" VALUES ('x"y', 1), ('𝄞', 2)`);
    await b.query(`UPDATE ${schema}."Odd Name" SET "select" = 3 WHERE "Größe" = '𝄞'`);

    await a.query(`CREATE TABLE ${schema}.cols (id int PRIMARY KEY, v int)`);
    await b.query(`CREATE TABLE ${schema}.cols (id int PRIMARY KEY, v bigint, extra text)`);
    await both(`INSERT INTO ${schema}.cols (id, v) VALUES (1, 1)`);
  });

  afterAll(async () => {
    for (const c of [a, b]) {
      await c?.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await c?.end();
    }
  });

  it('reports equal tables as equal (column order, generated columns, every bucket count)', async () => {
    for (const buckets of [1, 64, 5000]) {
      const t = await one('same', { buckets });
      expect(t).toEqual({ table: `${schema}.same`, rowsA: 2000, rowsB: 2000, equal: true, differingKeys: [], truncated: false });
    }
    const r = await verify(cfg, { tables: [`${schema}.same`] });
    expect(r.equal).toBe(true);
    expect(formatVerifyReport(r).split('\n').at(-1)).toBe('clusters equal');
  });

  it('names exactly the changed, missing and extra keys with their kind', async () => {
    for (const buckets of [1, 64, 100_000]) {
      const t = await one('kv', { buckets });
      expect(t.equal).toBe(false);
      expect([t.rowsA, t.rowsB]).toEqual([1500, 1500]);
      const keys = [...t.differingKeys].sort((x, y) => JSON.stringify(x.key).localeCompare(JSON.stringify(y.key)));
      expect(keys).toEqual([
        { key: { region: 'a"b\'c', id: '300' }, kind: 'missing', onlyOn: 'a' },
        { key: { region: 'eu', id: '7' }, kind: 'different' },
        { key: { region: 'us', id: '501' }, kind: 'missing', onlyOn: 'b' },
      ]);
      expect(t.truncated).toBe(false);
    }
    const odd = await one('Odd Name');
    expect(odd.differingKeys).toEqual([{ key: { Größe: '𝄞' }, kind: 'different' }]);
  });

  it('reports a duplicated row of a PK-less table by row md5 with the copies on each side', async () => {
    const t = await one('bag');
    expect([t.rowsA, t.rowsB, t.equal]).toEqual([4, 4, false]);
    const byOwner = Object.fromEntries(t.differingKeys.map((d) => [d.onlyOn, d]));
    expect(t.differingKeys).toHaveLength(2);
    expect(byOwner.a).toMatchObject({ kind: 'missing', counts: { a: 2, b: 1 } });
    expect(byOwner.b).toMatchObject({ kind: 'missing', counts: { a: 0, b: 1 } });
    const md5 = await a.query(`SELECT md5(to_jsonb(r.*)::text) AS h FROM ${schema}.bag r WHERE x = 2 LIMIT 1`);
    expect(byOwner.a!.key).toEqual({ row_md5: md5.rows[0].h });
  });

  it('reports a table that exists on one cluster only', async () => {
    expect(await one('only_a')).toMatchObject({ missingOn: 'b', rowsA: 2, rowsB: 0, equal: false });
    expect(await one('only_b')).toMatchObject({ missingOn: 'a', rowsA: 0, rowsB: 0, equal: false });
  });

  it('is exact: float -0 differs from 0 (also in arrays), NaN equals NaN; json text differs, jsonb compares as jsonb', async () => {
    const f = await one('floats');
    expect(f.differingKeys.map((d) => [d.key.id, d.kind]).sort()).toEqual([
      ['1', 'different'],
      ['2', 'different'],
    ]);
    const d = await one('docs');
    expect(d.differingKeys).toEqual([{ key: { id: '1' }, kind: 'different' }]);
  });

  it('caps the listed keys at maxKeys and says so', async () => {
    const t = await one('many', { maxKeys: 10, buckets: 1 });
    expect(t.differingKeys).toHaveLength(10);
    expect(t.truncated).toBe(true);
    expect(t.differingKeys.every((k) => k.kind === 'missing' && k.onlyOn === 'a')).toBe(true);
    const all = await one('many', { maxKeys: 300 });
    expect([all.differingKeys.length, all.truncated]).toEqual([300, false]);
  });

  it('reports column differences even when the values compare equal', async () => {
    const t = await one('cols');
    expect(t.equal).toBe(false);
    expect(t.problem).toBe('columns differ: v is integer on a, bigint on b; extra only on b');
  });

  it('verifies every selected table and formats the result', async () => {
    const progress: number[] = [];
    const r = await verify(cfg, { onProgress: (p) => progress.push(p.done) });
    expect(r.clusters).toEqual(['a', 'b']);
    expect(r.tables.map((t) => t.table)).toEqual(
      ['Odd Name', 'bag', 'cols', 'docs', 'floats', 'kv', 'many', 'only_a', 'only_b', 'same'].map((t) => `${schema}.${t}`),
    );
    expect(progress).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(r.equal).toBe(false);
    const text = formatVerifyReport(r);
    expect(text).toContain(`${schema}.only_a`);
    expect(text).toContain('missing on b');
    expect(text).toContain('{"region":"eu","id":"7"}');
    expect(text.split('\n').at(-1)).toBe('clusters differ: 9 table(s)');
    await expect(verify(cfg, { tables: [`${schema}.nope`] })).rejects.toThrow(/not selected/);
  });
});
