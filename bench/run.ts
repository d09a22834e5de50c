/**
 * `npm run bench [-- --quick] [--only 1,3] [--out dir]`: runs the scenarios against the local
 * stack, prints a table per scenario and writes bench/results/<date>.json and .svg.
 * docs/benchmarks.md explains each scenario and how to read the ratios.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderChart } from './chart.js';
import { benchDatabase, ensureDatabases, serverVersion } from './env.js';
import { formatReport, type BenchParams, type BenchResults } from './report.js';
import { fullSync, latency, throughput, type FullSyncResult, type LatencyResult, type ThroughputResult } from './scenarios.js';
import type { Shape } from './workload.js';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

const QUICK: BenchParams = {
  mode: 'quick',
  // Backlogs big enough that start-up is a small part of the drain (steady ratio beside the total).
  oneWayRows: { 'single-row': 50_000, '10-row': 50_000, 'one-transaction': 200_000 },
  bigTransactionRows: 200_000,
  latencyRuns: [
    { rate: 1000, seconds: 10 },
    { rate: 5000, seconds: 10 },
  ],
  // The 1M-row table of the issue's target: below that, start-up (pg_dump of the schema,
  // setup, two Node processes, a consumer group join: about 2 s) outweighs the copy.
  fullSyncRows: 1_000_000,
};

const FULL: BenchParams = {
  mode: 'full',
  oneWayRows: { 'single-row': 100_000, '10-row': 100_000, 'one-transaction': 1_000_000 },
  bigTransactionRows: 5_000_000,
  latencyRuns: [
    { rate: 1000, seconds: 30 },
    { rate: 3000, seconds: 30 },
    { rate: 5000, seconds: 60 },
  ],
  // Shows the sync's and apply's peak RSS stay flat with table size.
  fullSyncRows: 5_000_000,
};

const SHAPES: readonly Shape[] = ['single-row', '10-row', 'one-transaction'];

interface Args {
  readonly params: BenchParams;
  readonly only: ReadonlySet<number>;
  readonly out: string;
}

function parseArgs(argv: readonly string[]): Args {
  let quick = false;
  let only = new Set([1, 2, 3, 4, 5]);
  let out = join(repoRoot, 'bench', 'results');
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--quick') quick = true;
    else if (a === '--full') quick = false;
    else if (a === '--only') only = new Set((argv[++i] ?? '').split(',').map(Number));
    else if (a === '--out') out = argv[++i] ?? out;
    else if (a === '--help' || a === '-h') {
      process.stdout.write('usage: npm run bench -- [--quick] [--only 1,2,3,4,5] [--out dir]\n');
      process.exit(0);
    } else {
      process.stderr.write(`unknown argument ${JSON.stringify(a)}; use --quick, --only 1,2,3,4,5 or --out dir\n`);
      process.exit(2);
    }
  }
  if ([...only].some((n) => !(n >= 1 && n <= 5))) {
    process.stderr.write('--only takes scenario numbers 1 to 5, comma-separated\n');
    process.exit(2);
  }
  return { params: quick ? QUICK : FULL, only, out };
}

let interrupted = false;

function say(line: string): void {
  process.stderr.write(`bench: ${line}\n`);
}

async function main(argv: readonly string[]): Promise<number> {
  const { params, only, out } = parseArgs(argv);
  process.on('SIGINT', () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    say('interrupted: finishing the current run and cleaning up (Ctrl-C again to quit at once)');
  });
  const started = performance.now();
  await ensureDatabases();
  const date = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const machine = { cpus: cpus().length, node: process.versions.node, postgres: await serverVersion(), database: benchDatabase, loadAverageAtStart: loadavg() };
  const oneWay: ThroughputResult[] = [];
  const twoWay: ThroughputResult[] = [];
  const lat: LatencyResult[] = [];
  let big: ThroughputResult | null = null;
  let full: FullSyncResult | null = null;

  if (only.has(1)) {
    for (const shape of SHAPES) {
      if (interrupted) break;
      say(`(1) one-way ${shape}, ${params.oneWayRows[shape]} rows`);
      oneWay.push(await throughput('one-way', params.oneWayRows[shape], shape, ['a']));
    }
  }
  if (only.has(2)) {
    for (const shape of SHAPES) {
      if (interrupted) break;
      say(`(2) two-way ${shape}, ${params.oneWayRows[shape]} rows per side`);
      twoWay.push(await throughput('two-way', params.oneWayRows[shape], shape, ['a', 'b']));
    }
  }
  if (only.has(3)) {
    for (const { rate, seconds } of params.latencyRuns) {
      if (interrupted) break;
      say(`(3) latency at ${rate} rows/s for ${seconds} s`);
      lat.push(await latency(rate, seconds));
    }
  }
  if (only.has(4) && !interrupted) {
    say(`(4) one big transaction of ${params.bigTransactionRows} rows`);
    big = await throughput('big-transaction', params.bigTransactionRows, 'one-transaction', ['a']);
  }
  if (only.has(5) && !interrupted) {
    say(`(5) full sync of ${params.fullSyncRows} rows`);
    full = await fullSync(params.fullSyncRows);
  }

  const res: BenchResults = {
    version: 1,
    date,
    mode: params.mode,
    params,
    machine,
    elapsedSeconds: (performance.now() - started) / 1000,
    oneWay,
    twoWay,
    latency: lat,
    bigTransaction: big,
    fullSync: full,
    notes: [
      'Absolute numbers come from a shared, noisy machine; compare ratios (pgbridge ÷ native, same run).',
      'Throughput clocks include start-up: pgbridge from spawning its processes, native from ALTER SUBSCRIPTION … ENABLE.',
      'Latency: arrival is stamped by a BEFORE INSERT trigger (ENABLE ALWAYS) on the destination; source commit is pg_xact_commit_timestamp of the row on the source.',
      ...(interrupted ? ['Interrupted: some scenarios were not run.'] : []),
    ],
  };
  process.stdout.write(`${formatReport(res)}\n`);
  mkdirSync(out, { recursive: true });
  const stem = join(out, date.replaceAll(':', '-'));
  writeFileSync(`${stem}.json`, `${JSON.stringify(res, null, 2)}\n`);
  writeFileSync(`${stem}.svg`, renderChart(res));
  const show = (f: string): string => (relative(process.cwd(), f).startsWith('..') ? f : relative(process.cwd(), f));
  process.stdout.write(`results: ${show(`${stem}.json`)} and ${show(`${stem}.svg`)}\n`);
  return interrupted ? 130 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
