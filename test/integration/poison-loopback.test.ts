/**
 * Poison messages and loop-backs on real services:
 * - a raw non-Avro record stops apply with its exact topic/partition@offset (default), or
 *   goes to the dead-letter topic with the reason while apply goes on;
 * - a value the destination rejects goes to the dead-letter topic the same way;
 * - with capture publishing foreign-origin transactions, apply drops the ones that started
 *   at its destination and counts them (the second loop-prevention layer);
 * - forged records (a table outside the selection, a cdc table, another source cluster, a
 *   commit LSN the source never reached) are refused and do not move the stored position.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { KafkaClient, kafkaClient, readTopic } from '../../shared/kafka.js';
import { release, setup } from '../../services/cli/setup.js';
import type { PipelineConfig } from '../../shared/config.js';
import { withClient } from '../../shared/pg.js';
import { EventEncoder } from '../../services/capture/avro-encoder.js';
import type { ChangeEvent } from '../../services/capture/change-builder.js';
import { KafkaPublisher } from '../../services/capture/kafka-publisher.js';
import { lsnFromBigint, parseLsn } from '../../shared/lsn.js';
import { SchemaStore } from '../../shared/registry.js';
import { testConfig, testLog, uniqueName, waitUntil } from '../support/pipeline.js';
import { counter, startServices, waitServicesReady, type Running } from '../support/services.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
});

async function pipeline(over: Parameters<typeof testConfig>[2] = {}): Promise<{ cfg: PipelineConfig; schema: string }> {
  const schema = uniqueName('pz');
  const cfg = testConfig(uniqueName('ppz'), schema, over);
  for (const c of cfg.clusterNames) {
    await withClient(cfg.clusters[c]!, 'test', (cl) => cl.query(`CREATE SCHEMA ${schema}; CREATE TABLE ${schema}.t (id int PRIMARY KEY, v int)`));
  }
  await setup(cfg, testLog);
  cleanups.push(async () => {
    await release(cfg, testLog, { topics: true });
    for (const c of cfg.clusterNames) await withClient(cfg.clusters[c]!, 'test', (cl) => cl.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));
  });
  return { cfg, schema };
}

async function produceRaw(cfg: PipelineConfig, topic: string, value: string): Promise<string> {
  const kafka = new KafkaClient({ brokers: cfg.kafka.brokers, clientId: 'test-raw' });
  const p = kafka.producer();
  await p.send(topic, [{ key: null, value: Buffer.from(value) }]);
  await p.close();
  const admin = kafka.admin();
  const end = (await admin.topicOffsets(topic))[0]!.high;
  await admin.close();
  return String(end - 1n);
}

/** Reads `n` records of the dead-letter topic: the reason and source offset of each. */
async function readDlq(cfg: PipelineConfig, dlq: string, n: number): Promise<{ reason: string; offset: string }[]> {
  const kafka = new KafkaClient({ brokers: cfg.kafka.brokers, clientId: 'test-dlq' });
  let got: { reason: string; offset: string }[] = [];
  await waitUntil(`${n} records in the dead-letter topic`, async () => {
    got = (await readTopic(kafka, dlq)).map((m) => ({ reason: String(m.headers['pgbridge.dlq.reason']), offset: String(m.headers['pgbridge.dlq.offset']) }));
    return got.length >= n;
  });
  return got;
}

interface Forgery {
  readonly schema: string;
  readonly table: string;
  readonly id: number;
  /** Cluster named in source.cluster (the encoder's). */
  readonly cluster?: string;
  readonly commitLsn?: bigint;
}

/**
 * Writes change records as a producer other than capture could: well-formed Avro envelopes,
 * registered in the registry, in one Kafka transaction. Returns their offsets.
 */
async function forge(cfg: PipelineConfig, topic: string, forgeries: Forgery[]): Promise<string[]> {
  const store = new SchemaStore(cfg.registry);
  const publisher = new KafkaPublisher(kafkaClient(cfg, 'forger', testLog), uniqueName('forger'), topic);
  await publisher.connect();
  const offsets: string[] = [];
  try {
    for (const f of forgeries) {
      const enc = new EventEncoder(store, topic, f.cluster ?? 'a', cfg.clusters.a!.database);
      const table = {
        schema: f.schema,
        table: f.table,
        replicaIdentity: 'default' as const,
        columns: [
          { name: 'id', typeOid: 23, typeMod: -1, typeName: 'integer', key: true },
          { name: 'v', typeOid: 23, typeMod: -1, typeName: 'integer', key: false },
        ],
      };
      const lsn = lsnFromBigint(f.commitLsn ?? 0x100n);
      const ev: ChangeEvent = {
        kind: 'change',
        table,
        relationOid: 1,
        op: 'c',
        before: null,
        after: { id: f.id, v: f.id },
        key: { id: f.id },
        unchanged: [],
        lsn,
        txn: { xid: 1, commitLsn: lsn, commitTimeUs: 1n, origin: f.cluster ?? 'a' },
        index: 0,
        last: true,
      };
      await publisher.add(await enc.encode(ev));
    }
    await publisher.commit();
    const end = publisher.committedOffset!;
    // One record each, then the commit marker: the last record sits just before the end.
    for (let i = forgeries.length - 1; i >= 0; i--) offsets.push(String(end - BigInt(i)));
  } finally {
    await publisher.disconnect();
  }
  return offsets;
}

async function count(cfg: PipelineConfig, cluster: string, sql: string): Promise<number> {
  return withClient(cfg.clusters[cluster]!, 'test', async (cl) => Number((await cl.query<{ n: string }>(sql)).rows[0]!.n));
}

function run(cfg: PipelineConfig, which: Parameters<typeof startServices>[1]): Running {
  const svc = startServices(cfg, which);
  cleanups.push(() => svc.stop());
  return svc;
}

describe('poison messages', () => {
  it('stop apply at a non-Avro record, naming topic, partition and offset', async () => {
    const { cfg, schema } = await pipeline();
    const topic = cfg.directions[0].topic;
    const svc = run(cfg, { captures: ['a'], applies: ['a-b'] });
    await withClient(cfg.clusters.a!, 'test', (cl) => cl.query(`INSERT INTO ${schema}.t VALUES (1, 1)`));
    await waitUntil('row 1 on b', async () => (await count(cfg, 'b', `SELECT count(*) AS n FROM ${schema}.t`)) === 1);
    const offset = await produceRaw(cfg, topic, 'not avro at all');
    await waitUntil('apply stopped', async () => svc.errors.length > 0);
    expect(svc.errors[0]!.message).toContain(`poison message at ${topic}/0@${offset}`);
    expect(svc.errors[0]!.message).toMatch(/not a Confluent Avro message/);
  });

  it('send a non-Avro record and a value the destination rejects to the dead-letter topic, and go on', async () => {
    const dlq = `${uniqueName('dlq')}`;
    const { cfg, schema } = await pipeline({ apply: { deadLetterTopic: dlq } });
    const topic = cfg.directions[0].topic;
    // b refuses negative values; a does not.
    await withClient(cfg.clusters.b!, 'test', (cl) => cl.query(`ALTER TABLE ${schema}.t ADD CHECK (v >= 0)`));
    const svc = run(cfg, { captures: ['a'], applies: ['a-b'] });
    const offset = await produceRaw(cfg, topic, 'garbage');
    await withClient(cfg.clusters.a!, 'test', async (cl) => {
      await cl.query(`INSERT INTO ${schema}.t VALUES (1, 1)`);
      await cl.query(`INSERT INTO ${schema}.t VALUES (2, -5)`);
      await cl.query(`INSERT INTO ${schema}.t VALUES (3, 3)`);
    });
    await waitUntil('rows 1 and 3 on b', async () => (await count(cfg, 'b', `SELECT count(*) AS n FROM ${schema}.t WHERE id IN (1, 3)`)) === 2);
    expect(await count(cfg, 'b', `SELECT count(*) AS n FROM ${schema}.t WHERE id = 2`)).toBe(0);
    const kafka = new KafkaClient({ brokers: cfg.kafka.brokers, clientId: 'test-dlq' });
    let got: { reason: string; offset: string }[] = [];
    await waitUntil('two records in the dead-letter topic', async () => {
      got = (await readTopic(kafka, dlq)).map((m) => ({ reason: String(m.headers['pgbridge.dlq.reason']), offset: String(m.headers['pgbridge.dlq.offset']) }));
      return got.length === 2;
    });
    expect(got[0]).toEqual({ reason: expect.stringMatching(/not a Confluent Avro message/), offset });
    expect(got[1]!.reason).toMatch(/destination b rejected c on .*\.t \(SQLSTATE 23514\)/);
    expect(await counter(svc.applies['a-b']!.registry, 'pgbridge_apply_dead_lettered_total')).toBe(2);
    expect(svc.errors).toEqual([]);
  });
});

describe('loop-back drop (second layer)', () => {
  it('drops events that started at the destination and counts them, even when capture publishes them', async () => {
    const { cfg, schema } = await pipeline({ capture: { foreignOrigins: 'publish', heartbeatSeconds: 1 } });
    const svc = run(cfg, {});
    await waitServicesReady(svc);
    await withClient(cfg.clusters.a!, 'test', (cl) => cl.query(`INSERT INTO ${schema}.t SELECT g, g FROM generate_series(1, 10) g`));
    await waitUntil('rows on b', async () => (await count(cfg, 'b', `SELECT count(*) AS n FROM ${schema}.t`)) === 10);
    // b's capture publishes what apply a→b wrote (origin a); apply b→a must drop all 10 rows.
    await waitUntil(
      'loop-backs dropped',
      async () => (await counter(svc.applies['b-a']!.registry, 'pgbridge_apply_dropped_loopback_events_total')) === 10,
      30_000,
    );
    expect(await counter(svc.captures.b!.registry, 'pgbridge_capture_events_total', { kind: 'change' })).toBe(10);
    expect(await counter(svc.applies['b-a']!.registry, 'pgbridge_apply_rows_total')).toBe(0);
    expect(await count(cfg, 'a', `SELECT count(*) AS n FROM ${schema}.t`)).toBe(10);
    expect(await count(cfg, 'a', `SELECT count(*) AS n FROM cdc.conflicts WHERE pipeline = '${cfg.pipeline}'`)).toBe(0);
    expect(svc.errors).toEqual([]);
  });
});

describe('loop prevention without replication origins', () => {
  it("marks apply's transactions with origin control records that capture on the destination obeys", async () => {
    const { cfg, schema } = await pipeline({ origin: { method: 'message' }, capture: { foreignOrigins: 'skip', heartbeatSeconds: 0 } });
    const svc = run(cfg, {});
    await waitServicesReady(svc);
    await withClient(cfg.clusters.a!, 'test', (cl) => cl.query(`INSERT INTO ${schema}.t SELECT g, g FROM generate_series(1, 10) g`));
    await waitUntil('rows on b', async () => (await count(cfg, 'b', `SELECT count(*) AS n FROM ${schema}.t`)) === 10);
    // A local change on b after apply's: b publishes it, and only it.
    await withClient(cfg.clusters.b!, 'test', (cl) => cl.query(`INSERT INTO ${schema}.t VALUES (11, 11)`));
    await waitUntil('row 11 on a', async () => (await count(cfg, 'a', `SELECT count(*) AS n FROM ${schema}.t WHERE id = 11`)) === 1);
    expect(await counter(svc.captures.b!.registry, 'pgbridge_capture_events_total', { kind: 'change' })).toBe(1);
    expect(await counter(svc.captures.b!.registry, 'pgbridge_capture_skipped_transactions_total', { reason: 'foreign-origin' })).toBeGreaterThanOrEqual(1);
    expect(await count(cfg, 'b', `SELECT count(*) AS n FROM cdc.control`)).toBe(0);
    expect(svc.errors).toEqual([]);
  });
});

describe('forged records on the direction topic', () => {
  it('are refused (outside the selection, a cdc table, another source cluster, a future commit LSN) and do not stop real changes', async () => {
    const dlq = uniqueName('dlq');
    // No heartbeats: nothing but the forgeries and the insert below reaches the topic.
    const { cfg, schema } = await pipeline({ apply: { deadLetterTopic: dlq }, capture: { heartbeatSeconds: 0 } });
    const topic = cfg.directions[0].topic;
    // The forgeries carry a plausible commit LSN (a's current position), not an old one that
    // apply would skip as a duplicate before looking at it; the last one an LSN a never reached.
    const now = await withClient(cfg.clusters.a!, 'test', async (cl) =>
      parseLsn((await cl.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]!.l),
    );
    const future = now + (1n << 36n);
    // A table outside the selection that apply could write, were it not refused.
    const outside = uniqueName('outside');
    await withClient(cfg.clusters.b!, 'test', (cl) => cl.query(`CREATE TABLE public.${outside} (id int PRIMARY KEY, v int)`));
    cleanups.push(async () => {
      await withClient(cfg.clusters.b!, 'test', (cl) => cl.query(`DROP TABLE IF EXISTS public.${outside}`));
    });
    const svc = run(cfg, { captures: ['a'], applies: ['a-b'] });
    await waitServicesReady(svc);
    const forged = await forge(cfg, topic, [
      { schema: 'public', table: outside, id: 1, commitLsn: now },
      { schema: 'cdc', table: 'heartbeat', id: 2, commitLsn: now },
      { schema, table: 't', id: 3, cluster: 'b', commitLsn: now },
      { schema, table: 't', id: 4, commitLsn: future },
    ]);
    // Real changes after the forgeries: a forged future LSN must not make them look applied.
    await withClient(cfg.clusters.a!, 'test', (cl) => cl.query(`INSERT INTO ${schema}.t VALUES (10, 10)`));
    await waitUntil('row 10 on b', async () => (await count(cfg, 'b', `SELECT count(*) AS n FROM ${schema}.t WHERE id = 10`)) === 1);
    expect(await count(cfg, 'b', `SELECT count(*) AS n FROM ${schema}.t WHERE id IN (3, 4)`)).toBe(0);
    const got = await readDlq(cfg, dlq, 4);
    expect(got.map((g) => g.offset)).toEqual(forged);
    expect(got[0]!.reason).toContain(`refused: table public.${outside} is not in the selection`);
    expect(await count(cfg, 'b', `SELECT count(*) AS n FROM public.${outside}`)).toBe(0);
    expect(got[1]!.reason).toMatch(/refused: table cdc\.heartbeat is not in the selection/);
    expect(got[2]!.reason).toMatch(/refused: source\.cluster is "b"/);
    expect(got[3]!.reason).toMatch(/refused: commit LSN .* is beyond the WAL position of cluster a/);
    const reg = svc.applies['a-b']!.registry;
    expect(await counter(reg, 'pgbridge_apply_refused_total', { reason: 'table' })).toBe(2);
    expect(await counter(reg, 'pgbridge_apply_refused_total', { reason: 'lsn' })).toBe(1);
    const stored = await withClient(cfg.clusters.b!, 'test', async (cl) =>
      parseLsn((await cl.query<{ l: string }>('SELECT commit_lsn::text AS l FROM cdc.apply_progress WHERE pipeline = $1', [cfg.pipeline])).rows[0]!.l),
    );
    expect(stored < future).toBe(true);
    expect(svc.errors).toEqual([]);
  });

  it('stop apply at a record for a table outside the selection, naming its position, when there is no dead-letter topic', async () => {
    const { cfg } = await pipeline({ capture: { heartbeatSeconds: 0 } });
    const topic = cfg.directions[0].topic;
    const svc = run(cfg, { captures: [], applies: ['a-b'] });
    await waitServicesReady(svc);
    const [offset] = await forge(cfg, topic, [{ schema: 'cdc', table: 'apply_progress', id: 1, commitLsn: 0x100n }]);
    await waitUntil('apply stopped', async () => svc.errors.length > 0);
    expect(svc.errors[0]!.message).toContain(`poison message at ${topic}/0@${offset}: refused: table cdc.apply_progress is not in the selection`);
  });
});
