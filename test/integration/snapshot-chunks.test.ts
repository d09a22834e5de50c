/**
 * Snapshot chunk records on real services: a plain Kafka consumer with the stock registry
 * client reads them (no pgbridge code) and finds every source row, value for value, in
 * records below 1 MiB; apply loads them with COPY into an empty table and merges them under
 * the conflict policy into tables that already had rows; the throttles hold.
 */
import { SchemaRegistry } from '@kafkajs/confluent-schema-registry';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initialSync } from '../../services/cli/initial-sync.js';
import { release } from '../../services/cli/setup.js';
import type { PipelineConfig } from '../../shared/config.js';
import { KafkaClient, followTopic, kafkaClient, recordsBehind, type ConsumedMessage } from '../../shared/kafka.js';
import pg from 'pg';
import { SESSION_OPTIONS, withClient } from '../../shared/pg.js';
import { testConfig, testLog, uniqueName, waitUntil } from '../support/pipeline.js';
import { startServices } from '../support/services.js';

const ROWS = 30_000;

/** A tap's own reading of the COPY text format (as documented in docs/events.md). */
function tapParse(data: Buffer): (string | null)[][] {
  const esc: Record<string, string> = { b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v', '\\': '\\' };
  return data
    .toString('utf8')
    .split('\n')
    .slice(0, -1)
    .map((line) => line.split('\t').map((f) => (f === '\\N' ? null : f.replace(/\\(.)/g, (_m, c: string) => esc[c] ?? c))));
}

describe('snapshot chunk records', () => {
  const schema = uniqueName('chunks');
  let cfg: PipelineConfig;
  const cleanups: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    cfg = testConfig(uniqueName('pch'), schema, { conflicts: { policy: 'overwrite', tables: { [`${schema}.keep`]: 'ignore' } } });
    const ddl = `
      CREATE SCHEMA ${schema};
      CREATE TYPE ${schema}.mood AS ENUM ('ok', 'meh');
      CREATE TABLE ${schema}.types (id int PRIMARY KEY, t text, b bytea, arr text[], j jsonb, ts timestamptz, n numeric, f float8, flag boolean, m ${schema}.mood, big int8, iv interval, nothing text);
      CREATE TABLE ${schema}.keep (id int PRIMARY KEY, v text NOT NULL);
      CREATE TABLE ${schema}.over (id int PRIMARY KEY, v text NOT NULL);`;
    await withClient(cfg.clusters.a!, 'test', (c) =>
      c.query(`${ddl}
      INSERT INTO ${schema}.types SELECT g, CASE g % 4 WHEN 0 THEN E'tab\\there' WHEN 1 THEN E'new\\nline and \\\\ backslash' WHEN 2 THEN 'ünïcödé ' || g ELSE repeat('x', g % 90) END,
        decode(md5(g::text), 'hex'), ARRAY['a' || g, NULL, E'q"u\\\\o'], jsonb_build_object('g', g, 'big', 12345678901234567890),
        '2020-01-01 00:00:00.123456+00'::timestamptz + g * interval '1 second', g / 7.0, CASE WHEN g % 5 = 0 THEN 'NaN'::float8 ELSE g / 3.0 END,
        g % 2 = 0, CASE WHEN g % 2 = 0 THEN 'ok' ELSE 'meh' END::${schema}.mood, 9007199254740993 + g, g * interval '1 minute', NULL
        FROM generate_series(1, ${ROWS}) g;
      INSERT INTO ${schema}.keep SELECT g, 'source ' || g FROM generate_series(1, 1000) g;
      INSERT INTO ${schema}.over SELECT g, 'source ' || g FROM generate_series(1, 1000) g;
      ANALYZE ${schema}.types;`),
    );
    // The destination already has half of keep and over, with other values.
    await withClient(cfg.clusters.b!, 'test', (c) =>
      c.query(`${ddl}
      INSERT INTO ${schema}.keep SELECT g, 'destination ' || g FROM generate_series(1, 500) g;
      INSERT INTO ${schema}.over SELECT g, 'destination ' || g FROM generate_series(1, 500) g;`),
    );
    cleanups.push(async () => {
      await release(cfg, testLog, { topics: true }).catch(() => undefined);
      for (const c of cfg.clusterNames) await withClient(cfg.clusters[c]!, 'test', (cl) => cl.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));
    });
  });

  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('carries every row in records a plain consumer decodes, and apply loads them (COPY into the empty table, merged under the policy elsewhere)', async () => {
    const report = await initialSync(cfg, testLog, { existingTables: 'ignore', chunkRows: 12_000, workers: 2 });
    expect(report.rows).toBe(ROWS + 2000);

    // A tap: a read_committed Kafka reader and the stock Confluent registry client; nothing of pgbridge's decoding.
    const registry = new SchemaRegistry({ host: cfg.registry.url });
    const chunks: { name: string; size: number; value: Record<string, any> }[] = [];
    let rows = 0;
    let done!: () => void;
    const all = new Promise<void>((r) => (done = r));
    const tap = followTopic(
      new KafkaClient({ brokers: cfg.kafka.brokers, clientId: 'tap' }),
      cfg.directions[0].topic,
      { readCommitted: true },
      async (messages: ConsumedMessage[]) => {
        for (const m of messages) {
          const schemaType = await registry.getSchema(m.value!.readUInt32BE(1));
          const value = (await registry.decode(m.value!)) as Record<string, any>;
          const name = (schemaType as { name?: string }).name ?? '';
          chunks.push({ name, size: m.value!.length, value });
          if (name === 'pgbridge.SnapshotChunk') rows += Number(value.rows);
          if (rows >= ROWS + 2000) done();
        }
      },
    );
    try {
      await Promise.race([all, new Promise((_, reject) => setTimeout(() => reject(new Error(`tap read ${rows} rows`)), 60_000))]);
    } finally {
      await tap.stop();
    }
    const typeChunks = chunks.filter((c) => c.name === 'pgbridge.SnapshotChunk' && c.value.table === 'types');
    expect(typeChunks.length).toBeGreaterThan(2);
    for (const c of chunks) expect(c.size).toBeLessThan(1024 * 1024);
    expect(typeChunks[0]!.value.format).toBe('pg-copy-text');
    expect(typeChunks[0]!.value.columns.map((c: { name: string }) => c.name)).toEqual([
      'id',
      't',
      'b',
      'arr',
      'j',
      'ts',
      'n',
      'f',
      'flag',
      'm',
      'big',
      'iv',
      'nothing',
    ]);
    const decoded = typeChunks.flatMap((c) => tapParse(c.value.data as Buffer)).sort((x, y) => Number(x[0]) - Number(y[0]));
    for (const c of typeChunks) expect(tapParse(c.value.data as Buffer).length).toBe(Number(c.value.rows));
    // The source's own text output of every value (what COPY writes), nothing parsed.
    const a = cfg.clusters.a!;
    const src = new pg.Client({
      host: a.host,
      port: a.port,
      user: a.user,
      database: a.database,
      password: a.password,
      options: SESSION_OPTIONS,
      types: { getTypeParser: () => (v: string) => v } as never,
    });
    await src.connect();
    try {
      const r = await src.query({ text: `SELECT * FROM ${schema}.types ORDER BY id`, rowMode: 'array' });
      expect(decoded.length).toBe(ROWS);
      expect(decoded).toEqual(r.rows);
    } finally {
      await src.end();
    }

    // Apply loads the chunks.
    const svc = startServices(cfg, { captures: [], applies: ['a-b'] });
    try {
      await waitUntil(
        'rows on b',
        async () => {
          const r = await withClient(cfg.clusters.b!, 'test', (c) =>
            c.query<{ n: string }>(
              `SELECT (SELECT count(*) FROM ${schema}.types) + (SELECT count(*) FROM ${schema}.keep) + (SELECT count(*) FROM ${schema}.over) AS n`,
            ),
          );
          return Number(r.rows[0]!.n) === ROWS + 2000;
        },
        120_000,
        200,
      );
      expect(svc.errors).toEqual([]);
    } finally {
      await svc.stop();
    }
    const same = async (table: string): Promise<[string, string]> => {
      const sql = `SELECT md5(string_agg(x::text, '|' ORDER BY id)) AS h FROM ${schema}.${table} x`;
      const a = await withClient(cfg.clusters.a!, 'test', (c) => c.query<{ h: string }>(sql));
      const b = await withClient(cfg.clusters.b!, 'test', (c) => c.query<{ h: string }>(sql));
      return [a.rows[0]!.h, b.rows[0]!.h];
    };
    const [ta, tb] = await same('types');
    expect(tb).toBe(ta);
    const [oa, ob] = await same('over');
    expect(ob).toBe(oa); // overwrite: the source rows won
    const kept = await withClient(cfg.clusters.b!, 'test', (c) =>
      c.query<{ dest: string; src: string }>(
        `SELECT count(*) FILTER (WHERE v LIKE 'destination %')::text AS dest, count(*) FILTER (WHERE v LIKE 'source %')::text AS src FROM ${schema}.keep`,
      ),
    );
    expect(kept.rows[0]).toEqual({ dest: '500', src: '500' }); // ignore: the destination rows stayed
    const loads = await withClient(cfg.clusters.b!, 'test', (c) =>
      c.query<{ table_name: string; was_empty: boolean }>('SELECT table_name, was_empty FROM cdc.snapshot_loads WHERE pipeline = $1 ORDER BY 1', [
        cfg.pipeline,
      ]),
    );
    expect(loads.rows).toEqual([
      { table_name: `${schema}.keep`, was_empty: false },
      { table_name: `${schema}.over`, was_empty: false },
      { table_name: `${schema}.types`, was_empty: true },
    ]);
  }, 300_000);

  it('loads a range published twice (a sync killed after Kafka committed it, before it was recorded) without a duplicate row', async () => {
    const s = uniqueName('dup');
    const c = testConfig(uniqueName('pdu'), s);
    cleanups.push(async () => {
      await release(c, testLog, { topics: true }).catch(() => undefined);
      for (const cl of c.clusterNames) await withClient(c.clusters[cl]!, 'test', (x) => x.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`));
    });
    await withClient(c.clusters.a!, 'test', (x) =>
      x.query(`CREATE SCHEMA ${s};
      CREATE TABLE ${s}.t (id int PRIMARY KEY, v text); INSERT INTO ${s}.t SELECT g, md5(g::text) FROM generate_series(1, 20000) g;
      CREATE TABLE ${s}.n (a int, b text); ALTER TABLE ${s}.n REPLICA IDENTITY FULL; INSERT INTO ${s}.n SELECT g % 10, 'n' FROM generate_series(1, 5000) g;
      ANALYZE ${s}.t, ${s}.n;`),
    );
    const first = await initialSync(c, testLog, { chunkRows: 5000 });
    expect(first.rows).toBe(25_000);
    // What a SIGKILL between Kafka's commit of the last range of t and its bookkeeping leaves.
    const undone = await withClient(c.clusters.a!, 'test', async (x) => {
      const r = await x.query<{ rows_done: string }>(
        `UPDATE cdc.snapshot_ranges SET done = false WHERE pipeline = $1 AND table_name = $2
           AND range_no = (SELECT max(range_no) FROM cdc.snapshot_ranges WHERE pipeline = $1 AND table_name = $2) RETURNING rows_done::text`,
        [c.pipeline, `${s}.t`],
      );
      await x.query('UPDATE cdc.snapshot_progress SET done = false, rows_done = rows_done - $3 WHERE pipeline = $1 AND table_name = $2', [
        c.pipeline,
        `${s}.t`,
        r.rows[0]!.rows_done,
      ]);
      return Number(r.rows[0]!.rows_done);
    });
    expect(undone).toBeGreaterThan(0);
    const second = await initialSync(c, testLog, { chunkRows: 5000, schema: false });
    expect(second.resumed).toBe(true);
    // That range again, and nothing of the finished tables.
    expect(second.rows).toBe(undone);

    const svc = startServices(c, { captures: [], applies: ['a-b'] });
    const kafka = kafkaClient(c, 'test-offsets', testLog);
    const admin = kafka.admin();
    try {
      await waitUntil(
        'apply at the end of the topic',
        async () => {
          const end = (await admin.topicOffsets(c.directions[0].topic))[0]!.high;
          const r = await withClient(c.clusters.b!, 'test', (x) =>
            x.query<{ next: string }>('SELECT next_offset::text AS next FROM cdc.apply_progress WHERE pipeline = $1', [c.pipeline]),
          );
          return r.rows[0] !== undefined && recordsBehind(end, BigInt(r.rows[0].next)) === 0;
        },
        120_000,
        200,
      );
      expect(svc.errors).toEqual([]);
    } finally {
      await admin.close();
      await svc.stop();
    }
    const b = await withClient(c.clusters.b!, 'test', (x) =>
      x.query<{ t: string; ids: string; n: string }>(
        `SELECT (SELECT count(*) FROM ${s}.t)::text AS t, (SELECT count(DISTINCT id) FROM ${s}.t)::text AS ids, (SELECT count(*) FROM ${s}.n)::text AS n`,
      ),
    );
    expect(b.rows[0]).toEqual({ t: '20000', ids: '20000', n: '5000' });
  }, 180_000);

  it('holds the rows/s and MB/s throttles within ±20 %', async () => {
    for (const limit of [{ maxRowsPerSecond: 8_000 }, { maxMegabytesPerSecond: 1 }]) {
      const s = uniqueName('thr');
      const c = testConfig(uniqueName('pth'), s);
      cleanups.push(async () => {
        await release(c, testLog, { topics: true }).catch(() => undefined);
        for (const cl of c.clusterNames) await withClient(c.clusters[cl]!, 'test', (x) => x.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`));
      });
      // 32,000 rows of about 100 bytes: 4 s at either limit.
      await withClient(c.clusters.a!, 'test', (x) =>
        x.query(`CREATE SCHEMA ${s}; CREATE TABLE ${s}.t (id int PRIMARY KEY, v text);
        INSERT INTO ${s}.t SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 32000) g; ANALYZE ${s}.t;`),
      );
      const r = await initialSync(c, testLog, { chunkRows: 1000, ...limit });
      expect(r.rows).toBe(32_000);
      if (limit.maxRowsPerSecond) {
        const rate = r.rows / r.dataSeconds;
        expect(rate, `${rate.toFixed(0)} rows/s`).toBeGreaterThan(limit.maxRowsPerSecond * 0.8);
        expect(rate, `${rate.toFixed(0)} rows/s`).toBeLessThan(limit.maxRowsPerSecond * 1.2);
      } else {
        const rate = r.bytes / 1024 / 1024 / r.dataSeconds;
        expect(rate, `${rate.toFixed(2)} MB/s`).toBeGreaterThan(limit.maxMegabytesPerSecond! * 0.8);
        expect(rate, `${rate.toFixed(2)} MB/s`).toBeLessThan(limit.maxMegabytesPerSecond! * 1.2);
      }
    }
  }, 120_000);
});
