/**
 * Two positions a user relies on, checked on the real service processes:
 * - INV-6: when the stored apply position (cdc.apply_progress.next_offset) is below the
 *   topic's log start (records deleted before they were applied), apply does not skip the
 *   gap: it stops with OFFSET_BELOW_LOG_START, exit code 1, naming topic/partition@offset and
 *   the log start, and applies nothing;
 * - INV-1: with no heartbeat transactions, WAL written only to tables outside the
 *   publication still moves the slot's confirmed_flush_lsn (through keepalives), so an idle
 *   pipeline does not pin the cluster's WAL; and none of those writes reach the topic.
 */
import { KafkaClient } from '../../shared/kafka.js';
import { describe, expect, it } from 'vitest';
import { slotName } from '../../shared/config.js';
import { uniqueName, waitUntil } from '../support/pipeline.js';
import { changes, readTopic } from '../support/topic.js';
import { cleanupAfterEach, faultPipeline } from '../faults/fault-support.js';

/** The JSON log lines (pino) of a service's output. */
function logLines(out: string): Record<string, unknown>[] {
  const lines: Record<string, unknown>[] = [];
  for (const l of out.split('\n')) {
    if (!l.startsWith('{')) continue;
    try {
      lines.push(JSON.parse(l) as Record<string, unknown>);
    } catch {
      /* not a log line */
    }
  }
  return lines;
}

describe('slot and offset positions (child processes)', () => {
  const track = cleanupAfterEach();

  it("stored offset below the topic's log start stops apply with OFFSET_BELOW_LOG_START (INV-6): exit 1, topic/partition@offset named, nothing applied", async () => {
    const p = track(await faultPipeline('offlow', (s) => [`CREATE TABLE ${s}.t (id int PRIMARY KEY, v text)`]));
    const { a, b, schema, cfg, topic, direction } = p;
    const admin = new KafkaClient({ brokers: cfg.kafka.brokers, clientId: 'test-offset-below' }).admin();
    p.defer(() => admin.close());
    const rows = async (): Promise<number> => Number((await b.query(`SELECT count(*) AS n FROM ${schema}.t`)).rows[0].n);
    const progress = async (): Promise<{ next: bigint; lsn: string } | null> => {
      const r = await b.query<{ next_offset: string; commit_lsn: string }>(
        'SELECT next_offset::text, commit_lsn::text FROM cdc.apply_progress WHERE pipeline = $1 AND direction = $2 AND partition = 0',
        [cfg.pipeline, direction],
      );
      const row = r.rows[0];
      return row ? { next: BigInt(row.next_offset), lsn: row.commit_lsn } : null;
    };
    const partition0 = async (): Promise<{ low: bigint; high: bigint }> => {
      const o = (await admin.topicOffsets(topic)).find((x) => x.partition === 0)!;
      return { low: o.low, high: o.high };
    };

    const capture = (await p.capture()).start();
    const apply = (await p.apply()).start();
    await Promise.all([capture.waitReady(), apply.waitReady()]);
    await a.query(`INSERT INTO ${schema}.t SELECT g, 'first' FROM generate_series(1, 50) g`);
    await waitUntil('the first 50 rows on the destination', async () => (await rows()) === 50, 60_000);

    // Apply stops cleanly; its stored position is where the next run would start.
    apply.kill('SIGTERM');
    expect(await apply.waitExit(30_000), apply.tail()).toEqual({ code: 0, signal: null });
    const stored = (await progress())!;
    expect(stored, 'apply stored no position').not.toBeNull();

    // More rows, published while apply is down: the topic moves on past the stored position.
    const published = await capture.metric('pgbridge_capture_events_total', { kind: 'change' });
    await a.query(`INSERT INTO ${schema}.t SELECT g, 'second' FROM generate_series(51, 100) g`);
    await waitUntil(
      'capture published the 50 new rows',
      async () => (await capture.metric('pgbridge_capture_events_total', { kind: 'change' })) >= published + 50,
      30_000,
    );
    const { high } = await partition0();
    expect(high).toBeGreaterThan(stored.next + 50n);

    // Retention (here: an operator) deletes everything up to the high watermark.
    await admin.deleteRecords(topic, 0, high);
    const { low } = await partition0();
    expect(low).toBe(high);
    expect(low).toBeGreaterThan(stored.next);

    // The next start must not skip the gap: it stops at once, without retrying.
    apply.start();
    const exit = await apply.waitExit(60_000);
    const out = apply.lastOutput();
    expect(exit, out).toEqual({ code: 1, signal: null });
    const message = `stored position ${topic}/0@${stored.next} is below the log start ${low}`;
    expect(out).toContain('OFFSET_BELOW_LOG_START');
    expect(out).toContain(message);
    const lines = logLines(out);
    const fatal = lines.filter((l) => l.level === 'fatal');
    expect(fatal, out).toHaveLength(1);
    expect(fatal[0]).toMatchObject({ msg: `apply-${direction} stopped`, code: 'OFFSET_BELOW_LOG_START' });
    expect(String(fatal[0]!.err)).toContain(message);
    expect(String(fatal[0]!.err)).toContain('Resync this direction');
    // Fatal, not retriable: one run, no restart.
    expect(
      lines.filter((l) => typeof l.msg === 'string' && l.msg.includes('failed, restarting')),
      out,
    ).toEqual([]);
    expect(
      lines.filter((l) => l.msg === 'run failed' && l.code === 'OFFSET_BELOW_LOG_START'),
      out,
    ).toHaveLength(1);

    // Nothing was applied past the gap, and the stored position did not move.
    expect(await rows()).toBe(50);
    expect(await progress()).toEqual(stored);
    console.log(`OFFSET_BELOW_LOG_START: stored ${topic}/0@${stored.next}, log start ${low}; apply exit ${JSON.stringify(exit)}`);
  }, 90_000);

  it('writes to an unpublished table while the published ones are idle still advance the slot (INV-1, no heartbeat transactions)', async () => {
    const p = track(await faultPipeline('slotadv', (s) => [`CREATE TABLE ${s}.idle (id int PRIMARY KEY, v text)`], { capture: { heartbeatSeconds: 0 } }));
    const { a, schema, cfg, topic } = p;
    expect(cfg.capture.heartbeatSeconds).toBe(0);
    const slot = slotName(cfg, p.src);
    // A schema of the same database that the pipeline does not select.
    const other = uniqueName('unpub');
    p.defer(() => a.query(`DROP SCHEMA IF EXISTS ${other} CASCADE`));
    await a.query(`CREATE SCHEMA ${other}; CREATE TABLE ${other}.bulk (id int PRIMARY KEY, pad text NOT NULL)`);

    const capture = (await p.capture()).start();
    await capture.waitReady();
    const t0 = Date.now();
    const start = (await a.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]!.lsn;
    // ~20 MB of rows in 20 transactions (1 KB each: below the TOAST threshold, so not compressed).
    for (let i = 0; i < 20; i++) {
      await a.query(`INSERT INTO ${other}.bulk SELECT g, repeat(md5(g::text), 32) FROM generate_series(${i * 1000 + 1}, ${(i + 1) * 1000}) g`);
    }
    const w = (
      await a.query<{ lsn: string; bytes: string }>(
        'SELECT pg_current_wal_lsn()::text AS lsn, pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint::text AS bytes',
        [start],
      )
    ).rows[0]!;
    expect(Number(w.bytes)).toBeGreaterThan(20 * 1024 * 1024);

    let last = '';
    await waitUntil(
      `slot ${slot} confirmed_flush_lsn >= ${w.lsn}`,
      async () => {
        const r = await a.query<{ lsn: string | null; past: boolean | null }>(
          'SELECT confirmed_flush_lsn::text AS lsn, confirmed_flush_lsn >= $2::pg_lsn AS past FROM pg_replication_slots WHERE slot_name = $1',
          [slot, w.lsn],
        );
        last = r.rows[0]?.lsn ?? 'no slot';
        return r.rows[0]?.past === true;
      },
      60_000,
      250,
    ).catch((err: Error) => {
      throw new Error(`${err.message} (last confirmed_flush_lsn ${last}, WAL written from ${start})\n${capture.tail()}`);
    });
    const advancedMs = Date.now() - t0;

    // Nothing was published: no change event, no transaction (the unpublished rows never
    // reach capture as changes; there are no heartbeat transactions of this pipeline).
    expect(await capture.metric('pgbridge_capture_events_total', { kind: 'change' })).toBe(0);
    expect(await capture.metric('pgbridge_capture_transactions_total')).toBe(0);
    // Transactions of other pipelines' heartbeats (cdc.heartbeat is in every publication) would
    // show here when other test files run beside this one; alone it is 0.
    const skipped = await capture.metric('pgbridge_capture_skipped_transactions_total');

    // The topic, read up to a sentinel written to the idle table: that sentinel is its only change event.
    await a.query(`INSERT INTO ${schema}.idle VALUES (1, 'sentinel')`);
    const records = await readTopic(cfg, topic, (rs) => changes(rs).some((e) => e.after?.v === 'sentinel'), 30_000);
    const tables = changes(records).map((e) => `${e.source.schema}.${e.source.table}`);
    expect(tables).toEqual([`${schema}.idle`]);
    expect(tables.filter((t) => t.startsWith(`${other}.`))).toEqual([]);
    console.log(
      `slot ${slot} past ${w.lsn} (${(Number(w.bytes) / 1048576).toFixed(1)} MB of unpublished WAL) ${advancedMs} ms after the writes began; skipped transactions ${skipped}`,
    );
  }, 90_000);

  it('a topic deleted and made again while capture was stopped stops capture with SLOT_AHEAD (INV-6): exit 1, topic and offsets named', async () => {
    const p = track(await faultPipeline('slahead', (s) => [`CREATE TABLE ${s}.t (id int PRIMARY KEY, v text)`]));
    const { a, schema, cfg, topic } = p;
    const admin = new KafkaClient({ brokers: cfg.kafka.brokers, clientId: 'test-slot-ahead' }).admin();
    p.defer(() => admin.close());

    const capture = (await p.capture()).start();
    await capture.waitReady();
    await a.query(`INSERT INTO ${schema}.t SELECT g, 'x' FROM generate_series(1, 30) g`);
    await waitUntil('capture published the rows', async () => (await capture.metric('pgbridge_capture_events_total', { kind: 'change' })) >= 30, 30_000);
    // A graceful stop records the last committed record; the slot has released that WAL.
    capture.kill('SIGTERM');
    expect(await capture.waitExit(30_000), capture.tail()).toEqual({ code: 0, signal: null });
    const recorded = await a.query<{ published_offset: string | null }>(
      'SELECT published_offset::text FROM cdc.capture_state WHERE pipeline = $1 AND cluster = $2',
      [cfg.pipeline, p.src],
    );
    const published = BigInt(recorded.rows[0]?.published_offset ?? '-1');
    expect(published).toBeGreaterThanOrEqual(29n);

    // An operator deletes the topic and makes it again, empty.
    await admin.deleteTopics([topic]);
    await waitUntil('topic gone', async () => !(await admin.listTopics()).includes(topic), 30_000, 200);
    await admin.createTopics([{ topic, partitions: 1 }]);

    capture.start();
    const exit = await capture.waitExit(60_000);
    const out = capture.lastOutput();
    expect(exit, out).toEqual({ code: 1, signal: null });
    const fatal = logLines(out).filter((l) => l.level === 'fatal');
    expect(fatal, out).toHaveLength(1);
    expect(fatal[0]).toMatchObject({ code: 'SLOT_AHEAD' });
    expect(String(fatal[0]!.err)).toContain(
      `topic ${topic} ends at offset 0, but capture of cluster ${p.src} had committed records to it up to offset ${published}`,
    );
    expect(String(fatal[0]!.err)).toContain('Resync the direction');
  });
});
