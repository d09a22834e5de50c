/**
 * capture against real PostgreSQL, Kafka and registry: exact values of every built-in type
 * family at its extremes, unchanged TOAST columns, transaction framing and origin tags.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { CaptureRun, captureMetrics } from '../../services/capture/capture.js';
import { setup, release } from '../../services/cli/setup.js';
import { metricsRegistry } from '../../shared/http.js';
import { kafkaClient } from '../../shared/kafka.js';
import { pgName, toPgParam } from '../../shared/avro.js';
import type { PipelineConfig } from '../../shared/config.js';
import { pgClient, testConfig, testLog, uniqueName, waitUntil } from '../support/pipeline.js';
import { changes, readTopic } from '../support/topic.js';
import { writeControl } from '../../shared/control-records.js';
import { TYPES, userTypesSql } from '../support/types.js';

describe('capture (real PostgreSQL, Kafka, registry)', () => {
  let cfg: PipelineConfig;
  let a: pg.Client;
  let run: CaptureRun;
  const schema = uniqueName('cap');

  beforeAll(async () => {
    cfg = testConfig(uniqueName('pcap'), schema);
    a = await pgClient(cfg, 'a');
    await a.query(`CREATE SCHEMA ${schema}`);
    await a.query(userTypesSql(schema));
    const cols = TYPES.map(([t], i) => `c${i} ${t === 'mood' || t === 'posint' ? `${schema}.${t}` : t}`).join(', ');
    await a.query(`CREATE TABLE ${schema}.types (id int PRIMARY KEY, ${cols})`);
    await a.query(`CREATE TABLE ${schema}.docs (id int PRIMARY KEY, small int, big text)`);
    await a.query(`ALTER TABLE ${schema}.docs ALTER COLUMN big SET STORAGE EXTERNAL`);
    await a.query(`CREATE TABLE ${schema}."Odd Name" ("Größe" int PRIMARY KEY, "select" text)`);
    const b = await pgClient(cfg, 'b');
    await b.query(`CREATE SCHEMA ${schema}`);
    await b.end();
    await setup(cfg, testLog);
    const registry = metricsRegistry({});
    run = new CaptureRun({ cfg, cluster: 'a', kafka: kafkaClient(cfg, 'test-capture', testLog), log: testLog, metrics: captureMetrics(registry) });
    void run.run().catch((err: unknown) => console.error('capture run failed', err));
  });

  afterAll(async () => {
    await run?.stop();
    await release(cfg, testLog, { topics: true }).catch(() => undefined);
    await a?.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await a?.end();
    const b = await pgClient(cfg, 'b');
    await b.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await b.end();
  });

  it('carries every built-in type family at its extremes exactly (compared as PostgreSQL text)', async () => {
    for (let row = 0; row < 3; row++) {
      const params = TYPES.map(([, values]) => values[row] ?? null);
      const ph = TYPES.map(([t], i) => `$${i + 2}::${t === 'mood' || t === 'posint' ? `${schema}.${t}` : t}`).join(', ');
      await a.query(`INSERT INTO ${schema}.types VALUES ($1, ${ph})`, [row, ...params]);
    }
    const expected = await a.query(`SELECT id, ${TYPES.map((_, i) => `c${i}::text AS c${i}`).join(', ')} FROM ${schema}.types ORDER BY id`);
    const recs = changes(await readTopic(cfg, cfg.directions[0].topic, (r) => changes(r).filter((e) => e.source.table === 'types').length >= 3));
    const events = recs.filter((e) => e.source.table === 'types');
    expect(events).toHaveLength(3);
    for (const ev of events) {
      expect(ev.op).toBe('c');
      const id = ev.after.id as number;
      const want = expected.rows[id];
      for (let i = 0; i < TYPES.length; i++) {
        const type = TYPES[i]![0];
        // A value its Connect field type cannot carry (NaN, infinity, a timestamp past 64-bit µs)
        // is null in `after` and its text is in `special` (docs/events.md).
        const special = ev.special[`after.c${i}`];
        if (special !== undefined) expect(ev.after[`c${i}`], `c${i} ${type}: special value with a field value`).toBeNull();
        const got = special ?? ev.after[`c${i}`];
        if (want[`c${i}`] === null) {
          expect(got, `c${i} ${type}`).toBeNull();
          continue;
        }
        // Write the carried value back through the type's input function, as apply does.
        const p = toPgParam(got);
        const back = await a.query(`SELECT ($1::${type === 'mood' || type === 'posint' ? `${schema}.${type}` : type})::text AS t`, [p]);
        expect(back.rows[0].t, `c${i} ${type} row ${id}`).toBe(want[`c${i}`]);
      }
    }
    // int8 beyond 2^53 stays exact: BigInt, not a float.
    expect(events.find((e) => e.after.id === 2)!.after.c2).toBe(9007199254740993n);
  });

  it('marks an unchanged TOAST column instead of sending a value, and frames transactions', async () => {
    const big = 'x'.repeat(200_000);
    await a.query('BEGIN');
    await a.query(`INSERT INTO ${schema}.docs VALUES (1, 1, $1)`, [big]);
    await a.query(`INSERT INTO ${schema}.docs VALUES (2, 1, 'short')`);
    await a.query('COMMIT');
    await a.query(`UPDATE ${schema}.docs SET small = 2 WHERE id = 1`);
    await a.query(`INSERT INTO ${schema}."Odd Name" VALUES (7, 'kw')`);
    const all = changes(await readTopic(cfg, cfg.directions[0].topic, (r) => changes(r).some((e) => e.source.table === 'Odd Name')));
    const docs = all.filter((e) => e.source.table === 'docs');
    expect(docs.map((e) => [e.op, e.txn.index, e.txn.last])).toEqual([
      ['c', 0n, false],
      ['c', 1n, true],
      ['u', 0n, true],
    ]);
    const [first, second, upd] = docs as [Record<string, any>, Record<string, any>, Record<string, any>];
    expect(first.txn.id).toBe(second.txn.id);
    expect(first.after.big).toBe(big);
    expect(upd.unchanged).toEqual(['big']);
    expect(upd.after.big).toBeNull();
    expect(upd.after.small).toBe(2);
    for (const e of all) expect(e.origin).toBe('a');
    const odd = all.find((e) => e.source.table === 'Odd Name')!;
    const fields = Object.keys(odd.after).map(pgName);
    expect(fields).toEqual(['Größe', 'select']);
    expect(odd.source.commitLsn).toBeGreaterThan(upd.source.commitLsn);
  });
});

describe('capture origin tags (real PostgreSQL, Kafka, registry)', () => {
  it('tags a replication-origin transaction and one marked by an origin control record with that origin, others with the local cluster', async () => {
    const schema = uniqueName('org');
    const cfg = testConfig(uniqueName('porg'), schema, { capture: { foreignOrigins: 'publish', heartbeatSeconds: 0 } });
    const a = await pgClient(cfg, 'a');
    const b = await pgClient(cfg, 'b');
    let run: CaptureRun | null = null;
    try {
      for (const c of [a, b]) await c.query(`CREATE SCHEMA ${schema}; CREATE TABLE ${schema}.t (id int PRIMARY KEY, how text)`);
      await setup(cfg, testLog);
      run = new CaptureRun({ cfg, cluster: 'a', kafka: kafkaClient(cfg, 'test-origins', testLog), log: testLog, metrics: captureMetrics(metricsRegistry({})) });
      void run.run().catch((err: unknown) => console.error('capture run failed', err));
      await a.query(`INSERT INTO ${schema}.t VALUES (1, 'local')`);
      // As apply b→a writes: with the replication origin of b on a.
      await a.query(`SELECT pg_replication_origin_session_setup($1)`, [`cdc_${cfg.pipeline}_b`]);
      await a.query(`INSERT INTO ${schema}.t VALUES (2, 'replication origin')`);
      await a.query('SELECT pg_replication_origin_session_reset()');
      // As apply writes when it cannot use origins: the origin record first in the transaction.
      await a.query('BEGIN');
      await writeControl(a, cfg.pipeline, 'origin', 'b');
      await a.query(`INSERT INTO ${schema}.t VALUES (3, 'marker')`);
      await a.query('COMMIT');
      await a.query(`INSERT INTO ${schema}.t VALUES (4, 'local again')`);
      const evs = changes(await readTopic(cfg, cfg.directions[0].topic, (r) => changes(r).length >= 4));
      expect(evs.map((e) => [e.after.id, e.after.how, e.origin])).toEqual([
        [1, 'local', 'a'],
        [2, 'replication origin', 'b'],
        [3, 'marker', 'b'],
        [4, 'local again', 'a'],
      ]);
    } finally {
      await run?.stop();
      await release(cfg, testLog, { topics: true }).catch(() => undefined);
      for (const c of [a, b]) {
        await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
        await c.end();
      }
    }
  });
});

describe('capture identity check (INV-6)', () => {
  it('stops with SYSTEM_CHANGED when the cluster is not the system it first captured', async () => {
    const schema = uniqueName('sys');
    const cfg = testConfig(uniqueName('psys'), schema, { capture: { heartbeatSeconds: 0 } });
    const a = await pgClient(cfg, 'a');
    const b = await pgClient(cfg, 'b');
    try {
      for (const c of [a, b]) await c.query(`CREATE SCHEMA ${schema}`);
      await setup(cfg, testLog);
      const first = new CaptureRun({
        cfg,
        cluster: 'a',
        kafka: kafkaClient(cfg, 'test-sys', testLog),
        log: testLog,
        metrics: captureMetrics(metricsRegistry({})),
      });
      void first.run().catch(() => undefined);
      await waitUntil('first run streaming', async () => first.ready);
      await first.stop();
      // As after a restore from a file backup of another system.
      await a.query('UPDATE cdc.capture_state SET system_identifier = 42 WHERE pipeline = $1', [cfg.pipeline]);
      const second = new CaptureRun({
        cfg,
        cluster: 'a',
        kafka: kafkaClient(cfg, 'test-sys', testLog),
        log: testLog,
        metrics: captureMetrics(metricsRegistry({})),
      });
      await expect(second.run()).rejects.toMatchObject({
        code: 'SYSTEM_CHANGED',
        message: expect.stringMatching(/cluster a .* first captured system 42 on timeline \d+/),
      });
    } finally {
      await release(cfg, testLog, { topics: true }).catch(() => undefined);
      for (const c of [a, b]) {
        await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
        await c.end();
      }
    }
  });
});

describe('forged control input (real PostgreSQL, Kafka, registry)', () => {
  it('an ordinary login cannot steer capture: logical messages are ignored, cdc.control refuses it, capture keeps running', async () => {
    const schema = uniqueName('forge');
    const role = uniqueName('mallory');
    const cfg = testConfig(uniqueName('pforge'), schema, { capture: { foreignOrigins: 'skip', heartbeatSeconds: 0 } });
    const a = await pgClient(cfg, 'a');
    const b = await pgClient(cfg, 'b');
    const metrics = captureMetrics(metricsRegistry({}));
    let run: CaptureRun | null = null;
    let m: pg.Client | null = null;
    try {
      for (const c of [a, b])
        await c.query(
          `CREATE SCHEMA ${schema}; CREATE TABLE ${schema}.t (id int PRIMARY KEY, how text); CREATE TABLE ${schema}.secret (id int PRIMARY KEY, v text)`,
        );
      await setup(cfg, testLog);
      await a.query(`CREATE ROLE ${role} LOGIN; GRANT USAGE ON SCHEMA ${schema} TO ${role}; GRANT INSERT, SELECT ON ${schema}.t TO ${role}`);
      m = new pg.Client({ host: cfg.clusters.a!.host, port: cfg.clusters.a!.port, database: cfg.clusters.a!.database, user: role });
      await m.connect();
      run = new CaptureRun({ cfg, cluster: 'a', kafka: kafkaClient(cfg, 'test-forge', testLog), log: testLog, metrics });
      void run.run().catch((err: unknown) => console.error('capture run failed', err));
      const emit = (prefix: string, content: string) => m!.query('SELECT pg_logical_emit_message(true, $1, $2)', [prefix, content]);
      // 1. Hide a change from the other cluster with a forged loop marker.
      await m.query('BEGIN');
      await emit('cdc.origin', 'b');
      await m.query(`INSERT INTO ${schema}.t VALUES (1, 'forged origin')`);
      await m.query('COMMIT');
      // 2. A forged barrier, 3. a forged resync window and chunk writing into a table outside the
      // selection and into cdc, 4. malformed JSON, 5. many windows.
      await emit('cdc.barrier', 'forged-barrier');
      const chunk = (s: string, t: string) =>
        JSON.stringify({
          id: 'w1',
          pipeline: cfg.pipeline,
          table: { schema: s, table: t, replicaIdentity: 'default', columns: [{ name: 'id', typeOid: 23, typeMod: -1, typeName: 'integer', key: true }] },
          key: ['id'],
          rows: [['666']],
        });
      await emit('cdc.resync.low', JSON.stringify({ id: 'w1', pipeline: cfg.pipeline, table: `${schema}.t` }));
      await emit('cdc.resync.high', chunk(schema, 't'));
      await emit('cdc.resync.high', chunk('cdc', 'apply_progress'));
      await emit('cdc.resync.high', '{not json');
      for (let i = 0; i < 200; i++) await emit('cdc.resync.low', JSON.stringify({ id: `w${i}`, pipeline: cfg.pipeline, table: `${schema}.t` }));
      // 6. The control table itself is closed to it.
      await expect(m.query(`INSERT INTO cdc.control (pipeline, kind, payload) VALUES ($1, 'origin', 'b')`, [cfg.pipeline])).rejects.toMatchObject({
        code: '42501',
      });
      await m.query(`INSERT INTO ${schema}.t VALUES (2, 'after the forgeries')`);
      const recs = await readTopic(cfg, cfg.directions[0].topic, (r) => changes(r).length >= 2);
      // Both rows published as a's own changes; no barrier, no snapshot row, nothing for another table.
      expect(changes(recs).map((e) => [e.source.table, e.op, e.after.id, e.origin])).toEqual([
        ['t', 'c', 1, 'a'],
        ['t', 'c', 2, 'a'],
      ]);
      expect(recs.filter((r) => !r.recordName.endsWith('.Envelope')).map((r) => (r.value as { kind: string }).kind)).not.toContain('barrier');
      expect(run.ready).toBe(true);
      expect(await counter(metrics.ignoredControl)).toBeGreaterThanOrEqual(205);
    } finally {
      await m?.end().catch(() => undefined);
      await run?.stop();
      await release(cfg, testLog, { topics: true }).catch(() => undefined);
      await a.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE; DROP ROLE IF EXISTS ${role}`).catch(() => undefined);
      await b.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
      for (const c of [a, b]) await c.end();
    }
  });
});

async function counter(c: { get(): Promise<{ values: { value: number }[] }> }): Promise<number> {
  return (await c.get()).values.reduce((s, v) => s + v.value, 0);
}
