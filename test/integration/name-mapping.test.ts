/**
 * Name mapping (selection.tables.<t>.rename, renameColumns), both directions running: a table
 * named otherwise on b, with a column named otherwise, gets its initial sync, converges both
 * ways, resyncs, and verify says equal; precheck compares it under the pipeline's names.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { precheck } from '../../services/cli/precheck/index.js';
import { resyncTable } from '../../services/cli/initial-sync.js';
import { release, setup } from '../../services/cli/setup.js';
import { verify } from '../../services/cli/verify.js';
import { initialSync, syncSchema } from '../../services/snapshot/initial-sync.js';
import type { PipelineConfig } from '../../shared/config.js';
import { pgClient, testConfig, testLog, uniqueName, waitUntil } from '../support/pipeline.js';
import { startServices, waitServicesReady, type Running } from '../support/services.js';

describe('name mapping: a table and a column named otherwise on b', () => {
  const s = uniqueName('nm');
  const sb = `${s}_b`;
  let cfg: PipelineConfig;
  let a: pg.Client;
  let b: pg.Client;
  let svc: Running | null = null;
  const onA = `SELECT id, amount, note FROM ${s}.orders ORDER BY id`;
  const onB = `SELECT id, total AS amount, note FROM ${sb}.sales_orders ORDER BY id`;
  const same = async (): Promise<boolean> => JSON.stringify((await a.query(onA)).rows) === JSON.stringify((await b.query(onB)).rows);

  beforeAll(async () => {
    cfg = testConfig(uniqueName('pnm'), s, {
      selection: { schemas: [s], tables: { [`${s}.orders`]: { rename: { b: `${sb}.sales_orders` }, renameColumns: { b: { amount: 'total' } } } } },
    });
    a = await pgClient(cfg, 'a');
    b = await pgClient(cfg, 'b');
    await a.query(
      `CREATE SCHEMA ${s}; CREATE TABLE ${s}.orders (id int PRIMARY KEY, amount int, note text); INSERT INTO ${s}.orders VALUES (1, 10, 'one'), (2, 20, 'two'), (3, 30, 'three')`,
    );
    await b.query(`CREATE SCHEMA ${s}; CREATE SCHEMA ${sb}; CREATE TABLE ${sb}.sales_orders (id int PRIMARY KEY, total int, note text)`);
    await setup(cfg, testLog);
  }, 60_000);

  afterAll(async () => {
    await svc?.stop();
    await release(cfg, testLog, { topics: true }).catch(() => undefined);
    await a?.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
    await b?.query(`DROP SCHEMA IF EXISTS ${s} CASCADE; DROP SCHEMA IF EXISTS ${sb} CASCADE`);
    await a?.end();
    await b?.end();
  });

  it("initial sync, streaming both ways, resync and verify use each cluster's names", async () => {
    // The schema step cannot make a renamed table; it says so before doing anything.
    await expect(syncSchema(cfg, 'error', testLog)).rejects.toThrow(
      `the schema step cannot create tables named differently on b (selection.tables.<t>.rename / renameColumns: ${s}.orders)`,
    );
    await initialSync(cfg, testLog, { schema: false, chunkRows: 2 });
    svc = startServices(cfg);
    await waitServicesReady(svc);
    await waitUntil('initial rows on b', same);

    await a.query(`INSERT INTO ${s}.orders VALUES (4, 40, 'from a')`);
    await a.query(`UPDATE ${s}.orders SET amount = 11 WHERE id = 1`);
    await b.query(`INSERT INTO ${sb}.sales_orders VALUES (5, 50, 'from b')`);
    await b.query(`UPDATE ${sb}.sales_orders SET total = 22, note = 'changed on b' WHERE id = 2`);
    await b.query(`DELETE FROM ${sb}.sales_orders WHERE id = 3`);
    await waitUntil(
      'both clusters converged',
      async () =>
        (await same()) &&
        (await a.query(`SELECT 1 FROM ${s}.orders WHERE id = 5`)).rowCount === 1 &&
        (await b.query(`SELECT 1 FROM ${sb}.sales_orders WHERE id = 4`)).rowCount === 1,
    );
    expect((await a.query(onA)).rows.map((r) => `${r.id}:${r.amount}:${r.note}`)).toEqual(['1:11:one', '2:22:changed on b', '4:40:from a', '5:50:from b']);

    const v = await verify(cfg);
    expect(v.tables.map((t) => [t.table, t.equal, t.rowsA, t.rowsB])).toEqual([[`${s}.orders`, true, 4, 4]]);
    // A renamed column's change made on b arrives in a's column.
    await b.query(`UPDATE ${sb}.sales_orders SET total = 999 WHERE id = 4`);
    await waitUntil('b change on a', async () => (await a.query(`SELECT amount FROM ${s}.orders WHERE id = 4`)).rows[0]?.amount === '999');

    // A resync from b sends b's rows under the pipeline's names.
    const r = await resyncTable(cfg, `${s}.orders`, testLog, { from: 'b' });
    expect(r.rows).toBe(4);
    await b.query(`INSERT INTO ${sb}.sales_orders VALUES (6, 60, 'marker')`);
    await waitUntil('marker on a', async () => (await a.query(`SELECT 1 FROM ${s}.orders WHERE id = 6`)).rowCount === 1);
    expect((await verify(cfg)).equal).toBe(true);

    // Precheck compares the table under its pipeline name: no missing table, same columns.
    const f = await precheck(cfg, { existingTables: 'ignore' });
    expect(f.filter((x) => ['table_settings', 'table_structure', 'destination_tables'].includes(x.check) && x.level === 'error')).toEqual([]);
    expect(svc.errors).toEqual([]);

    // With the services stopped, a change on b is a difference verify finds, in the renamed column.
    await svc.stop();
    svc = null;
    await b.query(`UPDATE ${sb}.sales_orders SET total = 1000 WHERE id = 1`);
    const d = await verify(cfg);
    expect(d.tables.map((t) => [t.equal, t.differingKeys])).toEqual([[false, [{ key: { id: '1' }, kind: 'different' }]]]);
    svc = startServices(cfg);
    await waitUntil('converged again', same);
    expect((await verify(cfg)).equal).toBe(true);
  }, 120_000);
});
