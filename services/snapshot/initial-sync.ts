/**
 * Initial synchronization of the forward direction (DTS: schema sync, then full data, then
 * incremental). The reverse direction is incremental only. `pgbridge sync` only calls this.
 *
 * 1. Schema: pg_dump --schema-only of the selected schemas, restored on the destination.
 * 2. Slot: the forward capture slot is (re)created with an exported snapshot; its consistent
 *    point is where streaming will start, so nothing committed after the snapshot is missed.
 * 3. Plan: every selected table is cut into ranges, by primary key (boundaries from a sample
 *    of the keys) or, without one, by blocks (ctid). Ranges are stored in cdc.snapshot_ranges
 *    on the source before any is read.
 * 4. Data: `sync.workers` workers import the one exported snapshot (SET TRANSACTION SNAPSHOT)
 *    and read ranges of several tables at once with `COPY (SELECT …) TO STDOUT`. A range is
 *    published to the direction topic in one Kafka transaction, as snapshot chunk records
 *    (pgbridge.SnapshotChunk, ≤ ~1 MiB of COPY text each, apply loads them with COPY) or as
 *    op=r row events (`sync.events: rows`), then marked done on the source: a restart reads
 *    only the ranges that were not done, and never a finished one again.
 *
 * A restart after a crash cannot reuse the exported snapshot (it lives as long as the
 * connection that made it). The remaining ranges are then read in a fresh, newer snapshot;
 * the slot still starts at the original consistent point, so streaming replays every change
 * since then over rows that may already hold them. Apply converges because replays are
 * idempotent under every policy but `fail` (insert_exists / update_missing / delete_missing);
 * such replays are recorded in cdc.conflicts. A table without a primary key cannot be resumed
 * by range (its rows have no stable address across snapshots): it is emptied on the
 * destination (a truncate event) and read again.
 */
import { spawn } from 'node:child_process';
import pg from 'pg';
import { fromPgText, kindOfType, type TableDef } from '../../shared/avro.js';
import { slotName, type Direction, type PipelineConfig } from '../../shared/config.js';
import { ddlObjectNames } from '../../shared/ddl.js';
import { PgBridgeError, errorMessage } from '../../shared/errors.js';
import { kafkaClient } from '../../shared/kafka.js';
import type { Logger } from '../../shared/log.js';
import { formatLsn, parseLsn, type Lsn } from '../../shared/lsn.js';
import { clientConfig, connect, libpqEnv, qi, ql, qt } from '../../shared/pg.js';
import { SchemaStore } from '../../shared/registry.js';
import { EventEncoder } from '../capture/avro-encoder.js';
import type { CaptureEvent, ChangeEvent, Row } from '../capture/change-builder.js';
import { KafkaPublisher } from '../capture/kafka-publisher.js';
import { selectedTables, setup, type SelectedTable } from '../cli/setup.js';
import { COPY_TEXT_FORMAT, ChunkEncoder, MAX_CHUNK_BYTES } from './chunk-record.js';
import { classifyExtensions, destinationExtensions, extensionRole, planSchema } from './schema-objects.js';
import { copyOutChunks } from './copy-out.js';
import { parseCopyText } from './copy-text.js';
import { pipelineDef, scoped, tableDef, type ColumnInfo } from './table.js';
import { ClusterNaming } from '../../shared/naming.js';

export interface SyncOptions {
  /** Rows per range: the unit of one Kafka transaction and of resume (default 100,000). */
  readonly chunkRows?: number;
  readonly maxRowsPerSecond?: number;
  readonly maxMegabytesPerSecond?: number;
  /** Destination tables that already exist: stop with an error (default) or keep them and go on. */
  readonly existingTables?: 'error' | 'ignore';
  readonly schema?: boolean;
  /** Parallel readers (default: sync.workers of the config). */
  readonly workers?: number;
  /** What goes into the topic (default: sync.events of the config). */
  readonly events?: 'chunks' | 'rows';
  readonly onProgress?: (p: TableProgress) => void;
}

export interface TableProgress {
  readonly table: string;
  readonly rowsDone: number;
  readonly rowsEstimate: number;
  readonly bytesDone: number;
  readonly rowsPerSecond: number;
  readonly etaSeconds: number | null;
  readonly done: boolean;
}

export interface SyncReport {
  readonly tables: TableProgress[];
  readonly consistentLsn: string;
  readonly seconds: number;
  /** Seconds of the data phase alone (readers started → last range in Kafka): what the throttles apply to. */
  readonly dataSeconds: number;
  readonly rows: number;
  readonly bytes: number;
  readonly resumed: boolean;
  /** What the schema step did; null when it was skipped (--no-schema). */
  readonly schema: SchemaReport | null;
}

const DEFAULT_RANGE_ROWS = 100_000;
/** Rows of one chunk record at most (besides MAX_CHUNK_BYTES): narrow rows make chunks of ~10,000 rows at 960 KiB. */
const CHUNK_ROWS = 50_000;

function pgTool(name: string): string {
  return process.env.PGBRIDGE_PG_BIN ? `${process.env.PGBRIDGE_PG_BIN}/${name}` : name;
}

function runTool(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  input?: NodeJS.ReadableStream,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: [input ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', (err) => reject(new PgBridgeError('INTERNAL', `cannot run ${cmd}: ${err.message} (set PGBRIDGE_PG_BIN to the PostgreSQL bin folder)`)));
    if (input) input.pipe(child.stdin!);
    child.once('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

export interface SchemaReport {
  /** Selected tables the restore created on the destination (schema.table). */
  readonly created: string[];
  /** Selected tables that were there already and kept (`--existing-tables ignore`). */
  readonly skipped: string[];
  /** Extensions the selected objects use that the restore created on the destination. */
  readonly extensionsCreated: string[];
  /** Needed extensions the destination already had. */
  readonly extensionsPresent: string[];
  /** Schemas created on the destination for extensions (not selected schemas themselves). */
  readonly schemasCreated: string[];
  /** Views left out because they read a table the selection leaves out. */
  readonly viewsLeftOut: string[];
}

/**
 * Schema sync: types (enums, domains, composite types), tables (partitioned ones with their
 * partitions, identity and generated columns), keys, defaults, sequences, indexes, views,
 * functions and triggers of the selected schemas, and the extensions they use (schema-objects.ts).
 * Nothing on the destination is dropped or replaced: the dump has no DROP, a selected schema
 * that exists there already is kept (CREATE SCHEMA IF NOT EXISTS), and objects of the dump
 * that exist already stop the restore (`--existing-tables error`) or are skipped (`ignore`).
 * From the direction's source to its destination: the forward one unless told (pgbridge
 * replay --rebuild names its own).
 */
export async function syncSchema(cfg: PipelineConfig, existing: 'error' | 'ignore', log: Logger, fwd: Direction = cfg.directions[0]): Promise<SchemaReport> {
  const src = cfg.clusters[fwd.from]!;
  const dst = cfg.clusters[fwd.to]!;
  const renamed = Object.entries(cfg.selection.tables)
    .filter(([, t]) => t.rename?.[fwd.to] || t.rename?.[fwd.from] || t.renameColumns?.[fwd.to] || t.renameColumns?.[fwd.from])
    .map(([n]) => n);
  if (renamed.length) {
    // pg_dump would create them under the source's names: the destination's tables are made by hand.
    throw new PgBridgeError(
      'PRECHECK',
      `the schema step cannot create tables named differently on ${fwd.to} (selection.tables.<t>.rename / renameColumns: ${renamed.join(', ')}): create the tables on ${fwd.to} yourself and run the sync with --no-schema`,
    );
  }
  const { tables, plan } = await withPg(src, async (c) => {
    const selected = await selectedTables(c, cfg);
    return { tables: selected, plan: await planSchema(c, cfg, selected) };
  });
  const there = await withPg(dst, (c) => selectedTables(c, cfg));
  const present = new Set(there.map((t) => `${t.schema}.${t.table}`));
  const clash = tables.filter((t) => present.has(`${t.schema}.${t.table}`)).map((t) => `${t.schema}.${t.table}`);
  if (clash.length && existing === 'error') {
    throw new PgBridgeError(
      'PRECHECK',
      `destination ${fwd.to} already has ${clash.length} selected table(s): ${clash.slice(0, 10).join(', ')}${clash.length > 10 ? ', …' : ''}. Use --existing-tables ignore to keep them and go on, or drop them.`,
    );
  }
  // Extensions: every one the selected objects use must be on the destination, in the same
  // schema, or creatable there; nothing is restored otherwise.
  const { ext, schemasCreated, ddlTrigger } = await withPg(dst, async (c) => {
    const state = await destinationExtensions(
      c,
      plan.extensions.map((e) => e.name),
    );
    const ext = classifyExtensions(plan.extensions, state, await extensionRole(c), fwd.to);
    if (ext.problems.length) {
      throw new PgBridgeError('PRECHECK', `schema sync cannot start: ${ext.problems.map((p) => `${p.message} (fix: ${p.fix})`).join('; ')}`);
    }
    // An extension kept in a schema that is not selected: the schema must exist for CREATE EXTENSION … WITH SCHEMA.
    const made: string[] = [];
    for (const s of new Set(ext.create.map((e) => e.schema).filter((x) => !cfg.selection.schemas.includes(x)))) {
      const r = await c.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [s]);
      if (r.rowCount) continue;
      await c.query(`CREATE SCHEMA IF NOT EXISTS ${qi(s)}`);
      made.push(s);
    }
    const n = ddlObjectNames(cfg.pipeline);
    const t = await c.query('SELECT 1 FROM pg_event_trigger WHERE evtname = ANY($1::text[])', [[n.onEnd, n.onDrop]]);
    return { ext, schemasCreated: made, ddlTrigger: (t.rowCount ?? 0) > 0 };
  });
  // Names as exact pg_dump patterns (double-quoted: no wildcard, case kept), and
  // --strict-names: a schema that matches nothing is an error, not an empty dump.
  const args = [
    '--schema-only',
    '--no-owner',
    '--no-privileges',
    '--no-publications',
    '--no-subscriptions',
    '--strict-names',
    ...cfg.selection.schemas.flatMap((s) => ['-n', qi(s)]),
  ];
  // Only extensions the destination lacks: CREATE EXTENSION IF NOT EXISTS and its COMMENT (which needs the owner).
  for (const e of ext.create) args.push('-e', qi(e.name));
  // Tables the selection leaves out, their partitions, sequences and views: not dumped (never dropped on the destination).
  for (const x of plan.exclude) args.push('-T', x);
  if (plan.leftOutViews.length) log.warn({ views: plan.leftOutViews }, 'schema sync leaves out views that read tables the selection leaves out');
  const dump = await runTool(pgTool('pg_dump'), args, libpqEnv(src));
  if (dump.code !== 0) throw new PgBridgeError('INTERNAL', `pg_dump of ${fwd.from} failed: ${dump.stderr.trim()}`);
  // A selected schema that exists on the destination already is kept as it is, with what it holds.
  // The pipeline's DDL trigger must not see the restore: on the forward source it would record
  // it for replication (the other cluster has these objects), on the reverse one warn or refuse.
  // Sessions in session_replication_role = replica fire no event trigger.
  const sql =
    (ddlTrigger ? 'SET session_replication_role = replica;\n' : '') + dump.stdout.replace(/^CREATE SCHEMA ([^;\n]+);$/gm, 'CREATE SCHEMA IF NOT EXISTS $1;');
  const psqlArgs = ['-X', '-q', ...(existing === 'error' ? ['-v', 'ON_ERROR_STOP=1'] : [])];
  const { Readable } = await import('node:stream');
  const restore = await runTool(pgTool('psql'), psqlArgs, libpqEnv(dst), Readable.from([sql]));
  if (restore.code !== 0)
    throw new PgBridgeError('INTERNAL', `restoring the schema on ${fwd.to} failed: ${restore.stderr.trim().split('\n').slice(0, 5).join(' | ')}`);
  const skipped = restore.stderr.split('\n').filter((l) => /already exists/.test(l));
  if (skipped.length) log.warn({ count: skipped.length }, 'schema sync kept objects that already existed on the destination');
  if (ext.create.length) log.info({ extensions: ext.create.map((e) => e.name), cluster: fwd.to }, 'schema sync created extensions');
  return {
    created: tables.map((t) => `${t.schema}.${t.table}`).filter((t) => !present.has(t)),
    skipped: clash,
    extensionsCreated: ext.create.map((e) => e.name),
    extensionsPresent: ext.present.map((e) => e.name),
    schemasCreated,
    viewsLeftOut: plan.leftOutViews,
  };
}

async function withPg<T>(c: PipelineConfig['clusters'][string], fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = await connect(c, 'pgbridge-sync');
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Shared by all workers: waits so that rows/s and MB/s stay at or below their limits. */
export class Throttle {
  private readonly started = Date.now();
  private rows = 0;
  private bytes = 0;
  constructor(
    private readonly maxRows?: number,
    private readonly maxMb?: number,
  ) {}
  async take(rows: number, bytes: number): Promise<void> {
    this.rows += rows;
    this.bytes += bytes;
    const needMs = Math.max(this.maxRows ? (this.rows / this.maxRows) * 1000 : 0, this.maxMb ? (this.bytes / (this.maxMb * 1024 * 1024)) * 1000 : 0);
    const wait = needMs - (Date.now() - this.started);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
}

interface Range {
  readonly no: number;
  /** Exclusive lower bound (primary key as text, or the first block), null for the start. */
  readonly lower: string[] | null;
  /** Inclusive upper bound (primary key), or the block after the range; null for the end. */
  readonly upper: string[] | null;
}

interface TableJob {
  readonly t: SelectedTable;
  readonly name: string;
  readonly def: TableDef;
  /** def under the pipeline's names (rename, renameColumns): what the events and chunks carry. */
  readonly wire: TableDef;
  readonly pk: ColumnInfo[];
  /** The forward direction's row filter (selection.tables.<t>.where), null: every row. */
  readonly where: string | null;
  readonly estimate: number;
  /** Ranges still to read. */
  readonly ranges: Range[];
  remaining: number;
  /** Read entirely in this run's snapshot (not continued from an earlier run). */
  readonly readWhole: boolean;
  rowsDone: number;
  bytesDone: number;
  readonly started: number;
}

/** Full data sync of the forward direction (and the schema first unless told not to). */
export async function initialSync(cfg: PipelineConfig, log: Logger, opts: SyncOptions = {}): Promise<SyncReport> {
  const t0 = Date.now();
  const fwd = cfg.directions[0];
  const src = cfg.clusters[fwd.from]!;
  const rangeRows = Math.max(1, opts.chunkRows ?? DEFAULT_RANGE_ROWS);
  const workers = Math.max(1, opts.workers ?? cfg.sync.workers);
  const events = opts.events ?? cfg.sync.events;
  const schemaReport = opts.schema !== false ? await syncSchema(cfg, opts.existingTables ?? 'error', log) : null;
  await setup(cfg, log);
  const slot = slotName(cfg, fwd.from);
  const control = await connect(src, 'pgbridge-sync');
  let repl: pg.Client | null = null;
  const readers: pg.Client[] = [];
  const publishers: KafkaPublisher[] = [];
  try {
    const progress = await control.query<{ n: string; done: string }>(
      'SELECT count(*)::text AS n, count(*) FILTER (WHERE done)::text AS done FROM cdc.snapshot_progress WHERE pipeline = $1',
      [cfg.pipeline],
    );
    const started = Number(progress.rows[0]!.n) > 0;
    let snapshotName: string;
    let consistent: Lsn;
    let resumeLsn: string | null = null;
    const active = await control.query<{ active: boolean }>('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [slot]);
    if (active.rows[0]?.active) throw new PgBridgeError('PRECHECK', `slot ${slot} is in use: stop capture-${fwd.from} before the initial sync`);
    repl = new pg.Client({ ...clientConfig(src, 'pgbridge-sync-snapshot'), replication: 'database' } as pg.ClientConfig);
    await repl.connect();
    if (!started) {
      // The slot made by setup may already hold changes that capture never read: nothing was
      // published yet, so it is replaced by one whose start is the exported snapshot.
      await control.query('SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1', [slot]);
      const r = await repl.query<{ consistent_point: string; snapshot_name: string }>(`CREATE_REPLICATION_SLOT ${qi(slot)} LOGICAL pgoutput EXPORT_SNAPSHOT`);
      snapshotName = r.rows[0]!.snapshot_name;
      consistent = parseLsn(r.rows[0]!.consistent_point);
      log.info({ slot, lsn: r.rows[0]!.consistent_point, snapshot: snapshotName }, 'slot created with an exported snapshot');
    } else {
      const r = await control.query<{ lsn: string | null }>('SELECT min(consistent_lsn)::text AS lsn FROM cdc.snapshot_progress WHERE pipeline = $1', [
        cfg.pipeline,
      ]);
      consistent = parseLsn(r.rows[0]!.lsn ?? '0/0');
      // A temporary slot gives a fresh snapshot together with its exact position: tables read
      // whole in it get a watermark, and apply skips their streamed changes from before it.
      const t = await repl.query<{ consistent_point: string; snapshot_name: string }>(
        `CREATE_REPLICATION_SLOT ${qi(`${slot}_resume`)} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT`,
      );
      snapshotName = t.rows[0]!.snapshot_name;
      resumeLsn = t.rows[0]!.consistent_point;
      log.warn(
        { done: progress.rows[0]!.done, of: progress.rows[0]!.n },
        'resuming an interrupted initial sync after its last finished range, in a fresh snapshot',
      );
    }
    const snapshotId = `${cfg.pipeline}@${formatLsn(consistent)}`;
    // Every reader imports the same snapshot: together they read one consistent database.
    for (let i = 0; i < workers; i++) {
      const r = await connect(src, `pgbridge-sync-reader-${i}`);
      readers.push(r);
      await r.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      await r.query(`SET TRANSACTION SNAPSHOT ${ql(snapshotName)}`);
    }
    const store = new SchemaStore(cfg.registry);
    const encoder = new EventEncoder(store, fwd.topic, fwd.from, src.database);
    const chunkEncoder = new ChunkEncoder(store, fwd.topic);
    const kafka = kafkaClient(cfg, `sync-${fwd.from}`, log);
    for (let i = 0; i < workers; i++) {
      // One transactional id per worker; connecting fences what the same worker of a killed
      // run left open. A shorter timeout ends transactions of workers a smaller rerun lacks.
      const p = new KafkaPublisher(kafka, `pgbridge-${cfg.pipeline}-snapshot-${fwd.from}-${i}`, fwd.topic, 60_000);
      await p.connect();
      publishers.push(p);
    }
    const snapTs = BigInt(Date.now()) * 1000n;
    const txn = { xid: 0, commitLsn: consistent, commitTimeUs: snapTs, origin: fwd.from };
    const publishOne = async (p: KafkaPublisher, ev: CaptureEvent): Promise<void> => {
      await p.add(await encoder.encode(ev));
      await p.commit();
    };

    // Plan: tables and their ranges, in the snapshot of the first reader.
    const plan = readers[0]!;
    const jobs: TableJob[] = [];
    const reports: TableProgress[] = [];
    const naming = new ClusterNaming(cfg, fwd.from);
    for (const t of await selectedTables(plan, cfg, fwd.from)) {
      // The pipeline's name (what the topic carries); `t` and `def` are the source's names, to read with.
      const name = t.name ?? `${t.schema}.${t.table}`;
      const whole = await tableDef(plan, t);
      const { def, where } = scoped(cfg, fwd.id, whole.def, naming);
      const wire = pipelineDef(def, name, naming);
      const pk = whole.pk;
      const est = await plan.query<{ n: string; pages: string }>(
        "SELECT reltuples::bigint::text AS n, (pg_relation_size(oid) / current_setting('block_size')::int)::text AS pages FROM pg_class WHERE oid = $1::regclass",
        [qt(t.schema, t.table)],
      );
      let estimate = Number(est.rows[0]!.n);
      if (estimate < 0) {
        // Never analyzed (reltuples -1): count, or every such table would be one range.
        const c = await plan.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${qt(t.schema, t.table)}`);
        estimate = Number(c.rows[0]!.n);
      }
      await control.query(
        `INSERT INTO cdc.snapshot_progress (pipeline, table_name, rows_estimate, consistent_lsn) VALUES ($4, $1, $2, $3::pg_lsn) ON CONFLICT (pipeline, table_name) DO NOTHING`,
        [name, estimate, formatLsn(consistent), cfg.pipeline],
      );
      const st = (
        await control.query<{ rows_done: string; bytes_done: string; done: boolean }>(
          'SELECT rows_done::text, bytes_done::text, done FROM cdc.snapshot_progress WHERE table_name = $1 AND pipeline = $2',
          [name, cfg.pipeline],
        )
      ).rows[0]!;
      const job: TableJob = {
        t,
        name,
        def,
        wire,
        pk,
        where,
        estimate,
        ranges: [],
        remaining: 0,
        readWhole: true,
        rowsDone: Number(st.rows_done),
        bytesDone: Number(st.bytes_done),
        started: Date.now(),
      };
      if (st.done) {
        reports.push(tableReport(job, true));
        continue;
      }
      let planned = await storedRanges(control, cfg.pipeline, name);
      if (started && pk.length === 0) {
        // Without a key, rows have no stable place across snapshots: empty the destination
        // table and read it whole again (whatever an earlier run published of it).
        await publishOne(publishers[0]!, {
          kind: 'change',
          table: def,
          relationOid: 0,
          op: 't',
          before: null,
          after: null,
          key: null,
          unchanged: [],
          lsn: consistent,
          snapshot: true,
          txn,
          index: 0,
          last: true,
        });
        await control.query('DELETE FROM cdc.snapshot_ranges WHERE pipeline = $1 AND table_name = $2', [cfg.pipeline, name]);
        await control.query(
          'UPDATE cdc.snapshot_progress SET rows_done = 0, bytes_done = 0, updated_at = clock_timestamp() WHERE pipeline = $1 AND table_name = $2',
          [cfg.pipeline, name],
        );
        job.rowsDone = 0;
        job.bytesDone = 0;
        planned = [];
      }
      if (planned.length === 0) {
        const ranges = pk.length ? await keyRanges(plan, t, pk, estimate, rangeRows) : blockRanges(Number(est.rows[0]!.pages), estimate, rangeRows);
        await control.query(
          `INSERT INTO cdc.snapshot_ranges (pipeline, table_name, range_no, lower_bound, upper_bound)
           SELECT $1, $2, r.no, r.lower, r.upper FROM jsonb_to_recordset($3::jsonb) AS r(no int, lower jsonb, upper jsonb) ON CONFLICT DO NOTHING`,
          [cfg.pipeline, name, JSON.stringify(ranges)],
        );
        planned = await storedRanges(control, cfg.pipeline, name);
      }
      const todo = planned.filter((r) => !r.done);
      (job as { readWhole: boolean }).readWhole = todo.length === planned.length;
      job.ranges.push(...todo);
      job.remaining = todo.length;
      jobs.push(job);
    }

    // Ranges of all tables, interleaved: the workers read several tables at once.
    const queue: { job: TableJob; range: Range }[] = [];
    for (let i = 0; jobs.some((j) => i < j.ranges.length); i++) for (const j of jobs) if (i < j.ranges.length) queue.push({ job: j, range: j.ranges[i]! });
    let totalRows = 0;
    let totalBytes = 0;
    const finishTable = async (job: TableJob, p: KafkaPublisher): Promise<void> => {
      if (resumeLsn && job.readWhole) {
        await publishOne(p, { kind: 'control', control: 'watermark', id: job.name, payload: resumeLsn, lsn: consistent, txn, index: 0, last: true });
      }
      await control.query('UPDATE cdc.snapshot_progress SET done = true, updated_at = clock_timestamp() WHERE table_name = $1 AND pipeline = $2', [
        job.name,
        cfg.pipeline,
      ]);
      const r = tableReport(job, true);
      opts.onProgress?.(r);
      reports.push(r);
    };
    for (const j of jobs) if (j.remaining === 0) await finishTable(j, publishers[0]!);
    let failed: unknown = null;
    const tData = Date.now();
    const throttle = new Throttle(opts.maxRowsPerSecond, opts.maxMegabytesPerSecond);
    const work = async (w: number): Promise<void> => {
      const reader = readers[w]!;
      const publisher = publishers[w]!;
      for (;;) {
        const next = failed === null ? queue.shift() : undefined;
        if (!next) return;
        const { job, range } = next;
        let rows = 0;
        let bytes = 0;
        let seq = 0;
        const sql = `COPY (SELECT ${job.def.columns.map((c) => `x.${qi(c.name)}`).join(', ')} FROM ${qt(job.t.schema, job.t.table)} x WHERE ${rangeWhere(job.pk, range)}${job.where ? ` AND (${job.where})` : ''}) TO STDOUT`;
        const publish = async (data: Buffer, n: number): Promise<void> => {
          if (events === 'rows') {
            const parsed = parseCopyText(data);
            for (const [i, raw] of parsed.entries()) {
              await publisher.add(
                await encoder.encode(snapshotRow(job.wire, typedRow(job.wire, raw), consistent, snapTs, fwd.from, i, i === parsed.length - 1)),
              );
            }
          } else {
            await publisher.add(
              await chunkEncoder.encode(
                {
                  cluster: fwd.from,
                  origin: fwd.from,
                  db: src.database,
                  schema: job.wire.schema,
                  table: job.wire.table,
                  columns: job.def.columns.map((c, i) => ({ name: job.wire.columns[i]!.name, type: c.typeName, key: job.pk.some((k) => k.name === c.name) })),
                  format: COPY_TEXT_FORMAT,
                  rows: BigInt(n),
                  data,
                  snapshot: snapshotId,
                  range: BigInt(range.no),
                  seq: BigInt(seq++),
                  lsn: BigInt(consistent),
                  commitTs: snapTs,
                },
                consistent,
              ),
            );
          }
          rows += n;
          bytes += data.length;
          await throttle.take(n, data.length);
        };
        for await (const c of copyOutChunks(reader, sql, MAX_CHUNK_BYTES, Math.min(CHUNK_ROWS, rangeRows))) await publish(c.data, c.rows);
        await publisher.commit();
        // Recorded only after Kafka committed the range: a restart never skips an unpublished range.
        await control.query(
          'UPDATE cdc.snapshot_ranges SET done = true, rows_done = $4, bytes_done = $5, updated_at = clock_timestamp() WHERE pipeline = $1 AND table_name = $2 AND range_no = $3',
          [cfg.pipeline, job.name, range.no, rows, bytes],
        );
        await control.query(
          'UPDATE cdc.snapshot_progress SET rows_done = rows_done + $3, bytes_done = bytes_done + $4, updated_at = clock_timestamp() WHERE table_name = $1 AND pipeline = $2',
          [job.name, cfg.pipeline, rows, bytes],
        );
        job.rowsDone += rows;
        job.bytesDone += bytes;
        totalRows += rows;
        totalBytes += bytes;
        if (--job.remaining === 0) await finishTable(job, publisher);
        else opts.onProgress?.(tableReport(job, false));
      }
    };
    await Promise.all(
      readers.map((_, w) =>
        work(w).catch((err: unknown) => {
          failed ??= err;
        }),
      ),
    );
    if (failed !== null) throw failed;
    const dataSeconds = (Date.now() - tData) / 1000;
    for (const r of readers) await r.query('COMMIT');
    // Sequences: pg_dump --schema-only does not carry their values.
    await syncSequences(cfg);
    return {
      tables: reports,
      consistentLsn: formatLsn(consistent),
      seconds: (Date.now() - t0) / 1000,
      dataSeconds,
      rows: totalRows,
      bytes: totalBytes,
      resumed: started,
      schema: schemaReport,
    };
  } catch (err) {
    throw err instanceof PgBridgeError ? err : new PgBridgeError('INTERNAL', `initial sync failed: ${errorMessage(err)}`, { cause: err, retriable: true });
  } finally {
    for (const p of publishers) await p.disconnect();
    for (const r of readers) await r.end().catch(() => undefined);
    await repl?.end().catch(() => undefined);
    await control.end().catch(() => undefined);
  }
}

function tableReport(job: TableJob, done: boolean): TableProgress {
  const secs = (Date.now() - job.started) / 1000;
  const rate = secs > 0 ? job.rowsDone / secs : 0;
  return {
    table: job.name,
    rowsDone: job.rowsDone,
    rowsEstimate: Math.max(job.estimate, job.rowsDone),
    bytesDone: job.bytesDone,
    rowsPerSecond: Math.round(rate),
    etaSeconds: done ? 0 : rate > 0 ? Math.max(0, Math.round((job.estimate - job.rowsDone) / rate)) : null,
    done,
  };
}

async function storedRanges(c: pg.Client, pipeline: string, table: string): Promise<(Range & { done: boolean })[]> {
  const r = await c.query<{ no: string; lower: string | null; upper: string | null; done: boolean }>(
    'SELECT range_no::text AS no, lower_bound::text AS lower, upper_bound::text AS upper, done FROM cdc.snapshot_ranges WHERE pipeline = $1 AND table_name = $2 ORDER BY range_no',
    [pipeline, table],
  );
  return r.rows.map((x) => ({
    no: Number(x.no),
    lower: x.lower ? (JSON.parse(x.lower) as string[]) : null,
    upper: x.upper ? (JSON.parse(x.upper) as string[]) : null,
    done: x.done,
  }));
}

/**
 * Primary-key ranges of about rangeRows rows: the boundaries are quantiles of a sample of the
 * keys (TABLESAMPLE SYSTEM reads a few pages, not the table). The first range is open below
 * and the last above, so together they cover every key, including keys inserted later.
 */
async function keyRanges(c: pg.Client, t: SelectedTable, pk: ColumnInfo[], estimate: number, rangeRows: number): Promise<Range[]> {
  const n = Math.ceil(estimate / rangeRows);
  if (n <= 1) return [{ no: 0, lower: null, upper: null }];
  const pct = Math.min(100, (100 * Math.max(n * 20, 2000)) / estimate);
  const keys = pk.map((k) => `x.${qi(k.name)}`).join(', ');
  const r = await c.query({
    text: `SELECT DISTINCT ON (b) ${pk.map((_, i) => `k${i}::text`).join(', ')}
             FROM (SELECT ${pk.map((k, i) => `x.${qi(k.name)} AS k${i}`).join(', ')}, ntile($1) OVER (ORDER BY ${keys}) AS b FROM ${qt(t.schema, t.table)} x TABLESAMPLE SYSTEM ($2)) s
            ORDER BY b, ${pk.map((_, i) => `k${i} DESC`).join(', ')}`,
    values: [n, pct],
    rowMode: 'array',
  });
  const bounds = (r.rows as string[][]).slice(0, -1);
  const ranges: Range[] = [];
  let lower: string[] | null = null;
  for (const b of bounds) {
    ranges.push({ no: ranges.length, lower, upper: b });
    lower = b;
  }
  ranges.push({ no: ranges.length, lower, upper: null });
  return ranges;
}

/** Block (ctid) ranges of about rangeRows rows for a table without a primary key; the last one is open. */
function blockRanges(pages: number, estimate: number, rangeRows: number): Range[] {
  const n = Math.ceil(estimate / rangeRows);
  if (n <= 1 || pages <= 1) return [{ no: 0, lower: null, upper: null }];
  const step = Math.max(1, Math.ceil(pages / n));
  const ranges: Range[] = [];
  for (let b = 0; b < pages; b += step)
    ranges.push({ no: ranges.length, lower: b === 0 ? null : [String(b)], upper: b + step >= pages ? null : [String(b + step)] });
  return ranges;
}

function rangeWhere(pk: ColumnInfo[], r: Range): string {
  if (pk.length === 0) {
    const parts = [r.lower ? `x.ctid >= '(${Number(r.lower[0])},0)'::tid` : null, r.upper ? `x.ctid < '(${Number(r.upper[0])},0)'::tid` : null].filter(Boolean);
    return parts.length ? parts.join(' AND ') : 'true';
  }
  const keys = `(${pk.map((k) => `x.${qi(k.name)}`).join(', ')})`;
  const lit = (b: string[]): string => `(${pk.map((k, i) => `${ql(b[i]!)}::${k.typeName}`).join(', ')})`;
  const parts = [r.lower ? `${keys} > ${lit(r.lower)}` : null, r.upper ? `${keys} <= ${lit(r.upper)}` : null].filter(Boolean);
  return parts.length ? parts.join(' AND ') : 'true';
}

/** A row read by initial sync or resync, as an op=r event. */
function snapshotRow(def: TableDef, after: Row, lsn: Lsn, ts: bigint, origin: string, index: number, last: boolean): ChangeEvent {
  const key: Row | null = def.columns.some((c) => c.key)
    ? Object.fromEntries(def.columns.filter((c) => c.key).map((c) => [c.name, after[c.name] ?? null]))
    : null;
  return {
    kind: 'change',
    table: def,
    relationOid: 0,
    op: 'r',
    before: null,
    after,
    key,
    unchanged: [],
    lsn,
    snapshot: true,
    txn: { xid: 0, commitLsn: lsn, commitTimeUs: ts, origin },
    index,
    last,
  };
}

/** A row read as PostgreSQL text (in column order), typed like capture does. */
function typedRow(def: TableDef, raw: readonly (string | null)[]): Row {
  const after: Row = {};
  def.columns.forEach((c, i) => {
    const v = raw[i];
    after[c.name] = v === null || v === undefined ? null : fromPgText(kindOfType(c.typeOid), v);
  });
  return after;
}

/**
 * Sets each selected schema's sequences on the destination to at least the source's value. A
 * destination sequence whose increment is not 1 (split with --split-sequences) keeps its
 * residue: it is set to the next value of its own progression at or above that, so a split
 * made before the sync still keeps the clusters apart.
 */
async function syncSequences(cfg: PipelineConfig): Promise<void> {
  const fwd = cfg.directions[0];
  const seqs = await withPg(cfg.clusters[fwd.from]!, (c) =>
    c.query<{ s: string; v: string | null }>(
      `SELECT quote_ident(schemaname) || '.' || quote_ident(sequencename) AS s, last_value::text AS v FROM pg_sequences WHERE schemaname = ANY($1)`,
      [cfg.selection.schemas],
    ),
  );
  await withPg(cfg.clusters[fwd.to]!, async (c) => {
    for (const r of seqs.rows) {
      if (r.v === null) continue;
      await (async () => {
        // r.s comes quoted from quote_ident on the source.
        const d = (
          await c.query<{ last: string; called: boolean | string; inc: string }>(
            `SELECT last_value::text AS last, is_called AS called, (SELECT seqincrement::text FROM pg_sequence WHERE seqrelid = $1::text::regclass) AS inc FROM ${r.s}`,
            [r.s],
          )
        ).rows[0]!;
        const inc = BigInt(d.inc);
        const last = BigInt(d.last);
        const src = BigInt(r.v!);
        let target = (d.called === true || d.called === 't') && last > src ? last : src;
        if (inc > 1n) target += (((last - target) % inc) + inc) % inc;
        await c.query('SELECT setval($1::text::regclass, $2::bigint)', [r.s, target.toString()]);
      })().catch((err: unknown) => {
        throw new PgBridgeError('INTERNAL', `cannot set sequence ${r.s} on ${fwd.to}: ${errorMessage(err)}`);
      });
    }
  });
}

export function formatProgress(p: TableProgress): string {
  const width = 24;
  const frac = p.rowsEstimate > 0 ? Math.min(1, p.rowsDone / p.rowsEstimate) : p.done ? 1 : 0;
  const bar = '#'.repeat(Math.round(frac * width)).padEnd(width, '.');
  const eta = p.done ? 'done' : p.etaSeconds === null ? 'eta -' : `eta ${p.etaSeconds} s`;
  return `${p.table.padEnd(30)} [${bar}] ${String(p.rowsDone).padStart(9)} / ${String(p.rowsEstimate).padEnd(9)} ${String(p.rowsPerSecond).padStart(7)} rows/s  ${eta}`;
}
