/**
 * DDL replication in the forward direction (issue 12, DTS parity), on the real stack with
 * writers running on both clusters: each command of the forward source reaches the
 * destination in stream order, writes made against the old shape on either side still apply,
 * nothing is echoed back, both clusters end equal (verify), and a DDL the destination refuses
 * stops apply with the command, the error and the offset.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { release, setup } from '../../services/cli/setup.js';
import { verify } from '../../services/cli/verify.js';
import { syncSchema } from '../../services/cli/initial-sync.js';
import type { PipelineConfig } from '../../shared/config.js';
import { pgClient, testConfig, testLog, uniqueName, waitUntil } from '../support/pipeline.js';
import { counter, startServices, waitServicesReady, type Running } from '../support/services.js';

/** Inserts and updates rows of its own id range in a loop until stopped; follows a rename or drop of the column it writes once the DDL has reached its cluster. */
class Writer {
  private stopped = false;
  private done: Promise<void> = Promise.resolve();
  private next: number;
  writes = 0;
  readonly errors: string[] = [];
  /** What the test is about to do to the writer's column: its new name, or null for a drop. */
  readonly renames: Record<string, string | null> = {};

  constructor(
    private readonly c: pg.Client,
    private readonly schema: string,
    private readonly first: number,
    private note: string | null,
  ) {
    this.next = first;
  }

  /** Rows of this writer that it no longer touches: ids below this one. */
  get settled(): number {
    return this.next - 8;
  }

  start(): void {
    this.done = (async () => {
      while (!this.stopped) {
        try {
          const id = this.next;
          if (this.note) await this.c.query(`INSERT INTO ${this.schema}.w (id, v, ${this.note}) VALUES ($1, 0, $2)`, [id, `w${id}`]);
          else await this.c.query(`INSERT INTO ${this.schema}.w (id, v) VALUES ($1, 0)`, [id]);
          this.next += 2;
          if (id > this.first + 4) await this.c.query(`UPDATE ${this.schema}.w SET v = v + 1 WHERE id = $1`, [id - 4]);
          this.writes++;
        } catch (err) {
          const e = err as { code?: string; message: string };
          // Its column was renamed or dropped (replicated DDL): go on as an application would after its migration.
          if (e.code === '42703' && this.note && this.note in this.renames) this.note = this.renames[this.note]!;
          else this.errors.push(e.message);
        }
        await new Promise((r) => setTimeout(r, 15));
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
  }
}

async function columns(c: pg.Client, schema: string, table: string): Promise<string> {
  const r = await c.query<{ c: string }>(
    `SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod) || CASE WHEN attnotnull THEN ' not null' ELSE '' END || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), ''), ', ' ORDER BY attnum) AS c
       FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`,
    [`${schema}.${table}`],
  );
  return r.rows[0]?.c ?? '(no table)';
}

async function same(what: string, a: pg.Client, b: pg.Client, sql: string, timeoutMs = 30_000): Promise<string> {
  let want = '';
  await waitUntil(
    what,
    async () => {
      want = JSON.stringify((await a.query(sql)).rows);
      return JSON.stringify((await b.query(sql)).rows) === want;
    },
    timeoutMs,
  ).catch(async (e: Error) => {
    const ra = (await a.query(sql)).rows.map((r) => JSON.stringify(r));
    const rb = (await b.query(sql)).rows.map((r) => JSON.stringify(r));
    const onlyA = ra.filter((r) => !rb.includes(r)).slice(0, 10);
    const onlyB = rb.filter((r) => !ra.includes(r)).slice(0, 10);
    throw new Error(`${e.message}\nonly on a: ${onlyA.join(' ')}\nonly on b: ${onlyB.join(' ')}`);
  });
  return want;
}

describe('DDL replication, forward direction, under writes on both clusters', () => {
  const schema = uniqueName('ddl');
  let cfg: PipelineConfig;
  let a: pg.Client;
  let b: pg.Client;
  let svc: Running;
  let wa: Writer;
  let wb: Writer;
  const notices: string[] = [];

  beforeAll(async () => {
    cfg = testConfig(uniqueName('pddl'), schema, { conflicts: { policy: 'last-writer-wins' } });
    a = await pgClient(cfg, 'a');
    b = await pgClient(cfg, 'b');
    b.on('notice', (n) => notices.push(n.message ?? ''));
    for (const c of [a, b]) {
      await c.query(`CREATE SCHEMA ${schema}; CREATE TABLE ${schema}.w (id int PRIMARY KEY, v int NOT NULL, note text, bnote text)`);
    }
    await setup(cfg, testLog);
    svc = startServices(cfg);
    await waitServicesReady(svc);
    wa = new Writer(await pgClient(cfg, 'a'), schema, 1, null);
    wb = new Writer(await pgClient(cfg, 'b'), schema, 2, 'bnote');
    wa.start();
    wb.start();
    await waitUntil('writers going', async () => wa.writes > 5 && wb.writes > 5);
  });

  afterAll(async () => {
    await wa?.stop();
    await wb?.stop();
    await svc?.stop();
    await release(cfg, testLog, { topics: true }).catch(() => undefined);
    for (const c of [a, b]) {
      await c?.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await c?.end();
    }
  });

  it('ADD COLUMN with a default: rows written on b against the old shape take the default on a; rows of a with the new column wait for it on b', async () => {
    await a.query(`ALTER TABLE ${schema}.w ADD COLUMN flag text NOT NULL DEFAULT 'dflt'`);
    // In the same breath as the DDL: this insert must not overtake it on its way to b.
    await a.query(`INSERT INTO ${schema}.w (id, v, flag) VALUES (-1, 0, 'set on a')`);
    await waitUntil('flag on b', async () => (await b.query(`SELECT flag FROM ${schema}.w WHERE id = -1`)).rows[0]?.flag === 'set on a');
    expect(await columns(b, schema, 'w')).toBe(await columns(a, schema, 'w'));
    const n = wb.writes;
    await waitUntil('more writes on b', async () => wb.writes > n + 5);
    await same('w equal', a, b, `SELECT id, v, flag FROM ${schema}.w WHERE id < ${Math.min(wa.settled, wb.settled)} ORDER BY id`);
    expect((await a.query(`SELECT count(*) AS n FROM ${schema}.w WHERE id % 2 = 0 AND flag = 'dflt'`)).rows[0].n).not.toBe('0');
  });

  it('RENAME COLUMN while b writes it: its in-flight values land in the renamed column on a; ALTER COLUMN TYPE / SET DEFAULT / DROP and SET NOT NULL', async () => {
    wb.renames.bnote = 'bremark';
    await a.query(`ALTER TABLE ${schema}.w RENAME COLUMN bnote TO bremark`);
    await a.query(`ALTER TABLE ${schema}.w RENAME COLUMN note TO remark`);
    // No rewrite of w here: a rewrite stamps every row with the DDL's commit (see the docs, "Schema changes").
    await a.query(`ALTER TABLE ${schema}.w ALTER COLUMN remark TYPE varchar, ALTER COLUMN flag SET DEFAULT 'dflt2'`);
    await a.query(`ALTER TABLE ${schema}.w ALTER COLUMN flag DROP NOT NULL`);
    await a.query(`ALTER TABLE ${schema}.w ALTER COLUMN flag SET NOT NULL`);
    await a.query(`INSERT INTO ${schema}.w (id, v, remark) VALUES (-2, 7, 'renamed')`);
    await waitUntil('renamed row on b', async () => (await b.query(`SELECT remark, flag FROM ${schema}.w WHERE id = -2`)).rows[0]?.remark === 'renamed');
    expect(await columns(b, schema, 'w')).toBe(await columns(a, schema, 'w'));
    expect((await b.query(`SELECT flag FROM ${schema}.w WHERE id = -2`)).rows[0].flag).toBe('dflt2');
    const n = wb.writes;
    await waitUntil('b writes bremark', async () => wb.writes > n + 5);
    await same('w equal after the renames', a, b, `SELECT * FROM ${schema}.w WHERE id < ${Math.min(wa.settled, wb.settled)} ORDER BY id`);
    expect((await a.query(`SELECT count(*) AS n FROM ${schema}.w WHERE id > 0 AND id % 2 = 0 AND bremark IS NULL`)).rows[0].n).toBe('0');
  });

  it('DROP COLUMN while b still writes it: its in-flight values are left out on a (counted), later ones no longer carry it', async () => {
    wb.renames.bremark = null;
    await a.query(`ALTER TABLE ${schema}.w DROP COLUMN bremark`);
    await waitUntil('bremark gone on b', async () => !(await columns(b, schema, 'w')).includes('bremark'));
    const n = wb.writes;
    await waitUntil('b writes without bnote', async () => wb.writes > n + 5);
    await same('w equal after drop', a, b, `SELECT * FROM ${schema}.w WHERE id < ${Math.min(wa.settled, wb.settled)} ORDER BY id`);
    expect(await columns(b, schema, 'w')).toBe(await columns(a, schema, 'w'));
  });

  it('CREATE TABLE (key, default, foreign key), ALTER COLUMN TYPE with a rewrite, CREATE INDEX (also CONCURRENTLY), CREATE/ALTER SEQUENCE, then rows written on both sides', async () => {
    await a.query(`CREATE TABLE ${schema}.parent (id bigserial PRIMARY KEY, name text NOT NULL DEFAULT 'p')`);
    await a.query(`CREATE TABLE ${schema}.child (id int PRIMARY KEY, parent_id bigint REFERENCES ${schema}.parent (id), at timestamptz DEFAULT now())`);
    await a.query(`CREATE INDEX child_parent ON ${schema}.child (parent_id)`);
    await a.query(`ALTER TABLE ${schema}.child ALTER COLUMN id TYPE bigint`);
    await a.query(`CREATE INDEX CONCURRENTLY w_v ON ${schema}.w (v)`);
    // As after a crash between a CONCURRENTLY command and its progress row: the index is there already (and valid).
    await b.query(`CREATE INDEX w_id_v ON ${schema}.w (id, v)`);
    await a.query(`CREATE INDEX CONCURRENTLY w_id_v ON ${schema}.w (id, v)`);
    await a.query(`CREATE SEQUENCE ${schema}.s START 100; ALTER SEQUENCE ${schema}.s INCREMENT 5`);
    await a.query(`INSERT INTO ${schema}.parent (name) VALUES ('one'), ('two')`);
    await a.query(`INSERT INTO ${schema}.child VALUES (1, 1, '2026-01-01T00:00:00Z'), (3, 2, '2026-01-01T00:00:00Z')`);
    await waitUntil(
      'child on b',
      async () => (await b.query(`SELECT count(*) AS n FROM ${schema}.child`).catch(() => ({ rows: [{ n: '0' }] }))).rows[0].n === '2',
    );
    // The destination has the table, its key, default and foreign key: b's own rows go back to a.
    await b.query(`INSERT INTO ${schema}.parent (id, name) VALUES (1000, 'from b')`);
    await b.query(`INSERT INTO ${schema}.child VALUES (2, 1000, '2026-01-02T00:00:00Z')`);
    await same('parent equal', a, b, `SELECT * FROM ${schema}.parent ORDER BY id`);
    await same('child equal', a, b, `SELECT * FROM ${schema}.child ORDER BY id`);
    const idx = `SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = '${schema}' ORDER BY 1`;
    await same('indexes equal', a, b, idx);
    expect(JSON.parse(await same('indexes', a, b, idx)).map((r: { indexname: string }) => r.indexname)).toEqual(
      expect.arrayContaining(['child_parent', 'w_v', 'w_id_v', 'parent_pkey']),
    );
    const seq = `SELECT start_value, increment_by FROM pg_sequences WHERE schemaname = '${schema}' AND sequencename = 's'`;
    expect(await same('sequence', a, b, seq)).toBe('[{"start_value":"100","increment_by":"5"}]');
    await expect(b.query(`INSERT INTO ${schema}.child VALUES (9, 999, now())`)).rejects.toThrow(/foreign key/);
  });

  it('CREATE TYPE and ALTER TYPE ADD VALUE, then a row with the new value', async () => {
    await a.query(`CREATE TYPE ${schema}.mood AS ENUM ('ok', 'bad')`);
    await a.query(`ALTER TABLE ${schema}.parent ADD COLUMN mood ${schema}.mood`);
    await a.query(`ALTER TYPE ${schema}.mood ADD VALUE 'great'`);
    await a.query(`UPDATE ${schema}.parent SET mood = 'great' WHERE id = 1`);
    await waitUntil('new enum value on b', async () => (await b.query(`SELECT mood FROM ${schema}.parent WHERE id = 1`)).rows[0]?.mood === 'great');
    expect(await same('enum', a, b, `SELECT enum_range(NULL::${schema}.mood)::text AS r`)).toBe('[{"r":"{ok,bad,great}"}]');
  });

  it('DDL between DML statements of one transaction: applied in order, in one destination transaction', async () => {
    await a.query('BEGIN');
    await a.query(`INSERT INTO ${schema}.parent (name) VALUES ('in txn')`);
    await a.query(`ALTER TABLE ${schema}.parent ADD COLUMN tag text DEFAULT 'dflt'`);
    await a.query(`UPDATE ${schema}.parent SET tag = 'set in txn' WHERE name = 'in txn'`);
    await a.query('COMMIT');
    await waitUntil(
      'txn on b',
      async () => (await b.query(`SELECT tag FROM ${schema}.parent WHERE name = 'in txn'`).catch(() => ({ rows: [] }))).rows[0]?.tag === 'set in txn',
    );
    await same('parent equal', a, b, `SELECT * FROM ${schema}.parent ORDER BY id`);
  });

  it('RENAME TABLE and DROP TABLE, each followed by writes', async () => {
    await a.query(`ALTER TABLE ${schema}.child RENAME TO kid`);
    await a.query(`INSERT INTO ${schema}.kid VALUES (4, 1, '2026-01-03T00:00:00Z')`);
    await same('kid equal', a, b, `SELECT * FROM ${schema}.kid ORDER BY id`);
    // The forward source noted every rename with its old name (for changes of b still on their way).
    const renames = await a.query(`SELECT kind, table_name, old_name, new_name FROM cdc.ddl_renames WHERE pipeline = $1 ORDER BY id`, [cfg.pipeline]);
    expect(renames.rows.map((r) => Object.values(r).join(' '))).toEqual(['column w bnote bremark', 'column w note remark', 'table kid child kid']);
    await a.query(`DROP TABLE ${schema}.kid`);
    await a.query(`INSERT INTO ${schema}.parent (name) VALUES ('three')`);
    await waitUntil('kid gone on b', async () => (await b.query(`SELECT to_regclass('${schema}.kid') IS NULL AS gone`)).rows[0].gone === true);
    await same('parent equal', a, b, `SELECT * FROM ${schema}.parent ORDER BY id`);
  });

  it('DDL on the reverse source is not replicated and warns (ddl.reverse: warn); nothing is echoed back; both clusters end equal', async () => {
    notices.length = 0;
    await b.query(`CREATE INDEX b_only ON ${schema}.w (id, v)`);
    expect(notices).toEqual([expect.stringMatching(/^pgbridge pipeline \w+: CREATE INDEX on the reverse source is not replicated/)]);
    await b.query(`DROP INDEX ${schema}.b_only`);
    await wa.stop();
    await wb.stop();
    expect([...wa.errors, ...wb.errors]).toEqual([]);
    await same('w equal at the end', a, b, `SELECT * FROM ${schema}.w ORDER BY id`, 60_000);
    await same('parent equal at the end', a, b, `SELECT * FROM ${schema}.parent ORDER BY id`);
    const report = await verify(cfg);
    expect(report.tables.filter((t) => !t.equal)).toEqual([]);
    expect(report.equal).toBe(true);
    // Every DDL of a ran once on b; none went from b to a, and b recorded none.
    const applied = (d: string) => counter(svc.applies[d]!.registry, 'pgbridge_apply_ddl_total');
    expect(await applied('a-b')).toBe(20);
    expect(await applied('b-a')).toBe(0);
    expect(await counter(svc.captures.b!.registry, 'pgbridge_capture_ignored_control_total')).toBe(0);
    expect((await a.query(`SELECT to_regclass('${schema}.b_only') AS i`)).rows[0].i).toBeNull();
    // The rename and the drop of b's column reached b while b wrote it: its values were mapped, then left out, on a, and counted.
    expect(await counter(svc.applies['b-a']!.registry, 'pgbridge_apply_shape_gaps_total', { what: 'renamed' })).toBeGreaterThan(0);
    expect(await counter(svc.applies['b-a']!.registry, 'pgbridge_apply_shape_gaps_total', { what: 'column' })).toBeGreaterThan(0);
    expect(svc.errors).toEqual([]);
  });

  it('a DDL the destination refuses stops apply with the command, the error and the offset', async () => {
    await b.query(`CREATE TABLE ${schema}.clash (id int PRIMARY KEY)`);
    await a.query(`INSERT INTO ${schema}.parent (name) VALUES ('before')`);
    await a.query(`CREATE TABLE ${schema}.clash (id int PRIMARY KEY, x text)`);
    await a.query(`INSERT INTO ${schema}.parent (name) VALUES ('after')`);
    await waitUntil('apply a-b stopped', async () => svc.errors.length > 0);
    const msg = svc.errors.map((e) => e.message).join('\n');
    expect(msg).toMatch(/replicated DDL \(CREATE TABLE\) at .*\/0@\d+/);
    expect(msg).toMatch(/already exists/);
    expect(msg).toContain(`CREATE TABLE ${schema}.clash (id int PRIMARY KEY, x text)`);
    expect((svc.errors[0] as { code?: string }).code).toBe('DDL_FAILED');
    // Everything before it was applied, nothing after it.
    const names = (await b.query(`SELECT name FROM ${schema}.parent WHERE name IN ('before', 'after')`)).rows.map((r) => r.name);
    expect(names).toEqual(['before']);
  });
});

describe('ddl.reverse: reject and ddl.forward: off', () => {
  const schema = uniqueName('ddlr');
  let cfg: PipelineConfig;
  let a: pg.Client;
  let b: pg.Client;

  beforeAll(async () => {
    cfg = testConfig(uniqueName('pddlr'), schema, { ddl: { forward: 'off', reverse: 'reject' } });
    a = await pgClient(cfg, 'a');
    b = await pgClient(cfg, 'b');
    for (const c of [a, b]) await c.query(`CREATE SCHEMA ${schema}; CREATE TABLE ${schema}.t (id int PRIMARY KEY)`);
    await setup(cfg, testLog);
  });

  afterAll(async () => {
    await release(cfg, testLog, { topics: true }).catch(() => undefined);
    for (const c of [a, b]) {
      await c?.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await c?.end();
    }
  });

  it('refuses DDL on the selected schemas of the reverse source, but not from a replica-role session (apply) nor elsewhere', async () => {
    await expect(b.query(`ALTER TABLE ${schema}.t ADD COLUMN x int`)).rejects.toThrow(/refuses ALTER TABLE on this cluster: it is the reverse source/);
    await expect(b.query(`DROP TABLE ${schema}.t`)).rejects.toThrow(/refuses DROP TABLE/);
    expect(await columns(b, schema, 't')).toBe('id integer not null');
    await b.query(`CREATE TABLE public.${schema}_elsewhere (id int); DROP TABLE public.${schema}_elsewhere`);
    await b.query(`BEGIN; SET LOCAL session_replication_role = replica; ALTER TABLE ${schema}.t ADD COLUMN y int; COMMIT`);
    expect(await columns(b, schema, 't')).toBe('id integer not null, y integer');
  });

  it('the schema sync restores past the reject trigger (its session fires no event trigger)', async () => {
    await a.query(`CREATE TABLE ${schema}.only_a (id int PRIMARY KEY, v text)`);
    const r = await syncSchema(cfg, 'ignore', testLog);
    expect(r.created).toEqual([`${schema}.only_a`]);
    expect(await columns(b, schema, 'only_a')).toBe('id integer not null, v text');
  });

  it('with ddl.forward: off the forward source has no trigger, and release leaves none behind', async () => {
    const triggers = async (c: pg.Client) =>
      (await c.query(`SELECT evtname FROM pg_event_trigger WHERE evtname LIKE $1 ORDER BY 1`, [`cdc\\_${cfg.pipeline}\\_%`])).rows.map((r) => r.evtname);
    expect(await triggers(a)).toEqual([]);
    expect(await triggers(b)).toEqual([`cdc_${cfg.pipeline}_ddl`, `cdc_${cfg.pipeline}_ddl_drop`]);
    await a.query(`ALTER TABLE ${schema}.t ADD COLUMN z int`);
    await release(cfg, testLog, { topics: true });
    expect(await triggers(b)).toEqual([]);
    await b.query(`ALTER TABLE ${schema}.t ADD COLUMN z int`);
  });
});
