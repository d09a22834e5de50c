/**
 * Least privilege (issue 11): the roles `pgbridge grants` creates are enough for two-way sync
 * (capture and apply of both directions run as them, not as a superuser), and no more: the
 * capture role reads no table data, the apply role reaches no table outside the selection and
 * none of capture's state. Runs in a database of its own on both clusters.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { stackConnections } from '../../infra/stack/settings.js';
import { release, setup } from '../../services/cli/setup.js';
import type { PipelineConfig } from '../../shared/config.js';
import { withClient } from '../../shared/pg.js';
import { testConfig, testLog, uniqueName, waitUntil } from '../support/pipeline.js';
import { ServiceProcess, writeConfigFile, type ConfigFile } from '../support/processes.js';

const CLI = 'dist/services/cli/main.js';

describe('least privilege: capture and apply as the roles pgbridge grants creates', () => {
  const db = uniqueName('pgblp');
  const schema = uniqueName('lp');
  const tag = randomBytes(3).toString('hex');
  const roles = { capture: `pgb_cap_${tag}`, apply: `pgb_app_${tag}` };
  let cfg: PipelineConfig;
  let file: ConfigFile;
  const processes: ServiceProcess[] = [];
  const admin = (cluster: string, sql: string, database = db) => withClient({ ...cfg.clusters[cluster]!, database }, 'test', (c) => c.query(sql));
  const asRole = (cluster: string, role: string, sql: string) =>
    withClient(cfg.clusters[cluster]!, 'test', async (c) => {
      await c.query(`SET ROLE ${role}`);
      return c.query(sql);
    });

  beforeAll(async () => {
    const ep = inject('endpoints');
    const conn = stackConnections(ep, db).clusters;
    const withRoles = (c: typeof conn.a) => ({ ...c, capture: { user: roles.capture }, apply: { user: roles.apply } });
    cfg = testConfig(uniqueName('plp'), schema, {
      clusters: { a: withRoles(conn.a), b: withRoles(conn.b) },
      selection: { schemas: [schema], exclude: [`${schema}.private`] },
    });
    for (const c of cfg.clusterNames) {
      await admin(c, `CREATE DATABASE ${db}`, 'postgres');
      await admin(
        c,
        `CREATE SCHEMA ${schema};
        CREATE TABLE ${schema}.accounts (id int PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL);
        CREATE TABLE ${schema}.private (id int PRIMARY KEY, secret text)`,
      );
    }
    await setup(cfg, testLog);
    file = writeConfigFile(cfg);
  }, 120_000);

  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop().catch(() => undefined)));
    await release(cfg, testLog, { topics: true }).catch(() => undefined);
    for (const c of cfg.clusterNames) {
      await admin(c, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`, 'postgres').catch(() => undefined);
      for (const r of Object.values(roles)) await admin(c, `DROP OWNED BY ${r}; DROP ROLE IF EXISTS ${r}`, 'postgres').catch(() => undefined);
    }
    file?.remove();
  }, 120_000);

  it('grants prints a script per cluster that makes non-superuser roles; precheck checks them; two-way sync runs as them', async () => {
    const precheck = () => spawnSync(process.execPath, [CLI, 'precheck', '--config', file.path], { encoding: 'utf8' });
    const before = precheck();
    expect(before.stdout).toContain(`role ${roles.capture} (capture of a) lacks role ${roles.capture} does not exist`);
    expect(before.stdout).toContain('fix: pgbridge grants --cluster b, run on b as an administrator');
    for (const c of cfg.clusterNames) {
      const r = spawnSync(process.execPath, [CLI, 'grants', '--config', file.path, '--cluster', c], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toContain(`CREATE ROLE "${roles.capture}" LOGIN REPLICATION NOSUPERUSER`);
      expect(r.stdout).not.toContain(`${schema}"."private"`);
      await admin(c, r.stdout);
      const attrs = await admin(
        c,
        `SELECT rolname, rolsuper, rolreplication FROM pg_roles WHERE rolname IN ('${roles.capture}', '${roles.apply}') ORDER BY rolname DESC`,
      );
      expect(attrs.rows).toEqual([
        { rolname: roles.capture, rolsuper: false, rolreplication: true },
        { rolname: roles.apply, rolsuper: false, rolreplication: false },
      ]);
    }
    const after = precheck();
    for (const c of cfg.clusterNames) {
      expect(after.stdout).toContain(`role ${roles.capture} (capture of ${c}) has what capture needs`);
      expect(after.stdout).toContain(`role ${roles.apply} (apply into ${c}) has what apply needs`);
    }
    // One grant taken away shows up, named.
    await admin('b', `REVOKE INSERT ON cdc.conflicts FROM ${roles.apply}`);
    expect(precheck().stdout).toContain(`role ${roles.apply} (apply into b) lacks INSERT on table cdc.conflicts`);
    // Running the script again restores it, changes nothing else and fails nothing.
    await admin('b', spawnSync(process.execPath, [CLI, 'grants', '--config', file.path, '--cluster', 'b'], { encoding: 'utf8' }).stdout);
    expect(precheck().stdout).toContain(`role ${roles.apply} (apply into b) has what apply needs`);

    for (const c of cfg.clusterNames) processes.push((await ServiceProcess.capture(file, c)).start());
    for (const d of cfg.directions) processes.push((await ServiceProcess.apply(file, d.id)).start());
    await Promise.all(processes.map((p) => p.waitReady(90_000)));

    // Each service's sessions run as its role.
    const sessions = await admin(
      'a',
      `SELECT DISTINCT usename::text AS u FROM pg_stat_activity WHERE datname = '${db}' AND application_name LIKE 'pgbridge-%' ORDER BY 1`,
    );
    expect(sessions.rows.map((r) => r.u)).toEqual([roles.apply, roles.capture].sort());

    await admin('a', `INSERT INTO ${schema}.accounts VALUES (1, 'a', 100)`);
    await admin('b', `INSERT INTO ${schema}.accounts VALUES (2, 'b', 200)`);
    await admin('a', `UPDATE ${schema}.accounts SET balance = 150 WHERE id = 1`);
    const rows = `SELECT id, owner, balance FROM ${schema}.accounts ORDER BY id`;
    const want = [
      { id: '1', owner: 'a', balance: '150' },
      { id: '2', owner: 'b', balance: '200' },
    ];
    for (const c of cfg.clusterNames) {
      await waitUntil(`both rows on ${c}`, async () => JSON.stringify((await admin(c, rows)).rows) === JSON.stringify(want), 60_000, 200).catch(
        (err: Error) => {
          throw new Error(`${err.message}\n${processes.map((p) => p.tail(2000)).join('\n')}`);
        },
      );
    }
    // Replication origins worked through the granted functions: no message-mode fallback.
    for (const p of processes) expect(p.output()).not.toContain('replication origins unavailable');
  });

  it('and no more: capture reads no table data, apply reaches neither unselected tables nor capture state', async () => {
    const denied = async (cluster: string, role: string, sql: string): Promise<string | undefined> =>
      asRole(cluster, role, sql).then(
        () => undefined,
        (err: { code?: string }) => err.code,
      );
    expect(await denied('a', roles.capture, `SELECT * FROM ${schema}.accounts`)).toBe('42501');
    expect(await denied('a', roles.capture, `INSERT INTO cdc.control (pipeline, kind, payload) VALUES ('x', 'barrier', '{}')`)).toBe('42501');
    expect(await denied('b', roles.apply, `SELECT * FROM ${schema}.private`)).toBe('42501');
    expect(await denied('b', roles.apply, 'UPDATE cdc.capture_state SET timeline = 0')).toBe('42501');
    expect(await denied('b', roles.apply, 'DROP TABLE cdc.apply_progress')).toBe('42501');
  });
});
