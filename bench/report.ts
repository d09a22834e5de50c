/**
 * What a run leaves behind: the printed tables and the JSON document (bench/results/<date>.json).
 */
import { isFailed, type Drain, type FullSyncResult, type LatencyResult, type Percentiles, type ThroughputResult } from './scenarios.js';

export interface BenchParams {
  readonly mode: 'quick' | 'full';
  readonly oneWayRows: { readonly 'single-row': number; readonly '10-row': number; readonly 'one-transaction': number };
  readonly bigTransactionRows: number;
  /** Latency runs: single-row transactions at a fixed rate for a time (the last one is the sustained-rate run). */
  readonly latencyRuns: readonly { readonly rate: number; readonly seconds: number }[];
  readonly fullSyncRows: number;
}

export interface BenchResults {
  readonly version: 1;
  readonly date: string;
  readonly mode: BenchParams['mode'];
  readonly params: BenchParams;
  readonly machine: {
    readonly cpus: number;
    readonly node: string;
    readonly postgres: string;
    readonly database: string;
    readonly loadAverageAtStart: readonly number[];
  };
  readonly elapsedSeconds: number;
  readonly oneWay: readonly ThroughputResult[];
  readonly twoWay: readonly ThroughputResult[];
  readonly latency: readonly LatencyResult[];
  readonly bigTransaction: ThroughputResult | null;
  readonly fullSync: FullSyncResult | null;
  readonly notes: readonly string[];
}

function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: readonly string[]): string =>
    r
      .map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!)))
      .join('  ')
      .trimEnd();
  return [line(head), w.map((x) => '-'.repeat(x)).join('  '), ...rows.map(line)].join('\n');
}

function num(x: number | undefined, digits = 0): string {
  if (x === undefined || !Number.isFinite(x)) return '-';
  return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function rate(d: Drain | { error: string }): string {
  return isFailed(d) ? 'FAILED' : num(d.rowsPerSec);
}

function steady(d: Drain | { error: string }): string {
  return isFailed(d) ? '-' : num(d.steadyRowsPerSec);
}

function seconds(d: Drain | { error: string }, k: 'seconds' | 'firstRowSec'): string {
  return isFailed(d) ? '-' : num(d[k], 2);
}

function throughputTable(rows: readonly ThroughputResult[]): string {
  return table(
    [
      'backlog shape',
      'rows',
      'pgbridge rows/s',
      'steady/s',
      'total s',
      '1st row s',
      'in Kafka s',
      'native rows/s',
      'steady/s',
      'total s',
      '1st row s',
      'ratio',
      'steady ratio',
      'capture MiB',
      'apply MiB',
    ],
    rows.map((r) => [
      r.shape,
      num(r.totalRows),
      rate(r.pgbridge),
      steady(r.pgbridge),
      seconds(r.pgbridge, 'seconds'),
      seconds(r.pgbridge, 'firstRowSec'),
      isFailed(r.pgbridge) ? '-' : num(r.pgbridge.publishedSec ?? undefined, 2),
      rate(r.native),
      steady(r.native),
      seconds(r.native, 'seconds'),
      seconds(r.native, 'firstRowSec'),
      num(r.ratio, 2),
      num(r.steadyRatio, 2),
      isFailed(r.pgbridge) ? '-' : num(r.pgbridge.captureMib, 0),
      isFailed(r.pgbridge) ? '-' : num(r.pgbridge.applyMib, 0),
    ]),
  );
}

function failures(rows: readonly ThroughputResult[]): string[] {
  const out: string[] = [];
  for (const r of rows) {
    if (isFailed(r.pgbridge)) out.push(`  pgbridge ${r.scenario} ${r.shape}: ${r.pgbridge.error}`);
    if (isFailed(r.native)) out.push(`  native ${r.scenario} ${r.shape}: ${r.native.error}`);
  }
  return out;
}

function latencyTable(rows: readonly LatencyResult[]): string {
  const body: string[][] = [];
  for (const r of rows) {
    for (const [engine, p] of [
      ['pgbridge', r.pgbridge],
      ['native', r.native],
    ] as const) {
      body.push(
        isFailed(p)
          ? [`${r.rate}`, `${r.seconds}`, engine, 'FAILED', '-', '-', '-', '-', '-', '-', '-']
          : [
              `${r.rate}`,
              `${r.seconds}`,
              engine,
              num(p.achievedRate),
              num(p.p50, 1),
              num(p.p95, 1),
              num(p.p99, 1),
              num(p.max, 1),
              `${p.keptUp ? 'yes' : 'NO'} (${num(p.firstQuarterP50, 0)}→${num(p.lastQuarterP50, 0)})`,
              num(p.captureMib),
              num(p.applyMib),
            ],
      );
    }
    body.push([`${r.rate}`, `${r.seconds}`, 'ratio', '', num(r.ratio.p50, 2), num(r.ratio.p95, 2), num(r.ratio.p99, 2), '', '', '', '']);
  }
  return table(
    ['rate/s', 's', 'engine', 'achieved/s', 'p50 ms', 'p95 ms', 'p99 ms', 'max ms', 'kept up (p50 ms 1st→last quarter)', 'capture MiB', 'apply MiB'],
    body,
  );
}

function memoryTable(res: BenchResults): string {
  const body: string[][] = [];
  const add = (what: string, rows: number, d: Drain | Percentiles | { error: string }): void => {
    if (isFailed(d)) body.push([what, num(rows), 'FAILED', 'FAILED']);
    else body.push([what, num(rows), num(d.captureMib), num(d.applyMib)]);
  };
  for (const r of res.oneWay) add(`(1) one-way ${r.shape}`, r.totalRows, r.pgbridge);
  for (const r of res.twoWay) add(`(2) two-way ${r.shape}`, r.totalRows, r.pgbridge);
  for (const r of res.latency) add(`(3) latency ${r.rate}/s`, isFailed(r.pgbridge) ? 0 : r.pgbridge.rows, r.pgbridge);
  if (res.bigTransaction) add('(4) one big transaction', res.bigTransaction.totalRows, res.bigTransaction.pgbridge);
  return table(['run', 'rows', 'capture peak MiB', 'apply peak MiB'], body);
}

function fullSyncTable(f: FullSyncResult): string {
  return table(
    ['method', 'rows', 'seconds', 'rows/s', 'ratio to pg_dump', 'ratio to COPY pipe', 'peak MiB sync / apply'],
    f.runs.map((r) => [
      r.method,
      num(f.rows),
      r.seconds !== undefined ? num(r.seconds, 2) : '-',
      r.rowsPerSec !== undefined ? num(r.rowsPerSec) : (r.note ?? '-'),
      r.ratio !== undefined ? num(r.ratio, 2) : '-',
      r.ratioToCopy !== undefined ? num(r.ratioToCopy, 2) : '-',
      r.syncMib !== undefined ? `${r.syncMib} / ${r.applyMib}` : '-',
    ]),
  );
}

/** The human-readable report, as printed at the end of a run. */
export function formatReport(res: BenchResults): string {
  const out: string[] = [];
  out.push(
    `pgbridge benchmark ${res.date} (${res.mode}; ${res.machine.cpus} CPUs, Node ${res.machine.node}, PostgreSQL ${res.machine.postgres}; load at start ${res.machine.loadAverageAtStart.map((x) => x.toFixed(2)).join(' ')})`,
  );
  out.push('ratio = pgbridge ÷ native PostgreSQL logical replication, measured back to back in this run; >1 is faster (throughput) or slower (latency).');
  out.push('');
  if (res.oneWay.length) {
    out.push('(1) Incremental throughput, backlog drain a → b (clock: services spawned / subscription enabled → last row visible)');
    out.push(throughputTable(res.oneWay), '');
  }
  if (res.twoWay.length) {
    out.push('(2) Two-way throughput: a backlog on each cluster at once (native: two one-way subscriptions on disjoint tables)');
    out.push(throughputTable(res.twoWay), '');
  }
  if (res.latency.length) {
    out.push('(3) Latency, single-row transactions at a fixed rate, source commit → row written on the destination (ms)');
    out.push(latencyTable(res.latency), '');
  }
  if (res.oneWay.length || res.twoWay.length || res.latency.length || res.bigTransaction) {
    out.push('(4) Memory: peak RSS (VmHWM) of the pgbridge processes');
    out.push(memoryTable(res));
  }
  if (res.bigTransaction) {
    out.push('');
    out.push('(4b) One big transaction a → b');
    out.push(throughputTable([res.bigTransaction]));
  }
  if (res.fullSync) {
    out.push('');
    out.push('(5) Full sync of one table a → b');
    out.push(fullSyncTable(res.fullSync));
  }
  const failed = failures([...res.oneWay, ...res.twoWay, ...(res.bigTransaction ? [res.bigTransaction] : [])]);
  for (const l of res.latency) {
    if (isFailed(l.pgbridge)) failed.push(`  pgbridge latency ${l.rate}/s: ${l.pgbridge.error}`);
    if (isFailed(l.native)) failed.push(`  native latency ${l.rate}/s: ${l.native.error}`);
  }
  if (failed.length) {
    out.push('');
    out.push('Failures:');
    out.push(...failed);
  }
  out.push('');
  out.push(`elapsed ${num(res.elapsedSeconds, 0)} s`);
  return out.join('\n');
}
