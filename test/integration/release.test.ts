/**
 * `release` removes everything a pipeline made on both clusters (and its topics when asked),
 * and is safe to run twice.
 */
import { describe, expect, it } from 'vitest';
import { Kafka, logLevel } from 'kafkajs';
import { release, setup } from '../../services/cli/setup.js';
import { originName, slotName } from '../../shared/config.js';
import { withClient } from '../../shared/pg.js';
import { testConfig, testLog, uniqueName } from '../support/pipeline.js';

describe('release', () => {
  it('leaves no slot, publication, origin, helper rows or topics of the pipeline, twice in a row', async () => {
    const schema = uniqueName('rel');
    const cfg = testConfig(uniqueName('prel'), schema);
    for (const c of cfg.clusterNames) await withClient(cfg.clusters[c]!, 'test', (cl) => cl.query(`CREATE SCHEMA ${schema}; CREATE TABLE ${schema}.t (id int PRIMARY KEY)`));
    try {
      await setup(cfg, testLog);
      const first = await release(cfg, testLog, { topics: true });
      expect(first.find((r) => r.cluster === 'a')!.dropped).toEqual(expect.arrayContaining([`slot ${slotName(cfg, 'a')}`, `publication ${slotName(cfg, 'a')}`, `origin ${originName(cfg, 'b')}`]));
      expect(first.find((r) => r.cluster === 'kafka')!.dropped.sort()).toEqual(cfg.directions.map((d) => `topic ${d.topic}`).sort());
      const second = await release(cfg, testLog, { topics: true });
      expect(second.filter((r) => r.cluster !== 'kafka').every((r) => r.dropped.length === 0 || r.dropped.every((d) => d.startsWith('rows of pipeline') || d === 'schema cdc'))).toBe(true);
      for (const c of cfg.clusterNames) {
        const left = await withClient(cfg.clusters[c]!, 'test', (cl) => cl.query<{ slots: string; pubs: string; origins: string; rows: string }>(
          `SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1)::text AS slots,
                  (SELECT count(*) FROM pg_publication WHERE pubname = $1)::text AS pubs,
                  (SELECT count(*) FROM pg_replication_origin WHERE roname LIKE $2)::text AS origins,
                  (CASE WHEN to_regclass('cdc.apply_progress') IS NULL THEN 0
                        ELSE (SELECT count(*) FROM cdc.heartbeat WHERE pipeline = $3) END)::text AS rows`,
          [slotName(cfg, c), `cdc_${cfg.pipeline}_%`, cfg.pipeline]));
        expect(left.rows[0]).toEqual({ slots: '0', pubs: '0', origins: '0', rows: '0' });
      }
      const admin = new Kafka({ brokers: [...cfg.kafka.brokers], logLevel: logLevel.NOTHING }).admin();
      await admin.connect();
      const topics = await admin.listTopics();
      await admin.disconnect();
      expect(topics.filter((t) => cfg.directions.some((d) => d.topic === t))).toEqual([]);
    } finally {
      for (const c of cfg.clusterNames) await withClient(cfg.clusters[c]!, 'test', (cl) => cl.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));
    }
  });
});
