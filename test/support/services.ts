/**
 * Runs the four services of a pipeline inside the test process (the same classes the
 * processes run), for integration tests that need no kills. Fault tests use child processes.
 */
import { Registry } from 'prom-client';
import { ApplyRun, applyMetrics, type ApplyMetrics } from '../../services/apply/apply.js';
import { CaptureRun, captureMetrics, type CaptureMetrics } from '../../services/capture/capture.js';
import type { PipelineConfig } from '../../shared/config.js';
import { kafkaClient } from '../../shared/kafka.js';
import { testLog } from './pipeline.js';

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
