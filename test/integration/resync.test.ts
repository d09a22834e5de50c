/**
 * Per-table resync while writers run on both clusters: a destination table damaged behind
 * pgbridge's back is repaired from its source, concurrent changes are neither lost nor
 * reordered, and the clusters end equal.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drainBarrier } from '../../services/cli/barrier.js';
import { resyncTable } from '../../services/cli/initial-sync.js';
import { formatVerifyReport, verify } from '../../services/cli/verify.js';
import { runWorkload } from '../../infra/demo/workload.js';
import type { PipelineConfig } from '../../shared/config.js';
import { withClient } from '../../shared/pg.js';
import { writeControl } from '../../shared/control-records.js';
import { testLog, waitUntil } from '../support/pipeline.js';
import { workloadPipeline, type Running, type WorkloadPipeline } from '../support/services.js';

describe('resync of one table while both directions run', () => {
  let wp: WorkloadPipeline;
  let cfg: PipelineConfig;
  let schema: string;
  let svc: Running;

  beforeAll(async () => {
    wp = await workloadPipeline('rs');
    ({ cfg, schema, svc } = wp);
  });

  afterAll(async () => {
    await wp?.close();
  });

  it('repairs the damaged table on b from a, with writers running on both sides, and ends equal', async () => {
    // Phase 1: writers on both sides until b holds 200 of a's orders, then everything drained.
    let filled = false;
    const before = runWorkload(cfg, schema, { until: () => !filled, writersPerSide: 1, conflictEveryMs: 1000, pauseMs: 5 });
    await waitUntil(
      'orders from a on b',
      async () => {
        const r = await withClient(cfg.clusters.b!, 'test', (cl) =>
          cl.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${schema}.orders WHERE id % 2 = 1`),
        );
        return Number(r.rows[0]!.n) >= 200;
      },
      90_000,
    ).finally(() => {
      filled = true;
    });
    expect((await before).every((l) => l.failed === 0)).toBe(true);
    await drainBarrier(cfg, 120_000);
    // Damage b behind pgbridge's back: an origin control record (only pgbridge's roles may
    // write one; the test connects as the superuser) makes capture b treat it as a's change,
    // so it is not sent back to a. With the writers paused and both directions drained, no
    // change of a to these rows is on its way: one (a delete, say) committed on a before the
    // damage but applied on b after it would lose to the newer damage under last-writer-wins,
    // and a resync does not delete rows the source no longer has (see resyncTable).
    const damaged = await withClient(cfg.clusters.b!, 'test', async (cl) => {
      await cl.query('BEGIN');
      await writeControl(cl, cfg.pipeline, 'origin', 'a');
      const d = await cl.query(`DELETE FROM ${schema}.orders WHERE id IN (SELECT id FROM ${schema}.orders WHERE id % 2 = 1 ORDER BY id LIMIT 50)`);
      const u = await cl.query(
        `UPDATE ${schema}.orders SET amount = -1 WHERE id IN (SELECT id FROM ${schema}.orders WHERE id % 2 = 1 ORDER BY id DESC LIMIT 30)`,
      );
      await cl.query('COMMIT');
      return (d.rowCount ?? 0) + (u.rowCount ?? 0);
    });
    expect(damaged).toBe(80);
    // Phase 2: the writers run again until the resync is over (and a little after), however slow the machine is.
    let resyncDone = 0;
    const work = runWorkload(cfg, schema, {
      until: () => resyncDone === 0 || Date.now() < resyncDone + 3_000,
      writersPerSide: 1,
      conflictEveryMs: 1000,
      pauseMs: 5,
    });
    // Only the rows a owns (odd ids): b deletes its own rows meanwhile, and a row b deleted
    // before a heard of it would come back (see resyncTable).
    const report = await resyncTable(cfg, `${schema}.orders`, testLog, { chunkRows: 500, where: 'id % 2 = 1' }).finally(() => {
      resyncDone = Date.now();
    });
    expect(report.rows).toBeGreaterThan(200);
    const ledgers = await work;
    expect(ledgers.every((l) => l.failed === 0)).toBe(true);
    await drainBarrier(cfg, 120_000);
    const v = await verify(cfg);
    if (!v.equal) {
      for (const k of v.tables.flatMap((t) => t.differingKeys).slice(0, 3)) {
        const id = Object.values(k.key)[0];
        for (const c of cfg.clusterNames) {
          const r = await withClient(cfg.clusters[c]!, 'test', (cl) =>
            cl.query(`SELECT to_jsonb(o)::text AS row, (pg_xact_commit_timestamp_origin(o.xmin)).* FROM ${schema}.orders o WHERE id = $1`, [id]),
          );
          const cf = await withClient(cfg.clusters[c]!, 'test', (cl) =>
            cl.query(`SELECT kind, resolution, policy, kafka_offset FROM cdc.conflicts WHERE pipeline = $1 AND key->>'id' = $2`, [cfg.pipeline, id]),
          );
          console.log(`diag ${c} id ${id}: ${JSON.stringify(r.rows)} conflicts ${JSON.stringify(cf.rows)}`);
        }
      }
    }
    expect(v.equal, formatVerifyReport(v)).toBe(true);
    expect(svc.errors).toEqual([]);
  }, 300_000);
});
