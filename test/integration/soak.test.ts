/**
 * Two-way soak: writers on both clusters for a minute, mixed operations, the same rows
 * updated on both sides at once under last-writer-wins. At the end: verify says equal, every
 * acknowledged write is accounted for, the bank total never changed on either side while it
 * ran, and each capture published exactly its cluster's own row changes (no loop).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drainBarrier } from '../../services/cli/barrier.js';
import { verify, formatVerifyReport } from '../../services/cli/verify.js';
import { ACCOUNTS, INITIAL_BALANCE, runWorkload, type Ledger } from '../../infra/demo/workload.js';
import type { PipelineConfig } from '../../shared/config.js';
import { withClient } from '../../shared/pg.js';
import { counter, workloadPipeline, type Running, type WorkloadPipeline } from '../support/services.js';

const SECONDS = Number(process.env.PGBRIDGE_SOAK_SECONDS ?? 60);

describe('two-way soak', () => {
  let wp: WorkloadPipeline;
  let cfg: PipelineConfig;
  let schema: string;
  let svc: Running;

  beforeAll(async () => {
    wp = await workloadPipeline('soak');
    ({ cfg, schema, svc } = wp);
  });

  afterAll(async () => {
    await wp?.close();
  });

  it(
    `converges after ${SECONDS} s of concurrent writes on both clusters, with no loop and nothing lost`,
    async () => {
      const end = Date.now() + SECONDS * 1000;
      const totals: string[] = [];
      // The bank total must never change on either side, not even for a moment (torn transactions).
      const watcher = (async () => {
        while (Date.now() < end) {
          for (const c of cfg.clusterNames) {
            const r = await withClient(cfg.clusters[c]!, 'soak-watch', (cl) =>
              cl.query<{ s: string }>(`SELECT sum(balance)::text AS s FROM ${schema}.accounts`),
            );
            totals.push(r.rows[0]!.s);
          }
          await new Promise((r) => setTimeout(r, 250));
        }
      })();
      const ledgers: Ledger[] = await runWorkload(cfg, schema, { until: () => Date.now() < end, writersPerSide: 2, conflictEveryMs: 300, pauseMs: 2 });
      await watcher;
      await drainBarrier(cfg, 180_000);

      const report = await verify(cfg);
      expect(report.equal, formatVerifyReport(report)).toBe(true);
      expect(new Set(totals)).toEqual(new Set([(ACCOUNTS * INITIAL_BALANCE).toFixed(2)]));
      expect(svc.errors).toEqual([]);

      for (const [i, c] of cfg.clusterNames.entries()) {
        const l = ledgers[i]!;
        expect(l.failed).toBe(0);
        const rowChanges = 2 * l.transfers + l.ordersInserted + l.ordersUpdated + l.ordersDeleted + l.conflictWrites;
        // Every acknowledged local write was published once, and nothing applied from the other side was published back.
        expect(await counter(svc.captures[c]!.registry, 'pgbridge_capture_events_total', { kind: 'change' }), `capture ${c}`).toBe(rowChanges);
        // Every order that a client saw inserted is on both clusters unless a later acknowledged delete removed it.
        const counts = await Promise.all(
          cfg.clusterNames.map((n) =>
            withClient(cfg.clusters[n]!, 'soak', (cl) =>
              cl.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${schema}.orders WHERE id % 2 = ${i === 0 ? 1 : 0}`),
            ),
          ),
        );
        expect(Number(counts[0]!.rows[0]!.n)).toBe(l.ordersInserted - l.ordersDeleted);
        expect(Number(counts[1]!.rows[0]!.n)).toBe(l.ordersInserted - l.ordersDeleted);
      }
      // Conflicts did happen and were recorded where they were resolved.
      let recorded = 0;
      for (const c of cfg.clusterNames) {
        const r = await withClient(cfg.clusters[c]!, 'soak', (cl) =>
          cl.query<{ n: string }>("SELECT count(*)::text AS n FROM cdc.conflicts WHERE kind = 'update_origin_differs' AND policy = 'last-writer-wins'"),
        );
        recorded += Number(r.rows[0]!.n);
      }
      expect(recorded).toBeGreaterThan(0);
    },
    (SECONDS + 240) * 1000,
  );
});
