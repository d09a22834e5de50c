/**
 * The stack's services, each reached through the client pgbridge itself uses.
 */
import { afterAll, describe, expect, inject, it } from 'vitest';
import pg from 'pg';
import { Kafka, logLevel } from 'kafkajs';
import { SchemaRegistry, SchemaType } from '@kafkajs/confluent-schema-registry';
import { randomUUID } from 'node:crypto';

const ep = inject('endpoints');
const uniq = `t${randomUUID().slice(0, 8)}`;

function client(cluster: 'a' | 'b'): pg.Client {
  const e = ep.pg[cluster];
  return new pg.Client({ host: e.host, port: e.port, user: e.user, database: e.database });
}

describe('local stack (real services)', () => {
  const kafka = new Kafka({ clientId: 'stack-test', brokers: [...ep.kafkaBrokers], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  afterAll(async () => {
    await admin.disconnect();
  });

  it('cluster a takes a table and is set up for logical decoding with commit timestamps', async () => {
    const c = client('a');
    await c.connect();
    try {
      await c.query(`CREATE TABLE ${uniq} (id int PRIMARY KEY, v text)`);
      await c.query(`INSERT INTO ${uniq} VALUES (1, 'x')`);
      const r = await c.query(`SELECT current_setting('wal_level') AS wal, current_setting('track_commit_timestamp') AS ts, (SELECT v FROM ${uniq} WHERE id = 1) AS v`);
      expect(r.rows[0]).toEqual({ wal: 'logical', ts: 'on', v: 'x' });
      await c.query(`DROP TABLE ${uniq}`);
    } finally {
      await c.end();
    }
  });

  it('both clusters are distinct PostgreSQL 15 systems', async () => {
    const ids: string[] = [];
    for (const cl of ['a', 'b'] as const) {
      const c = client(cl);
      await c.connect();
      const r = await c.query(`SELECT system_identifier::text AS id, current_setting('server_version_num')::int AS v FROM pg_control_system()`);
      expect(r.rows[0].v).toBeGreaterThanOrEqual(150000);
      ids.push(r.rows[0].id);
      await c.end();
    }
    expect(ids[0]).not.toBe(ids[1]);
  });

  it('produces and consumes an Avro record through the registry and the broker, in a Kafka transaction', async () => {
    const registry = new SchemaRegistry({ host: ep.registryUrl });
    const topic = `stack-test-${uniq}`;
    const schema = {
      type: 'record', name: 'Envelope', namespace: `stacktest.${uniq}`,
      fields: [{ name: 'id', type: 'int' }, { name: 'note', type: ['null', 'string'], default: null }],
    };
    const { id } = await registry.register({ type: SchemaType.AVRO, schema: JSON.stringify(schema) }, { subject: `${topic}-stacktest.${uniq}.Envelope` });
    // Fetch it back by id the way a consumer that never saw it would.
    const fresh = new SchemaRegistry({ host: ep.registryUrl });
    const fetched = (await fresh.getSchema(id)) as unknown as { name: string; fields: { name: string }[] };
    expect(fetched.name).toBe(`stacktest.${uniq}.Envelope`);
    expect(fetched.fields.map((f) => f.name)).toEqual(['id', 'note']);

    await admin.connect();
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, transactionalId: `stack-test-${uniq}` });
    await producer.connect();
    const tx = await producer.transaction();
    await tx.send({ topic, acks: -1, messages: [{ key: 'k1', value: await registry.encode(id, { id: 42, note: 'héllo' }) }] });
    await tx.commit();
    const aborted = await producer.transaction();
    await aborted.send({ topic, acks: -1, messages: [{ key: 'k2', value: await registry.encode(id, { id: 43, note: null }) }] });
    await aborted.abort();
    await producer.disconnect();

    const consumer = kafka.consumer({ groupId: `stack-test-${uniq}`, readUncommitted: false });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    const got: unknown[] = [];
    await new Promise<void>((resolve, reject) => {
      consumer.run({
        autoCommit: false,
        eachMessage: async ({ message }) => {
          got.push(await fresh.decode(message.value!));
          resolve();
        },
      }).catch(reject);
    });
    await consumer.disconnect();
    expect(got).toHaveLength(1);
    expect(got[0]).toMatchObject({ id: 42, note: 'héllo' });
    await admin.deleteTopics({ topics: [topic] });
  });

  it('reads a logical slot of cluster a (pgoutput) with the change in it', async () => {
    const c = client('a');
    await c.connect();
    const slot = `stack_test_${uniq}`;
    try {
      await c.query(`CREATE TABLE ${uniq}_s (id int PRIMARY KEY)`);
      await c.query(`CREATE PUBLICATION ${slot} FOR TABLE ${uniq}_s`);
      await c.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
      await c.query(`INSERT INTO ${uniq}_s VALUES (7)`);
      const r = await c.query(
        `SELECT count(*)::int AS n FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, 'proto_version', '1', 'publication_names', $2)`,
        [slot, slot],
      );
      // BEGIN, RELATION, INSERT, COMMIT
      expect(r.rows[0].n).toBe(4);
      const s = await c.query(`SELECT slot_type, plugin, active FROM pg_replication_slots WHERE slot_name = $1`, [slot]);
      expect(s.rows[0]).toEqual({ slot_type: 'logical', plugin: 'pgoutput', active: false });
    } finally {
      await c.query(`SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1`, [slot]).catch(() => undefined);
      await c.query(`DROP PUBLICATION IF EXISTS ${slot}`);
      await c.query(`DROP TABLE IF EXISTS ${uniq}_s`);
      await c.end();
    }
  });
});
