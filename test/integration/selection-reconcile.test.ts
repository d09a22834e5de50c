/**
 * `setup` brings an existing publication in line with an edited selection and says what it
 * changed: a table added to `include` starts replicating once setup ran again and the
 * services were restarted with the new file.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setup } from '../../services/cli/setup.js';
import { testConfig, testLog, waitUntil } from '../support/pipeline.js';
import { startServices, tablesPipeline, waitServicesReady, type Running, type TablesPipeline } from '../support/services.js';

describe('setup reconciles the publication with the selection', () => {
  let p: TablesPipeline;
  let svc: Running | null = null;

  beforeAll(async () => {
    p = await tablesPipeline('rc', (s) => `CREATE TABLE ${s}.t1 (id int PRIMARY KEY, v text); CREATE TABLE ${s}.t2 (id int PRIMARY KEY, v text);`);
  }, 60_000);

  afterAll(async () => {
    await svc?.stop();
    await p?.close();
  });

  it('adds a table to include, re-runs setup (which reports the change), and the table replicates', async () => {
    // tablesPipeline selects the whole schema; start from include: [t1] instead.
    const only1 = testConfig(p.cfg.pipeline, p.schema, { selection: { schemas: [p.schema], include: [`${p.schema}.t1`] } });
    const first = await setup(only1, testLog);
    expect(first).toEqual([
      `cluster a: schema ${p.schema} removed (its tables are published only when listed)`,
      `cluster a: table ${p.schema}.t2 removed: its changes no longer replicate`,
      `cluster b: schema ${p.schema} removed (its tables are published only when listed)`,
      `cluster b: table ${p.schema}.t2 removed: its changes no longer replicate`,
    ]);
    expect(await setup(only1, testLog)).toEqual([]);
    svc = startServices(only1);
    await waitServicesReady(svc);
    await p.a.query(`INSERT INTO ${p.schema}.t2 VALUES (1, 'before')`);
    await p.a.query(`INSERT INTO ${p.schema}.t1 VALUES (1, 'one')`);
    await waitUntil('t1 row on b', async () => (await p.b.query(`SELECT 1 FROM ${p.schema}.t1 WHERE id = 1`)).rowCount === 1);
    expect((await p.b.query(`SELECT count(*) AS n FROM ${p.schema}.t2`)).rows[0].n).toBe('0');
    await svc.stop();
    svc = null;

    const both = testConfig(p.cfg.pipeline, p.schema, { selection: { schemas: [p.schema], include: [`${p.schema}.t1`, `${p.schema}.t2`] } });
    const changes = await setup(both, testLog);
    expect(changes).toEqual([
      `cluster a: table ${p.schema}.t2 added: its changes replicate from now on; to copy the rows it already has, run pgbridge resync --table ${p.schema}.t2`,
      `cluster b: table ${p.schema}.t2 added: its changes replicate from now on; to copy the rows it already has, run pgbridge resync --table ${p.schema}.t2`,
    ]);
    svc = startServices(both);
    await waitServicesReady(svc);
    await p.a.query(`INSERT INTO ${p.schema}.t2 VALUES (2, 'after')`);
    await p.b.query(`INSERT INTO ${p.schema}.t2 VALUES (3, 'from b')`);
    await waitUntil(
      't2 rows on both',
      async () =>
        (await p.b.query(`SELECT 1 FROM ${p.schema}.t2 WHERE id = 2`)).rowCount === 1 &&
        (await p.a.query(`SELECT 1 FROM ${p.schema}.t2 WHERE id = 3`)).rowCount === 1,
    );
    // Written before t2 was published: not replicated (resync copies such rows).
    expect((await p.b.query(`SELECT count(*) AS n FROM ${p.schema}.t2 WHERE id = 1`)).rows[0].n).toBe('0');
    expect(svc.errors).toEqual([]);
  });
});
