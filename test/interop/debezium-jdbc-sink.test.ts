/**
 * A real third-party consumer of a direction topic: Kafka Connect 4.1.1 with the Debezium
 * JDBC sink connector 3.3.1.Final and Apicurio's Avro converter 2.6.13.Final (infra/stack/
 * connect.ts, fetched through Maven) reads what capture published — 100 inserts, 10 updates,
 * 5 deletes over a table with one column of every type family the connector maps — into a
 * third database. That database ends equal to the source, value for value, and the sink
 * created every column with the source's type (docs/events.md, "Column values").
 *
 * Not in `npm test` (starting the Connect worker takes about a minute): `npm run test:interop`,
 * which CI runs too.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { connectUp, connectorTaskErrors, deleteConnector, putConnector } from '../../infra/stack/connect.js';
import { stackSettings } from '../../infra/stack/settings.js';
import { startServices, tablesPipeline, waitServicesReady, type Running, type TablesPipeline } from '../support/services.js';
import { waitUntil } from '../support/pipeline.js';

/** [column, type, value of row i as SQL (i is the row number)] */
const COLUMNS: [string, string, (i: number) => string][] = [
  ['small', 'smallint', (i) => `${i % 2 ? -32768 : 32767 - i}`],
  ['big', 'bigint', (i) => `${i % 2 ? '-9223372036854775808' : `9223372036854775807 - ${i}`}`],
  ['whole', 'integer', (i) => `${-2147483648 + i}`],
  ['flag', 'boolean', (i) => (i % 3 ? 'true' : 'false')],
  ['r4', 'real', (i) => `${i}.25::real`],
  ['r8', 'double precision', (i) => `${i} * 0.1::float8`],
  ['price', 'numeric(14,2)', (i) => `${i % 2 ? '-' : ''}${i}123456789.${String(i % 100).padStart(2, '0')}`],
  ['amount', 'numeric(38,10)', (i) => `${i}2345678901234567890123456.1234567891`],
  ['day', 'date', (i) => `date '2026-01-01' + ${i * 37}`],
  ['at_time', 'time without time zone', (i) => `time '00:00:00.000001' + ${i} * interval '13 minutes 7.5 seconds'`],
  ['at_ts', 'timestamp without time zone', (i) => `timestamp '1999-12-31 23:59:59.999999' + ${i} * interval '1 day 1 hour'`],
  ['at_ts3', 'timestamp(3) without time zone', (i) => `timestamp '2026-11-30 07:00:00.123' + ${i} * interval '1 second'`],
  ['at_tz', 'timestamp with time zone', (i) => `timestamptz '2026-02-28 23:00:00.5+00' + ${i} * interval '1 hour'`],
  ['doc', 'json', (i) => `'{"i": ${i}, "a": [1, 2.50, "x"],  "dup": 1, "dup": 2}'`],
  ['docb', 'jsonb', (i) => `'{"i": ${i}, "nested": {"ok": true}}'`],
  ['uid', 'uuid', (i) => `'00000000-0000-4000-8000-${String(i).padStart(12, '0')}'`],
  ['name', 'character varying(40)', (i) => `'name ${i} ☃'`],
  ['code', 'character(3)', (i) => `'${String.fromCharCode(65 + (i % 26))}'`],
  ['note', 'text', (i) => `'it''s row ${i}\nwith a newline'`],
  ['raw', 'bytea', (i) => `'\\x00ff${String(i % 100).padStart(2, '0')}'::bytea`],
  ['ip', 'inet', (i) => `'10.0.${i}.1/16'`],
  ['net', 'cidr', (i) => `'10.${i}.0.0/16'`],
  ['mac', 'macaddr', (i) => `'08:00:2b:01:02:${(i % 256).toString(16).padStart(2, '0')}'`],
  ['cash', 'money', (i) => `${i}.99`],
  ['span', 'int4range', (i) => `int4range(${i}, ${i + 10})`],
  ['period', 'tstzrange', (i) => `tstzrange('2026-01-01 00:00:00+00', '2026-01-0${(i % 9) + 1} 00:00:00+00')`],
  ['x', 'xml', (i) => `'<row n="${i}">&amp;</row>'`],
];

/** A column declared without a precision: the sink writes the precision PostgreSQL uses then (6). */
function sameType(source: string, sink: string): boolean {
  const norm = (t: string) => t.replace(/^(timestamp|time)\(6\)/, '$1');
  return norm(source) === norm(sink);
}

describe('Debezium JDBC sink connector reads a direction topic (Kafka Connect, real services)', () => {
  const s = stackSettings();
  const connector = `pgbridge-interop-${randomBytes(4).toString('hex')}`;
  const database = `interop_${randomBytes(4).toString('hex')}`;
  let p: TablesPipeline | undefined;
  let svc: Running | undefined;
  let sink: pg.Client | undefined;
  afterAll(async () => {
    await deleteConnector(s, connector);
    await svc?.stop();
    await sink?.end();
    await p?.close();
    const admin = new pg.Client({ host: s.host, port: s.pg.b.port, user: 'postgres', database: 'postgres' });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch(() => undefined);
    await admin.end();
  });

  it('replicates 100 inserts, 10 updates and 5 deletes into a third database: equal rows, the source column types', async () => {
    const table = `t_${randomBytes(3).toString('hex')}`;
    p = await tablesPipeline(
      'dbz',
      (sch) => `CREATE TABLE ${sch}.${table} (id int PRIMARY KEY, ${COLUMNS.map(([c, t]) => `${c} ${t}`).join(', ')}, nan_price numeric(10,2));`,
    );
    const { a, schema, cfg } = p;
    svc = startServices(cfg, { captures: ['a'], applies: [] });
    await waitServicesReady(svc);
    // The source's changes: 100 inserts in 10 transactions, 10 updates, 5 deletes.
    const values = (i: number) => `(${i}, ${COLUMNS.map(([, , v]) => v(i)).join(', ')}, ${i === 7 ? "'NaN'" : `${i}.5`})`;
    for (let t = 0; t < 10; t++)
      await a.query(`INSERT INTO ${schema}.${table} VALUES ${Array.from({ length: 10 }, (_, k) => values(t * 10 + k + 1)).join(', ')}`);
    for (let i = 1; i <= 10; i++) {
      await a.query(
        `UPDATE ${schema}.${table} SET price = price + 1, note = note || ' (updated)', at_tz = at_tz + interval '1 minute', docb = docb || '{"updated": true}', small = -1 - small WHERE id = $1`,
        [i * 9],
      );
    }
    await a.query(`DELETE FROM ${schema}.${table} WHERE id IN (2, 30, 31, 64, 100)`);

    sink = new pg.Client({ host: s.host, port: s.pg.b.port, user: 'postgres', database: 'postgres' });
    await sink.connect();
    await sink.query(`CREATE DATABASE ${database}`);
    await sink.end();
    sink = new pg.Client({
      host: s.host,
      port: s.pg.b.port,
      user: 'postgres',
      database,
      options: '-c timezone=UTC -c datestyle=ISO,YMD -c extra_float_digits=3 -c bytea_output=hex',
    });
    await sink.connect();

    await connectUp(s, (line) => console.log(`[stack] ${line}`));
    const converter = (side: 'key' | 'value') => ({
      [`${side}.converter`]: 'io.apicurio.registry.utils.converter.AvroConverter',
      [`${side}.converter.apicurio.registry.url`]: `http://${s.host}:${s.registryPort}/apis/registry/v2`,
      [`${side}.converter.apicurio.registry.as-confluent`]: 'true',
      [`${side}.converter.apicurio.registry.use-id`]: 'contentId',
      [`${side}.converter.apicurio.registry.headers.enabled`]: 'false',
    });
    await putConnector(s, connector, {
      'connector.class': 'io.debezium.connector.jdbc.JdbcSinkConnector',
      'tasks.max': '1',
      topics: cfg.directions[0]!.topic,
      'connection.url': `jdbc:postgresql://${s.host}:${s.pg.b.port}/${database}`,
      'connection.username': 'postgres',
      'connection.password': 'unused',
      'insert.mode': 'upsert',
      'delete.enabled': 'true',
      'primary.key.mode': 'record_key',
      'schema.evolution': 'basic',
      'collection.name.format': '${source.table}',
      ...converter('key'),
      ...converter('value'),
    });

    const cols = ['id', ...COLUMNS.map(([c]) => c), 'nan_price'];
    const dump = (c: pg.Client, qname: string) =>
      c
        .query({ text: `SELECT ${cols.map((c) => `${c}::text`).join(', ')} FROM ${qname} ORDER BY id`, rowMode: 'array' })
        .then((r) => r.rows as (string | null)[][]);
    const want = await dump(a, `${schema}.${table}`);
    expect(want).toHaveLength(95);
    let got: (string | null)[][] = [];
    await waitUntil(
      'the sink database to hold the source rows',
      async () => {
        const failed = await connectorTaskErrors(s, connector);
        if (failed.length) throw new Error(`connector failed: ${failed.join('\n')}`);
        got = await dump(sink!, `public.${table}`).catch(() => []);
        return got.length === 95 && got.find((r) => r[0] === '90')?.[cols.indexOf('note')]?.endsWith('(updated)');
      },
      120_000,
      500,
    ).catch((err: Error) => {
      throw new Error(`${err.message}; rows in the sink: ${got.length}`);
    });
    // nan_price: NaN cannot be a Connect decimal; the sink receives NULL (the text is in the envelope's `special`).
    const nan = cols.indexOf('nan_price');
    expect(got.find((r) => r[0] === '7')![nan]).toBeNull();
    expect(want.find((r) => r[0] === '7')![nan]).toBe('NaN');
    const strip = (rows: (string | null)[][]) => rows.map((r) => r.filter((_, i) => i !== nan));
    expect(strip(got)).toEqual(strip(want));

    const types = (c: pg.Client, sch: string) =>
      c
        .query<{
          attname: string;
          t: string;
        }>(
          `SELECT attname, format_type(atttypid, atttypmod) AS t FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
          [`${sch}.${table}`],
        )
        .then((r) => Object.fromEntries(r.rows.map((x) => [x.attname, x.t])));
    const source = await types(a, schema);
    const target = await types(sink, 'public');
    const differ = Object.keys(source)
      .filter((c) => !sameType(source[c]!, target[c] ?? '(missing)'))
      .map((c) => `${c}: ${source[c]} → ${target[c]}`);
    console.log(
      `[interop] column types in the sink: ${Object.entries(target)
        .map(([c, t]) => `${c} ${t}`)
        .join(', ')}`,
    );
    expect(differ, 'columns whose sink type differs from the source').toEqual([]);
    const pk = await sink.query<{ a: string }>(
      `SELECT a.attname AS a FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) WHERE i.indrelid = $1::regclass AND i.indisprimary`,
      [`public.${table}`],
    );
    expect(pk.rows.map((r) => r.a)).toEqual(['id']);
  }, 420_000);
});
