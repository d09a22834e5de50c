/**
 * apply killed for real (RELIABILITY.md fault catalogue: SIGKILL inside the destination
 * transaction, and between destination COMMIT and Kafka offset commit) while transfers run.
 * What a user checks afterwards: the destination equals the source with no transaction
 * applied twice or partly (INV-3, INV-4), the bank total on the destination never changed
 * while it ran, and cdc.apply_progress points at the last applied record of the topic.
 */
import { KafkaClient } from '../../shared/kafka.js';
import { describe, expect, it } from 'vitest';
import { formatLsn } from '../../shared/lsn.js';
import { waitUntil } from '../support/pipeline.js';
import { readTopic } from '../support/topic.js';
import {
  cleanupAfterEach,
  bankRows,
  bankTables,
  faultPipeline,
  randomMoment,
  seedAccounts,
  startBankRun,
  startTransfers,
  waitConverged,
  watchBank,
  writeSentinel,
} from './fault-support.js';

describe('apply crash (child processes, real kills)', () => {
  const track = cleanupAfterEach();

  it('SIGKILL apply 3 times under transfers (inside a destination transaction, right after COMMIT with the offset commit lost, at random): destination equal, nothing twice, total never changed, progress matches the topic', async () => {
    const p = track(await faultPipeline('acrash', bankTables));
    const { a, b, schema, cfg } = p;
    const pipeline = p;
    const admin = new KafkaClient({ brokers: cfg.kafka.brokers, clientId: 'test-apply-crash' }).admin();
    const groupId = `pgbridge-${cfg.pipeline}-apply-${p.direction}`;
    const progress = async (): Promise<{ next: bigint; lsn: string } | null> => {
      const r = await b.query<{ next_offset: string; commit_lsn: string }>(
        'SELECT next_offset::text, commit_lsn::text FROM cdc.apply_progress WHERE direction = $1 AND partition = 0',
        [pipeline.direction],
      );
      const row = r.rows[0];
      return row ? { next: BigInt(row.next_offset), lsn: row.commit_lsn } : null;
    };
    const groupOffset = async (): Promise<bigint> => {
      return (await admin.groupOffsets(groupId, pipeline.topic)).get(0) ?? -1n;
    };
    try {
      const capture = await p.capture();
      const apply = await p.apply();
      capture.start();
      apply.start();
      await Promise.all([capture.waitReady(), apply.waitReady()]);
      await seedAccounts(a, schema);
      await waitUntil('accounts on the destination', async () => (await b.query(`SELECT count(*) AS n FROM ${schema}.accounts`)).rows[0].n === '20', 60_000);
      const watch = await watchBank(cfg, p.dst, schema);
      const load = await startTransfers(cfg, schema, 2, 10);
      p.defer(() => Promise.all([load.stop(), watch.stop()]));
      const landed: string[] = [];
      try {
        // A restart after SIGKILL waits for the group coordinator to expire the dead member
        // (apply's 30 s session timeout): three kills keep the file near two minutes.
        for (const when of ['inside a destination transaction', 'right after a destination COMMIT', 'at a random moment']) {
          // This life of apply has committed something before it is killed.
          const base = (await progress())?.next ?? -1n;
          await waitUntil('apply committing', async () => ((await progress())?.next ?? -1n) > base, 90_000, 50);
          if (when.startsWith('at a random')) {
            await randomMoment(500);
          } else {
            // pg_stat_activity shows where the apply session is: in a transaction that wrote
            // rows, or idle with COMMIT as its last statement (the Kafka offset commit is next).
            const where = when.startsWith('inside') ? 'backend_xid IS NOT NULL' : `state = 'idle' AND query = 'COMMIT'`;
            await waitUntil(
              `apply ${when}`,
              async () => {
                const r = await b.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND ${where}`, [`pgbridge-apply-${pipeline.direction}`]);
                return r.rowCount === 1;
              },
              30_000,
              1,
            );
          }
          apply.kill('SIGKILL');
          expect((await apply.waitExit(10_000)).signal).toBe('SIGKILL');
          // Nothing moves now: a stored position ahead of the group offset means the kill came
          // between the destination COMMIT and the Kafka offset commit.
          const [stored, committed] = [(await progress())?.next ?? -1n, await groupOffset()];
          expect(committed, 'the Kafka offset was committed before the destination transaction').toBeLessThanOrEqual(stored);
          let note = stored > committed ? ' (its last Kafka offset commit had not happened)' : '';
          if (when.startsWith('right after')) {
            // That window is a few milliseconds wide; make its outcome certain: the offset commit
            // is lost (group offset set back), as a kill just before it leaves it. The stored
            // position must win on restart (INV-3), or the ledger gets duplicate rows.
            await waitUntil('the dead member gone from the group', async () => (await admin.groupState(groupId)).state === 'Empty', 60_000, 250);
            const lower = stored - 600n < committed ? stored - 600n : committed;
            const back = lower > 0n ? lower : 0n;
            await admin.setGroupOffsets(groupId, pipeline.topic, new Map([[0, back]]));
            note += `, group offset then set back to ${back}`;
          }
          landed.push(`${when}: stored ${stored}, group ${committed}${note}`);
          apply.start();
        }
        await waitUntil('apply committing after the last restart', async () => (await apply.metric('pgbridge_apply_transactions_total')) > 0, 90_000, 100);
      } finally {
        await load.stop();
      }
      await writeSentinel(a, schema, 'end-apply');
      await waitConverged(p, 90_000);
      const seen = await watch.stop();
      expect(seen.violations).toEqual([]);
      expect(seen.polls).toBeGreaterThan(20);
      expect(await b.query(`SELECT count(*)::text AS n FROM cdc.conflicts WHERE direction = $1`, [p.direction]).then((r) => r.rows[0].n)).toBe('0');

      // Progress: with capture drained and stopped, apply reaches the end of the topic and its
      // stored position is right after the last record, with that record's commit LSN.
      capture.kill('SIGTERM');
      expect(await capture.waitExit(30_000), capture.tail()).toEqual({ code: 0, signal: null });
      const end = (await admin.topicOffsets(p.topic)).find((o) => o.partition === 0)!.high;
      const final = await waitUntil(
        'apply at the end of the topic',
        async () => {
          const s = await progress();
          // The last offset of a transactional topic is a commit marker, not a record.
          return s && s.next >= end - 1n ? s : null;
        },
        60_000,
        100,
      );
      const records = await readTopic(cfg, p.topic, (rs) => BigInt(rs[rs.length - 1]!.offset) >= final.next - 1n);
      const last = records[records.length - 1]!;
      expect(BigInt(last.offset)).toBe(final.next - 1n);
      const v = last.value as { source?: { commitLsn: bigint }; commitLsn?: bigint; txn?: { last: boolean }; last?: boolean };
      expect(v.txn?.last ?? v.last).toBe(true);
      expect(formatLsn(BigInt(v.source?.commitLsn ?? v.commitLsn!))).toBe(final.lsn);
      expect(await groupOffset()).toBeLessThanOrEqual(final.next);
      expect(apply.running, apply.tail()).toBe(true);
      console.log(
        `apply SIGKILL x3 under ${await a.query(`SELECT count(*) FROM ${schema}.ledger`).then((r) => r.rows[0].count)} source transactions:\n  ${landed.join('\n  ')}`,
      );
    } finally {
      await admin.close();
    }
  }, 240_000);

  it('a second apply of the same direction waits as standby and takes over when the first stops (scale 1→2→1 under transfers): nothing lost or twice', async () => {
    const fp = track(await faultPipeline('arebal', bankTables));
    const { schema } = fp;
    const { apply: first, watch, load } = await startBankRun(fp);
    const ledger = async (c: typeof fp.a): Promise<number> => Number((await c.query(`SELECT count(*) AS n FROM ${schema}.ledger`)).rows[0].n);
    /** The destination keeps up: it reaches what the source held a moment ago. */
    const flowing = async (what: string): Promise<void> => {
      const src = await ledger(fp.a);
      await waitUntil(`destination catching up ${what}`, async () => (await ledger(fp.b)) >= src + 10, 60_000, 100);
    };
    const standbyState = async (x: typeof first): Promise<string> => {
      const r = await fetch(`http://127.0.0.1:${x.port}/readyz`, { signal: AbortSignal.timeout(2000) });
      return `${r.status} ${(await r.text()).trim()}`;
    };

    await flowing('with one apply');
    // Scale to two: the second cannot take the direction's replication origin and waits.
    const second = (await fp.apply()).start();
    await waitUntil('second apply on standby', async () => /^503 .*standby/.test(await standbyState(second).catch(() => '')), 30_000, 200);
    await flowing('with a standby beside the first');
    // Scale to one: the first drains and exits; the standby takes over.
    first.kill('SIGTERM');
    expect(await first.waitExit(30_000), first.tail()).toEqual({ code: 0, signal: null });
    const t0 = Date.now();
    await second.waitReady(60_000);
    const takeoverMs = Date.now() - t0;
    await flowing('after the takeover');
    // And back: the first returns as standby, the second stops, the first takes over again.
    first.start();
    await waitUntil('first apply on standby', async () => /^503 .*standby/.test(await standbyState(first).catch(() => '')), 30_000, 200);
    // This time the active one dies (SIGKILL): PostgreSQL frees the origin as the connection
    // drops, and the standby, a static member of the group like its predecessor, takes its
    // place without waiting for the dead member's session to expire.
    const progress = async (): Promise<bigint> =>
      BigInt(
        (await fp.b.query<{ n: string }>('SELECT next_offset::text AS n FROM cdc.apply_progress WHERE direction = $1 AND partition = 0', [fp.direction]))
          .rows[0]?.n ?? '-1',
      );
    await waitUntil('second apply committing', async () => (await progress()) >= 0n, 30_000, 50);
    second.kill('SIGKILL');
    const killedAt = Date.now();
    expect((await second.waitExit(10_000)).signal).toBe('SIGKILL');
    const before = await progress();
    await waitUntil('the standby writing after the SIGKILL', async () => (await progress()) > before, 30_000, 20);
    const resumeMs = Date.now() - killedAt;
    expect(resumeMs, 'first write of the standby after the SIGKILL of the active apply').toBeLessThanOrEqual(3_000);
    await flowing('after the second takeover');

    await load.stop();
    await waitConverged(fp, 90_000);
    const seen = await watch.stop();
    expect(seen.violations).toEqual([]);
    const copies = JSON.parse(await bankRows(fp.b, schema)).ledger.filter((r: { copies: string }) => r.copies !== '1');
    expect(copies).toEqual([]);
    // A standby is quiet: no error lines while it waited.
    for (const x of [first, second])
      expect(
        x
          .output()
          .split('\n')
          .filter((l) => l.includes('"level":"error"') || l.includes('"level":50')),
      ).toEqual([]);
    expect(takeoverMs, 'standby ready after the active apply drained').toBeLessThanOrEqual(3_000);
    console.log(
      `apply 1→2→1: takeover ${takeoverMs} ms after the active instance exited (SIGTERM); first write ${resumeMs} ms after the active instance was killed (SIGKILL)`,
    );
  }, 240_000);
});
