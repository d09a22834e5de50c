/**
 * Capture and apply measured apart: `node dist/bench/stages.js <rows> <rows per transaction>`.
 * Writes the backlog on cluster a, runs capture alone until the slot has acknowledged it
 * (everything is in Kafka), then apply alone from the filled topic until b holds every row.
 * Both times include process start; peak RSS is VmHWM. Uses the local stack.
 * PGBRIDGE_CPU_PROF=<folder> writes a CPU profile of each service there. CPU per row is
 * user + system time of the service process (/proc), start-up included.
 * PGBRIDGE_STAGES_SERVICES=<dist/services of another build> runs that build's services, with
 * the node binary PGBRIDGE_STAGES_NODE if set (A/B against an older build or runtime).
 * PGBRIDGE_STAGES_COMPRESSION=lz4|zstd|… sets capture.compression.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { endpointsOf, stackConnections, stackSettings } from '../infra/stack/settings.js';
import { release, setup } from '../services/cli/setup.js';
import { parseConfig } from '../shared/config.js';
import { createLogger } from '../shared/log.js';
import { withClient } from '../shared/pg.js';
import { SERVICE_NODE_ARGS } from '../shared/service-main.js';

const services = process.env.PGBRIDGE_STAGES_SERVICES ?? join(dirname(fileURLToPath(import.meta.url)), '..', 'services');

function hwmMib(pid: number | undefined): number {
  try {
    return Math.round(Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024);
  } catch {
    return 0;
  }
}

/** CPU seconds (user + system) a live process has used so far. */
function cpuSeconds(pid: number | undefined): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? 50_000);
  const per = Number(process.argv[3] ?? 1);
  const log = createLogger('stages', 'warn');
  const ep = endpointsOf(stackSettings());
  const id = Math.random().toString(16).slice(2, 8);
  const schema = `st_${id}`;
  const input = {
    pipeline: `st_${id}`,
    ...stackConnections(ep),
    selection: { schemas: [schema] },
    metrics: { basePort: 0 },
    capture: { heartbeatSeconds: 0, ...(process.env.PGBRIDGE_STAGES_COMPRESSION ? { compression: process.env.PGBRIDGE_STAGES_COMPRESSION } : {}) },
  };
  const file = join(mkdtempSync(join(tmpdir(), 'pgbridge-stages-')), 'pipeline.yaml');
  writeFileSync(file, JSON.stringify(input));
  const cfg = parseConfig(input);
  const a = cfg.clusters.a!;
  const b = cfg.clusters.b!;
  try {
    for (const c of [a, b])
      await withClient(c, 'stages', (cl) =>
        cl.query(`CREATE SCHEMA ${schema}; CREATE TABLE ${schema}.t (id bigint PRIMARY KEY, payload text, amount numeric)`),
      );
    await setup(cfg, log);
    await withClient(a, 'stages', async (cl) => {
      await cl.query(
        `CREATE PROCEDURE ${schema}.fill(n int, per int) LANGUAGE plpgsql AS $$ BEGIN FOR i IN 1..n LOOP INSERT INTO ${schema}.t VALUES (i, 'payload ' || i || ' ' || md5(i::text), i / 100.0); IF i % per = 0 THEN COMMIT; END IF; END LOOP; COMMIT; END $$`,
      );
      await cl.query(`CALL ${schema}.fill($1, $2)`, [n, per]);
    });
    const target = await withClient(a, 'stages', (cl) => cl.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).then((r) => r.rows[0]!.l);
    // PGBRIDGE_CPU_PROF=<folder>: each service writes a V8 CPU profile there (open it in Chrome DevTools).
    const profile = process.env.PGBRIDGE_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.PGBRIDGE_CPU_PROF}`] : [];
    const start = (script: string, args: string[]): ChildProcess =>
      spawn(
        process.env.PGBRIDGE_STAGES_NODE ?? process.execPath,
        [...SERVICE_NODE_ARGS, ...profile, join(services, script), '--config', file, ...args, '--metrics-port', '0'],
        { stdio: 'inherit', env: { ...process.env, PGBRIDGE_LOG_LEVEL: process.env.PGBRIDGE_STAGES_LOG_LEVEL ?? 'warn' } },
      );
    const stop = async (p: ChildProcess): Promise<void> => {
      p.kill('SIGTERM');
      await new Promise((r) => p.once('exit', r));
    };
    let t0 = Date.now();
    const cap = start('capture/main.js', ['--cluster', 'a']);
    let capPeak = 0;
    for (;;) {
      capPeak = Math.max(capPeak, hwmMib(cap.pid));
      const ok = await withClient(a, 'stages', (cl) =>
        cl.query<{ ok: boolean }>('SELECT confirmed_flush_lsn >= $2::pg_lsn AS ok FROM pg_replication_slots WHERE slot_name = $1', [
          `cdc_${cfg.pipeline}_a`,
          target,
        ]),
      ).then((r) => r.rows[0]?.ok);
      if (ok) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const capS = (Date.now() - t0) / 1000;
    const capCpu = cpuSeconds(cap.pid);
    await stop(cap);
    t0 = Date.now();
    const app = start('apply/main.js', ['--direction', 'a-b']);
    let appPeak = 0;
    let firstRow: number | null = null;
    for (;;) {
      appPeak = Math.max(appPeak, hwmMib(app.pid));
      const got = await withClient(b, 'stages', (cl) => cl.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${schema}.t`)).then((r) =>
        Number(r.rows[0]!.n),
      );
      if (got > 0 && firstRow === null) firstRow = (Date.now() - t0) / 1000;
      if (got >= n) break;
      await new Promise((r) => setTimeout(r, firstRow === null ? 10 : 50));
    }
    const appS = (Date.now() - t0) / 1000;
    const appCpu = cpuSeconds(app.pid);
    await stop(app);
    const us = (cpu: number): string => `${((cpu * 1e6) / n).toFixed(1)} µs CPU/row`;
    console.log(
      `rows ${n} (${per} per transaction): capture alone ${capS.toFixed(2)} s = ${Math.round(n / capS)} rows/s, ${us(capCpu)}, peak RSS ${capPeak} MiB; ` +
        `apply alone from the filled topic ${appS.toFixed(2)} s = ${Math.round(n / appS)} rows/s, ${us(appCpu)}, peak RSS ${appPeak} MiB, first row on b ${firstRow?.toFixed(2)} s after its start (both include process start; CPU of the node process only)`,
    );
  } finally {
    await release(cfg, log, { topics: true }).catch(() => undefined);
    for (const c of [a, b]) await withClient(c, 'stages', (cl) => cl.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)).catch(() => undefined);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
