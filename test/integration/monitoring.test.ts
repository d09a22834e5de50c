/**
 * The alert rules and the Grafana dashboard of deploy/monitoring: promtool checks the rules
 * and runs their unit tests (Debian's promtool, fetched by infra/promtool.sh), and every
 * metric the rules and the dashboard query is one the real capture and apply processes
 * export, with the values the rules rely on (ready state, slot WAL retained and its limit,
 * lag, the retry window of a failing service).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { freePort, ServiceProcess, writeConfigFile, type ConfigFile } from '../support/processes.js';
import { tablesPipeline, type TablesPipeline } from '../support/services.js';
import { waitUntil } from '../support/pipeline.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const MON = join(ROOT, 'deploy/monitoring');

function promtool(...args: string[]): { code: number | null; out: string } {
  const r = spawnSync('bash', [join(ROOT, 'infra/promtool.sh'), ...args], { cwd: MON, encoding: 'utf8', timeout: 300_000 });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

/** Every pgbridge_* and process_* metric named in a PromQL expression. */
function metricNames(expr: string): string[] {
  return [...expr.matchAll(/\b((?:pgbridge|process)_[a-z0-9_]+)\b/g)].map((m) => m[1]!);
}

function ruleExprs(): Record<string, string> {
  const doc = parse(readFileSync(join(MON, 'pgbridge-alerts.yaml'), 'utf8')) as { groups: { rules: { alert: string; expr: string }[] }[] };
  return Object.fromEntries(doc.groups.flatMap((g) => g.rules.map((r) => [r.alert, r.expr])));
}

function dashboardExprs(): string[] {
  const d = JSON.parse(readFileSync(join(MON, 'pgbridge-dashboard.json'), 'utf8')) as {
    panels: { type: string; targets?: { expr: string }[] }[];
    templating: { list: { definition?: string }[] };
  };
  return [...d.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)), ...d.templating.list.flatMap((v) => (v.definition ? [v.definition] : []))];
}

/** Names of the metrics a /metrics page declares (`# TYPE name kind`). */
async function exported(port: number): Promise<{ names: Set<string>; text: string }> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return { names: new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!)), text };
}

describe('alert rules and dashboard', () => {
  it('promtool check rules and promtool test rules pass', () => {
    const check = promtool('check', 'rules', 'pgbridge-alerts.yaml');
    console.log(`[promtool] ${check.out.trim()}`);
    expect(check.code, check.out).toBe(0);
    expect(check.out).toMatch(/SUCCESS: 9 rules found/);
    const test = promtool('test', 'rules', 'pgbridge-alerts.test.yaml');
    expect(test.code, test.out).toBe(0);
    expect(test.out).toContain('SUCCESS');
    // Every alert has at least one firing case in the rule tests.
    const tests = readFileSync(join(MON, 'pgbridge-alerts.test.yaml'), 'utf8');
    for (const alert of Object.keys(ruleExprs())) expect(tests, alert).toMatch(new RegExp(`alertname: ${alert}\\n\\s+exp_alerts:\\n\\s+- exp_labels`));
  }, 300_000);

  it('the dashboard has a panel for lag, throughput, slot WAL, conflicts, dead letters and service up', () => {
    const exprs = dashboardExprs().join('\n');
    for (const m of [
      'pgbridge_apply_lag_seconds',
      'pgbridge_apply_rows_total',
      'pgbridge_capture_events_total',
      'pgbridge_capture_slot_retained_bytes',
      'pgbridge_apply_conflicts_total',
      'pgbridge_apply_dead_lettered_total',
    ])
      expect(exprs).toContain(m);
    expect(exprs).toMatch(/\bup\{job="\$job"\}/);
    expect(exprs).toMatch(/sum by \(pipeline, direction, kind, resolution\) \(increase\(pgbridge_apply_conflicts_total/);
  });
});

describe('metrics the rules and the dashboard use (real capture and apply processes)', () => {
  let p: TablesPipeline | undefined;
  let file: ConfigFile | undefined;
  let broken: ConfigFile | undefined;
  const procs: ServiceProcess[] = [];
  afterAll(async () => {
    for (const s of procs) {
      s.kill('SIGTERM');
      await s.waitExit().catch(() => s.crash());
    }
    file?.remove();
    broken?.remove();
    await p?.close();
  });

  it('capture and apply export every metric named in the alert rules and the dashboard, with live values', async () => {
    p = await tablesPipeline('mon', (s) => `CREATE TABLE ${s}.t (id int PRIMARY KEY, v text);`);
    file = writeConfigFile(p.cfg);
    const capture = (await ServiceProcess.capture(file, 'a')).start();
    const apply = (await ServiceProcess.apply(file, 'a-b')).start();
    procs.push(capture, apply);
    await Promise.all([capture.waitReady(), apply.waitReady()]);
    await p.a.query(`INSERT INTO ${p.schema}.t SELECT g, 'v' || g FROM generate_series(1, 50) g`);
    await waitUntil('rows applied', async () => (await apply.metric('pgbridge_apply_rows_total')) >= 50, 60_000);
    await waitUntil('slot WAL measured', async () => (await capture.metric('pgbridge_capture_slot_retained_bytes')) > 0, 30_000);

    const names = new Set([...(await exported(capture.port)).names, ...(await exported(apply.port)).names]);
    const used = new Set([...Object.values(ruleExprs()), ...dashboardExprs()].flatMap(metricNames));
    expect(used.size).toBeGreaterThan(12);
    const missing = [...used].filter((n) => !names.has(n) && !names.has(n.replace(/_total$/, '')));
    expect(missing, `queried but not exported: ${missing.join(', ')}`).toEqual([]);

    for (const s of [capture, apply]) {
      expect(await s.metric('pgbridge_service_state', { state: 'ready' })).toBe(1);
      expect(await s.metric('pgbridge_service_state')).toBe(1);
      expect(await s.metric('pgbridge_retry_window_seconds')).toBe(0);
    }
    const keep = (await p.a.query<{ b: string }>(`SELECT pg_size_bytes(current_setting('max_slot_wal_keep_size'))::text AS b`)).rows[0]!.b;
    expect(await capture.metric('pgbridge_capture_slot_wal_keep_limit_bytes')).toBe(Number(keep));
    const lag = await apply.metric('pgbridge_apply_lag_seconds');
    expect(lag).toBeGreaterThan(0);
    expect(lag).toBeLessThan(30);
  }, 180_000);

  it('a second apply of the direction is on standby: state standby, /readyz 503, /readyz?standby=ready 200 (the Kubernetes probe)', async () => {
    const second = (await ServiceProcess.apply(file!, 'a-b')).start();
    procs.push(second);
    const readyz = async (q = ''): Promise<number> => (await fetch(`http://127.0.0.1:${second.port}/readyz${q}`, { signal: AbortSignal.timeout(2000) })).status;
    await waitUntil(
      'second apply on standby',
      async () => (await second.metric('pgbridge_service_state', { state: 'standby' }).catch(() => 0)) === 1,
      30_000,
      200,
    );
    expect(await readyz()).toBe(503);
    expect(await readyz('?standby=ready')).toBe(200);
    expect(await second.metric('pgbridge_service_state', { state: 'ready' })).toBe(0);
    // The active one answers 200 either way.
    const active = procs[1]!;
    expect((await fetch(`http://127.0.0.1:${active.port}/readyz?standby=ready`)).status).toBe(200);
    second.kill('SIGTERM');
    await second.waitExit();
  }, 60_000);

  it('a service that cannot reach its database reports retrying and the share of its retry window used', async () => {
    // Capture of a cluster whose port nothing listens on: a connection failure, retried for
    // retry.connectionMinutes (2 in the test config).
    const cfg = p!.cfg;
    broken = writeConfigFile({ ...cfg, clusters: { ...cfg.clusters, a: { ...cfg.clusters.a!, port: await freePort() } } });
    const capture = (await ServiceProcess.capture(broken, 'a')).start();
    procs.push(capture);
    await waitUntil('retrying', async () => (await capture.metric('pgbridge_service_state', { state: 'retrying' }).catch(() => 0)) === 1, 30_000);
    await waitUntil('retry time counted', async () => (await capture.metric('pgbridge_retry_elapsed_seconds')) >= 1, 30_000);
    expect(await capture.metric('pgbridge_retry_window_seconds')).toBe(cfg.retry.connectionMinutes * 60);
    expect(await capture.metric('pgbridge_service_state', { state: 'ready' })).toBe(0);
    const elapsed = await capture.metric('pgbridge_retry_elapsed_seconds');
    expect(elapsed).toBeLessThan(cfg.retry.connectionMinutes * 60);
  }, 120_000);
});
