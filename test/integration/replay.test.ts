/**
 * pgbridge replay as a user runs it (the CLI in a child process) on a two-way pipeline: rows
 * deleted by hand on b come back from the topic with nothing doubled, a replay from a time
 * re-applies only what followed it, --tables limits it, --dry-run changes nothing, and a
 * replay is refused while the direction's apply runs.
 */
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drainBarrier } from '../../services/cli/barrier.js';
import { setThrottle } from '../../services/cli/throttle.js';
import { formatVerifyReport, verify } from '../../services/cli/verify.js';
import { writeControl } from '../../shared/control-records.js';
import { writeConfigFile, type ConfigFile } from '../support/processes.js';
import { kafkaClient } from '../../shared/kafka.js';
import { testLog, waitUntil } from '../support/pipeline.js';
import { startServices, tablesPipeline, waitServicesReady, type Running, type TablesPipeline } from '../support/services.js';

const CLI = 'dist/services/cli/main.js';

function cli(args: string[]): { code: number | null; out: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('pgbridge replay', () => {
  let tp: TablesPipeline;
  let file: ConfigFile;
  let all: Running;
  const applies: Running[] = [];

  const count = async (table: string, where = 'true'): Promise<number> =>
    Number((await tp.b.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${tp.schema}.${table} WHERE ${where}`)).rows[0]!.n);
  /** A change on b that b's capture takes for a's (it is not sent back to a): damage behind pgbridge's back. */
  const damageB = async (sql: string): Promise<void> => {
    await tp.b.query('BEGIN');
    await writeControl(tp.b, tp.cfg.pipeline, 'origin', 'a');
    await tp.b.query(sql.replaceAll('S.', `${tp.schema}.`));
    await tp.b.query('COMMIT');
  };
  const progress = async (): Promise<{ next_offset: string; replay_until: string | null }> =>
    (
      await tp.b.query<{ next_offset: string; replay_until: string | null }>(
        `SELECT next_offset::text, replay_until::text FROM cdc.apply_progress WHERE pipeline = $1 AND direction = 'a-b'`,
        [tp.cfg.pipeline],
      )
    ).rows[0]!;
  const stopApply = async (): Promise<void> => {
    await all.applies['a-b']?.run.stop();
    for (const r of applies.splice(0)) await r.stop();
  };
  const startApply = async (): Promise<Running> => {
    const r = startServices(tp.cfg, { captures: [], applies: ['a-b'] });
    applies.push(r);
    await waitServicesReady(r);
    return r;
  };
  const replayed = async (): Promise<void> => {
    await waitUntil('the replayed range applied', async () => (await progress()).replay_until === null, 120_000, 200);
    await drainBarrier(tp.cfg, 120_000);
  };

  beforeAll(async () => {
    tp = await tablesPipeline(
      'rp',
      (s) => `
      CREATE TABLE ${s}.t (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0);
      CREATE TABLE ${s}.u (id int PRIMARY KEY, v text);
      CREATE TABLE ${s}.k (v text);`,
    );
    file = writeConfigFile(tp.cfg);
    all = startServices(tp.cfg);
    await waitServicesReady(all);
  });

  afterAll(async () => {
    await stopApply().catch(() => undefined);
    await all?.stop();
    file?.remove();
    await tp?.close();
  });

  it('brings rows deleted by hand on b back from the topic, nothing doubled; refused while apply runs; --dry-run changes nothing', async () => {
    const a = tp.a;
    const s = tp.schema;
    for (let i = 0; i < 5; i++) await a.query(`INSERT INTO ${s}.t (id, v) SELECT g, 'v' || g FROM generate_series(${i * 40 + 1}, ${i * 40 + 40}) g`);
    await a.query(`INSERT INTO ${s}.k SELECT 'k' || g FROM generate_series(1, 20) g`);
    await a.query(`INSERT INTO ${s}.u SELECT g, 'u' || g FROM generate_series(1, 30) g`);
    for (let i = 0; i < 2; i++) await a.query(`UPDATE ${s}.t SET n = n + 1 WHERE id <= 50`);
    await a.query(`DELETE FROM ${s}.t WHERE id > 190`);
    await drainBarrier(tp.cfg, 120_000);
    expect((await verify(tp.cfg)).equal).toBe(true);

    // Refused while the apply of a-b runs, naming it.
    const refused = cli(['replay', '-c', file.path, '--direction', 'a-b', '--from', 'earliest']);
    expect(refused.code, refused.out).toBe(1);
    expect(refused.out).toMatch(/apply of a-b is running/);
    expect(refused.out).toMatch(/pgbridge-apply-a-b/);

    await stopApply();
    await damageB(`DELETE FROM S.t WHERE id BETWEEN 51 AND 110; DELETE FROM S.u WHERE id <= 10`);
    expect(await count('t')).toBe(130);

    // --dry-run: says what would be re-applied and changes nothing.
    const snap = async (): Promise<string> =>
      (
        await tp.b.query<{ h: string }>(
          `SELECT md5(string_agg(x::text, ',' ORDER BY x::text)) AS h FROM (SELECT t::text AS x FROM ${s}.t t UNION ALL SELECT u::text FROM ${s}.u u UNION ALL SELECT k::text FROM ${s}.k k) q`,
        )
      ).rows[0]!.h;
    const before = { rows: await snap(), pos: await progress() };
    const dry = cli(['replay', '-c', file.path, '--direction', 'a-b', '--from', 'earliest', '--dry-run']);
    expect(dry.code, dry.out).toBe(0);
    expect(dry.out).toMatch(/would replay a-b: .* offsets 0 to \d+/);
    // 200 inserts, 100 updates and 10 deletes of t; 30 inserts of u; k has no key and is passed over.
    expect(dry.out).toContain(`${s}.t: 310 row(s)`);
    expect(dry.out).toContain(`${s}.u: 30 row(s)`);
    expect(dry.out).not.toContain(`${s}.k:`);
    expect(dry.out).toContain('dry run: nothing was changed');
    expect({ rows: await snap(), pos: await progress() }).toEqual(before);

    const r = cli(['replay', '-c', file.path, '--direction', 'a-b', '--from', 'earliest']);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/replay a-b: .* offsets 0 to/);
    const moved = await progress();
    expect(moved.next_offset).toBe('0');
    expect(moved.replay_until).toBe(before.pos.next_offset);
    // status says a replay is under way.
    const st = spawnSync(process.execPath, [CLI, 'status', '-c', file.path, '--json'], { encoding: 'utf8', timeout: 60_000 });
    const ab = (JSON.parse(st.stdout) as { direction: string; replay: { id: string; until: string } | null }[]).find((x) => x.direction === 'a→b');
    expect(ab?.replay).toMatchObject({ until: before.pos.next_offset, id: expect.stringMatching(/^replay-/) });

    await startApply();
    await replayed();
    const v = await verify(tp.cfg);
    expect(v.equal, formatVerifyReport(v)).toBe(true);
    expect(await count('t')).toBe(190);
    expect(await count('k')).toBe(20);
    expect(await count('t', 'id <= 50 AND n = 2')).toBe(50);
    // The conflicts of the replayed range are marked as the replay's: the inserts of rows 1-50,
    // which b holds with later values (an insert of a row b holds as it is is not a conflict).
    const c = await tp.b.query<{ replayed: string; live: string }>(
      `SELECT count(*) FILTER (WHERE replay_id IS NOT NULL)::text AS replayed, count(*) FILTER (WHERE replay_id IS NULL)::text AS live FROM cdc.conflicts WHERE pipeline = $1`,
      [tp.cfg.pipeline],
    );
    expect(c.rows[0]!.replayed).toBe('50');
    expect(c.rows[0]!.live).toBe('0');
    expect(all.errors).toEqual([]);
  }, 240_000);

  it('re-applies only what followed a time, and only the --tables given', async () => {
    const a = tp.a;
    const s = tp.schema;
    await sleep(1500);
    const t = new Date().toISOString();
    await sleep(1000);
    await a.query(`INSERT INTO ${s}.t (id, v) SELECT g, 'late' || g FROM generate_series(1001, 1050) g`);
    await a.query(`UPDATE ${s}.t SET v = 'after' WHERE id BETWEEN 100 AND 120`);
    await a.query(`INSERT INTO ${s}.u SELECT g, 'u' || g FROM generate_series(101, 120) g`);
    await drainBarrier(tp.cfg, 120_000);
    await stopApply();
    // Rows written after t, rows updated after t, rows not touched since before t, and u rows after t.
    await damageB(
      `DELETE FROM S.t WHERE id BETWEEN 1001 AND 1020; DELETE FROM S.t WHERE id BETWEEN 110 AND 115; DELETE FROM S.t WHERE id BETWEEN 61 AND 70; DELETE FROM S.u WHERE id BETWEEN 101 AND 110`,
    );

    const r = cli(['replay', '-c', file.path, '--direction', 'a-b', '--from', t, '--tables', `${s}.t`]);
    expect(r.code, r.out).toBe(0);
    expect(Number(/offsets (\d+) to/.exec(r.out)![1])).toBeGreaterThan(0);
    await startApply();
    await replayed();
    expect(await count('t', 'id BETWEEN 1001 AND 1020')).toBe(20);
    expect(await count('t', `id BETWEEN 110 AND 115 AND v = 'after'`)).toBe(6);
    // Before the time: not re-applied; another table: not re-applied.
    expect(await count('t', 'id BETWEEN 61 AND 70')).toBe(0);
    expect(await count('u', 'id BETWEEN 101 AND 110')).toBe(0);

    // A second replay from the log start repairs the rest, across an apply restart halfway
    // (throttled so that it is stopped inside the range): the range lives in the progress row.
    await stopApply();
    const again = cli(['replay', '-c', file.path, '--direction', 'a-b', '--from', 'earliest']);
    expect(again.code, again.out).toBe(0);
    const until = (await progress()).replay_until;
    await setThrottle(tp.cfg, 'a-b', { rowsPerSecond: 50 });
    await startApply();
    await waitUntil('part of the range applied', async () => Number((await progress()).next_offset) > 0, 60_000, 100);
    await stopApply();
    const half = await progress();
    expect(half.replay_until).toBe(until);
    expect(BigInt(half.next_offset)).toBeLessThan(BigInt(until!));
    await setThrottle(tp.cfg, 'a-b', null);
    await startApply();
    await replayed();
    const v = await verify(tp.cfg);
    expect(v.equal, formatVerifyReport(v)).toBe(true);
    expect(all.errors).toEqual([]);
  }, 240_000);

  it('says so, with the fix, when asked for an offset before the log start, past the applied position, or a time without its zone', async () => {
    await stopApply();
    const pos = await progress();
    const past = cli(['replay', '-c', file.path, '--direction', 'a-b', '--from', String(BigInt(pos.next_offset) + 5n)]);
    expect(past.code).toBe(1);
    expect(past.out).toMatch(/nothing to replay/);
    const bad = cli(['replay', '-c', file.path, '--direction', 'a-b', '--from', '2026-11-30T07:00:00']);
    expect(bad.code).toBe(1);
    expect(bad.out).toMatch(/time zone/);
    expect(await progress()).toEqual(pos);
    // Retention deleted the first records: the position cannot go back before the log start.
    const admin = kafkaClient(tp.cfg, 't-replay', testLog).admin();
    try {
      await admin.deleteRecords(tp.cfg.directions[0].topic, 0, 3n);
    } finally {
      await admin.close();
    }
    const below = cli(['replay', '-c', file.path, '--direction', 'a-b', '--from', '1']);
    expect(below.code).toBe(1);
    expect(below.out).toMatch(/offset 1 of .* is before the log start 3: .*replay --from earliest re-applies from 3/);
    expect(await progress()).toEqual(pos);
    await startApply();
  }, 60_000);
});
