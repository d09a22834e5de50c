/**
 * The replication stream reader against a real walsender (PostgreSQL of the local stack):
 * the slot moves to exactly the LSN acknowledged, keepalives that ask for a reply are
 * answered (or the server drops the connection), and a blocked handler stops the server
 * from sending (back-pressure through the socket, INV-7).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { ReplicationStream } from '../../services/capture/replication-stream.js';
import type { PgoutputMessage } from '../../services/capture/pgoutput-decoder.js';
import type { PipelineConfig } from '../../shared/config.js';
import { parseLsn, formatLsn, type Lsn } from '../../shared/lsn.js';
import { clientConfig, SESSION_OPTIONS } from '../../shared/pg.js';
import { pgClient, testConfig, uniqueName, waitUntil } from '../support/pipeline.js';

describe('replication stream reader (real walsender)', () => {
  let cfg: PipelineConfig;
  let a: pg.Client;
  const schema = uniqueName('rs');
  const slot = `${schema}_slot`;
  const pub = `${schema}_pub`;
  const streams: ReplicationStream[] = [];

  /** A stream whose walsender gives up after `timeoutMs` without a status update. */
  const open = (timeoutMs = 60_000): ReplicationStream => {
    const conn = { ...clientConfig(cfg.clusters.a!, `${schema}-reader`), options: `${SESSION_OPTIONS} -c wal_sender_timeout=${timeoutMs}` };
    const s = new ReplicationStream(conn, slot, pub);
    streams.push(s);
    return s;
  };
  const confirmed = async (): Promise<Lsn> =>
    parseLsn((await a.query<{ l: string }>('SELECT confirmed_flush_lsn::text AS l FROM pg_replication_slots WHERE slot_name = $1', [slot])).rows[0]!.l);

  /** A stopped stream's walsender lets go of the slot a moment later; a new start waits for that. */
  const slotFree = (): Promise<boolean> =>
    waitUntil(
      'slot inactive',
      async () => (await a.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active', [slot])).rows.length === 0,
      15_000,
    );

  beforeAll(async () => {
    cfg = testConfig(uniqueName('prs'), schema);
    a = await pgClient(cfg, 'a');
    await a.query(`CREATE SCHEMA ${schema}; CREATE TABLE ${schema}.t (id int PRIMARY KEY, v text)`);
    await a.query(`CREATE PUBLICATION ${pub} FOR TABLE ${schema}.t`);
    await a.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
  });

  afterAll(async () => {
    for (const s of streams) await s.stop();
    await slotFree().catch(() => undefined);
    await a?.query('SELECT pg_drop_replication_slot($1)', [slot]).catch(() => undefined);
    await a?.query(`DROP PUBLICATION IF EXISTS ${pub}`);
    await a?.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await a?.end();
  });

  it('moves the slot to exactly the acknowledged commit end LSN, and not before the ack', async () => {
    await slotFree();
    const s = open();
    const start = await confirmed();
    const msgs: { msg: PgoutputMessage; lsn: Lsn }[] = [];
    const errors: Error[] = [];
    await s.start(start, { onMessage: async (msg, lsn) => void msgs.push({ msg, lsn }), onKeepalive: () => undefined, onError: (e) => errors.push(e) });
    await a.query(`INSERT INTO ${schema}.t SELECT g, 'v' || g FROM generate_series(1, 3) g`);
    // The slot is on the shared database: other sessions' logical messages may come in
    // transactions of their own. Ours is the one holding the inserts.
    const ours = await waitUntil('our transaction', async () => {
      const first = msgs.findIndex((m) => m.msg.tag === 'insert');
      const commit = msgs.findIndex((m, i) => i > first && m.msg.tag === 'commit');
      if (first < 0 || commit < 0) return undefined;
      const begin = msgs.map((m) => m.msg.tag).lastIndexOf('begin', first);
      return msgs.slice(begin, commit + 1);
    });
    expect(ours.map((m) => m.msg.tag)).toEqual(['begin', 'relation', 'insert', 'insert', 'insert', 'commit']);
    const commit = ours[ours.length - 1]!;
    const end = (commit.msg as { endLsn: Lsn }).endLsn;
    expect(typeof commit.lsn).toBe('bigint');
    await new Promise((r) => setTimeout(r, 500));
    expect(await confirmed()).toBe(start); // nothing acknowledged on its own
    await s.ack(end);
    await waitUntil(`slot at ${formatLsn(end)}`, async () => (await confirmed()) === end, 10_000);
    expect(errors).toEqual([]);
    await s.stop();
  }, 60_000);

  it('answers keepalives that ask for a reply, so the walsender keeps the connection; unanswered, it drops it and the error surfaces', async () => {
    for (const answer of [true, false]) {
      await slotFree();
      const s = open(2000);
      const errors: Error[] = [];
      let asked = 0;
      const from = await confirmed();
      await s.start(from, {
        onMessage: async () => undefined,
        onKeepalive: (_lsn, reply) => {
          if (!reply) return;
          asked++;
          if (answer) void s.ack(from);
        },
        onError: (e) => errors.push(e),
      });
      await new Promise((r) => setTimeout(r, 5000));
      expect(asked, `answer=${answer}`).toBeGreaterThan(0);
      if (answer) expect(errors).toEqual([]);
      else expect(errors.length).toBe(1);
      await s.stop();
    }
  }, 60_000);

  it('stops reading while a message is being handled: the walsender waits instead of the process buffering', async () => {
    await slotFree();
    const s = open();
    const from = await confirmed();
    let count = 0;
    let inserts = 0;
    let release: () => void = () => undefined;
    const blocked = new Promise<void>((r) => (release = r));
    const errors: Error[] = [];
    await s.start(from, {
      onMessage: async (msg) => {
        if (msg.tag === 'insert') inserts++;
        if (++count === 1) await blocked;
      },
      onKeepalive: () => undefined,
      onError: (e) => errors.push(e),
    });
    const pid = (await a.query<{ pid: number }>('SELECT active_pid AS pid FROM pg_replication_slots WHERE slot_name = $1', [slot])).rows[0]!.pid;
    // About 60 MB of WAL in one transaction, decoded and sent at its commit.
    await a.query(`INSERT INTO ${schema}.t SELECT g, repeat(md5(g::text), 32) FROM generate_series(100, 60099) g`);
    // The walsender is stuck writing to a full socket, the process holds no more than what the socket buffers took.
    await waitUntil(
      'walsender waits on the socket',
      async () =>
        (await a.query<{ w: string | null }>('SELECT wait_event AS w FROM pg_stat_activity WHERE pid = $1', [pid])).rows[0]?.w === 'WalSenderWriteData',
      30_000,
    );
    await new Promise((r) => setTimeout(r, 1000));
    expect(count).toBe(1);
    expect((await a.query<{ w: string | null }>('SELECT wait_event AS w FROM pg_stat_activity WHERE pid = $1', [pid])).rows[0]?.w).toBe('WalSenderWriteData');
    release();
    await waitUntil('every row', async () => inserts === 60_000, 90_000);
    expect(errors).toEqual([]);
    await s.stop();
  }, 180_000);
});
