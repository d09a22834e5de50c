/**
 * pgbridge replay under every conflict policy, on a two-way pipeline where b changed a row
 * after a did: last-writer-wins, overwrite and ignore converge (rows deleted by hand come back,
 * b's later change stays, the clusters end equal); fail and fail-strict stop the direction at
 * the first replayed conflict, naming the replay, with nothing applied, and `--cancel` lets
 * apply go on from where it was.
 */
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drainBarrier } from '../../services/cli/barrier.js';
import { formatVerifyReport, verify } from '../../services/cli/verify.js';
import { writeControl } from '../../shared/control-records.js';
import { writeConfigFile, type ConfigFile } from '../support/processes.js';
import type pg from 'pg';
import { release, setup } from '../../services/cli/setup.js';
import type { PipelineConfig } from '../../shared/config.js';
import { pgClient, testConfig, testLog, uniqueName, waitUntil } from '../support/pipeline.js';
import { startServices, waitServicesReady, type Running } from '../support/services.js';

const CLI = 'dist/services/cli/main.js';

function cli(args: string[]): { code: number | null; out: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

const POLICIES = { p_lww: 'last-writer-wins', p_over: 'overwrite', p_ign: 'ignore', p_fail: 'fail', p_strict: 'fail-strict' } as const;
const TABLES = Object.keys(POLICIES);

describe('pgbridge replay under each conflict policy', () => {
  const schema = uniqueName('rpp');
  let tp: { cfg: PipelineConfig; a: pg.Client; b: pg.Client };
  let file: ConfigFile;
  let all: Running;
  const applies: Running[] = [];

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
  const startApply = (): Running => {
    const r = startServices(tp.cfg, { captures: [], applies: ['a-b'] });
    applies.push(r);
    return r;
  };
  const replay = (tables: string[], extra: string[] = []): { code: number | null; out: string } =>
    cli(['replay', '-c', file.path, '--direction', 'a-b', '--from', 'earliest', '--tables', tables.map((t) => `${schema}.${t}`).join(','), ...extra]);

  beforeAll(async () => {
    const cfg = testConfig(uniqueName('prpp'), schema, {
      conflicts: { policy: 'last-writer-wins', tables: Object.fromEntries(Object.entries(POLICIES).map(([t, p]) => [`${schema}.${t}`, p])) },
    });
    const a = await pgClient(cfg, 'a');
    const b = await pgClient(cfg, 'b');
    for (const c of [a, b])
      await c.query(`CREATE SCHEMA ${schema}; ${TABLES.map((t) => `CREATE TABLE ${schema}.${t} (id int PRIMARY KEY, v text);`).join('\n')}`);
    await setup(cfg, testLog);
    tp = { cfg, a, b };
    file = writeConfigFile(cfg);
  });

  afterAll(async () => {
    for (const r of applies) await r.stop().catch(() => undefined);
    await all?.stop();
    file?.remove();
    await release(tp.cfg, testLog, { topics: true }).catch(() => undefined);
    for (const c of [tp.a, tp.b]) {
      await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
      await c.end();
    }
  });

  it('converges under last-writer-wins, overwrite and ignore; stops cleanly under fail and fail-strict', async () => {
    const s = schema;
    const cfg = tp.cfg;
    all = startServices(cfg);
    await waitServicesReady(all);
    for (const t of TABLES) {
      await tp.a.query(`INSERT INTO ${s}.${t} SELECT g, 'a' || g FROM generate_series(1, 20) g`);
      await tp.a.query(`UPDATE ${s}.${t} SET v = 'a2' WHERE id <= 10`);
    }
    await drainBarrier(cfg, 120_000);
    // b changes row 5 after a did (it reaches a through b-a); then rows deleted by hand on b only.
    for (const t of TABLES) await tp.b.query(`UPDATE ${s}.${t} SET v = 'b-late' WHERE id = 5`);
    await drainBarrier(cfg, 120_000);
    await stopApply();
    await tp.b.query('BEGIN');
    await writeControl(tp.b, cfg.pipeline, 'origin', 'a');
    for (const t of TABLES) await tp.b.query(`DELETE FROM ${s}.${t} WHERE id BETWEEN 15 AND 17`);
    await tp.b.query('COMMIT');

    const ok = replay(['p_lww', 'p_over', 'p_ign']);
    expect(ok.code, ok.out).toBe(0);
    const r1 = startApply();
    await waitUntil('the replay applied', async () => (await progress()).replay_until === null, 120_000, 200);
    await drainBarrier(cfg, 120_000);
    const v = await verify(cfg, { tables: ['p_lww', 'p_over', 'p_ign'].map((t) => `${s}.${t}`) });
    expect(v.equal, formatVerifyReport(v)).toBe(true);
    for (const t of ['p_lww', 'p_over', 'p_ign']) {
      const rows = await tp.b.query<{ id: string; v: string }>(`SELECT x.id::text AS id, x.v FROM ${s}.${t} x WHERE x.id IN (5, 15, 16, 17) ORDER BY x.id`);
      expect(rows.rows, t).toEqual([
        { id: '5', v: 'b-late' },
        { id: '15', v: 'a15' },
        { id: '16', v: 'a16' },
        { id: '17', v: 'a17' },
      ]);
    }
    expect(r1.errors).toEqual([]);
    await stopApply();

    for (const t of ['p_fail', 'p_strict']) {
      const before = await progress();
      const r = replay([t]);
      expect(r.code, r.out).toBe(0);
      const start = await progress();
      const run = startApply();
      await waitUntil(`apply stops under ${POLICIES[t as keyof typeof POLICIES]}`, async () => run.errors.length > 0, 60_000, 200);
      expect(String(run.errors[0]?.message)).toMatch(
        new RegExp(`insert_exists on ${s}\\.${t} .*during replay replay-.*policy "${POLICIES[t as keyof typeof POLICIES]}" stops this direction`),
      );
      await stopApply();
      // Nothing of the stopped transaction was applied: the position did not move, the rows are still gone.
      expect(await progress()).toEqual(start);
      expect((await tp.b.query(`SELECT 1 FROM ${s}.${t} WHERE id BETWEEN 15 AND 17`)).rowCount).toBe(0);
      const cancel = cli(['replay', '-c', file.path, '--direction', 'a-b', '--cancel']);
      expect(cancel.code, cancel.out).toBe(0);
      expect(cancel.out).toMatch(/replay replay-.* of a-b cancelled: apply goes on from offset/);
      expect(await progress()).toMatchObject({ next_offset: before.next_offset, replay_until: null });
    }
    // After the cancel, apply goes on with what comes next.
    const r2 = startApply();
    await tp.a.query(`INSERT INTO ${s}.p_fail VALUES (100, 'after the cancel')`);
    await waitUntil(
      'a new change applied after the cancel',
      async () => (await tp.b.query(`SELECT 1 FROM ${s}.p_fail WHERE id = 100`)).rowCount === 1,
      60_000,
      200,
    );
    expect(r2.errors).toEqual([]);
    expect(all.errors).toEqual([]);
  }, 300_000);
});
