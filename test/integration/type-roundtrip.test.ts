/**
 * apply writes back every built-in type family at its extremes exactly, now that capture
 * carries Connect semantic types (decimal, Debezium time and data names) and sends the values
 * those cannot hold (NaN, infinities, timestamps past 64-bit µs) in the envelope's `special`
 * map: the destination's rows equal the source's, compared as PostgreSQL text, after inserts,
 * an update and a delete, also for a table whose key is such a value.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { startServices, tablesPipeline, waitServicesReady, type Running, type TablesPipeline } from '../support/services.js';
import { waitUntil } from '../support/pipeline.js';
import { columnType, TYPES, userTypesSql } from '../support/types.js';

describe('apply round trip of every type at its extremes (real PostgreSQL, Kafka, registry)', () => {
  let p: TablesPipeline | undefined;
  let svc: Running | undefined;
  afterAll(async () => {
    await svc?.stop();
    await p?.close();
  });

  it('the destination equals the source, value for value, with special values and special keys', async () => {
    p = await tablesPipeline(
      'rtt',
      (s) => `${userTypesSql(s)}
      CREATE TABLE ${s}.types (id int PRIMARY KEY, ${TYPES.map(([t], i) => `c${i} ${columnType(t, s)}`).join(', ')});
      CREATE TABLE ${s}.odd_keys (n numeric(10,2), ts timestamp, d date, v text, PRIMARY KEY (n, ts, d));`,
    );
    const { a, b, schema } = p;
    svc = startServices(p.cfg, { captures: ['a'], applies: ['a-b'] });
    await waitServicesReady(svc);
    for (let row = 0; row < 3; row++) {
      const ph = TYPES.map(([t], i) => `$${i + 2}::${columnType(t, schema)}`).join(', ');
      await a.query(`INSERT INTO ${schema}.types VALUES ($1, ${ph})`, [row, ...TYPES.map(([, values]) => values[row] ?? null)]);
    }
    // An update moves row 2's values to row 1's (so every special value is also an update's), and a delete.
    await a.query(`UPDATE ${schema}.types t SET ${TYPES.map((_, i) => `c${i} = s.c${i}`).join(', ')} FROM ${schema}.types s WHERE t.id = 1 AND s.id = 2`);
    await a.query(`INSERT INTO ${schema}.types (id) VALUES (3)`);
    await a.query(`DELETE FROM ${schema}.types WHERE id = 0`);
    await a.query(
      `INSERT INTO ${schema}.odd_keys VALUES ('NaN', 'infinity', '-infinity', 'x'), (1.5, '294276-12-31 23:59:59.999999', 'infinity', 'y'), (2, '2026-01-01', '2026-01-01', 'z')`,
    );
    await a.query(`UPDATE ${schema}.odd_keys SET v = v || '!' WHERE n = 'NaN' OR n = 1.5`);
    await a.query(`DELETE FROM ${schema}.odd_keys WHERE n = 2`);
    await a.query(`INSERT INTO ${schema}.odd_keys VALUES (3, '-infinity', '2026-01-01', 'last')`);

    const dump = async (c: typeof a, table: string, order: string): Promise<string[][]> =>
      (await c.query({ text: `SELECT * FROM ${schema}.${table} ORDER BY ${order}`, rowMode: 'array' })).rows.map((r: unknown[]) =>
        r.map((v) => (v === null ? '∅' : String(v))),
      );
    const texts = `id, ${TYPES.map((_, i) => `c${i}::text`).join(', ')}`;
    const dumpTypes = async (c: typeof a) =>
      (await c.query({ text: `SELECT ${texts} FROM ${schema}.types ORDER BY id`, rowMode: 'array' })).rows as unknown[][];
    await waitUntil('odd_keys applied', async () => (await dump(b, 'odd_keys', 'n, ts, d')).some((r) => r[3] === 'last'), 60_000);
    expect(await dumpTypes(b)).toEqual(await dumpTypes(a));
    expect(await dump(b, 'odd_keys', 'n, ts, d')).toEqual(await dump(a, 'odd_keys', 'n, ts, d'));
    expect((await dumpTypes(a)).length).toBe(3);
    expect(svc.errors).toEqual([]);
  }, 120_000);
});
