/**
 * `release` removes everything a pipeline made on both clusters (and its topics when asked),
 * and is safe to run twice.
 */
import { describe, expect, it } from 'vitest';
import { KafkaClient } from '../../shared/kafka.js';
import { release, setup } from '../../services/cli/setup.js';
import { originName, slotName } from '../../shared/config.js';
import { withClient } from '../../shared/pg.js';
import { testConfig, testLog, uniqueName } from '../support/pipeline.js';

describe('release', () => {
  it('leaves no slot, publication, origin, helper rows or topics of the pipeline, twice in a row', async () => {
    const schema = uniqueName('rel');
    const cfg = testConfig(uniqueName('prel'), schema);
    for (const c of cfg.clusterNames)
      await withClient(cfg.clusters[c]!, 'test', (cl) => cl.query(`CREATE SCHEMA ${schema}; CREATE TABLE ${schema}.t (id int PRIMARY KEY)`));
    try {
      await setup(cfg, testLog);
      const first = await release(cfg, testLog, { topics: true });
      expect(first.find((r) => r.cluster === 'a')!.dropped).toEqual(
        expect.arrayContaining([`slot ${slotName(cfg, 'a')}`, `publication ${slotName(cfg, 'a')}`, `origin ${originName(cfg, 'b')}`]),
      );
      expect(first.find((r) => r.cluster === 'kafka')!.dropped.sort()).toEqual(cfg.directions.map((d) => `topic ${d.topic}`).sort());
      const second = await release(cfg, testLog, { topics: true });
      expect(
        second
          .filter((r) => r.cluster !== 'kafka')
          .every((r) => r.dropped.length === 0 || r.dropped.every((d) => d.startsWith('rows of pipeline') || d === 'schema cdc')),
      ).toBe(true);
      for (const c of cfg.clusterNames) {
        const left = await withClient(cfg.clusters[c]!, 'test', async (cl) => {
          const objects = await cl.query<{ slots: string; pubs: string; origins: string; helper: boolean }>(
            `SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1)::text AS slots,
                    (SELECT count(*) FROM pg_publication WHERE pubname = $1)::text AS pubs,
                    (SELECT count(*) FROM pg_replication_origin WHERE roname LIKE $2)::text AS origins,
                    to_regclass('cdc.heartbeat') IS NOT NULL AS helper`,
            [slotName(cfg, c), `cdc_${cfg.pipeline}_%`],
          );
          const { helper, ...rest } = objects.rows[0]!;
          // The helper schema stays while other pipelines use it; then only this pipeline's rows must be gone.
          const rows = helper
            ? (await cl.query<{ n: string }>('SELECT count(*)::text AS n FROM cdc.heartbeat WHERE pipeline = $1', [cfg.pipeline])).rows[0]!.n
            : '0';
          return { ...rest, rows };
        });
        expect(left).toEqual({ slots: '0', pubs: '0', origins: '0', rows: '0' });
      }
      const admin = new KafkaClient({ brokers: cfg.kafka.brokers, clientId: 'test-release' }).admin();
      const topics = await admin.listTopics();
      await admin.close();
      expect(topics.filter((t) => cfg.directions.some((d) => d.topic === t))).toEqual([]);
    } finally {
      for (const c of cfg.clusterNames) await withClient(cfg.clusters[c]!, 'test', (cl) => cl.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));
    }
  });

  it('setup and release of different pipelines on the same clusters at once never break each other', async () => {
    // Regression: a release that found no other pipeline dropped the shared helper schema while a
    // concurrent setup was creating it (`schema "cdc" does not exist`).
    const schema = uniqueName('relc');
    const cfgs = [0, 1, 2].map(() => testConfig(uniqueName('prelc'), schema));
    for (const c of cfgs[0]!.clusterNames)
      await withClient(cfgs[0]!.clusters[c]!, 'test', (cl) => cl.query(`CREATE SCHEMA ${schema}; CREATE TABLE ${schema}.t (id int PRIMARY KEY)`));
    try {
      for (let round = 0; round < 3; round++) {
        await Promise.all(
          cfgs.map(async (cfg, i) => {
            await setup(cfg, testLog);
            if (i !== 0) await release(cfg, testLog, { topics: false });
          }),
        );
        // The pipeline that was only set up still has all of its helper tables on both clusters.
        for (const c of cfgs[0]!.clusterNames) {
          const r = await withClient(cfgs[0]!.clusters[c]!, 'test', (cl) =>
            cl.query<{ n: string }>(
              `SELECT count(*)::text AS n FROM pg_tables WHERE schemaname = 'cdc' AND tablename IN ('heartbeat', 'apply_progress', 'conflicts', 'barriers')`,
            ),
          );
          expect(r.rows[0]!.n).toBe('4');
        }
      }
    } finally {
      for (const cfg of cfgs) await release(cfg, testLog, { topics: true });
      for (const c of cfgs[0]!.clusterNames) await withClient(cfgs[0]!.clusters[c]!, 'test', (cl) => cl.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));
    }
  });
});
