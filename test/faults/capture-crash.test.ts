/**
 * capture killed for real (RELIABILITY.md fault catalogue: SIGKILL mid-transaction, large
 * and small; between Kafka ack and slot ack; graceful SIGTERM under load). What a user
 * checks afterwards: every source transaction is in the topic whole and none is missing
 * (INV-1, INV-2), and the destination equals the source with no transaction applied twice
 * (INV-3, INV-4), the bank total never having changed on the way.
 */
import { describe, expect, it } from 'vitest';
import { waitUntil } from '../support/pipeline.js';
import {
  cleanupAfterEach,
  bankTables,
  checkTopic,
  faultPipeline,
  randomMoment,
  readUntilSentinel,
  seedAccounts,
  startTransfers,
  waitConverged,
  watchBank,
  watchUncommitted,
  writeSentinel,
} from './fault-support.js';

const BIG_ROWS = 200_000;

describe('capture crash (child processes, real kills)', () => {
  const track = cleanupAfterEach();

  it('SIGKILL while a 200k-row source transaction is being published: after restart it is in the topic whole, once per copy, nothing missing', async () => {
    const p = track(await faultPipeline('ccbig', (s) => [...bankTables(s), `CREATE TABLE ${s}.big (id int PRIMARY KEY, v int NOT NULL)`]));
    const { a, schema, cfg } = p;
    const capture = await p.capture();
    capture.start();
    await capture.waitReady();
    const uncommitted = await watchUncommitted(cfg, p.topic);
    let killedAt = 0;
    try {
      await seedAccounts(a, schema);
      const before = await waitUntil(
        'seed published',
        async () => (await capture.metric('pgbridge_capture_transactions_total')) >= 1 && uncommitted.count(),
        30_000,
      );
      await a.query(`BEGIN;
        INSERT INTO ${schema}.big SELECT g, g FROM generate_series(1, ${BIG_ROWS}) g;
        INSERT INTO ${schema}.ledger (events, note) VALUES (${BIG_ROWS + 1}, 'big');
        COMMIT`);
      // Kill once a good part of the transaction sits in the open Kafka transaction.
      const sent = await waitUntil(
        'a quarter of the big transaction in Kafka',
        async () => {
          const n = uncommitted.count() - before;
          return n >= BIG_ROWS / 4 ? n : false;
        },
        90_000,
        10,
      );
      capture.kill('SIGKILL');
      expect((await capture.waitExit(10_000)).signal).toBe('SIGKILL');
      // Part of it only: the Kafka transaction holding it was still open when capture died.
      expect(sent, 'the kill came after the whole transaction was sent').toBeLessThan(BIG_ROWS);
      killedAt = sent;
    } finally {
      await uncommitted.stop();
    }
    // Writes while capture is down, then the restart.
    await a.query(`INSERT INTO ${schema}.ledger (events, note) VALUES (1, 'while down')`);
    capture.start();
    await capture.waitReady();
    await writeSentinel(a, schema, 'end-big');
    const records = await readUntilSentinel(cfg, 'end-big', 120_000);
    const report = await checkTopic(records, a, schema);
    expect(report.problems, capture.tail()).toEqual([]);
    expect(report.transactions).toBe(4);
    expect(report.events).toBeGreaterThanOrEqual(BIG_ROWS + 1 + 21 + 1 + 1);
    console.log(
      `capture SIGKILL mid-transaction: killed with ${killedAt} of ${BIG_ROWS + 1} events in the open Kafka transaction; topic has ${report.events} events, ${report.duplicated} transactions twice`,
    );
  });

  it('SIGKILL 5 times at random moments under small transactions: topic whole and complete, destination equal, bank total and versions never wrong', async () => {
    const p = track(await faultPipeline('cckill', bankTables));
    const { a, b, schema, cfg } = p;
    const capture = await p.capture();
    const apply = await p.apply();
    capture.start();
    apply.start();
    await Promise.all([capture.waitReady(), apply.waitReady()]);
    await seedAccounts(a, schema);
    await waitUntil('accounts on b', async () => (await b.query(`SELECT count(*) AS n FROM ${schema}.accounts`)).rows[0].n === '20', 60_000);
    const watch = await watchBank(cfg, p.dst, schema);
    const load = await startTransfers(cfg, schema);
    p.defer(() => Promise.all([load.stop(), watch.stop()]));
    try {
      for (let i = 0; i < 5; i++) {
        // Each life publishes something before it dies, so the kills land among acks.
        await waitUntil(`capture life ${i + 1} publishing`, async () => (await capture.metric('pgbridge_capture_transactions_total')) >= 5, 60_000, 50);
        await randomMoment(800);
        capture.kill('SIGKILL');
        expect((await capture.waitExit(10_000)).signal).toBe('SIGKILL');
        capture.start();
      }
      await waitUntil('capture publishing after the last restart', async () => (await capture.metric('pgbridge_capture_transactions_total')) >= 5, 60_000, 50);
    } finally {
      const n = await load.stop();
      expect(n).toBeGreaterThan(50);
    }
    await writeSentinel(a, schema, 'end-kills');
    await waitConverged(p, 90_000);
    const seen = await watch.stop();
    expect(seen.violations).toEqual([]);
    expect(seen.polls).toBeGreaterThan(20);
    const report = await checkTopic(await readUntilSentinel(cfg, 'end-kills'), a, schema);
    expect(report.problems, capture.tail()).toEqual([]);
    // apply never stopped: replays reached it as whole transactions it skipped (INV-4).
    expect(apply.running && apply.starts === 1, apply.tail()).toBe(true);
    console.log(
      `capture SIGKILL x5: ${report.transactions} source transactions, ${report.duplicated} published twice, ${seen.polls} destination snapshots checked`,
    );
  });

  it('SIGTERM under load drains and exits 0; the restart goes on with nothing lost or doubled', async () => {
    const p = track(await faultPipeline('ccterm', bankTables));
    const { a, schema, cfg } = p;
    const capture = await p.capture();
    capture.start();
    await capture.waitReady();
    await seedAccounts(a, schema);
    const load = await startTransfers(cfg, schema);
    p.defer(() => load.stop());
    try {
      await waitUntil('capture publishing', async () => (await capture.metric('pgbridge_capture_transactions_total')) >= 30, 60_000, 50);
      capture.kill('SIGTERM');
      const exit = await capture.waitExit(30_000);
      expect(exit, capture.tail()).toEqual({ code: 0, signal: null });
      expect(capture.output()).toContain('draining');
      capture.start();
      await capture.waitReady();
      await waitUntil('capture publishing after restart', async () => (await capture.metric('pgbridge_capture_transactions_total')) >= 10, 60_000, 50);
    } finally {
      await load.stop();
    }
    await writeSentinel(a, schema, 'end-term');
    const report = await checkTopic(await readUntilSentinel(cfg, 'end-term'), a, schema);
    expect(report.problems, capture.tail()).toEqual([]);
    // A drain acks what it published: the restart replays nothing.
    expect(report.duplicated, capture.tail(20000)).toBe(0);
  });
});
