/**
 * The scenarios. Each pgbridge figure comes with its PostgreSQL-native counterpart measured
 * in the same run on the same clusters, one after the other, so a ratio stays meaningful on
 * a busy shared machine where absolute numbers do not.
 */
import { spawn } from 'node:child_process';
import { since, uniqueId, withBoth, db, endpoint, scalar, type Db, type Side } from './env.js';
import { percentile, ratio, waitForRows, type Expectation } from './measure.js';
import { awaitLauncher, createLink, dropLink, enableLinks, type NativeLink } from './native.js';
import { createPipeline, releasePipeline, startServices, startSync, watchPublished, benchLog, type BridgePipeline, type Services } from './pgbridge.js';
import {
  arrivalTimes,
  createLatencyTable,
  createThroughputTables,
  dropSchema,
  qname,
  rowsPerTransaction,
  sourceCommitTimes,
  writeBacklog,
  writePaced,
  writeWarmupRow,
  type Shape,
} from './workload.js';

export type Engine = 'pgbridge' | 'native';

export interface Failed {
  readonly error: string;
}

export interface Drain {
  readonly seconds: number;
  readonly firstRowSec: number;
  readonly rowsPerSec: number;
  /**
   * Steady state: rows after the first ÷ seconds from the first row visible to the last
   * (start-up left out). NaN when they became visible together (one source transaction
   * commits all its rows at once), so there is no steady phase to measure.
   */
  readonly steadyRowsPerSec: number;
  /** pgbridge only: seconds until the topic(s) held the whole backlog (about when capture was done). */
  readonly publishedSec?: number | null;
  /** pgbridge only: peak RSS (VmHWM) of the capture and apply processes, MiB (max over both sides in two-way). */
  readonly captureMib?: number;
  readonly applyMib?: number;
}

export interface ThroughputResult {
  readonly scenario: 'one-way' | 'two-way' | 'big-transaction';
  readonly shape: Shape;
  /** Rows written per source cluster. */
  readonly rowsPerSide: number;
  readonly totalRows: number;
  readonly pgbridge: Drain | Failed;
  readonly native: Drain | Failed;
  /** pgbridge rows/s ÷ native rows/s, start-up included. */
  readonly ratio: number;
  /** The same for the steady state (first row visible → last row visible). */
  readonly steadyRatio: number;
}

export interface Percentiles {
  readonly p50: number;
  readonly p95: number;
  readonly p99: number;
  readonly max: number;
  /** Source commit rate the writer reached (rows/s). */
  readonly achievedRate: number;
  readonly rows: number;
  /**
   * Whether the destination kept up: the median latency of the last quarter of the rows (in
   * commit order) is at most twice that of the first quarter plus 100 ms. A pipeline that
   * falls behind shows a latency that grows with time.
   */
  readonly keptUp: boolean;
  /** p50 latency of the first and of the last quarter of the rows, ms. */
  readonly firstQuarterP50: number;
  readonly lastQuarterP50: number;
  readonly captureMib?: number;
  readonly applyMib?: number;
}

export interface LatencyResult {
  readonly rate: number;
  readonly seconds: number;
  readonly pgbridge: Percentiles | Failed;
  readonly native: Percentiles | Failed;
  /** pgbridge ÷ native, per percentile. */
  readonly ratio: { readonly p50: number; readonly p95: number; readonly p99: number };
}

export interface CopyRun {
  readonly method: string;
  readonly seconds?: number;
  readonly rowsPerSec?: number;
  /** rows/s ÷ rows/s of pg_dump | psql. */
  readonly ratio?: number;
  /** rows/s ÷ rows/s of the COPY TO STDOUT | COPY FROM STDIN pipe. */
  readonly ratioToCopy?: number;
  /** pgbridge only: peak RSS (VmHWM) of the sync process and of apply, MiB. */
  readonly syncMib?: number;
  readonly applyMib?: number;
  readonly note?: string;
}

export interface FullSyncResult {
  readonly rows: number;
  readonly runs: readonly CopyRun[];
  /** pgbridge's full sync (snapshot chunks, the default) ÷ the COPY-to-COPY pipe, same run. */
  readonly ratioToCopy: number | null;
}

export function isFailed<T extends object>(x: T | Failed): x is Failed {
  return 'error' in x;
}

function other(s: Side): Side {
  return s === 'a' ? 'b' : 'a';
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Runs `fn`; a failure becomes a reported result instead of ending the whole benchmark. */
async function attempt<T>(what: string, fn: () => Promise<T>): Promise<T | Failed> {
  try {
    return await fn();
  } catch (err) {
    process.stderr.write(`bench: ${what} failed: ${errorText(err)}\n`);
    return { error: errorText(err).split('\n')[0]! };
  }
}

/** Timeout for a drain: generous (a slow run is a result, not an error), bounded. */
function drainTimeoutSec(totalRows: number): number {
  return 120 + totalRows / 500;
}

/**
 * Backlog drain. Tables t_a (written on a) and, two-way, t_b (written on b). The pipeline or
 * subscriptions exist with their slots before the backlog is written; the clock starts when
 * the services are spawned (pgbridge) or the subscriptions enabled (native) and stops when
 * the last row is visible on its destination.
 */
export async function drain(engine: Engine, n: number, shape: Shape, writers: readonly Side[]): Promise<Drain> {
  const id = uniqueId();
  const schema = `bench_${id}`;
  const tables = writers.map((s) => `t_${s}`);
  const perTxn = rowsPerTransaction(shape, n);
  let pipeline: BridgePipeline | null = null;
  let services: Services | null = null;
  const links: NativeLink[] = [];
  return withBoth(async (a, b) => {
    const conn = { a, b } as Record<Side, Db>;
    try {
      for (const c of [a, b]) await createThroughputTables(c, schema, tables);
      if (engine === 'pgbridge') pipeline = await createPipeline(id, schema);
      else for (const s of writers) links.push(await createLink(id, s, schema, [`t_${s}`]));
      // Two-way: both backlogs are written at the same time, each on its own connection.
      await Promise.all(
        writers.map(async (s) => {
          const w = await db(s, 'pgbridge-bench-writer');
          try {
            await writeBacklog(w, schema, `t_${s}`, n, perTxn);
          } finally {
            await w.end();
          }
        }),
      );
      const exp: Expectation[] = writers.map((s) => ({ dest: conn[other(s)], schema, table: `t_${s}`, n }));
      if (links.length) await awaitLauncher(links);
      const t0 = performance.now();
      const watch = pipeline ? watchPublished(pipeline, writers, n, t0) : null;
      if (pipeline) services = startServices(pipeline, { captures: [...writers], applies: writers.map((s) => `${s}-${other(s)}` as const) });
      else await enableLinks(links);
      const svc = services as Services | null;
      const arrival = await waitForRows(t0, exp, drainTimeoutSec(n * writers.length), () => svc?.check()).finally(() => watch?.stop());
      const total = n * writers.length;
      const steadySec = arrival.lastSec - arrival.firstSec;
      const out: Drain = {
        seconds: arrival.lastSec,
        firstRowSec: arrival.firstSec,
        rowsPerSec: total / arrival.lastSec,
        steadyRowsPerSec: steadySec >= 0.1 ? (total - writers.length) / steadySec : NaN,
      };
      if (!svc) return out;
      svc.sample();
      return { ...out, publishedSec: await watch!.stop(), captureMib: svc.peakMib('capture'), applyMib: svc.peakMib('apply') };
    } finally {
      await cleanup(services, pipeline, links, [a, b], schema);
    }
  });
}

async function cleanup(
  services: Services | null,
  pipeline: BridgePipeline | null,
  links: readonly NativeLink[],
  conns: readonly Db[],
  schema: string,
): Promise<void> {
  await services?.stop().catch(() => undefined);
  if (pipeline) await releasePipeline(pipeline).catch((err) => process.stderr.write(`bench: cleanup of ${pipeline!.cfg.pipeline} failed: ${errorText(err)}\n`));
  for (const l of links) await dropLink(l).catch((err) => process.stderr.write(`bench: dropping ${l.name} failed: ${errorText(err)}\n`));
  for (const c of conns) await dropSchema(c, schema).catch(() => undefined);
}

export async function throughput(scenario: ThroughputResult['scenario'], n: number, shape: Shape, writers: readonly Side[]): Promise<ThroughputResult> {
  const label = `${scenario} ${shape} ${n}`;
  const pgbridge = await attempt(`pgbridge ${label}`, () => drain('pgbridge', n, shape, writers));
  const native = await attempt(`native ${label}`, () => drain('native', n, shape, writers));
  const ok = !isFailed(pgbridge) && !isFailed(native);
  const r = ok ? ratio(pgbridge.rowsPerSec, native.rowsPerSec) : NaN;
  const steady = ok ? ratio(pgbridge.steadyRowsPerSec, native.steadyRowsPerSec) : NaN;
  return { scenario, shape, rowsPerSide: n, totalRows: n * writers.length, pgbridge, native, ratio: r, steadyRatio: steady };
}

/**
 * Latency at a fixed rate of single-row transactions from a to b, with the pipeline already
 * running (a warm-up row has arrived). Per row: arrival (destination trigger clock) minus the
 * row's own source commit time (pg_xact_commit_timestamp on a). Both clusters use this
 * machine's clock.
 */
export async function latencyRun(engine: Engine, rate: number, seconds: number): Promise<Percentiles> {
  const id = uniqueId();
  const schema = `bench_${id}`;
  const n = Math.round(rate * seconds);
  let pipeline: BridgePipeline | null = null;
  let services: Services | null = null;
  const links: NativeLink[] = [];
  return withBoth(async (a, b) => {
    try {
      await createLatencyTable(a, schema, false);
      await createLatencyTable(b, schema, true);
      if (engine === 'pgbridge') {
        pipeline = await createPipeline(id, schema);
        services = startServices(pipeline, { captures: ['a'], applies: ['a-b'] });
      } else {
        links.push(await createLink(id, 'a', schema, ['lat']));
        await enableLinks(links);
      }
      const svc = services as Services | null;
      await writeWarmupRow(a, schema);
      const t0 = performance.now();
      for (;;) {
        svc?.check();
        if (await scalar<boolean>(b, `SELECT EXISTS (SELECT 1 FROM ${qname(schema, 'lat')} WHERE id = 0)`)) break;
        if (since(t0) > 120) throw new Error('the warm-up row did not arrive within 120 s');
        await new Promise((r) => setTimeout(r, 50));
      }
      const w = await db('a', 'pgbridge-bench-paced');
      try {
        await writePaced(w, schema, n, rate);
      } finally {
        await w.end();
      }
      await waitForRows(performance.now(), [{ dest: b, schema, table: 'lat', n, count: n + 1 }], 120, () => svc?.check());
      const commits = await sourceCommitTimes(a, schema);
      const arrivals = await arrivalTimes(b, schema);
      const inOrder: number[] = [];
      for (const [rid, c] of [...commits].sort((x, y) => x[1] - y[1])) {
        const at = arrivals.get(rid);
        if (at === undefined) throw new Error(`row ${rid} has no arrival stamp (is the ALWAYS trigger firing?)`);
        inOrder.push(at - c);
      }
      const q = Math.max(1, Math.floor(inOrder.length / 4));
      const p50Of = (xs: number[]): number =>
        percentile(
          xs.sort((x, y) => x - y),
          50,
        );
      const firstQuarterP50 = p50Of(inOrder.slice(0, q));
      const lastQuarterP50 = p50Of(inOrder.slice(-q));
      const lat = [...inOrder].sort((x, y) => x - y);
      const times = [...commits.values()];
      // A loop, not Math.max(...times): 300,000 arguments overflow the stack (5,000 rows/s for 60 s).
      let lo = Infinity;
      let hi = -Infinity;
      for (const t of times) {
        if (t < lo) lo = t;
        if (t > hi) hi = t;
      }
      const span = (hi - lo) / 1000;
      const out: Percentiles = {
        p50: percentile(lat, 50),
        p95: percentile(lat, 95),
        p99: percentile(lat, 99),
        max: lat[lat.length - 1] ?? NaN,
        achievedRate: span > 0 ? (n - 1) / span : NaN,
        rows: n,
        keptUp: lastQuarterP50 <= 2 * firstQuarterP50 + 100,
        firstQuarterP50,
        lastQuarterP50,
      };
      if (!svc) return out;
      svc.sample();
      return { ...out, captureMib: svc.peakMib('capture'), applyMib: svc.peakMib('apply') };
    } finally {
      await cleanup(services, pipeline, links, [a, b], schema);
    }
  });
}

export async function latency(rate: number, seconds: number): Promise<LatencyResult> {
  const pgbridge = await attempt(`pgbridge latency ${rate}/s`, () => latencyRun('pgbridge', rate, seconds));
  const native = await attempt(`native latency ${rate}/s`, () => latencyRun('native', rate, seconds));
  const ok = !isFailed(pgbridge) && !isFailed(native);
  const r = (k: 'p50' | 'p95' | 'p99'): number => (ok ? ratio((pgbridge as Percentiles)[k], (native as Percentiles)[k]) : NaN);
  return { rate, seconds, pgbridge, native, ratio: { p50: r('p50'), p95: r('p95'), p99: r('p99') } };
}

function shell(cmd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-o', 'pipefail', '-c', cmd], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`exit ${code}: ${err.trim().split('\n').slice(-3).join(' | ')}`))));
  });
}

function libpqArgs(s: Side): string {
  const ep = endpoint(s);
  return `-h ${ep.host} -p ${ep.port} -U ${ep.user} -d ${ep.database}`;
}

/**
 * Scenario 5: a full copy of one n-row table from a to b: PostgreSQL's own tools, and
 * pgbridge's initial sync (schema, rows through Kafka as op=r events, apply loading them)
 * timed until the destination holds every row.
 */
export async function fullSync(n: number): Promise<FullSyncResult> {
  const id = uniqueId();
  const schema = `bench_${id}`;
  const runs: CopyRun[] = [];
  await withBoth(async (a, b) => {
    const count = async (): Promise<number> => Number(await scalar<string>(b, `SELECT count(*) FROM ${qname(schema, 't_a')}`));
    try {
      await createThroughputTables(a, schema, ['t_a']);
      await a.query(
        `INSERT INTO ${qname(schema, 't_a')} (id, payload, amount) SELECT g, 'payload ' || g || ' ' || md5(g::text), (g % 100000) / 100.0 FROM generate_series(1, $1::bigint) g`,
        [n],
      );
      await a.query(`VACUUM ANALYZE ${qname(schema, 't_a')}`);
      const timed = async (method: string, cmd: string): Promise<void> => {
        const t0 = performance.now();
        try {
          await shell(cmd);
          const s = since(t0);
          const got = await count();
          if (got !== n) throw new Error(`${got} rows arrived, ${n} expected`);
          runs.push({ method, seconds: s, rowsPerSec: n / s });
        } catch (err) {
          process.stderr.write(`bench: ${method} failed: ${errorText(err)}\n`);
          runs.push({ method, note: `failed: ${errorText(err).split('\n')[0]}` });
        }
      };
      // pg_dump | psql: table definition, data by COPY, then the primary key index.
      await b.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE; CREATE SCHEMA "${schema}"`);
      await timed(
        'pg_dump -t | psql',
        `pg_dump ${libpqArgs('a')} --no-owner --no-privileges -t '${qname(schema, 't_a')}' | psql -X -q -v ON_ERROR_STOP=1 ${libpqArgs('b')}`,
      );
      // COPY TO STDOUT | COPY FROM STDIN into the pre-created table (index maintained while loading).
      await createThroughputTables(b, schema, ['t_a']);
      await timed(
        'COPY TO STDOUT | COPY FROM STDIN',
        `psql -X -q -v ON_ERROR_STOP=1 ${libpqArgs('a')} -c 'COPY ${qname(schema, 't_a')} TO STDOUT' | psql -X -q -v ON_ERROR_STOP=1 ${libpqArgs('b')} -c 'COPY ${qname(schema, 't_a')} FROM STDIN'`,
      );
      for (const events of syncEventModes()) {
        if (events === 'rows' && n > 1_000_000) continue; // one op=r event per row: minutes for millions of rows
        await dropSchema(b, schema);
        runs.push(await pgbridgeFullSync(id, schema, n, count, events));
      }
    } finally {
      await dropSchema(a, schema).catch(() => undefined);
      await dropSchema(b, schema).catch(() => undefined);
    }
  });
  const base = runs.find((r) => r.method.startsWith('pg_dump'))?.rowsPerSec;
  const copy = runs.find((r) => r.method.startsWith('COPY'))?.rowsPerSec;
  const withRatio = runs.map((r) =>
    r.rowsPerSec !== undefined ? { ...r, ...(base ? { ratio: r.rowsPerSec / base } : {}), ...(copy ? { ratioToCopy: r.rowsPerSec / copy } : {}) } : r,
  );
  return { rows: n, runs: withRatio, ratioToCopy: withRatio.find((r) => r.method.startsWith('pgbridge') && r.method.includes('chunks'))?.ratioToCopy ?? null };
}

/**
 * `pgbridge sync` (schema, then the data into Kafka) as its own process, with apply a→b
 * started as soon as the sync has set the pipeline up, loading while the sync reads; timed
 * until b holds all n rows.
 */
async function pgbridgeFullSync(id: string, schema: string, n: number, count: () => Promise<number>, events: 'chunks' | 'rows'): Promise<CopyRun> {
  const method = `pgbridge sync --events ${events} (via Kafka)`;
  // No setup here: the sync makes the schema on b first, then sets the pipeline up.
  const p = await createPipeline(`fs_${events[0]}${id}`, schema, { setup: false });
  const cfg = p.cfg;
  let sync: Services | null = null;
  let services: Services | null = null;
  const a = await db('a');
  const b = await db('b');
  // A probe of sample keys (every 100th id, index lookups only) every 100 ms, and count(*)
  // only once they are all there: polling count(*) of a growing million-row table would take
  // a good share of the destination's CPU away from the load being measured. Chunks hold at
  // most a few thousand consecutive ids of one range, so every chunk but a range's short
  // tail holds a sample; count(*) settles the rest (and stays the check, as for the pipes).
  const samples = Array.from({ length: Math.ceil(n / 100) }, (_, i) => String(Math.min(n, (i + 1) * 100)));
  let probed = false;
  const arrived = async (dest: Db): Promise<boolean> => {
    if (!probed) {
      const r = await scalar<string>(dest, `SELECT count(*) FROM ${qname(schema, 't_a')} WHERE id = ANY($1::bigint[])`, [samples]);
      if (Number(r) < samples.length) return false;
      probed = true;
    }
    return (await count()) >= n;
  };
  try {
    const t0 = performance.now();
    sync = startSync(p, ['--events', events]);
    let synced: number | null = null;
    for (;;) {
      sync.sample();
      if (sync.list[0]!.child.exitCode !== null || sync.list[0]!.child.signalCode !== null) {
        synced ??= since(t0);
        if (sync.list[0]!.child.exitCode !== 0) sync.check();
      }
      if (
        !services &&
        (await scalar<boolean>(a, 'SELECT EXISTS (SELECT 1 FROM cdc.snapshot_progress WHERE pipeline = $1)', [cfg.pipeline]).catch(() => false))
      ) {
        services = startServices(p, { captures: [], applies: ['a-b'] });
      }
      services?.check();
      if (services && (await arrived(b).catch(() => false))) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const s = since(t0);
    await sync.list[0]!.exited;
    sync.sample();
    synced ??= since(t0);
    const syncMib = Math.round(sync.peakMib('sync'));
    const applyMib = Math.round(services!.peakMib('apply'));
    return {
      method,
      seconds: s,
      rowsPerSec: n / s,
      syncMib,
      applyMib,
      note: `sync done after ${synced.toFixed(2)} s; peak RSS sync ${syncMib} MiB, apply ${applyMib} MiB`,
    };
  } catch (err) {
    process.stderr.write(`bench: ${method} failed: ${errorText(err)}\n`);
    return { method, note: `failed: ${errorText(err).split('\n')[0]}` };
  } finally {
    await a.end().catch(() => undefined);
    await b.end().catch(() => undefined);
    await sync?.stop();
    await services?.stop();
    await releasePipeline(p).catch(() => undefined);
  }
}

/** The sync modes scenario 5 runs: both, or those in PGBRIDGE_BENCH_SYNC_EVENTS (for example `chunks`, for a quick A/B). */
function syncEventModes(): ('chunks' | 'rows')[] {
  const all = ['chunks', 'rows'] as const;
  const only = process.env.PGBRIDGE_BENCH_SYNC_EVENTS?.split(',').map((x) => x.trim());
  return all.filter((m) => !only || only.includes(m));
}
