#!/usr/bin/env node
/**
 * pgbridge command line. Every command takes --config <pipeline.yaml> (or PGBRIDGE_CONFIG).
 * Exit codes: 0 success, 1 failure or differences found, 2 usage error.
 */
import '../../shared/boot.js';
import { Command, InvalidArgumentError, Option } from 'commander';
import { loadConfig, type PipelineConfig } from '../../shared/config.js';
import { PgBridgeError, errorMessage } from '../../shared/errors.js';
import { createLogger } from '../../shared/log.js';
import { isMainModule } from '../../shared/service-main.js';

function config(opts: { config?: string }): { file: string; cfg: PipelineConfig } {
  const file = opts.config ?? process.env.PGBRIDGE_CONFIG;
  if (!file) throw new PgBridgeError('CONFIG_INVALID', 'no config: pass --config <pipeline.yaml> or set PGBRIDGE_CONFIG');
  return { file, cfg: loadConfig(file) };
}

/**
 * Parser of a numeric option: a number of the given kind within [min, max], else a usage
 * error naming the option (`--chunk-rows 0` used to sync nothing and succeed).
 */
function numberOption(kind: 'integer' | 'number', min: number, max = Number.MAX_SAFE_INTEGER): (raw: string) => number {
  return (raw) => {
    const n = Number(raw);
    const ok = raw.trim() !== '' && Number.isFinite(n) && (kind === 'number' || Number.isInteger(n)) && n >= min && n <= max;
    if (!ok)
      throw new InvalidArgumentError(
        `expected ${kind === 'integer' ? 'a whole number' : 'a number'} ${max === Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `from ${min} to ${max}`}`,
      );
    return n;
  };
}
const count = numberOption('integer', 1);
const rate = numberOption('number', Number.MIN_VALUE);
const port = numberOption('integer', 0, 65535);

/** --split-sequences with no value: one residue per cluster; with a value: that many ways. */
function splitWays(raw: string): number {
  return numberOption('integer', 2, 64)(raw);
}

async function printSplit(cfg: PipelineConfig, ways: number | true): Promise<void> {
  const { splitSequences, formatSplitReport } = await import('./sequence-split.js');
  const r = await splitSequences(cfg, createLogger('cli', 'warn'), ways === true ? {} : { ways });
  console.log(formatSplitReport(r));
}

export function program(): Command {
  const p = new Command('pgbridge').description('Two-way PostgreSQL synchronization through Kafka').showHelpAfterError().exitOverride();
  const withConfig = (c: Command): Command => c.addOption(new Option('-c, --config <file>', 'pipeline config (YAML)').env('PGBRIDGE_CONFIG'));

  withConfig(p.command('check-config').description('validate the config file and print it with defaults filled in')).action((o) => {
    const { cfg } = config(o);
    const hide = (v: string | undefined): string | undefined => (v === undefined ? undefined : '[redacted]');
    const redacted = {
      ...cfg,
      clusters: Object.fromEntries(
        Object.entries(cfg.clusters).map(([k, v]) => [
          k,
          {
            ...v,
            password: hide(v.password),
            roles: v.roles && Object.fromEntries(Object.entries(v.roles).map(([svc, r]) => [svc, { ...r, password: hide(r.password) }])),
          },
        ]),
      ),
      kafka: { ...cfg.kafka, sasl: cfg.kafka.sasl && { ...cfg.kafka.sasl, password: hide(cfg.kafka.sasl.password) } },
      registry: { ...cfg.registry, password: hide(cfg.registry.password) },
    };
    console.log(JSON.stringify(redacted, null, 2));
  });

  withConfig(p.command('precheck').description('check both clusters, Kafka and the registry; report every finding'))
    .addOption(new Option('--existing-tables <mode>', 'destination tables that already hold rows').choices(['error', 'ignore']).default('error'))
    .action(async (o) => {
      const { cfg } = config(o);
      const { precheck, formatFindings } = await import('./precheck/index.js');
      const findings = await precheck(cfg, { existingTables: o.existingTables });
      console.log(formatFindings(findings));
      process.exitCode = findings.some((f) => f.level === 'error') ? 1 : 0;
    });

  withConfig(
    p
      .command('setup')
      .description(
        'create helper schema, publications, slots, origins and topics, and bring existing publications in line with the selection (idempotent; prints what changed)',
      ),
  )
    .option(
      '--split-sequences [ways]',
      'also give every sequence behind a column of the selected tables its own residue per cluster (odd/even; N-way with a number), so inserts on both sides never take the same key',
      splitWays,
    )
    .action(async (o) => {
      const { cfg } = config(o);
      const { setup } = await import('./setup.js');
      const changes = await setup(cfg, createLogger('cli'));
      for (const c of changes) console.log(c);
      console.log(
        `pipeline ${cfg.pipeline} is set up on ${cfg.clusterNames.join(' and ')}; topics ${cfg.directions.map((d) => d.topic).join(', ')}${changes.length ? '' : '; publications already matched the selection'}`,
      );
      if (changes.some((c) => / table .* (added|removed)/.test(c)))
        console.log('restart capture and apply of this pipeline so that they read the new selection');
      if (o.splitSequences !== undefined) await printSplit(cfg, o.splitSequences);
    });

  withConfig(
    p.command('sync').description('initial sync of the forward direction: schema, then full data in key ranges read in parallel (resumable), before streaming'),
  )
    .option('--chunk-rows <n>', 'rows per range (one Kafka transaction each, the unit of resume)', count, 100000)
    .option('--workers <n>', 'parallel readers (default: sync.workers of the config)', count)
    .addOption(
      new Option(
        '--events <kind>',
        'what goes into the topic: snapshot chunk records (apply loads them with COPY) or one op=r event per row (default: sync.events of the config)',
      ).choices(['chunks', 'rows']),
    )
    .option('--max-rows-per-second <n>', 'throttle: rows per second', rate)
    .option('--max-mb-per-second <n>', 'throttle: megabytes of row text per second', rate)
    .addOption(new Option('--existing-tables <mode>', 'destination tables that already exist').choices(['error', 'ignore']).default('error'))
    .option('--no-schema', 'skip schema sync (tables already exist on the destination)')
    .option(
      '--split-sequences [ways]',
      'after the data, split the sequences behind columns of the selected tables (odd/even; N-way with a number), as setup --split-sequences',
      splitWays,
    )
    .action(async (o) => {
      const { cfg } = config(o);
      const { initialSync, formatProgress } = await import('./initial-sync.js');
      const tty = process.stdout.isTTY;
      let lastPrint = 0;
      const report = await initialSync(cfg, createLogger('cli', 'warn'), {
        chunkRows: o.chunkRows,
        workers: o.workers,
        events: o.events,
        maxRowsPerSecond: o.maxRowsPerSecond,
        maxMegabytesPerSecond: o.maxMbPerSecond,
        existingTables: o.existingTables,
        schema: o.schema,
        onProgress: (pr) => {
          if (!pr.done && Date.now() - lastPrint < (tty ? 200 : 5000)) return;
          lastPrint = Date.now();
          process.stdout.write(tty && !pr.done ? `\r\x1b[K${formatProgress(pr)}` : `${tty ? '\r\x1b[K' : ''}${formatProgress(pr)}\n`);
        },
      });
      const mb = report.bytes / 1024 / 1024;
      console.log(
        `initial sync ${report.resumed ? '(resumed) ' : ''}done: ${report.rows} rows, ${mb.toFixed(1)} MB in ${report.seconds.toFixed(1)} s ` +
          `(${Math.round(report.rows / Math.max(report.seconds, 0.001))} rows/s, ${(mb / Math.max(report.seconds, 0.001)).toFixed(1)} MB/s); streaming starts at ${report.consistentLsn}. Now start the services (pgbridge run).`,
      );
      const sr = report.schema;
      if (sr) {
        if (sr.extensionsCreated.length)
          console.log(
            `schema: extensions created on ${cfg.directions[0].to}: ${sr.extensionsCreated.join(', ')}${sr.schemasCreated.length ? ` (schemas created for them: ${sr.schemasCreated.join(', ')})` : ''}`,
          );
        if (sr.extensionsPresent.length) console.log(`schema: extensions already on ${cfg.directions[0].to}: ${sr.extensionsPresent.join(', ')}`);
        if (sr.viewsLeftOut.length) console.log(`schema: views left out (they read tables the selection leaves out): ${sr.viewsLeftOut.join(', ')}`);
      }
      if (o.splitSequences !== undefined) await printSplit(cfg, o.splitSequences);
    });

  withConfig(p.command('resync').description('re-read one table from a source while both directions run, through the normal apply path'))
    .requiredOption('--table <schema.table>', 'table to re-read')
    .option('--from <cluster>', "source cluster (default: the forward direction's source)")
    .option('--chunk-rows <n>', 'rows per chunk (one pair of watermarks each)', count, 1000)
    .option('--where <sql>', 'only rows matching this condition (SQL on the table, read on the source)')
    .action(async (o) => {
      const { cfg } = config(o);
      const { resyncTable } = await import('./initial-sync.js');
      const r = await resyncTable(cfg, o.table, createLogger('cli', 'warn'), {
        from: o.from,
        where: o.where,
        chunkRows: o.chunkRows,
        onProgress: (n) => process.stdout.isTTY && process.stdout.write(`\r\x1b[K${o.table}: ${n} rows`),
      });
      if (process.stdout.isTTY) process.stdout.write('\r\x1b[K');
      console.log(
        `resync of ${r.table} from ${r.from}: ${r.rows} rows in ${r.chunks} chunk(s) written to the WAL in ${r.seconds.toFixed(1)} s; capture publishes them in order, apply writes them (pgbridge status, pgbridge barrier)`,
      );
    });

  withConfig(
    p
      .command('replay')
      .description("move a stopped direction's apply back in its topic (earliest, an offset or a time): the next apply start re-applies from there"),
  )
    .requiredOption('--direction <from-to>', 'direction, e.g. a-b')
    .option('--from <where>', 'earliest, an offset of the topic, or an ISO 8601 time with its zone (2026-11-30T07:00:00Z)')
    .option('--tables <list>', 'only these tables (schema.table,…); the rest of the range moves the position without writing')
    .option('--dry-run', 'print what would be re-applied (offsets, transactions, rows per table, times) and change nothing')
    .option('--cancel', 'end a replay under way (one stopped on a conflict, say): apply goes on from where it was before the replay')
    .option(
      '--rebuild',
      'build an empty destination from the topic alone (with --from earliest): schema from the source, then the initial sync records and the stream',
    )
    .action(async (o) => {
      const { cfg } = config(o);
      const { replay, parseReplayFrom, formatReplayPlan, cancelReplay } = await import('./replay.js');
      if (o.cancel) {
        const r = await cancelReplay(cfg, o.direction, createLogger('cli', 'warn'));
        console.log(
          r ? `replay ${r.id} of ${o.direction} cancelled: apply goes on from offset ${r.next}` : `no replay of ${o.direction} under way: nothing changed`,
        );
        return;
      }
      if (o.from === undefined) throw new PgBridgeError('CONFIG_INVALID', 'replay needs --from earliest|<offset>|<ISO time> (or --cancel)');
      if (o.rebuild) {
        if (o.from !== 'earliest' || o.tables !== undefined)
          throw new PgBridgeError('CONFIG_INVALID', '--rebuild reads the whole topic: use it with --from earliest and without --tables');
        const { rebuild, formatRebuildPlan } = await import('./rebuild.js');
        console.log(formatRebuildPlan(await rebuild(cfg, o.direction, { dryRun: !!o.dryRun }, createLogger('cli', 'warn'))));
        return;
      }
      const { parseTableList } = await import('../apply/replay-range.js');
      let tables: string[] | undefined;
      try {
        tables = o.tables === undefined ? undefined : parseTableList(o.tables);
      } catch (err) {
        throw new PgBridgeError('CONFIG_INVALID', `--tables: ${errorMessage(err)}`);
      }
      const plan = await replay(cfg, o.direction, { from: parseReplayFrom(o.from), tables, dryRun: !!o.dryRun }, createLogger('cli', 'warn'));
      console.log(formatReplayPlan(plan));
    });

  withConfig(p.command('capture').description('run the capture service of one cluster'))
    .requiredOption('--cluster <name>', 'cluster to capture')
    .option('--metrics-port <port>', 'port of /healthz, /readyz, /metrics', port)
    .action(async (o) => {
      const { main } = await import('../capture/main.js');
      process.exitCode = await main([
        '--config',
        config(o).file,
        '--cluster',
        o.cluster,
        ...(o.metricsPort !== undefined ? ['--metrics-port', String(o.metricsPort)] : []),
      ]);
    });

  withConfig(p.command('apply').description('run the apply service of one direction'))
    .requiredOption('--direction <from-to>', 'direction, e.g. a-b')
    .option('--metrics-port <port>', 'port of /healthz, /readyz, /metrics', port)
    .action(async (o) => {
      const { main } = await import('../apply/main.js');
      process.exitCode = await main([
        '--config',
        config(o).file,
        '--direction',
        o.direction,
        ...(o.metricsPort !== undefined ? ['--metrics-port', String(o.metricsPort)] : []),
      ]);
    });

  withConfig(p.command('run').description('run all four services of the pipeline on this machine, with a live status line')).action(async (o) => {
    const { file, cfg } = config(o);
    const { runPipeline } = await import('./run.js');
    process.exitCode = await runPipeline(file, cfg);
  });

  withConfig(p.command('status').description('state, lag, WAL retained, conflicts per direction'))
    .option('--json', 'machine-readable output')
    .action(async (o) => {
      const { cfg } = config(o);
      const { status, formatStatus } = await import('./status.js');
      const rows = await status(cfg);
      console.log(o.json ? JSON.stringify(rows, null, 2) : formatStatus(rows));
      process.exitCode = rows.some((r) => r.errors.length) ? 1 : 0;
    });

  withConfig(p.command('barrier').description('wait until everything committed on both clusters so far has been applied on the other'))
    .option('--timeout <seconds>', 'give up after this long', numberOption('number', 1), 120)
    .action(async (o) => {
      const { cfg } = config(o);
      const { drainBarrier } = await import('./barrier.js');
      const id = await drainBarrier(cfg, o.timeout * 1000);
      console.log(`drained: barrier ${id} applied in ${cfg.directions.map((d) => d.id).join(' and ')}`);
    });

  withConfig(p.command('throttle').description('show the incremental throttle of each direction, or change one while apply runs (read again within 2 s)'))
    .option('--direction <id>', 'the direction to change (a-b)')
    .option('--rows-per-second <n>', 'rows per second apply may read', rate)
    .option('--mb-per-second <n>', 'megabytes of messages per second apply may read', rate)
    .option('--clear', "remove the throttle set here: the pipeline file's apply.throttle applies again")
    .action(async (o) => {
      const { cfg } = config(o);
      const { formatThrottles, setThrottle, throttles } = await import('./throttle.js');
      const change = o.clear || o.rowsPerSecond !== undefined || o.mbPerSecond !== undefined;
      if (change) {
        if (!o.direction) {
          console.error('pgbridge: --direction is needed to change a throttle (a-b or b-a)');
          process.exitCode = 2;
          return;
        }
        await setThrottle(cfg, o.direction, o.clear ? null : { rowsPerSecond: o.rowsPerSecond, megabytesPerSecond: o.mbPerSecond });
      }
      console.log(formatThrottles(await throttles(cfg)));
    });

  withConfig(p.command('verify').description('compare every selected table between the clusters (bucketed checksums); exit 1 when they differ'))
    .option('--buckets <n>', 'buckets per table', numberOption('integer', 1, 1_000_000), 64)
    .option('--table <schema.table...>', 'only these tables')
    .action(async (o) => {
      const { cfg } = config(o);
      const { verify, formatVerifyReport } = await import('./verify.js');
      const report = await verify(cfg, { buckets: o.buckets, tables: o.table });
      console.log(formatVerifyReport(report));
      process.exitCode = report.equal ? 0 : 1;
    });

  withConfig(p.command('grants').description('print the SQL that creates least-privilege capture and apply roles on each cluster (run it after setup)'))
    .option('--cluster <name>', 'only this cluster')
    .action(async (o) => {
      const { cfg } = config(o);
      const { grants } = await import('./grants.js');
      for (const g of await grants(cfg, o.cluster)) process.stdout.write(g.script);
    });

  withConfig(p.command('release').description('drop slots, publications, origins and the helper schema on both clusters (safe to run twice)'))
    .option('--topics', 'also delete the Kafka topics')
    .action(async (o) => {
      const { cfg } = config(o);
      const { release } = await import('./setup.js');
      const reports = await release(cfg, createLogger('cli'), { topics: !!o.topics });
      for (const r of reports) console.log(`${r.cluster}: ${r.dropped.length ? `dropped ${r.dropped.join(', ')}` : 'nothing to drop'}`);
    });

  return p;
}

export async function cli(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'commander.helpDisplayed' || code === 'commander.version' || code === 'commander.help') return 0;
    if (typeof code === 'string' && code.startsWith('commander.')) return 2;
    console.error(`pgbridge: ${errorMessage(err)}`);
    return 1;
  }
}

if (isMainModule(import.meta.url)) {
  cli(process.argv.slice(2)).then((code) => process.exit(code));
}
