/**
 * Initial sync of the forward direction on real services: schema and data of tables with
 * FKs, many types and no primary key, with writes running during the snapshot; a sync killed
 * (SIGKILL) half way resumes after its last finished range; the clusters end equal. Run with
 * snapshot chunk records (apply loads them with COPY) and with op=r row events.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { drainBarrier } from '../../services/cli/barrier.js';
import { initialSync } from '../../services/cli/initial-sync.js';
import { release } from '../../services/cli/setup.js';
import { verify, formatVerifyReport } from '../../services/cli/verify.js';
import type { PipelineConfig } from '../../shared/config.js';
import { withClient } from '../../shared/pg.js';
import { testConfig, testLog, uniqueName, waitUntil } from '../support/pipeline.js';
import { startServices } from '../support/services.js';

const PARENTS = 20_000;
const CHILDREN = 60_000;
const NOPK = 10_000;

function sourceSql(s: string): string {
  return `
CREATE SCHEMA ${s};
CREATE TYPE ${s}.mood AS ENUM ('ok', 'meh');
CREATE TABLE ${s}.parent (id int PRIMARY KEY, name text NOT NULL, created timestamptz NOT NULL, amount numeric, flags int[], mood ${s}.mood, payload jsonb, raw bytea, big int8);
CREATE TABLE ${s}.child (parent_id int REFERENCES ${s}.parent(id), n int, note text, PRIMARY KEY (parent_id, n));
CREATE INDEX ON ${s}.child (note);
CREATE TABLE ${s}.nopk (a int, b text);
ALTER TABLE ${s}.nopk REPLICA IDENTITY FULL;
CREATE SEQUENCE ${s}.ids START 1000;
CREATE VIEW ${s}.parent_names AS SELECT id, name FROM ${s}.parent;
INSERT INTO ${s}.parent SELECT g, 'p' || g, '2020-01-01 00:00:00+00'::timestamptz + g * interval '1 second', g / 7.0, ARRAY[g, -g], CASE WHEN g % 2 = 0 THEN 'ok' ELSE 'meh' END::${s}.mood,
  jsonb_build_object('g', g, 'big', 12345678901234567890), decode(md5(g::text), 'hex'), 9007199254740993 + g FROM generate_series(1, ${PARENTS}) g;
INSERT INTO ${s}.child SELECT 1 + (g % ${PARENTS}), g, repeat('x', g % 50) FROM generate_series(1, ${CHILDREN}) g;
INSERT INTO ${s}.nopk SELECT g % 100, 'row ' || (g % 100) FROM generate_series(1, ${NOPK}) g;
SELECT setval('${s}.ids', 5000);
ANALYZE ${s}.parent, ${s}.child, ${s}.nopk;
`;
}

describe.each(['chunks', 'rows'] as const)('initial sync (forward direction), events: %s', (events) => {
  const schema = uniqueName('isync');
  let cfg: PipelineConfig;
  let cfgFile: string;

  beforeAll(async () => {
    cfg = testConfig(uniqueName('pis'), schema, { sync: { workers: 2, events } });
    const dir = mkdtempSync(join(tmpdir(), 'pgbridge-isync-'));
    cfgFile = join(dir, 'pipeline.yaml');
    const c = cfg.clusters;
    writeFileSync(
      cfgFile,
      stringify({
        pipeline: cfg.pipeline,
        clusters: Object.fromEntries(Object.entries(c).map(([k, v]) => [k, { host: v.host, port: v.port, user: v.user, database: v.database }])),
        kafka: { brokers: [...cfg.kafka.brokers] },
        registry: { url: cfg.registry.url },
        selection: { schemas: [schema] },
        metrics: { basePort: 0 },
        sync: { workers: 2, events },
      }),
    );
    await withClient(cfg.clusters.a!, 'test', (cl) => cl.query(sourceSql(schema)));
  });

  afterAll(async () => {
    await release(cfg, testLog, { topics: true }).catch(() => undefined);
    for (const c of cfg.clusterNames) await withClient(cfg.clusters[c]!, 'test', (cl) => cl.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));
  });

  it('copies schema and data inside one snapshot, resumes after SIGKILL without re-reading finished ranges, and streams on with no gap', async () => {
    // 1. A sync process killed for real after a few ranges.
    const child = spawn(
      process.execPath,
      ['dist/services/cli/main.js', 'sync', '--config', cfgFile, '--chunk-rows', '2000', '--max-rows-per-second', '40000'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const doneBeforeKill = await waitUntil(
      'some chunks published',
      async () => {
        const r = await withClient(cfg.clusters.a!, 'test', (cl) =>
          cl.query<{ n: string }>('SELECT coalesce(sum(rows_done), 0)::text AS n FROM cdc.snapshot_progress WHERE pipeline = $1', [cfg.pipeline]),
        ).catch(() => null);
        const n = Number(r?.rows[0]?.n ?? 0);
        return n >= 20_000 ? n : null;
      },
      120_000,
      20,
    ).catch((e: Error) => {
      throw new Error(`${e.message}; sync output: ${out}`);
    });
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const recorded = await withClient(cfg.clusters.a!, 'test', (cl) =>
      cl.query<{ n: string; pk: string }>(
        `SELECT sum(rows_done)::text AS n, coalesce(sum(rows_done) FILTER (WHERE table_name <> '${schema}.nopk'), 0)::text AS pk FROM cdc.snapshot_progress WHERE pipeline = $1`,
        [cfg.pipeline],
      ),
    );
    const finishedChunks = Number(recorded.rows[0]!.n);
    const finishedPk = Number(recorded.rows[0]!.pk);
    expect(finishedChunks, out).toBeGreaterThanOrEqual(doneBeforeKill);
    expect(finishedChunks).toBeLessThan(PARENTS + CHILDREN + NOPK);

    // 2. Writes keep coming on the source while the resumed sync reads.
    let writing = true;
    const writer = withClient(cfg.clusters.a!, 'writer', async (cl) => {
      let i = 0;
      while (writing) {
        i++;
        await cl.query(`UPDATE ${schema}.parent SET name = 'changed ' || $1 WHERE id = $2`, [i, 1 + ((i * 7919) % PARENTS)]);
        await cl.query(`INSERT INTO ${schema}.parent (id, name, created) VALUES ($1, 'new', now())`, [PARENTS + i]);
        await cl.query(`DELETE FROM ${schema}.child WHERE parent_id = $1 AND n = (SELECT min(n) FROM ${schema}.child WHERE parent_id = $1)`, [
          1 + ((i * 104729) % PARENTS),
        ]);
        await cl.query(`INSERT INTO ${schema}.nopk VALUES ($1, 'during')`, [i]);
      }
    });
    const report = await initialSync(cfg, testLog, { chunkRows: 5000, schema: false });
    expect(report.resumed).toBe(true);
    // Finished ranges were not read again (only PK-less tables restart from scratch).
    const pkTotal = PARENTS + CHILDREN;
    expect(finishedPk).toBeGreaterThan(0);
    expect(report.rows).toBeLessThanOrEqual(pkTotal - finishedPk + NOPK + 5_000 /* rows inserted by the writer meanwhile */);
    expect(report.tables.map((t) => t.table).sort()).toEqual([`${schema}.child`, `${schema}.nopk`, `${schema}.parent`]);

    // 3. Streaming takes over from the snapshot's consistent point.
    const svc = startServices(cfg);
    try {
      await new Promise((r) => setTimeout(r, 3000));
      writing = false;
      await writer;
      await drainBarrier(cfg, 180_000);
      const v = await verify(cfg);
      if (!v.equal) {
        // Diagnostics for a failure: what the topic, apply and cdc.conflicts say about the differing keys.
        const { readTopic, changes } = await import('../support/topic.js');
        const recs = await readTopic(cfg, cfg.directions[0].topic, (r) => r.length >= 1, 30_000).catch(() => []);
        console.log('first read', recs.length);
        const { counter } = await import('../support/services.js');
        console.log(
          'apply rows',
          await counter(svc.applies['a-b']!.registry, 'pgbridge_apply_rows_total'),
          'conflicts',
          await counter(svc.applies['a-b']!.registry, 'pgbridge_apply_conflicts_total'),
        );
        const { KafkaClient } = await import('../../shared/kafka.js');
        const admin = new KafkaClient({ brokers: cfg.kafka.brokers, clientId: 'test-debug' }).admin();
        console.log('offsets', (await admin.topicOffsets(cfg.directions[0].topic)).map((o) => `${o.partition}: ${o.low}..${o.high}`).join(', '));
        await admin.close();
        const n = await withClient(cfg.clusters.b!, 'test', (cl) => cl.query(`SELECT kind, resolution, count(*) FROM cdc.conflicts GROUP BY 1, 2`));
        console.log('conflicts on b', JSON.stringify(n.rows));
        for (const t of v.tables.filter((x) => !x.equal)) {
          for (const k of t.differingKeys.slice(0, 2)) {
            const id = Object.values(k.key)[0];
            for (const c of ['a', 'b']) {
              const r = await withClient(cfg.clusters[c]!, 'test', (cl) =>
                cl.query(
                  `SELECT to_jsonb(x)::text AS j, xmin::text, (pg_xact_commit_timestamp_origin(xmin)).* FROM ${t.table} x WHERE ${t.table.endsWith('child') ? 'parent_id' : 'id'} = $1`,
                  [id],
                ),
              );
              console.log(c, t.table, id, JSON.stringify(r.rows).slice(0, 600));
            }
            const cf = await withClient(cfg.clusters.b!, 'test', (cl) =>
              cl.query(`SELECT kind, resolution, key::text, source_commit_lsn::text, kafka_offset FROM cdc.conflicts WHERE key::text LIKE $1`, [`%"${id}"%`]),
            );
            console.log('conflicts', JSON.stringify(cf.rows));
          }
        }
        void changes;
      }
      expect(v.equal, formatVerifyReport(v)).toBe(true);
      expect(svc.errors).toEqual([]);
    } finally {
      writing = false;
      await writer.catch(() => undefined);
      await svc.stop();
    }
    // Schema objects beyond tables came along.
    const objs = await withClient(cfg.clusters.b!, 'test', (cl) =>
      cl.query<{ v: boolean; s: string }>(
        `SELECT to_regclass('${schema}.parent_names') IS NOT NULL AS v, (SELECT last_value::text FROM pg_sequences WHERE schemaname = '${schema}' AND sequencename = 'ids') AS s`,
      ),
    );
    expect(objs.rows[0]).toEqual({ v: true, s: '5000' });
  }, 400_000);
});
