/**
 * selection.tables on the real stack, both directions running: a column list keeps a column
 * on its cluster, a row filter keeps only matching rows and moves rows in and out as they are
 * updated (PostgreSQL's rules), `operations: { b-a: [insert, update] }` keeps deletes made on
 * b from reaching a (counted), and setup refuses a filter the replica identity cannot carry.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { precheck } from '../../services/cli/precheck/index.js';
import { resyncTable } from '../../services/cli/initial-sync.js';
import { setup } from '../../services/cli/setup.js';
import { verify } from '../../services/cli/verify.js';
import { testConfig, testLog, waitUntil } from '../support/pipeline.js';
import { counter, startServices, tablesPipeline, waitServicesReady, type Running, type TablesPipeline } from '../support/services.js';

describe('column lists, row filters and operations per table', () => {
  let p: TablesPipeline;
  let svc: Running;
  const rows = async (c: TablesPipeline['a'], sql: string): Promise<string> => JSON.stringify((await c.query(sql)).rows);

  beforeAll(async () => {
    const ddl = (s: string): string => `
      CREATE TABLE ${s}.o (id int PRIMARY KEY, region text NOT NULL, amount int, internal_note text);
      CREATE UNIQUE INDEX o_ri ON ${s}.o (id, region);
      ALTER TABLE ${s}.o REPLICA IDENTITY USING INDEX o_ri;
      CREATE TABLE ${s}.d (id int PRIMARY KEY, v text);`;
    p = await tablesPipeline('flt', ddl, {});
    // The pipeline was set up over the whole schema; now with the table settings (setup reconciles).
    const cfg = testConfig(p.cfg.pipeline, p.schema, {
      selection: {
        schemas: [p.schema],
        tables: {
          [`${p.schema}.o`]: { columns: { exclude: ['internal_note'] }, where: "region = 'eu'" },
          [`${p.schema}.d`]: { operations: { 'b-a': ['insert', 'update'] } },
        },
      },
    });
    const changes = await setup(cfg, testLog);
    expect(changes).toContain(`cluster a: table ${p.schema}.o: columns id, region, amount, internal_note → id, region, amount`);
    expect(changes).toContain(`cluster b: table ${p.schema}.o: row filter none → (region = 'eu'::text)`);
    p = { ...p, cfg };
    svc = startServices(cfg);
    await waitServicesReady(svc);
  }, 120_000);

  afterAll(async () => {
    await svc?.stop();
    await p?.close();
  });

  it('an excluded column never reaches the other cluster; a row filter keeps matching rows and moves rows in and out on update, both ways; verify and resync keep to both', async () => {
    const s = p.schema;
    await p.a.query(`INSERT INTO ${s}.o VALUES (1, 'eu', 10, 'secret a'), (2, 'us', 20, 'x'), (3, 'eu', 30, 'y')`);
    await p.b.query(`INSERT INTO ${s}.o VALUES (100, 'eu', 1, 'secret b'), (101, 'us', 2, 'z')`);
    await p.a.query(`UPDATE ${s}.o SET region = 'eu' WHERE id = 2`); // moves in: an insert on b
    await p.a.query(`UPDATE ${s}.o SET region = 'us' WHERE id = 1`); // moves out: a delete on b
    await p.a.query(`UPDATE ${s}.o SET amount = 31, internal_note = 'changed' WHERE id = 3`);
    const q = `SELECT id, region, amount, internal_note FROM ${s}.o ORDER BY id`;
    const wantB = JSON.stringify([
      { id: '2', region: 'eu', amount: '20', internal_note: null },
      { id: '3', region: 'eu', amount: '31', internal_note: null },
      { id: '100', region: 'eu', amount: '1', internal_note: 'secret b' },
      { id: '101', region: 'us', amount: '2', internal_note: 'z' },
    ]);
    const wantA = JSON.stringify([
      { id: '1', region: 'us', amount: '10', internal_note: 'secret a' },
      { id: '2', region: 'eu', amount: '20', internal_note: 'x' },
      { id: '3', region: 'eu', amount: '31', internal_note: 'changed' },
      { id: '100', region: 'eu', amount: '1', internal_note: null },
    ]);
    await waitUntil('filtered rows on both clusters', async () => (await rows(p.b, q)) === wantB && (await rows(p.a, q)) === wantA).catch(async (e: Error) => {
      throw new Error(`${e.message}\na: ${await rows(p.a, q)}\nb: ${await rows(p.b, q)}`);
    });
    // verify compares what replicates: the rows of the filter, the listed columns.
    const r = await verify(p.cfg, { tables: [`${s}.o`] });
    expect(r.tables.map((t) => [t.equal, t.rowsA, t.rowsB, t.scope])).toEqual([[true, 3, 3, "rows where region = 'eu'; columns id, region, amount"]]);
    // A resync from a sends what the stream sends: eu rows only, without internal_note.
    const re = await resyncTable(p.cfg, `${s}.o`, testLog, { from: 'a' });
    expect(re.rows).toBe(3);
    await p.a.query(`INSERT INTO ${s}.o VALUES (50, 'eu', 5, 'marker')`);
    await waitUntil('marker after the resync on b', async () => (await p.b.query(`SELECT 1 FROM ${s}.o WHERE id = 50`)).rowCount === 1);
    expect(await rows(p.b, `SELECT id, internal_note FROM ${s}.o WHERE id < 50 ORDER BY id`)).toBe(
      JSON.stringify([
        { id: '2', internal_note: null },
        { id: '3', internal_note: null },
      ]),
    );
    expect(svc.errors).toEqual([]);
  });

  it('operations { b-a: [insert, update] }: deletes made on b do not reach a (counted), deletes made on a reach b', async () => {
    const s = p.schema;
    await p.a.query(`INSERT INTO ${s}.d VALUES (1, 'one'), (2, 'two')`);
    await waitUntil('d rows on b', async () => (await p.b.query(`SELECT 1 FROM ${s}.d`)).rowCount === 2);
    await p.b.query(`DELETE FROM ${s}.d WHERE id = 1`);
    await p.b.query(`UPDATE ${s}.d SET v = 'two from b' WHERE id = 2`);
    await p.b.query(`INSERT INTO ${s}.d VALUES (3, 'three from b')`);
    await waitUntil(
      'update and insert from b on a',
      async () =>
        (await rows(p.a, `SELECT id, v FROM ${s}.d ORDER BY id`)) ===
        JSON.stringify([
          { id: '1', v: 'one' },
          { id: '2', v: 'two from b' },
          { id: '3', v: 'three from b' },
        ]),
    );
    expect(await counter(svc.applies['b-a']!.registry, 'pgbridge_apply_filtered_operations_total', { operation: 'delete' })).toBe(1);
    await p.a.query(`DELETE FROM ${s}.d WHERE id = 3`);
    await waitUntil('delete from a on b', async () => (await p.b.query(`SELECT 1 FROM ${s}.d WHERE id = 3`)).rowCount === 0);
    expect(await counter(svc.applies['a-b']!.registry, 'pgbridge_apply_filtered_operations_total')).toBe(0);
  });

  it('setup refuses a row filter on a column outside the replica identity, with the fix, and changes nothing; precheck reports it', async () => {
    const bad = testConfig(p.cfg.pipeline, p.schema, { selection: { schemas: [p.schema], tables: { [`${p.schema}.d`]: { where: "v <> 'x'" } } } });
    await expect(setup(bad, testLog)).rejects.toThrow(
      new RegExp(
        `the selection would make PostgreSQL refuse writes on cluster a; publication cdc_${p.cfg.pipeline}_a left as it was:\\n${p.schema}\\.d on cluster a: cannot update table "d" \\(Column used in the publication WHERE expression is not part of the replica identity\\.\\)\\. Fix: put the row filter's columns into the replica identity`,
      ),
    );
    // Precheck says the same, per cluster, and has nothing against the settings in use.
    const found = (await precheck(bad)).filter((f) => f.check === 'table_settings');
    expect(found.map((f) => [f.level, f.cluster, f.message])).toEqual(
      ['a', 'b'].map((c) => [
        'error',
        c,
        `selection.tables.${p.schema}.d.where (${c}-${c === 'a' ? 'b' : 'a'}) reads v, outside the replica identity of ${p.schema}.d on cluster ${c}: PostgreSQL would refuse every UPDATE and DELETE on the table`,
      ]),
    );
    expect((await precheck(p.cfg)).filter((f) => f.check === 'table_settings').map((f) => f.level)).toEqual(['ok']);
    // Writes still work and the publication still has its settings.
    await p.a.query(`UPDATE ${p.schema}.d SET v = v`);
    expect(await setup(p.cfg, testLog)).toEqual([]);
  });
});
