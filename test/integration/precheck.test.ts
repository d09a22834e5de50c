/**
 * precheck against the real stack: one test per finding it can provoke there, each on its own
 * schema, pipeline name, topics and role, so it runs beside other files. Findings that need a
 * misconfigured server (wal_level, track_commit_timestamp, slot limits) are in
 * test/unit/precheck.test.ts: the shared clusters are not ALTER SYSTEMed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import type pg from 'pg';
import { formatFindings, precheck, type Finding } from '../../services/cli/precheck/index.js';
import type { PipelineConfig, PipelineConfigInput } from '../../shared/config.js';
import { ensureTopics, kafkaClient } from '../../shared/kafka.js';
import { qi } from '../../shared/pg.js';
import { pgClient, testConfig, testLog, uniqueName } from '../support/pipeline.js';

const errors = (fs: Finding[]): Finding[] => fs.filter((f) => f.level === 'error');
const problems = (fs: Finding[]): Finding[] => fs.filter((f) => f.level !== 'ok');
const of = (fs: Finding[], check: string): Finding[] => fs.filter((f) => f.check === check && f.level !== 'ok');

describe('precheck (real PostgreSQL, Kafka, registry)', () => {
  let a: pg.Client;
  let b: pg.Client;
  const schemas: string[] = [];
  const roles: string[] = [];
  const topics: string[] = [];
  const slots: string[] = [];

  beforeAll(async () => {
    const cfg = testConfig(uniqueName('pc'), 'public');
    a = await pgClient(cfg, 'a');
    b = await pgClient(cfg, 'b');
  });

  afterAll(async () => {
    for (const c of [a, b]) {
      for (const s of slots) await c.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1', [s]);
      for (const s of schemas) await c.query(`DROP SCHEMA IF EXISTS ${qi(s)} CASCADE`);
      for (const r of roles) {
        const exists = await c.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [r]);
        if (exists.rowCount) await c.query(`DROP OWNED BY ${qi(r)}; DROP ROLE ${qi(r)}`);
      }
    }
    await a?.end();
    await b?.end();
    if (topics.length) {
      const admin = kafkaClient(testConfig(uniqueName('pc'), 'public'), 'test-precheck', testLog).admin();
      const existing = new Set(await admin.listTopics());
      const gone = topics.filter((t) => existing.has(t));
      if (gone.length) await admin.deleteTopics(gone);
      await admin.close();
    }
  });

  /** A fresh pipeline name and schema; `onA`/`onB` run inside that schema (search_path) on each cluster. */
  async function fresh(
    opts: { onA?: string; onB?: string; over?: (schema: string) => Partial<PipelineConfigInput> } = {},
  ): Promise<{ cfg: PipelineConfig; schema: string }> {
    const name = uniqueName('pc');
    const schema = uniqueName('pcs');
    schemas.push(schema);
    for (const [c, sql] of [
      [a, opts.onA],
      [b, opts.onB],
    ] as const) {
      await c.query(`CREATE SCHEMA ${qi(schema)}`);
      if (sql) await c.query(`SET search_path = ${qi(schema)}; ${sql}; RESET search_path`);
    }
    const cfg = testConfig(name, schema, opts.over?.(schema) ?? {});
    return { cfg, schema };
  }

  it('a correct setup (both sides, primary keys, empty destination, topics as setup makes them) yields zero errors and warnings', async () => {
    const table = 'CREATE TABLE orders (id bigint PRIMARY KEY, note text); CREATE TABLE lines (order_id bigint, n int, PRIMARY KEY (order_id, n))';
    const { cfg } = await fresh({ onA: `${table}; INSERT INTO orders VALUES (1, 'x')`, onB: table });
    const admin = kafkaClient(cfg, 'test-precheck', testLog).admin();
    topics.push(...(await ensureTopics(admin, cfg)));
    await admin.close();
    const fs = await precheck(cfg);
    expect(problems(fs), formatFindings(fs)).toEqual([]);
    const checks = new Set(fs.map((f) => f.check));
    for (const c of [
      'connection',
      'schemas',
      'wal_level',
      'replication_slots',
      'wal_senders',
      'privileges',
      'replica_identity',
      'track_commit_timestamp',
      'destination_tables',
      'sequences',
      'kafka',
      'kafka_topics',
      'registry',
    ]) {
      expect(checks, c).toContain(c);
    }
    expect(formatFindings(fs).split('\n').at(-1)).toBe('precheck: 0 error(s), 0 warning(s)');
  });

  it('an unreachable cluster is one error naming host:port and the reason; the other cluster is still checked', async () => {
    const ep = inject('endpoints');
    const { cfg } = await fresh({
      over: () => ({
        clusters: { a: { host: ep.pg.a.host, port: ep.pg.a.port, user: ep.pg.a.user, database: ep.pg.a.database }, b: { host: '127.0.0.1', port: 1 } },
      }),
    });
    const fs = await precheck(cfg);
    const errs = errors(fs);
    expect(errs, formatFindings(fs)).toHaveLength(1);
    expect(errs[0]).toMatchObject({ check: 'connection', cluster: 'b', object: '127.0.0.1:1' });
    expect(errs[0]!.message).toContain('cluster b (127.0.0.1:1)');
    expect(errs[0]!.message).toContain('ECONNREFUSED');
    expect(errs[0]!.message).toContain('skipped');
    expect(fs.some((f) => f.check === 'wal_level' && f.cluster === 'a' && f.level === 'ok')).toBe(true);
    expect(fs.some((f) => f.cluster === 'b' && f.check !== 'connection')).toBe(false);
  });

  it('an existing slot of the pipeline needs no free slot', async () => {
    const { cfg } = await fresh();
    const slot = `cdc_${cfg.pipeline}_a`;
    slots.push(slot);
    await a.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
    const fs = await precheck(cfg);
    expect(fs.find((f) => f.check === 'replication_slots' && f.cluster === 'a')).toMatchObject({ level: 'ok', object: slot });
  });

  it('Kafka that cannot be reached is an error naming the brokers', async () => {
    const { cfg } = await fresh({ over: () => ({ kafka: { brokers: ['127.0.0.1:1'] } }) });
    const fs = await precheck(cfg);
    expect(errors(fs).map((f) => f.check)).toEqual(['kafka']);
    expect(errors(fs)[0]!.message).toContain('127.0.0.1:1');
    expect(errors(fs)[0]!.message).toContain('ECONNREFUSED');
  });

  it('a registry that cannot be reached, or does not answer 200, is an error naming the URL', async () => {
    const down = await precheck((await fresh({ over: () => ({ registry: { url: 'http://127.0.0.1:1/apis/ccompat/v7' } }) })).cfg);
    expect(errors(down).map((f) => f.check)).toEqual(['registry']);
    expect(errors(down)[0]!.message).toContain('http://127.0.0.1:1/apis/ccompat/v7/subjects');
    const ep = inject('endpoints');
    const wrong = `${new URL(ep.registryUrl).origin}/no/such/api`;
    const bad = await precheck((await fresh({ over: () => ({ registry: { url: wrong } }) })).cfg);
    expect(errors(bad).map((f) => f.check)).toEqual(['registry']);
    expect(errors(bad)[0]!.message).toContain(`${wrong}/subjects`);
    expect(errors(bad)[0]!.message).toContain('HTTP 404');
  });

  it('a selected schema missing on one cluster is an error for that cluster', async () => {
    const other = uniqueName('pcs');
    schemas.push(other);
    await a.query(`CREATE SCHEMA ${qi(other)}`);
    const { cfg } = await fresh({ over: (s) => ({ selection: { schemas: [s, other] } }) });
    const fs = await precheck(cfg);
    expect(errors(fs).map((f) => [f.check, f.cluster, f.object])).toEqual([['schemas', 'b', other]]);
    expect(errors(fs)[0]!.message).toContain('cluster b (127.0.0.1:');
    expect(errors(fs)[0]!.fix).toContain(`CREATE SCHEMA ${qi(other)}`);
  });

  it('a table without primary key or replica identity is an error per cluster with the quoted ALTER TABLE', async () => {
    const t = 'CREATE TABLE "we""ird Tab" (x int, y text)';
    const { cfg, schema } = await fresh({ onA: t, onB: t });
    const fs = await precheck(cfg);
    const ri = of(fs, 'replica_identity');
    expect(ri.map((f) => [f.level, f.cluster])).toEqual([
      ['error', 'a'],
      ['error', 'b'],
    ]);
    expect(ri[0]!.fix).toContain(`ALTER TABLE ${qi(schema)}."we""ird Tab" REPLICA IDENTITY FULL;`);
    expect(ri[0]!.message).toContain(`${qi(schema)}."we""ird Tab"`);
    expect(
      errors(fs).every((f) => f.check === 'replica_identity'),
      formatFindings(fs),
    ).toBe(true);
    // The offered command is valid SQL and clears the error (leaving the FULL-without-PK warning).
    await a.query(ri[0]!.fix!.split(' (')[0]!);
    await b.query(ri[1]!.fix!.split(' (')[0]!);
    const after = await precheck(cfg);
    expect(errors(after)).toEqual([]);
  });

  it('REPLICA IDENTITY FULL without a primary key is a warning', async () => {
    const t = 'CREATE TABLE log (x int, y text); ALTER TABLE log REPLICA IDENTITY FULL';
    const { cfg, schema } = await fresh({ onA: t, onB: t });
    const fs = await precheck(cfg);
    expect(problems(fs).map((f) => [f.level, f.check, f.cluster, f.object])).toEqual([
      ['warning', 'replica_identity', 'a', `${schema}.log`],
      ['warning', 'replica_identity', 'b', `${schema}.log`],
    ]);
    expect(problems(fs)[0]!.message).toContain('all columns');
  });

  it('a destination table that holds rows is an error by default and a warning with existing tables = ignore', async () => {
    const t = 'CREATE TABLE t (id int PRIMARY KEY)';
    const { cfg, schema } = await fresh({ onA: t, onB: `${t}; INSERT INTO t VALUES (7)` });
    const fs = await precheck(cfg);
    expect(errors(fs).map((f) => [f.check, f.cluster, f.object])).toEqual([['destination_tables', 'b', `${schema}.t`]]);
    expect(errors(fs)[0]!.message).toContain('holds rows');
    const ignored = await precheck(cfg, { existingTables: 'ignore' });
    expect(errors(ignored)).toEqual([]);
    expect(problems(ignored).map((f) => [f.level, f.check, f.object])).toEqual([['warning', 'destination_tables', `${schema}.t`]]);
  });

  it('a table missing on the destination, or only on the destination, is an error', async () => {
    const { cfg, schema } = await fresh({ onA: 'CREATE TABLE only_a (id int PRIMARY KEY)', onB: 'CREATE TABLE only_b (id int PRIMARY KEY)' });
    const fs = await precheck(cfg);
    const d = of(fs, 'destination_tables');
    expect(d.map((f) => [f.level, f.cluster, f.object])).toEqual([
      ['error', 'b', `${schema}.only_a`],
      ['error', 'a', `${schema}.only_b`],
    ]);
    expect(d[0]!.message).toContain('both clusters');
    expect(d[0]!.fix).toContain('schema sync');
    expect(errors(fs)).toHaveLength(2);
  });

  it('a table whose columns differ between the clusters is an error', async () => {
    const { cfg, schema } = await fresh({
      onA: 'CREATE TABLE t (id int PRIMARY KEY, v int, extra text)',
      onB: 'CREATE TABLE t (id int PRIMARY KEY, v bigint)',
    });
    const fs = await precheck(cfg);
    expect(errors(fs).map((f) => [f.check, f.object])).toEqual([['table_structure', `${schema}.t`]]);
    expect(errors(fs)[0]!.message).toContain('"v" is integer on a but bigint on b');
    expect(errors(fs)[0]!.message).toContain('"extra" only on a');
  });

  it('serial columns handing out the same values on both clusters are a warning whose fix works', async () => {
    const t = 'CREATE TABLE t (id serial PRIMARY KEY, v text)';
    const { cfg, schema } = await fresh({ onA: `${t}; INSERT INTO t (v) SELECT 'x' FROM generate_series(1, 40)`, onB: `${t}; INSERT INTO t (v) VALUES ('y')` });
    // Rows on b would trip the destination check; this test is about sequences.
    await b.query(`TRUNCATE ${qi(schema)}.t`);
    const fs = await precheck(cfg);
    const w = of(fs, 'sequences');
    expect(w.map((f) => [f.level, f.object])).toEqual([['warning', `${schema}.t.id`]]);
    expect(w[0]!.message).toContain('next 41');
    expect(w[0]!.message).toContain('next 2');
    expect(w[0]!.fix).toBe(
      `on a: ALTER SEQUENCE ${qi(schema)}."t_id_seq" INCREMENT BY 2 RESTART WITH 41;  on b: ALTER SEQUENCE ${qi(schema)}."t_id_seq" INCREMENT BY 2 RESTART WITH 42;`,
    );
    const [onA, onB] = w[0]!.fix!.split('  on b: ') as [string, string];
    await a.query(onA.replace('on a: ', ''));
    await b.query(onB);
    expect(problems(await precheck(cfg))).toEqual([]);
  });

  it('identity columns handing out the same values are a warning with an ALTER TABLE fix', async () => {
    const t = 'CREATE TABLE t (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY)';
    const { cfg, schema } = await fresh({ onA: t, onB: t });
    const fs = await precheck(cfg);
    const w = of(fs, 'sequences');
    expect(w.map((f) => [f.level, f.object])).toEqual([['warning', `${schema}.t.id`]]);
    expect(w[0]!.fix).toContain(`on a: ALTER TABLE ${qi(schema)}."t" ALTER COLUMN "id" SET INCREMENT BY 2 RESTART WITH 1;`);
    expect(w[0]!.fix).toContain('RESTART WITH 2;');
    const [onA, onB] = w[0]!.fix!.split('  on b: ') as [string, string];
    await a.query(onA.replace('on a: ', ''));
    await b.query(onB);
    expect(problems(await precheck(cfg))).toEqual([]);
  });

  it('selection.include naming a table that exists nowhere is a warning', async () => {
    const { cfg, schema } = await fresh({
      onA: 'CREATE TABLE t (id int PRIMARY KEY)',
      onB: 'CREATE TABLE t (id int PRIMARY KEY)',
      over: (s) => ({ selection: { schemas: [s], include: [`${s}.t`, `${s}.typo`] } }),
    });
    const fs = await precheck(cfg);
    expect(problems(fs).map((f) => [f.level, f.check, f.object])).toEqual([['warning', 'selection', `${schema}.typo`]]);
  });

  it('existing topics: more partitions than configured, compaction, finite retention and a max.message.bytes below topics.maxMessageBytes are reported', async () => {
    const { cfg } = await fresh();
    const [fwd, rev] = cfg.directions.map((d) => d.topic) as [string, string];
    topics.push(fwd, rev);
    const admin = kafkaClient(cfg, 'test-precheck', testLog).admin();
    await admin.createTopics([
      { topic: fwd, partitions: 3, replicationFactor: 1, configs: { 'cleanup.policy': 'compact' } },
      { topic: rev, partitions: 1, replicationFactor: 1, configs: { 'retention.ms': '3600000', 'retention.bytes': '1000000' } },
    ]);
    await admin.close();
    const fs = await precheck(cfg);
    const t = of(fs, 'kafka_topics');
    expect(t.map((f) => [f.level, f.object, f.fix?.split(' (').at(-1)])).toEqual([
      ['error', fwd, 'partitions)'],
      ['warning', fwd, 'cleanup.policy)'],
      ['error', fwd, 'max.message.bytes)'],
      ['warning', rev, 'retention.ms)'],
      ['warning', rev, 'retention.bytes)'],
      ['error', rev, 'max.message.bytes)'],
    ]);
    // The broker's default (about 1 MB) is below what 64 MiB rows need.
    expect(t[2]!.message).toContain(`below the ${65 * 1024 * 1024 + 64 * 1024} that topics.maxMessageBytes (68157440) needs`);
    expect(t[0]!.message).toContain('3 partition(s)');
    expect(problems(fs).filter((f) => f.check !== 'kafka_topics')).toEqual([]);
  });

  describe('a role without privileges', () => {
    let role: string;
    let schema: string;
    let cfg: PipelineConfig;
    let fs: Finding[];
    const withRole = (over: Partial<PipelineConfigInput> = {}): PipelineConfig => {
      const ep = inject('endpoints');
      return testConfig(cfg.pipeline, schema, {
        clusters: {
          a: { host: ep.pg.a.host, port: ep.pg.a.port, user: role, database: ep.pg.a.database },
          b: { host: ep.pg.b.host, port: ep.pg.b.port, user: role, database: ep.pg.b.database },
        },
        ...over,
      });
    };

    beforeAll(async () => {
      role = uniqueName('pcrole');
      roles.push(role);
      for (const c of [a, b]) await c.query(`CREATE ROLE ${qi(role)} LOGIN NOSUPERUSER NOREPLICATION`);
      const t = 'CREATE TABLE t (id int PRIMARY KEY)';
      ({ cfg, schema } = await fresh({ onA: t, onB: t }));
      cfg = withRole();
      fs = await precheck(cfg);
    });

    const priv = (cluster: string, text: string): Finding | undefined => of(fs, 'privileges').find((f) => f.cluster === cluster && f.message.includes(text));

    it('without REPLICATION: error with ALTER ROLE … REPLICATION', () => {
      for (const c of ['a', 'b']) {
        const f = priv(c, 'neither REPLICATION nor superuser');
        expect(f, formatFindings(fs)).toMatchObject({ level: 'error', object: role, fix: `ALTER ROLE ${qi(role)} WITH REPLICATION;` });
        expect(f!.message).toContain(`cluster ${c} (127.0.0.1:`);
      }
    });

    it('without replication origins: a warning under origin.method auto (marker message fallback)', () => {
      const f = priv('a', 'cannot use replication origins');
      expect(f).toMatchObject({ level: 'warning' });
      expect(f!.message).toContain('cdc.control');
      expect(f!.fix).toContain('GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text)');
    });

    it('without replication origins: an error under origin.method replication-origin', async () => {
      const strict = await precheck(withRole({ origin: { method: 'replication-origin' } }));
      const f = of(strict, 'privileges').filter((x) => x.message.includes('cannot use replication origins'));
      expect(f.map((x) => [x.level, x.cluster])).toEqual([
        ['error', 'a'],
        ['error', 'b'],
      ]);
    });

    it('without SET on session_replication_role: error with GRANT SET ON PARAMETER', () => {
      expect(priv('b', 'session_replication_role')).toMatchObject({ level: 'error', fix: `GRANT SET ON PARAMETER session_replication_role TO ${qi(role)};` });
    });

    it('without CREATE on the database (schema cdc and the publication do not exist): error', () => {
      expect(priv('a', 'no CREATE on database')).toMatchObject({ level: 'error', fix: `GRANT CREATE ON DATABASE "postgres" TO ${qi(role)};` });
    });

    it('not superuser with a whole-schema selection: the publication cannot be created', () => {
      expect(priv('a', 'FOR TABLES IN SCHEMA')).toMatchObject({ level: 'error' });
    });

    it('without USAGE on the schema and privileges on the tables: errors with the GRANTs', () => {
      expect(priv('a', 'no USAGE on schema')).toMatchObject({ level: 'error', object: schema, fix: `GRANT USAGE ON SCHEMA ${qi(schema)} TO ${qi(role)};` });
      expect(priv('b', 'lacks SELECT, INSERT, UPDATE, DELETE, TRUNCATE')).toMatchObject({
        level: 'error',
        object: `${schema}.t`,
        fix: `GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLE ${qi(schema)}."t" TO ${qi(role)};`,
      });
    });

    it('the offered fixes clear every privilege finding (tables listed and owned, so no superuser is needed)', async () => {
      for (const c of [a, b]) {
        await c.query(
          `ALTER ROLE ${qi(role)} WITH REPLICATION;
           GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text), pg_replication_origin_xact_setup(pg_lsn, timestamptz), pg_replication_origin_create(text) TO ${qi(role)};
           GRANT SET ON PARAMETER session_replication_role TO ${qi(role)};
           GRANT CREATE ON DATABASE postgres TO ${qi(role)};
           GRANT USAGE ON SCHEMA ${qi(schema)} TO ${qi(role)};
           ALTER TABLE ${qi(schema)}.t OWNER TO ${qi(role)};`,
        );
      }
      const after = await precheck(withRole({ selection: { schemas: [schema], include: [`${schema}.t`] }, ddl: { forward: 'off', reverse: 'warn' } }));
      expect(problems(after), formatFindings(after)).toEqual([]);
      expect(after.filter((f) => f.check === 'privileges').map((f) => f.level)).toEqual(['ok', 'ok']);
    });
  });
});
