/**
 * Runs the four services of a pipeline inside the test process (the same classes the
 * processes run), for integration tests that need no kills. Fault tests use child processes.
 */
import { Registry } from 'prom-client';
import { ApplyRun, applyMetrics, type ApplyMetrics } from '../../services/apply/apply.js';
import { CaptureRun, captureMetrics, type CaptureMetrics } from '../../services/capture/capture.js';
import type { PipelineConfig } from '../../shared/config.js';
import { kafkaClient } from '../../shared/kafka.js';
import { release, setup } from '../../services/cli/setup.js';
import { workloadSchemaSql } from '../../infra/demo/workload.js';
import type pg from 'pg';
import { withClient } from '../../shared/pg.js';
import { pgClient, testConfig, testLog, uniqueName, waitUntil } from './pipeline.js';

export interface Running {
  readonly captures: Record<string, { run: CaptureRun; metrics: CaptureMetrics; registry: Registry }>;
  readonly applies: Record<string, { run: ApplyRun; metrics: ApplyMetrics; registry: Registry }>;
  readonly errors: Error[];
  stop(): Promise<void>;
}

export async function counter(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = await registry.getSingleMetric(name)?.get();
  if (!m) return 0;
  return m.values.filter((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val)).reduce((s, v) => s + v.value, 0);
}

export function startServices(cfg: PipelineConfig, which: { captures?: string[]; applies?: string[] } = {}): Running {
  const errors: Error[] = [];
  const captures: Running['captures'] = {};
  const applies: Running['applies'] = {};
  for (const c of which.captures ?? cfg.clusterNames) {
    const registry = new Registry();
    const metrics = captureMetrics(registry);
    const run = new CaptureRun({ cfg, cluster: c, kafka: kafkaClient(cfg, `t-capture-${c}`, testLog), log: testLog, metrics });
    run.run().catch((e: Error) => errors.push(e));
    captures[c] = { run, metrics, registry };
  }
  for (const d of cfg.directions.filter((x) => (which.applies ?? cfg.directions.map((y) => y.id)).includes(x.id))) {
    const registry = new Registry();
    const metrics = applyMetrics(registry);
    const run = new ApplyRun({ cfg, direction: d, kafka: kafkaClient(cfg, `t-apply-${d.id}`, testLog), log: testLog, metrics });
    run.run().catch((e: Error) => errors.push(e));
    applies[d.id] = { run, metrics, registry };
  }
  return {
    captures,
    applies,
    errors,
    async stop() {
      await Promise.all([...Object.values(captures).map((c) => c.run.stop()), ...Object.values(applies).map((a) => a.run.stop())]);
    },
  };
}

export async function waitServicesReady(svc: Running, timeoutMs = 60_000): Promise<void> {
  await waitUntil('services ready', async () => [...Object.values(svc.captures), ...Object.values(svc.applies)].every((s) => s.run.ready), timeoutMs);
}

export interface WorkloadPipeline {
  readonly cfg: PipelineConfig;
  readonly schema: string;
  readonly svc: Running;
  /** Stops the services, releases the pipeline and drops the schema on both clusters. */
  close(): Promise<void>;
}

/**
 * The bank-and-orders workload schema (infra/demo/workload.ts) on both clusters, a
 * last-writer-wins pipeline over it, and its four services running and ready.
 */
export async function workloadPipeline(prefix: string): Promise<WorkloadPipeline> {
  const schema = uniqueName(prefix);
  const cfg = testConfig(uniqueName(`p${prefix}`), schema, { conflicts: { policy: 'last-writer-wins' } });
  // Odd order ids on the first cluster, even on the second: both insert without colliding.
  for (const [i, c] of cfg.clusterNames.entries()) await withClient(cfg.clusters[c]!, 'test', (cl) => cl.query(workloadSchemaSql(schema, i + 1, 2)));
  await setup(cfg, testLog);
  const svc = startServices(cfg);
  await waitServicesReady(svc);
  return {
    cfg,
    schema,
    svc,
    async close() {
      await svc.stop();
      await release(cfg, testLog, { topics: true }).catch(() => undefined);
      for (const c of cfg.clusterNames) await withClient(cfg.clusters[c]!, 'test', (cl) => cl.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));
    },
  };
}

export interface TablesPipeline {
  readonly cfg: PipelineConfig;
  readonly schema: string;
  /** Clients of both clusters (pinned session, text values). */
  readonly a: pg.Client;
  readonly b: pg.Client;
  /** Releases the pipeline, drops the schema on both clusters and ends the clients. */
  close(): Promise<void>;
}

/** A pipeline over a schema of its own, made on both clusters by `ddl(schema)`, set up (slots exist: later writes are captured). */
export async function tablesPipeline(prefix: string, ddl: (schema: string) => string, over: Parameters<typeof testConfig>[2] = {}): Promise<TablesPipeline> {
  const schema = uniqueName(prefix);
  const cfg = testConfig(uniqueName(`p${prefix}`), schema, over);
  const a = await pgClient(cfg, 'a');
  const b = await pgClient(cfg, 'b');
  for (const c of [a, b]) await c.query(`CREATE SCHEMA ${schema}; ${ddl(schema)}`);
  await setup(cfg, testLog);
  return {
    cfg,
    schema,
    a,
    b,
    async close() {
      await release(cfg, testLog, { topics: true }).catch(() => undefined);
      for (const c of [a, b]) {
        await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
        await c.end();
      }
    },
  };
}
