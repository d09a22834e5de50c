/**
 * Table shapes real schemas have, both directions running: a partitioned table replicates as
 * its root (rows, a row moving between partitions, verify equal), a TRUNCATE of FK-linked
 * tables is applied as one TRUNCATE, a 20 MiB row replicates, a generated column is never
 * written, and a row over topics.maxMessageBytes stops capture with a clear error before
 * anything of its transaction is published.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verify } from '../../services/cli/verify.js';
import { kafkaClient, readTopic } from '../../shared/kafka.js';
import { testLog, waitUntil } from '../support/pipeline.js';
import { startServices, tablesPipeline, waitServicesReady, type Running, type TablesPipeline } from '../support/services.js';

const count = async (c: TablesPipeline['a'], sql: string): Promise<number> => Number((await c.query(sql)).rows[0].n);

describe('table shapes', () => {
  let p: TablesPipeline;
  let svc: Running;

  beforeAll(async () => {
    p = await tablesPipeline(
      'shp',
      (s) => `
      CREATE TABLE ${s}.m (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
      CREATE TABLE ${s}.m_eu PARTITION OF ${s}.m FOR VALUES IN ('eu');
      CREATE TABLE ${s}.m_us PARTITION OF ${s}.m FOR VALUES IN ('us');
      CREATE TABLE ${s}.m_asia PARTITION OF ${s}.m FOR VALUES IN ('asia');
      CREATE TABLE ${s}.parent (id int PRIMARY KEY);
      CREATE TABLE ${s}.child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES ${s}.parent (id));
      CREATE TABLE ${s}.big (id int PRIMARY KEY, body text, len int GENERATED ALWAYS AS (length(body)) STORED);`,
    );
    svc = startServices(p.cfg);
    await waitServicesReady(svc);
  }, 60_000);

  afterAll(async () => {
    await svc?.stop();
    await p?.close();
  });

  it('a partitioned table with three partitions replicates as its root, including a row moving between partitions, both ways; verify says equal', async () => {
    const s = p.schema;
    await p.a.query(`INSERT INTO ${s}.m VALUES (1, 'eu', 'one'), (2, 'us', 'two'), (3, 'asia', 'three')`);
    await p.b.query(`INSERT INTO ${s}.m VALUES (4, 'eu', 'four from b')`);
    await p.a.query(`UPDATE ${s}.m SET region = 'us', v = 'moved' WHERE id = 1`);
    await p.b.query(`UPDATE ${s}.m SET region = 'asia' WHERE id = 4`);
    const rows = `SELECT tableoid::regclass::text AS part, id, region, v FROM ${s}.m ORDER BY id`;
    const want = JSON.stringify((await p.a.query(rows)).rows.filter((r) => r.id !== '4'));
    await waitUntil('partitioned rows on both clusters', async () => {
      const [a, b] = [(await p.a.query(rows)).rows, (await p.b.query(rows)).rows];
      return JSON.stringify(a) === JSON.stringify(b) && a.length === 4 && JSON.stringify(b.filter((r) => r.id !== '4')) === want;
    });
    const b = (await p.b.query(rows)).rows;
    expect(b.map((r) => `${r.id}:${r.part.split('.')[1]}:${r.v}`)).toEqual(['1:m_us:moved', '2:m_us:two', '3:m_asia:three', '4:m_asia:four from b']);
    const r = await verify(p.cfg, { tables: [`${s}.m`] });
    expect(r.tables.map((t) => [t.table, t.equal, t.rowsA, t.rowsB])).toEqual([[`${s}.m`, true, 4, 4]]);
  });

  it('TRUNCATE parent, child (FK-linked) is applied as one TRUNCATE of both', async () => {
    const s = p.schema;
    await p.a.query(`INSERT INTO ${s}.parent VALUES (1), (2); INSERT INTO ${s}.child VALUES (10, 1), (20, 2)`);
    await waitUntil('child rows on b', async () => (await count(p.b, `SELECT count(*) AS n FROM ${s}.child`)) === 2);
    await p.a.query(`TRUNCATE ${s}.parent, ${s}.child`);
    await p.a.query(`INSERT INTO ${s}.parent VALUES (3)`);
    await waitUntil(
      'truncated on b',
      async () => (await count(p.b, `SELECT count(*) AS n FROM ${s}.child`)) === 0 && (await count(p.b, `SELECT count(*) AS n FROM ${s}.parent`)) === 1,
    );
    // A partitioned root truncates with its partitions.
    await p.b.query(`TRUNCATE ${s}.m`);
    await waitUntil('partitioned table truncated on a', async () => (await count(p.a, `SELECT count(*) AS n FROM ${s}.m`)) === 0);
    expect(svc.errors).toEqual([]);
  });

  it('a 20 MiB row replicates whole; its generated column is computed by the destination, never written', async () => {
    const s = p.schema;
    await p.a.query(`INSERT INTO ${s}.big (id, body) SELECT 1, string_agg(md5(g::text), '') FROM generate_series(1, 655360) g`);
    await waitUntil('20 MiB row on b', async () => (await count(p.b, `SELECT count(*) AS n FROM ${s}.big`)) === 1, 120_000, 500);
    const digest = `SELECT md5(body) || ':' || len AS n FROM ${s}.big WHERE id = 1`;
    expect((await p.b.query(digest)).rows[0].n).toBe((await p.a.query(digest)).rows[0].n);
    expect((await p.b.query(`SELECT len FROM ${s}.big`)).rows[0].len).toBe(String(20 * 1024 * 1024));
    expect(svc.errors).toEqual([]);
  }, 180_000);
});

describe('a row over topics.maxMessageBytes', () => {
  let p: TablesPipeline;
  let svc: Running | null = null;

  beforeAll(async () => {
    p = await tablesPipeline('big', (s) => `CREATE TABLE ${s}.t (id int PRIMARY KEY, body text)`, { topics: { maxMessageBytes: 1024 * 1024 } });
  }, 60_000);

  afterAll(async () => {
    await svc?.stop();
    await p?.close();
  });

  it('stops capture with an error naming table, key and position; nothing of its transaction reaches the topic', async () => {
    const s = p.schema;
    svc = startServices(p.cfg, { captures: ['a'], applies: ['a-b'] });
    await waitServicesReady(svc);
    await p.a.query(`INSERT INTO ${s}.t VALUES (1, 'small')`);
    await waitUntil('first row on b', async () => (await count(p.b, `SELECT count(*) AS n FROM ${s}.t`)) === 1);
    await p.a.query('BEGIN');
    await p.a.query(`INSERT INTO ${s}.t VALUES (2, 'same transaction, small')`);
    await p.a.query(`INSERT INTO ${s}.t SELECT 3, string_agg(md5(g::text), '') FROM generate_series(1, 65536) g`);
    await p.a.query('COMMIT');
    await waitUntil('capture stopped', async () => svc!.errors.length > 0, 30_000);
    const err = svc.errors[0] as Error & { code?: string };
    expect(err.code).toBe('ROW_TOO_LARGE');
    expect(err.message).toMatch(
      new RegExp(
        `^row too large: insert of ${s}\\.t key \\(id\\), values logged at debug level, at LSN [0-9A-F]+/[0-9A-F]+ \\(xid \\d+, commit LSN [0-9A-F/]+\\) on cluster a, is 209\\d{4} bytes \\(2\\.0 MiB\\) encoded, over topics\\.maxMessageBytes 1048576 \\(1\\.0 MiB\\)`,
      ),
    );
    // Every committed record of the topic: the first transaction only (its row, heartbeats), none of the second.
    const committed = await readTopic(kafkaClient(p.cfg, 'test', testLog), p.cfg.directions[0].topic, { readCommitted: true });
    expect(committed.some((m) => m.value?.includes('same transaction, small'))).toBe(false);
    expect(committed.some((m) => m.value?.includes('small'))).toBe(true);
    expect(await count(p.b, `SELECT count(*) AS n FROM ${s}.t`)).toBe(1);
    // The slot still holds the transaction: nothing was acknowledged past it.
    const slot = (
      await p.a.query(`SELECT confirmed_flush_lsn < pg_current_wal_lsn() AS behind FROM pg_replication_slots WHERE slot_name = $1`, [`cdc_${p.cfg.pipeline}_a`])
    ).rows[0];
    expect(slot.behind).toBe(true);
  });
});
