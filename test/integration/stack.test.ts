/**
 * The stack's services, each reached through the client pgbridge itself uses.
 */
import { afterAll, describe, expect, inject, it } from 'vitest';
import pg from 'pg';
import { KafkaClient, readTopic } from '../../shared/kafka.js';
import { SchemaRegistry, SchemaType } from '@kafkajs/confluent-schema-registry';
import { randomUUID } from 'node:crypto';

const ep = inject('endpoints');
const uniq = `t${randomUUID().slice(0, 8)}`;

function client(cluster: 'a' | 'b'): pg.Client {
  const e = ep.pg[cluster];
  return new pg.Client({ host: e.host, port: e.port, user: e.user, database: e.database });
}

describe('local stack (real services)', () => {
  const kafka = new KafkaClient({ clientId: 'stack-test', brokers: ep.kafkaBrokers });
  const admin = kafka.admin();
  afterAll(async () => {
    await admin.close();
  });

  it('cluster a takes a table and is set up for logical decoding with commit timestamps', async () => {
    const c = client('a');
    await c.connect();
    try {
      await c.query(`CREATE TABLE ${uniq} (id int PRIMARY KEY, v text)`);
      await c.query(`INSERT INTO ${uniq} VALUES (1, 'x')`);
      const r = await c.query(
        `SELECT current_setting('wal_level') AS wal, current_setting('track_commit_timestamp') AS ts, (SELECT v FROM ${uniq} WHERE id = 1) AS v`,
      );
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
      type: 'record',
      name: 'Envelope',
      namespace: `stacktest.${uniq}`,
      fields: [
        { name: 'id', type: 'int' },
        { name: 'note', type: ['null', 'string'], default: null },
      ],
    };
    const { id } = await registry.register({ type: SchemaType.AVRO, schema: JSON.stringify(schema) }, { subject: `${topic}-stacktest.${uniq}.Envelope` });
    // Fetch it back by id the way a consumer that never saw it would.
    const fresh = new SchemaRegistry({ host: ep.registryUrl });
    const fetched = (await fresh.getSchema(id)) as unknown as { name: string; fields: { name: string }[] };
    expect(fetched.name).toBe(`stacktest.${uniq}.Envelope`);
    expect(fetched.fields.map((f) => f.name)).toEqual(['id', 'note']);

    await admin.createTopics([{ topic, partitions: 1 }]);
    const producer = kafka.transactionalProducer(`stack-test-${uniq}`, 60_000);
    await producer.connect();
    await producer.send(topic, [{ key: Buffer.from('k1'), value: await registry.encode(id, { id: 42, note: 'héllo' }) }]);
    await producer.commit();
    await producer.send(topic, [{ key: Buffer.from('k2'), value: await registry.encode(id, { id: 43, note: null }) }]);
    await producer.abort();
    await producer.send(topic, [{ key: Buffer.from('k3'), value: await registry.encode(id, { id: 44, note: null }) }]);
    await producer.commit();
    await producer.close();

    // read_committed: the aborted record and the transaction markers are not delivered.
    const got: unknown[] = [];
    for (const m of await readTopic(kafka, topic)) got.push(await fresh.decode(m.value!));
    expect(got).toHaveLength(2);
    expect(got[0]).toMatchObject({ id: 42, note: 'héllo' });
    expect(got[1]).toMatchObject({ id: 44, note: null });
    await admin.deleteTopics([topic]);
  });

  it('a restarted transactional producer fences its predecessor: the open transaction is aborted, the zombie cannot write', async () => {
    const topic = `stack-fence-${uniq}`;
    await admin.createTopics([{ topic, partitions: 1 }]);
    const zombie = kafka.transactionalProducer(`stack-fence-${uniq}`, 60_000);
    await zombie.connect();
    await zombie.send(topic, [{ key: null, value: Buffer.from('committed') }]);
    await zombie.commit();
    await zombie.send(topic, [{ key: null, value: Buffer.from('left open') }]);
    // Same transactional id, as after a crash: InitProducerId aborts what was left open.
    const next = kafka.transactionalProducer(`stack-fence-${uniq}`, 60_000);
    await next.connect();
    await next.send(topic, [{ key: null, value: Buffer.from('after restart') }]);
    await next.commit();
    await expect(zombie.send(topic, [{ key: null, value: Buffer.from('zombie') }]).then(() => zombie.commit())).rejects.toThrow();
    await zombie.close();
    await next.close();
    expect((await readTopic(kafka, topic)).map((m) => m.value!.toString())).toEqual(['committed', 'after restart']);
    await admin.deleteTopics([topic]);
  });

  it('read_committed drops an aborted transaction whose abort marker lies beyond the fetch that returned its records', async () => {
    const topic = `stack-abort-${uniq}`;
    await admin.createTopics([{ topic, partitions: 1 }]);
    const p = kafka.transactionalProducer(`stack-abort-${uniq}`, 60_000);
    await p.connect();
    await p.send(topic, [{ key: null, value: Buffer.from('before') }]);
    await p.commit();
    // Ten record batches of ten records in one transaction, then aborted.
    for (let i = 0; i < 10; i++)
      await p.send(
        topic,
        Array.from({ length: 10 }, (_, j) => ({ key: null, value: Buffer.from(`aborted ${i}.${j} ${'x'.repeat(100)}`) })),
      );
    await p.abort();
    await p.send(topic, [{ key: null, value: Buffer.from('after') }]);
    await p.commit();
    await p.close();
    // 1 KiB fetches: the broker returns one batch at a time, so the abort marker comes many
    // fetches after the first aborted records.
    const small = await readTopic(kafka, topic, { maxBytesPerPartition: 1024 });
    expect(small.map((m) => m.value!.toString())).toEqual(['before', 'after']);
    const uncommitted = await readTopic(kafka, topic, { readCommitted: false });
    expect(uncommitted).toHaveLength(102);
    await admin.deleteTopics([topic]);
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
