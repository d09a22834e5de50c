/**
 * `pgbridge sync`: initial synchronization of the forward direction (DTS: schema sync, then
 * full data, then incremental). The reverse direction is incremental only.
 *
 * 1. Schema: pg_dump --schema-only of the selected schemas, restored on the destination.
 * 2. Slot: the forward capture slot is (re)created with an exported snapshot; its consistent
 *    point is where streaming will start, so nothing committed after the snapshot is missed.
 * 3. Data: every selected table is read inside that snapshot in primary-key chunks and
 *    published as op=r events to the direction topic (one Kafka transaction per chunk) before
 *    capture streams, so replaying the topic rebuilds a destination. Each finished chunk is
 *    recorded in cdc.snapshot_progress on the source after Kafka has it: a restart goes on
 *    after the last finished chunk.
 *
 * A restart after a crash cannot reuse the exported snapshot (it lives as long as the
 * connection that made it). The remaining chunks are then read in a fresh, newer snapshot;
 * the slot still starts at the original consistent point, so streaming replays every change
 * since then over rows that may already hold them. Apply converges because replays are
 * idempotent under every policy but `fail` (insert_exists / update_missing / delete_missing);
 * such replays are recorded in cdc.conflicts.
 */
import { spawn } from 'node:child_process';
import pg from 'pg';
import { fromPgText, kindOfType, type TableDef } from '../../shared/avro.js';
import { slotName, type PipelineConfig } from '../../shared/config.js';
import { PgBridgeError, errorMessage } from '../../shared/errors.js';
import { kafkaClient } from '../../shared/kafka.js';
import type { Logger } from '../../shared/log.js';
import { formatLsn, parseLsn, type Lsn } from '../../shared/lsn.js';
import { clientConfig, connect, libpqEnv, qi, qt } from '../../shared/pg.js';
import { SchemaStore } from '../../shared/registry.js';
import { EventEncoder } from '../capture/avro-encoder.js';
import { type CaptureEvent, type ChangeEvent, type ResyncChunk, type ResyncWindow, type Row } from '../capture/change-builder.js';
import { writeControl } from '../../shared/control-records.js';
import { KafkaPublisher } from '../capture/kafka-publisher.js';
import { selectedTables, setup, type SelectedTable } from './setup.js';

export interface SyncOptions {
  readonly chunkRows?: number;
  readonly maxRowsPerSecond?: number;
  readonly maxMegabytesPerSecond?: number;
  /** Destination tables that already exist: stop with an error (default) or keep them and go on. */
  readonly existingTables?: 'error' | 'ignore';
  readonly schema?: boolean;
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
  readonly rows: number;
  readonly bytes: number;
  readonly resumed: boolean;
}

function pgTool(name: string): string {
  return process.env.PGBRIDGE_PG_BIN ? `${process.env.PGBRIDGE_PG_BIN}/${name}` : name;
}

function runTool(cmd: string, args: string[], env: NodeJS.ProcessEnv, input?: NodeJS.ReadableStream): Promise<{ code: number; stdout: string; stderr: string }> {
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

/** Schema sync: tables, keys, defaults, sequences, indexes, views, functions, triggers of the selected schemas. */
export async function syncSchema(cfg: PipelineConfig, existing: 'error' | 'ignore', log: Logger): Promise<{ created: string[]; skipped: string[] }> {
  const fwd = cfg.directions[0];
  const src = cfg.clusters[fwd.from]!;
  const dst = cfg.clusters[fwd.to]!;
  const tables = await withPg(src, (c) => selectedTables(c, cfg));
  const there = await withPg(dst, (c) => selectedTables(c, cfg));
  const present = new Set(there.map((t) => `${t.schema}.${t.table}`));
  const clash = tables.filter((t) => present.has(`${t.schema}.${t.table}`)).map((t) => `${t.schema}.${t.table}`);
  if (clash.length && existing === 'error') {
    throw new PgBridgeError('PRECHECK', `destination ${fwd.to} already has ${clash.length} selected table(s): ${clash.slice(0, 10).join(', ')}${clash.length > 10 ? ', …' : ''}. Use --existing-tables ignore to keep them and go on, or drop them.`);
  }
  // Names as exact pg_dump patterns (double-quoted: no wildcard, case kept), and
  // --strict-names: a schema that matches nothing is an error, not an empty dump.
  const args = ['--schema-only', '--no-owner', '--no-privileges', '--no-publications', '--no-subscriptions', '--strict-names', ...cfg.selection.schemas.flatMap((s) => ['-n', qi(s)])];
  if (cfg.selection.include.length || cfg.selection.exclude.length) {
    // Tables the selection leaves out are left out of the dump (never dropped on the destination).
    const wanted = new Set(tables.map((t) => `${t.schema}.${t.table}`));
    const all = await withPg(src, (c) => c.query<{ s: string; t: string }>(`SELECT n.nspname AS s, c.relname AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r','p') AND NOT c.relispartition AND n.nspname = ANY($1)`, [cfg.selection.schemas]));
    for (const r of all.rows) if (!wanted.has(`${r.s}.${r.t}`)) args.push('-T', qt(r.s, r.t));
  }
  const dump = await runTool(pgTool('pg_dump'), args, libpqEnv(src));
  if (dump.code !== 0) throw new PgBridgeError('INTERNAL', `pg_dump of ${fwd.from} failed: ${dump.stderr.trim()}`);
  const sql = dump.stdout;
  const psqlArgs = ['-X', '-q', ...(existing === 'error' ? ['-v', 'ON_ERROR_STOP=1'] : [])];
  const { Readable } = await import('node:stream');
  const restore = await runTool(pgTool('psql'), psqlArgs, libpqEnv(dst), Readable.from([sql]));
  if (restore.code !== 0) throw new PgBridgeError('INTERNAL', `restoring the schema on ${fwd.to} failed: ${restore.stderr.trim().split('\n').slice(0, 5).join(' | ')}`);
  const skipped = restore.stderr.split('\n').filter((l) => /already exists/.test(l));
  if (skipped.length) log.warn({ count: skipped.length }, 'schema sync kept objects that already existed on the destination');
  return { created: tables.map((t) => `${t.schema}.${t.table}`).filter((t) => !present.has(t)), skipped: clash };
}

async function withPg<T>(c: PipelineConfig['clusters'][string], fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = await connect(c, 'pgbridge-sync');
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

interface ColumnInfo {
  name: string;
  typeOid: number;
  typeMod: number;
  typeName: string;
  key: boolean;
}

/** Columns as pgoutput would describe them (no generated columns; key = replica identity). */
async function tableDef(c: pg.Client, t: SelectedTable): Promise<{ def: TableDef; pk: ColumnInfo[] }> {
  const r = await c.query<{ name: string; oid: string; mod: string; type: string; pk: boolean; ident: boolean }>(
    `SELECT a.attname AS name, a.atttypid::text AS oid, a.atttypmod::text AS mod, format_type(a.atttypid, a.atttypmod) AS type,
            COALESCE(a.attnum = ANY(pk.indkey), false) AS pk,
            CASE c.relreplident WHEN 'f' THEN true WHEN 'i' THEN COALESCE(a.attnum = ANY(ri.indkey), false) ELSE COALESCE(a.attnum = ANY(pk.indkey), false) END AS ident
       FROM pg_attribute a
       JOIN pg_class c ON c.oid = a.attrelid
       LEFT JOIN pg_index pk ON pk.indrelid = a.attrelid AND pk.indisprimary
       LEFT JOIN pg_index ri ON ri.indrelid = a.attrelid AND ri.indisreplident
      WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
      ORDER BY a.attnum`,
    [qt(t.schema, t.table)],
  );
  const cols: ColumnInfo[] = r.rows.map((x) => ({ name: x.name, typeOid: Number(x.oid), typeMod: Number(x.mod), typeName: x.type, key: x.ident }));
  const def: TableDef = { schema: t.schema, table: t.table, replicaIdentity: t.replicaIdentity, columns: cols.map((x) => ({ ...x })) };
  return { def, pk: r.rows.filter((x) => x.pk).map((x) => cols.find((cc) => cc.name === x.name)!) };
}

class Throttle {
  private readonly started = Date.now();
  private rows = 0;
  private bytes = 0;
  constructor(private readonly maxRows?: number, private readonly maxMb?: number) {}
  async take(rows: number, bytes: number): Promise<void> {
    this.rows += rows;
    this.bytes += bytes;
    const needMs = Math.max(this.maxRows ? (this.rows / this.maxRows) * 1000 : 0, this.maxMb ? (this.bytes / (this.maxMb * 1024 * 1024)) * 1000 : 0);
    const wait = needMs - (Date.now() - this.started);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
}

/** Full data sync of the forward direction (and the schema first unless told not to). */
export async function initialSync(cfg: PipelineConfig, log: Logger, opts: SyncOptions = {}): Promise<SyncReport> {
  const t0 = Date.now();
  const fwd = cfg.directions[0];
  const src = cfg.clusters[fwd.from]!;
  const chunkRows = opts.chunkRows ?? 10_000;
  if (opts.schema !== false) await syncSchema(cfg, opts.existingTables ?? 'error', log);
  await setup(cfg, log);
  const slot = slotName(cfg, fwd.from);
  const control = await connect(src, 'pgbridge-sync');
  let repl: pg.Client | null = null;
  try {
    const progress = await control.query<{ n: string; done: string }>('SELECT count(*)::text AS n, count(*) FILTER (WHERE done)::text AS done FROM cdc.snapshot_progress WHERE pipeline = $1', [cfg.pipeline]);
    const started = Number(progress.rows[0]!.n) > 0;
    let snapshotName: string | null = null;
    let consistent: Lsn;
    let resumeLsn: string | null = null;
    const active = await control.query<{ active: boolean }>('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [slot]);
    if (active.rows[0]?.active) throw new PgBridgeError('PRECHECK', `slot ${slot} is in use: stop capture-${fwd.from} before the initial sync`);
    if (!started) {
      // The slot made by setup may already hold changes that capture never read: nothing was
      // published yet, so it is replaced by one whose start is the exported snapshot.
      await control.query('SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1', [slot]);
      repl = new pg.Client({ ...clientConfig(src, 'pgbridge-sync-snapshot'), replication: 'database' } as pg.ClientConfig);
      await repl.connect();
      const r = await repl.query<{ consistent_point: string; snapshot_name: string }>(`CREATE_REPLICATION_SLOT ${qi(slot)} LOGICAL pgoutput EXPORT_SNAPSHOT`);
      snapshotName = r.rows[0]!.snapshot_name;
      consistent = parseLsn(r.rows[0]!.consistent_point);
      log.info({ slot, lsn: r.rows[0]!.consistent_point, snapshot: snapshotName }, 'slot created with an exported snapshot');
    } else {
      const r = await control.query<{ lsn: string | null }>('SELECT min(consistent_lsn)::text AS lsn FROM cdc.snapshot_progress WHERE pipeline = $1', [cfg.pipeline]);
      consistent = parseLsn(r.rows[0]!.lsn ?? '0/0');
      // A temporary slot gives a fresh snapshot together with its exact position: tables read
      // whole in it get a watermark, and apply skips their streamed changes from before it.
      repl = new pg.Client({ ...clientConfig(src, 'pgbridge-sync-snapshot'), replication: 'database' } as pg.ClientConfig);
      await repl.connect();
      const t = await repl.query<{ consistent_point: string; snapshot_name: string }>(`CREATE_REPLICATION_SLOT ${qi(`${slot}_resume`)} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT`);
      snapshotName = t.rows[0]!.snapshot_name;
      resumeLsn = t.rows[0]!.consistent_point;
      log.warn({ done: progress.rows[0]!.done, of: progress.rows[0]!.n }, 'resuming an interrupted initial sync after its last finished chunk, in a fresh snapshot');
    }
    const reader = await connect(src, 'pgbridge-sync-reader');
    const store = new SchemaStore(cfg.registry);
    const encoder = new EventEncoder(store, fwd.topic, fwd.from, src.database);
    const publisher = new KafkaPublisher(kafkaClient(cfg, `sync-${fwd.from}`, log), `pgbridge-${cfg.pipeline}-snapshot-${fwd.from}`, fwd.topic);
    await publisher.connect();
    const throttle = new Throttle(opts.maxRowsPerSecond, opts.maxMegabytesPerSecond);
    const reports: TableProgress[] = [];
    let totalRows = 0;
    let totalBytes = 0;
    try {
      await reader.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      if (snapshotName) await reader.query(`SET TRANSACTION SNAPSHOT '${snapshotName}'`);
      const snapTs = BigInt(Date.now()) * 1000n;
      const tables = await selectedTables(reader, cfg);
      for (const t of tables) {
        const name = `${t.schema}.${t.table}`;
        const { def, pk } = await tableDef(reader, t);
        const est = await reader.query<{ n: string }>('SELECT GREATEST(reltuples, 0)::bigint::text AS n FROM pg_class WHERE oid = $1::regclass', [qt(t.schema, t.table)]);
        const estimate = Number(est.rows[0]!.n);
        await control.query(
          `INSERT INTO cdc.snapshot_progress (pipeline, table_name, rows_estimate, consistent_lsn) VALUES ($4, $1, $2, $3::pg_lsn) ON CONFLICT (pipeline, table_name) DO NOTHING`,
          [name, estimate, formatLsn(consistent), cfg.pipeline],
        );
        const st = (await control.query<{ last_key: string | null; rows_done: string; bytes_done: string; done: boolean }>(
          'SELECT last_key::text, rows_done::text, bytes_done::text, done FROM cdc.snapshot_progress WHERE table_name = $1 AND pipeline = $2', [name, cfg.pipeline])).rows[0]!;
        let rowsDone = Number(st.rows_done);
        let bytesDone = Number(st.bytes_done);
        const tStart = Date.now();
        const report = (done: boolean): TableProgress => {
          const secs = (Date.now() - tStart) / 1000;
          const rate = secs > 0 ? rowsDone / secs : 0;
          return { table: name, rowsDone, rowsEstimate: Math.max(estimate, rowsDone), bytesDone, rowsPerSecond: Math.round(rate), etaSeconds: done ? 0 : rate > 0 ? Math.max(0, Math.round((estimate - rowsDone) / rate)) : null, done };
        };
        if (st.done) {
          reports.push(report(true));
          continue;
        }
        let lastKey: string[] | null = st.last_key ? (JSON.parse(st.last_key) as string[]) : null;
        if (pk.length === 0 && rowsDone > 0) {
          // A table without a primary key cannot be resumed by key: start it again, first
          // emptying what the interrupted run loaded on the destination.
          await publishOne(publisher, encoder, { kind: 'change', table: def, relationOid: 0, op: 't', before: null, after: null, key: null, unchanged: [], lsn: consistent, snapshot: true, txn: { xid: 0, commitLsn: consistent, commitTimeUs: snapTs, origin: fwd.from }, index: 0, last: true });
          rowsDone = 0;
          bytesDone = 0;
          lastKey = null;
        }
        // Read entirely in this run's snapshot (not continued from an earlier one)?
        const readWhole = rowsDone === 0;
        for await (const chunk of tableChunks(reader, t, def, pk, chunkRows, lastKey)) {
          for (const [i, raw] of chunk.rows.entries()) {
            await publisher.add(await encoder.encode(snapshotRow(def, typedRow(def, raw), consistent, snapTs, fwd.from, i, i === chunk.rows.length - 1)));
          }
          await publisher.commit();
          rowsDone += chunk.rows.length;
          bytesDone += chunk.bytes;
          totalRows += chunk.rows.length;
          totalBytes += chunk.bytes;
          lastKey = chunk.lastKey;
          // Recorded only after Kafka committed the chunk: a restart never skips an unpublished chunk.
          await control.query('UPDATE cdc.snapshot_progress SET last_key = $2::jsonb, rows_done = $3, bytes_done = $4, updated_at = clock_timestamp() WHERE table_name = $1 AND pipeline = $5', [name, JSON.stringify(lastKey), rowsDone, bytesDone, cfg.pipeline]);
          opts.onProgress?.(report(false));
          await throttle.take(chunk.rows.length, chunk.bytes);
        }
        if (resumeLsn && readWhole) {
          await publishOne(publisher, encoder, { kind: 'control', control: 'watermark', id: name, payload: resumeLsn, lsn: consistent, txn: { xid: 0, commitLsn: consistent, commitTimeUs: snapTs, origin: fwd.from }, index: 0, last: true });
        }
        await control.query('UPDATE cdc.snapshot_progress SET done = true, updated_at = clock_timestamp() WHERE table_name = $1 AND pipeline = $2', [name, cfg.pipeline]);
        const r = report(true);
        opts.onProgress?.(r);
        reports.push(r);
      }
      await reader.query('COMMIT');
    } finally {
      await publisher.disconnect();
      await reader.end().catch(() => undefined);
    }
    // Sequences: pg_dump --schema-only does not carry their values.
    await syncSequences(cfg);
    return { tables: reports, consistentLsn: formatLsn(consistent), seconds: (Date.now() - t0) / 1000, rows: totalRows, bytes: totalBytes, resumed: started };
  } catch (err) {
    throw err instanceof PgBridgeError ? err : new PgBridgeError('INTERNAL', `initial sync failed: ${errorMessage(err)}`, { cause: err, retriable: true });
  } finally {
    await repl?.end().catch(() => undefined);
    await control.end().catch(() => undefined);
  }
}

/** A row read by initial sync or resync, as an op=r event. */
function snapshotRow(def: TableDef, after: Row, lsn: Lsn, ts: bigint, origin: string, index: number, last: boolean): ChangeEvent {
  const key: Row | null = def.columns.some((c) => c.key) ? Object.fromEntries(def.columns.filter((c) => c.key).map((c) => [c.name, after[c.name] ?? null])) : null;
  return { kind: 'change', table: def, relationOid: 0, op: 'r', before: null, after, key, unchanged: [], lsn, snapshot: true, txn: { xid: 0, commitLsn: lsn, commitTimeUs: ts, origin }, index, last };
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

interface Chunk {
  /** Rows as PostgreSQL text, in column order (resync ships them so; initial sync types them with typedRow). */
  readonly rows: (string | null)[][];
  /** Length of the row text. */
  readonly bytes: number;
  /** Primary key of the last row, as text (null for tables without one). */
  readonly lastKey: string[] | null;
}

/**
 * Reads a table in primary-key order, chunk by chunk, after `startAfter`; tables without a
 * primary key are read with a cursor. Values come as PostgreSQL text.
 */
async function* tableChunks(reader: pg.Client, t: SelectedTable, def: TableDef, pk: ColumnInfo[], chunkRows: number, startAfter: string[] | null, filter?: string): AsyncGenerator<Chunk> {
  const cols = def.columns;
  // Qualified with the table alias: a bare name in ORDER BY would pick the ::text output column.
  const selectX = cols.map((c) => `x.${qi(c.name)}::text`).join(', ');
  const cursor = 'pgb_snapshot';
  const rowFilter = filter ? `(${filter})` : 'true';
  if (pk.length === 0) await reader.query(`DECLARE ${cursor} NO SCROLL CURSOR FOR SELECT ${selectX} FROM ${qt(t.schema, t.table)} x WHERE ${rowFilter}`);
  let lastKey = startAfter;
  try {
    for (;;) {
      // Arrays, not objects: column names like "1" would be reordered as object keys.
      let rows: (string | null)[][];
      if (pk.length) {
        const order = pk.map((k) => `x.${qi(k.name)}`).join(', ');
        const where = `WHERE ${rowFilter}${lastKey ? ` AND (${order}) > (${pk.map((k, i) => `$${i + 1}::${k.typeName}`).join(', ')})` : ''}`;
        const keySel = pk.map((k) => `x.${qi(k.name)}::text`).join(', ');
        // Extended protocol always: a `filter` (resync --where) can hold one expression, never a second statement.
        rows = (await reader.query({ text: `SELECT ${selectX}, ${keySel} FROM ${qt(t.schema, t.table)} x ${where} ORDER BY ${order} LIMIT ${chunkRows}`, values: lastKey ?? [], rowMode: 'array', queryMode: 'extended' } as pg.QueryConfig)).rows;
      } else {
        rows = (await reader.query({ text: `FETCH ${chunkRows} FROM ${cursor}`, rowMode: 'array' })).rows;
      }
      if (rows.length === 0) return;
      if (pk.length) lastKey = pk.map((_, i) => rows[rows.length - 1]![cols.length + i] as string);
      // The key columns appended for paging are not part of the row.
      const out = pk.length ? rows.map((r) => r.slice(0, cols.length)) : rows;
      let bytes = 0;
      for (const r of out) for (const v of r) bytes += v?.length ?? 0;
      yield { rows: out, bytes, lastKey };
      if (rows.length < chunkRows) return;
    }
  } finally {
    if (pk.length === 0) await reader.query(`CLOSE ${cursor}`).catch(() => undefined);
  }
}

async function publishOne(publisher: KafkaPublisher, encoder: EventEncoder, ev: CaptureEvent): Promise<void> {
  await publisher.add(await encoder.encode(ev));
  await publisher.commit();
}

/** Sets each selected schema's sequences on the destination to at least the source's value. */
async function syncSequences(cfg: PipelineConfig): Promise<void> {
  const fwd = cfg.directions[0];
  const seqs = await withPg(cfg.clusters[fwd.from]!, (c) => c.query<{ s: string; v: string | null }>(
    `SELECT quote_ident(schemaname) || '.' || quote_ident(sequencename) AS s, last_value::text AS v FROM pg_sequences WHERE schemaname = ANY($1)`, [cfg.selection.schemas]));
  await withPg(cfg.clusters[fwd.to]!, async (c) => {
    for (const r of seqs.rows) {
      if (r.v === null) continue;
      await c.query(
        `SELECT setval($1::text::regclass, GREATEST($2::bigint, (SELECT COALESCE(last_value, $2::bigint) FROM pg_sequences WHERE (quote_ident(schemaname) || '.' || quote_ident(sequencename)) = $1::text)))`,
        [r.s, r.v],
      ).catch((err: unknown) => {
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

export interface ResyncReport {
  readonly table: string;
  readonly from: string;
  readonly rows: number;
  readonly chunks: number;
  readonly seconds: number;
}

/**
 * `pgbridge resync --table s.t`: re-reads one table from a source while both directions stay
 * live, DBLog-style. For each primary-key chunk it writes a low watermark into the source's
 * WAL (control record resync.low in cdc.control), reads the chunk as it is now, and
 * writes a high watermark carrying the chunk (resync.high). Capture drops from the chunk
 * every key that changed in the stream between the two watermarks and publishes the rest as
 * op=r events at the high watermark's place in commit order: no row older than a change can
 * overtake it, and no row deleted meanwhile comes back. Apply writes them through the normal
 * path (an existing row is overwritten unless the policy keeps it; the destination is not
 * truncated, so rows that exist only there stay). Capture of the source must run (now or
 * later: the watermarks wait in the slot).
 */
export async function resyncTable(cfg: PipelineConfig, table: string, log: Logger, opts: { from?: string; chunkRows?: number; where?: string; onProgress?: (rows: number) => void } = {}): Promise<ResyncReport> {
  const t0 = Date.now();
  const from = opts.from ?? cfg.directions[0].from;
  if (!cfg.clusters[from]) throw new PgBridgeError('CONFIG_INVALID', `no cluster "${from}" in this pipeline`);
  const src = cfg.clusters[from]!;
  const reader = await connect(src, 'pgbridge-resync');
  try {
    const tables = await selectedTables(reader, cfg);
    const t = tables.find((x) => `${x.schema}.${x.table}` === table);
    if (!t) throw new PgBridgeError('CONFIG_INVALID', `table ${table} is not selected by this pipeline on ${from} (selected: ${tables.map((x) => `${x.schema}.${x.table}`).join(', ') || 'none'})`);
    const { def, pk } = await tableDef(reader, t);
    if (pk.length === 0) throw new PgBridgeError('CONFIG_INVALID', `table ${table} has no primary key: resync reads and matches chunks by key`);
    const key = def.columns.filter((c) => c.key).map((c) => c.name);
    const id = `${cfg.pipeline}:${Date.now().toString(36)}:${Math.random().toString(36).slice(2, 8)}`;
    const emit = (kind: 'resync.low' | 'resync.high', payload: ResyncWindow | ResyncChunk): Promise<void> => writeControl(reader, cfg.pipeline, kind, JSON.stringify(payload));
    let rows = 0;
    let chunks = 0;
    const it = tableChunks(reader, t, def, pk, opts.chunkRows ?? 1000, null, opts.where);
    for (;;) {
      const cid = `${id}:${chunks}`;
      await emit('resync.low', { id: cid, pipeline: cfg.pipeline, table });
      // Each chunk is read in a read-only transaction: a --where condition cannot write.
      await reader.query('BEGIN TRANSACTION READ ONLY');
      const next = await it.next();
      await reader.query('COMMIT');
      if (next.done) break;
      const payload: ResyncChunk = { id: cid, pipeline: cfg.pipeline, table: def, key, rows: next.value.rows };
      await emit('resync.high', payload);
      rows += next.value.rows.length;
      chunks++;
      opts.onProgress?.(rows);
    }
    log.info({ table, rows, chunks }, 'resync watermarks written');
    return { table, from, rows, chunks, seconds: (Date.now() - t0) / 1000 };
  } finally {
    await reader.end().catch(() => undefined);
  }
}
