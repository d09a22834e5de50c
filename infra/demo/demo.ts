/**
 * The two-way demo (`npm run demo`): on the local stack, a small schema on both clusters,
 * two-way sync with last-writer-wins, writers on both sides with deliberate conflicts, live
 * progress, then the drain barrier, `verify`, and where the conflicts were recorded.
 */
import { mkdirSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { endpointsOf, stackConnections, stackSettings } from '../stack/settings.js';
import { loadConfig, type PipelineConfigInput } from '../../shared/config.js';
import { errorMessage } from '../../shared/errors.js';
import { createLogger } from '../../shared/log.js';
import { withClient } from '../../shared/pg.js';
import { argValue, isMainModule } from '../../shared/service-main.js';
import { drainBarrier } from '../../services/cli/barrier.js';
import { formatFindings, precheck } from '../../services/cli/precheck/index.js';
import { waitReady } from '../../services/cli/probe.js';
import { spawnServices, statusLine, stopServices } from '../../services/cli/run.js';
import { release, setup } from '../../services/cli/setup.js';
import { formatVerifyReport, verify } from '../../services/cli/verify.js';
import { ledgerTotal, runWorkload, workloadSchemaSql } from './workload.js';

const SCHEMA = 'demo';

export async function demo(argv: readonly string[]): Promise<number> {
  const seconds = Number(argValue(argv, '--seconds') ?? process.env.PGBRIDGE_DEMO_SECONDS ?? 20);
  const s = stackSettings();
  const ep = endpointsOf(s);
  const dir = join(s.stateDir, 'demo');
  mkdirSync(dir, { recursive: true });
  const cfgFile = join(dir, 'pipeline.yaml');
  const input: PipelineConfigInput = {
    pipeline: 'demo',
    ...stackConnections(ep),
    selection: { schemas: [SCHEMA] },
    conflicts: { policy: 'last-writer-wins' },
    capture: { heartbeatSeconds: 2 },
    metrics: { basePort: Number(process.env.PGBRIDGE_DEMO_METRICS_PORT ?? 19101) },
  };
  writeFileSync(cfgFile, `# pgbridge demo pipeline, written by npm run demo\n${stringify(input)}`);
  const cfg = loadConfig(cfgFile);
  const log = createLogger('demo', 'warn');
  const say = (line: string): void => console.log(line);

  say(`\n== pgbridge demo: two-way sync between cluster a (${ep.pg.a.host}:${ep.pg.a.port}) and b (${ep.pg.b.host}:${ep.pg.b.port})`);
  say(`   config ${cfgFile}`);
  await release(cfg, log, { topics: true }).catch(() => undefined);
  for (const [i, c] of cfg.clusterNames.entries()) {
    // Odd ids on a, even ids on b: both sides insert orders without colliding.
    await withClient(cfg.clusters[c]!, 'pgbridge-demo', (cl) => cl.query(workloadSchemaSql(SCHEMA, i + 1, 2)));
  }
  say(`== schema "${SCHEMA}" created on both clusters (accounts, orders)`);

  const findings = await precheck(cfg, { existingTables: 'ignore' });
  say('== precheck');
  say(
    formatFindings(findings)
      .split('\n')
      .map((l) => `   ${l}`)
      .join('\n'),
  );
  if (findings.some((f) => f.level === 'error')) return 1;

  await setup(cfg, log);
  say('== setup: helper schema cdc, publications, slots, origins and topics created');
  const logFile = join(dir, 'services.log');
  const procs = spawnServices(cfgFile, cfg, { logFile: openSync(logFile, 'w') });
  let code = 1;
  try {
    await waitReady(
      cfg.metrics.host,
      procs.map((p) => p.port),
      60_000,
    );
    say(`== 4 services running (capture a, capture b, apply a→b, apply b→a); logs in ${logFile}`);
    say(`== writers on both clusters for ${seconds} s: transfers, orders, and the same accounts updated on both sides at once`);
    const end = Date.now() + seconds * 1000;
    const tick = setInterval(
      () =>
        void statusLine(cfg).then((l) =>
          say(
            `   ${Math.max(0, Math.round((end - Date.now()) / 1000))
              .toString()
              .padStart(3)} s left | ${l}`,
          ),
        ),
      2000,
    );
    const ledgers = await runWorkload(cfg, SCHEMA, { until: () => Date.now() < end, writersPerSide: 2, conflictEveryMs: 500 });
    clearInterval(tick);
    say(`== writes acknowledged: a ${ledgerTotal(ledgers[0]!)}, b ${ledgerTotal(ledgers[1]!)} (failed: ${ledgers[0]!.failed + ledgers[1]!.failed})`);
    const t0 = Date.now();
    await drainBarrier(cfg, 120_000);
    say(`== drain barrier applied in both directions after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const report = await verify(cfg);
    say('== verify');
    say(
      formatVerifyReport(report)
        .split('\n')
        .map((l) => `   ${l}`)
        .join('\n'),
    );
    for (const c of cfg.clusterNames) {
      const rows = await withClient(cfg.clusters[c]!, 'pgbridge-demo', (cl) =>
        cl.query<{ kind: string; resolution: string; n: string }>(
          'SELECT kind, resolution, count(*)::text AS n FROM cdc.conflicts WHERE pipeline = $1 GROUP BY 1, 2 ORDER BY 1, 2',
          [cfg.pipeline],
        ),
      );
      say(
        `== conflicts recorded in cdc.conflicts on ${c}: ${rows.rows.length ? rows.rows.map((r) => `${r.n} ${r.kind} → ${r.resolution}`).join(', ') : 'none'}`,
      );
    }
    const sums = await Promise.all(
      cfg.clusterNames.map((c) =>
        withClient(cfg.clusters[c]!, 'pgbridge-demo', (cl) => cl.query<{ s: string }>(`SELECT sum(balance)::text AS s FROM ${SCHEMA}.accounts`)),
      ),
    );
    say(`== total balance: a ${sums[0]!.rows[0]!.s}, b ${sums[1]!.rows[0]!.s} (transfers keep it at ${100 * 1000}.00)`);
    say(report.equal ? '\nclusters equal' : '\nclusters DIFFER');
    code = report.equal ? 0 : 1;
  } catch (err) {
    say(`demo failed: ${errorMessage(err)} (services log: ${logFile})`);
  } finally {
    await stopServices(procs);
  }
  say(`\nThe stack is still running. Look around:`);
  say(`   psql postgresql://postgres@${ep.pg.a.host}:${ep.pg.a.port}/postgres -c 'SELECT * FROM cdc.conflicts LIMIT 5'`);
  say(`   node dist/services/cli/main.js run --config ${cfgFile}      # the pipeline again`);
  say(`   node dist/services/cli/main.js status --config ${cfgFile}`);
  say(`   infra/stack/stack down                                       # stop the stack`);
  return code;
}

if (isMainModule(import.meta.url)) {
  demo(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(`demo failed: ${errorMessage(err)}`);
      process.exit(1);
    },
  );
}
