/**
 * No destructive surprises (issue 11): `sync` never drops a destination table the selection
 * leaves out; schema names reach pg_dump quoted and strict; `resync --where` cannot write or
 * run a second statement; `release` drops only a `cdc` schema that `setup` made; numeric
 * options are refused with a usage error. Runs in a database of its own on both clusters,
 * so creating and dropping `cdc` there disturbs no other test.
 */
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { stackConnections } from '../../infra/stack/settings.js';
import { resyncTable, syncSchema } from '../../services/cli/initial-sync.js';
import { HELPER_SCHEMA_MARK, release, setup } from '../../services/cli/setup.js';
import type { PipelineConfig } from '../../shared/config.js';
import { qi, withClient } from '../../shared/pg.js';
import { testConfig, testLog, uniqueName } from '../support/pipeline.js';

const CLI = 'dist/services/cli/main.js';

describe('no destructive surprises', () => {
  const db = uniqueName('pgbns');
  // Upper case on purpose: unquoted, pg_dump would fold it to lower case and find nothing.
  const schema = `Ns_${uniqueName('x')}`;
  const s = qi(schema);
  let cfg: PipelineConfig;
  const admin = (cluster: 'a' | 'b', sql: string) => withClient({ ...cfg.clusters[cluster]!, database: 'postgres' }, 'test', (c) => c.query(sql));
  const on = <T = Record<string, unknown>>(cluster: 'a' | 'b', sql: string, values: unknown[] = []) =>
    withClient(cfg.clusters[cluster]!, 'test', async (c) => (await c.query(sql, values)).rows as T[]);

  beforeAll(async () => {
    const ep = inject('endpoints');
    cfg = testConfig(uniqueName('pns'), schema, {
      clusters: stackConnections(ep, db).clusters,
      selection: { schemas: [schema], exclude: [`${schema}.skip`] },
    });
    for (const c of ['a', 'b'] as const) await admin(c, `CREATE DATABASE ${db}`);
    await on(
      'a',
      `CREATE SCHEMA ${s};
      CREATE TABLE ${s}.keep (id int PRIMARY KEY, v text);
      CREATE TABLE ${s}.skip (id int PRIMARY KEY);
      CREATE SEQUENCE ${s}.seq;
      INSERT INTO ${s}.keep SELECT g, 'v' || g FROM generate_series(1, 10) g`,
    );
    // The destination already has the excluded table, with rows someone needs.
    await on('b', `CREATE SCHEMA ${s}; CREATE TABLE ${s}.skip (id int PRIMARY KEY, precious text); INSERT INTO ${s}.skip VALUES (1, 'keep me')`);
  });

  afterAll(async () => {
    await release(cfg, testLog, { topics: true }).catch(() => undefined);
    for (const c of ['a', 'b'] as const) await admin(c, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).catch(() => undefined);
  });

  it('schema sync creates the selected tables and never drops a destination table the selection excludes', async () => {
    const r = await syncSchema(cfg, 'ignore', testLog);
    expect(r.created).toEqual([`${schema}.keep`]);
    expect(await on('b', `SELECT precious FROM ${s}.skip`)).toEqual([{ precious: 'keep me' }]);
    expect(await on('b', `SELECT count(*)::int AS n FROM ${s}.keep`)).toEqual([{ n: '0' }]);
  });

  it('setup marks the cdc schema it creates; resync --where reads in a read-only transaction, one statement only', async () => {
    await setup(cfg, testLog);
    for (const c of ['a', 'b'] as const) {
      expect(await on(c, `SELECT obj_description('cdc'::regnamespace, 'pg_namespace') AS mark`)).toEqual([{ mark: HELPER_SCHEMA_MARK }]);
    }
    const table = `${schema}.keep`;
    await expect(resyncTable(cfg, table, testLog, { where: `nextval('${s}.seq') > 0` })).rejects.toThrow(/read-only transaction/);
    // Closes the parentheses around the condition (resync's and the chunk reader's) and appends a
    // statement that the simple query protocol would run.
    const injected = `true)) ORDER BY 1 LIMIT 1; DROP TABLE ${s}.keep; SELECT 1 FROM ${s}.keep x WHERE ((true`;
    await expect(resyncTable(cfg, table, testLog, { where: injected })).rejects.toThrow(/multiple commands/);
    expect(await on('a', `SELECT count(*)::int AS n FROM ${s}.keep`)).toEqual([{ n: '10' }]);
    expect(await on('a', `SELECT is_called FROM ${s}.seq`)).toEqual([{ is_called: false }]);
    // A condition that only reads works.
    const ok = await resyncTable(cfg, table, testLog, { where: 'id <= 3', chunkRows: 2 });
    expect([ok.rows, ok.chunks]).toEqual([3, 2]);
  });

  it('release drops the cdc schema setup made, and never one that setup did not make', async () => {
    const first = await release(cfg, testLog, { topics: true });
    for (const c of ['a', 'b']) expect(first.find((r) => r.cluster === c)!.dropped).toContain('schema cdc');
    // Someone else's schema called cdc: setup refuses to use it and release leaves it alone.
    await on('a', 'CREATE SCHEMA cdc; CREATE TABLE cdc.theirs (x int); INSERT INTO cdc.theirs VALUES (1)');
    await expect(setup(cfg, testLog)).rejects.toThrow(/already has a schema "cdc" .* that pgbridge setup did not create/);
    await release(cfg, testLog, { topics: false });
    expect(await on('a', 'SELECT x FROM cdc.theirs')).toEqual([{ x: '1' }]);
  });

  it('numeric options are checked: 0, negative, fractional or non-numeric values are usage errors (exit 2)', () => {
    const cases: [string[], RegExp][] = [
      [['sync', '--chunk-rows', '0'], /--chunk-rows.*expected a whole number of at least 1/],
      [['resync', '--table', 'a.b', '--chunk-rows', '1.5'], /--chunk-rows.*expected a whole number/],
      [['sync', '--max-rows-per-second', 'fast'], /--max-rows-per-second.*expected a number/],
      [['verify', '--buckets', '-3'], /--buckets.*expected a whole number from 1/],
      [['barrier', '--timeout', '0'], /--timeout.*expected a number of at least 1/],
      [['capture', '--cluster', 'a', '--metrics-port', '70000'], /--metrics-port.*from 0 to 65535/],
    ];
    for (const [args, message] of cases) {
      const r = spawnSync(process.execPath, [CLI, ...args, '--config', 'no-such-file.yaml'], { encoding: 'utf8' });
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(message);
    }
  });
});
