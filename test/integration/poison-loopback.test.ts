/**
 * Poison messages and loop-backs on real services:
 * - a raw non-Avro record stops apply with its exact topic/partition@offset (default), or
 *   goes to the dead-letter topic with the reason while apply goes on;
 * - a value the destination rejects goes to the dead-letter topic the same way;
 * - with capture publishing foreign-origin transactions, apply drops the ones that started
 *   at its destination and counts them (the second loop-prevention layer).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Kafka, logLevel } from 'kafkajs';
import { release, setup } from '../../services/cli/setup.js';
import type { PipelineConfig } from '../../shared/config.js';
import { withClient } from '../../shared/pg.js';
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
  const p = new Kafka({ brokers: [...cfg.kafka.brokers], logLevel: logLevel.NOTHING }).producer();
  await p.connect();
  const r = await p.send({ topic, acks: -1, messages: [{ value }] });
  await p.disconnect();
  return r[0]!.baseOffset!;
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
    const kafka = new Kafka({ brokers: [...cfg.kafka.brokers], logLevel: logLevel.NOTHING });
    const consumer = kafka.consumer({ groupId: uniqueName('dlqread') });
    await consumer.connect();
    await consumer.subscribe({ topic: dlq, fromBeginning: true });
    const got: { reason: string; offset: string }[] = [];
    await new Promise<void>((resolve) => {
      void consumer.run({
        eachMessage: async ({ message }) => {
          got.push({ reason: String(message.headers!['pgbridge.dlq.reason']), offset: String(message.headers!['pgbridge.dlq.offset']) });
          if (got.length === 2) resolve();
        },
      });
    });
    await consumer.disconnect();
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
    await waitUntil('loop-backs dropped', async () => (await counter(svc.applies['b-a']!.registry, 'pgbridge_apply_dropped_loopback_events_total')) === 10, 30_000);
    expect(await counter(svc.captures.b!.registry, 'pgbridge_capture_events_total', { kind: 'change' })).toBe(10);
    expect(await counter(svc.applies['b-a']!.registry, 'pgbridge_apply_rows_total')).toBe(0);
    expect(await count(cfg, 'a', `SELECT count(*) AS n FROM ${schema}.t`)).toBe(10);
    expect(await count(cfg, 'a', `SELECT count(*) AS n FROM cdc.conflicts WHERE pipeline = '${cfg.pipeline}'`)).toBe(0);
    expect(svc.errors).toEqual([]);
  });
});
