/**
 * pgoutput messages of one committed transaction → change events and control events, in
 * order, one at a time (INV-7 in docs/invariants.md: nothing holds a whole transaction). One event is held back
 * so that the last event of a transaction can carry `txn.last = true`.
 */
import { fromPgText, kindOfType, type AvroValue, type TableDef } from '../../shared/avro.js';
import { PgBridgeError, errorMessage } from '../../shared/errors.js';
import { formatLsn, type Lsn } from '../../shared/lsn.js';
import { splitTableName } from '../../shared/selection.js';
import type { ClusterNaming } from '../../shared/naming.js';
import { parseDdlRecord, tableOfIdentity } from '../../shared/ddl.js';
import { UNCHANGED, type PgoutputMessage, type Relation, type TupleValue } from './pgoutput-decoder.js';

export type Row = Record<string, AvroValue>;

export interface TxnContext {
  readonly xid: number;
  readonly commitLsn: Lsn;
  readonly commitTimeUs: bigint;
  readonly origin: string;
}

export interface ChangeEvent {
  readonly kind: 'change';
  readonly table: TableDef;
  readonly relationOid: number;
  readonly op: 'c' | 'u' | 'd' | 't' | 'r';
  readonly before: Row | null;
  readonly after: Row | null;
  readonly key: Row | null;
  readonly unchanged: readonly string[];
  readonly lsn: Lsn;
  readonly txn: TxnContext;
  /** A row read by the initial sync (op r), not a change from the WAL. */
  readonly snapshot?: boolean;
  index: number;
  last: boolean;
}

export interface ControlEvent {
  readonly kind: 'control';
  readonly control: 'heartbeat' | 'barrier' | 'watermark' | 'ddl';
  readonly id: string | null;
  readonly payload: string | null;
  readonly lsn: Lsn;
  readonly txn: TxnContext;
  index: number;
  last: boolean;
}

export type CaptureEvent = ChangeEvent | ControlEvent;

export interface TransactionEnd {
  readonly txn: TxnContext;
  /** End LSN of the commit record: what the slot is told once Kafka has the transaction. */
  readonly endLsn: Lsn;
  readonly events: number;
  /** The transaction came from another cluster (apply wrote it) and was not published. */
  readonly skipped: boolean;
}

export interface BuilderOptions {
  readonly cluster: string;
  /** Skip transactions whose origin is another cluster (two-way: apply wrote them). */
  readonly skipForeign: boolean;
  /** Turns a replication origin name into a cluster name (cdc_a → a). */
  readonly originCluster: (originName: string) => string;
  /** Type name for the pg.type attribute (format_type). */
  readonly typeName: (oid: number, typmod: number) => string;
  readonly isHeartbeatTable: (schema: string, table: string) => boolean;
  /** Pipeline name: the heartbeat rows of other pipelines are not ours to publish. */
  readonly pipeline: string;
  /** The table of control records (cdc.control): the only control input capture obeys. */
  readonly isControlTable: (schema: string, table: string) => boolean;
  /** This cluster's names of renamed tables and columns (selection.tables); events carry the pipeline's names. */
  readonly naming?: ClusterNaming;
  /** Obey `origin` control records (apply's loop marker). False in replication-origin mode. */
  readonly obeyOriginRecords: boolean;
  /** The selection: a resync chunk for any other table is refused. */
  readonly isSelected: (schema: string, table: string) => boolean;
  /** This cluster is the forward source and ddl.forward is replicate: `ddl` records are published. */
  readonly publishDdl: boolean;
  /** A control input that was not obeyed (forged message, malformed record): counted and logged, never fatal. */
  readonly onIgnored: (reason: IgnoredReason, detail: string) => void;
}

export type IgnoredReason =
  | 'logical-message'
  | 'malformed'
  | 'origin-not-obeyed'
  | 'unselected-table'
  | 'unknown-kind'
  | 'window-evicted'
  | 'window-unknown'
  | 'ddl-not-replicated';

/** Open resync windows kept at most; the oldest goes first (its chunk is then refused and the resync retries it). */
export const MAX_RESYNC_WINDOWS = 64;

/** Payload of a low watermark (control record kind resync.low): opens a window. */
export interface ResyncWindow {
  readonly id: string;
  readonly pipeline: string;
  /** schema.table */
  readonly table: string;
}

/** Payload of a high watermark (kind resync.high): the chunk the resync read between its low and high watermarks. */
export interface ResyncChunk {
  readonly id: string;
  readonly pipeline: string;
  readonly table: TableDef;
  /** Key column names (primary key) used to match changes seen inside the window. */
  readonly key: readonly string[];
  /** Rows as PostgreSQL text, in table.columns order. */
  readonly rows: readonly (readonly (string | null)[])[];
}

export class ChangeBuilder {
  private txn: { xid: number; commitLsn: Lsn; commitTimeUs: bigint; origin: string | null; count: number } | null = null;
  private ctx: TxnContext | null = null;
  private held: CaptureEvent | null = null;
  private readonly tables = new Map<number, TableDef>();
  /** Open resync windows: id → table and the keys changed in the stream since its low watermark. */
  private readonly windows = new Map<string, { table: string; keys: Set<string> }>();

  constructor(private readonly opts: BuilderOptions) {}

  get inTransaction(): boolean {
    return this.txn !== null;
  }

  /**
   * Feeds one message. Returns events ready to publish (in order) and, at COMMIT, the end of
   * the transaction (after its last event).
   */
  push(msg: PgoutputMessage, lsn: Lsn): { events: CaptureEvent[]; end: TransactionEnd | null } {
    switch (msg.tag) {
      case 'begin':
        this.txn = { xid: msg.xid, commitLsn: msg.finalLsn, commitTimeUs: msg.commitTimeUs, origin: null, count: 0 };
        this.ctx = null;
        this.held = null;
        return { events: [], end: null };
      case 'origin':
        this.requireTxn('origin');
        this.txn!.origin = this.opts.originCluster(msg.name);
        return { events: [], end: null };
      case 'relation':
        this.tables.set(msg.relation.oid, this.tableDef(msg.relation));
        return { events: [], end: null };
      case 'type':
        return { events: [], end: null };
      case 'message':
        // Logical messages are executable by every login: never obeyed (control records are rows).
        if (msg.prefix.startsWith('cdc.')) this.opts.onIgnored('logical-message', `logical message with prefix ${msg.prefix} at LSN ${formatLsn(lsn)}`);
        return { events: [], end: null };
      case 'insert':
      case 'update':
      case 'delete':
        this.requireTxn(msg.tag);
        return this.emitRow(msg, lsn);
      case 'truncate': {
        this.requireTxn('truncate');
        const out: CaptureEvent[] = [];
        for (const rel of msg.relations) {
          if (this.opts.isHeartbeatTable(rel.schema, rel.table)) continue;
          const table = this.table(rel);
          out.push(
            ...this.emit({
              kind: 'change',
              table,
              relationOid: rel.oid,
              op: 't',
              before: null,
              after: null,
              key: null,
              unchanged: [],
              lsn,
              txn: this.context(),
              index: 0,
              last: false,
            }).events,
          );
        }
        return { events: out, end: null };
      }
      case 'commit': {
        this.requireTxn('commit');
        const t = this.txn!;
        const ctx = this.context();
        const out: CaptureEvent[] = [];
        if (this.held) {
          this.held.last = true;
          out.push(this.held);
          this.held = null;
        }
        this.txn = null;
        this.ctx = null;
        return { events: out, end: { txn: ctx, endLsn: msg.endLsn, events: t.count, skipped: this.isForeign(ctx) } };
      }
    }
  }

  private requireTxn(what: string): void {
    if (!this.txn) throw new PgBridgeError('DECODE', `pgoutput ${what} outside a transaction`);
  }

  private context(): TxnContext {
    if (!this.ctx) {
      const t = this.txn!;
      this.ctx = { xid: t.xid, commitLsn: t.commitLsn, commitTimeUs: t.commitTimeUs, origin: t.origin ?? this.opts.cluster };
    }
    return this.ctx;
  }

  private isForeign(ctx: TxnContext): boolean {
    return this.opts.skipForeign && ctx.origin !== this.opts.cluster;
  }

  /** Holds the new event back and releases the previous one (last = false). */
  private emit(ev: CaptureEvent): { events: CaptureEvent[]; end: null } {
    if (this.isForeign(ev.txn)) return { events: [], end: null };
    ev.index = this.txn!.count++;
    const prev = this.held;
    this.held = ev;
    return { events: prev ? [prev] : [], end: null };
  }

  /**
   * DBLog-style resync: the chunk was read between the low and the high watermark. A key that
   * changed in the stream inside that window is dropped from the chunk (the stream already
   * carries it, and its chunk row may be older or newer than that change); the other rows go
   * out here, at the high watermark's place in commit order, so no later change can be
   * overtaken by an older chunk row and no row deleted meanwhile comes back.
   */
  private resyncChunk(chunk: ResyncChunk, lsn: Lsn): { events: CaptureEvent[]; end: null } {
    const w = this.windows.get(chunk.id);
    this.windows.delete(chunk.id);
    // Low watermark not seen (before our start, or evicted): the resync retries that chunk.
    if (!w) return this.ignore('window-unknown', `resync chunk ${chunk.id} without an open window`);
    if (w.table !== `${chunk.table.schema}.${chunk.table.table}`)
      return this.ignore('malformed', `resync chunk ${chunk.id} names ${chunk.table.schema}.${chunk.table.table}, its window ${w.table}`);
    const out: CaptureEvent[] = [];
    const keyIdx = chunk.key.map((k) => chunk.table.columns.findIndex((c) => c.name === k));
    for (const raw of chunk.rows) {
      if (w.keys.has(JSON.stringify(keyIdx.map((i) => raw[i] ?? null)))) continue;
      const { row: after } = this.row(chunk.table, raw, () => `${chunk.table.schema}.${chunk.table.table} (resync chunk ${chunk.id})`, null);
      const key = keyOf(chunk.table, after);
      out.push(
        ...this.emit({
          kind: 'change',
          table: chunk.table,
          relationOid: 0,
          op: 'r',
          before: null,
          after,
          key,
          unchanged: [],
          lsn,
          txn: this.context(),
          snapshot: true,
          index: 0,
          last: false,
        }).events,
      );
    }
    return { events: out, end: null };
  }

  private ignore(reason: IgnoredReason, detail: string): { events: CaptureEvent[]; end: null } {
    this.opts.onIgnored(reason, detail);
    return { events: [], end: null };
  }

  /**
   * A row of cdc.control (inserted by pgbridge's roles only): the loop marker, a drain barrier
   * or a resync watermark, at its place in commit order. Records of other pipelines are not
   * ours; anything malformed is ignored, never fatal (it would fail again after every restart
   * while the slot pins WAL).
   */
  private controlRecord(rel: Relation, tuple: readonly TupleValue[], lsn: Lsn): { events: CaptureEvent[]; end: null } {
    const col = (name: string): string | null => {
      const v = tuple[rel.columns.findIndex((c) => c.name === name)];
      return typeof v === 'string' ? v : null;
    };
    const pipeline = col('pipeline');
    const kind = col('kind');
    const payload = col('payload');
    const where = `control record ${kind ?? '?'} at LSN ${formatLsn(lsn)}`;
    if (pipeline === null || kind === null || payload === null) return this.ignore('malformed', `${where}: pipeline, kind or payload missing`);
    if (pipeline !== this.opts.pipeline) return { events: [], end: null };
    switch (kind) {
      case 'origin': {
        // Apply's loop marker when it cannot use replication origins: first in its transaction.
        if (!this.opts.obeyOriginRecords) return this.ignore('origin-not-obeyed', `${where}: origin.method is replication-origin`);
        if (this.txn!.count > 0 || this.ctx) return this.ignore('malformed', `${where}: not first in its transaction`);
        this.txn!.origin = this.opts.originCluster(payload);
        return { events: [], end: null };
      }
      case 'barrier':
        return this.emit({ kind: 'control', control: 'barrier', id: payload, payload: null, lsn, txn: this.context(), index: 0, last: false });
      case 'resync.low': {
        const w = parseJson(payload) as Partial<ResyncWindow> | null;
        if (!w || typeof w.id !== 'string' || typeof w.table !== 'string' || w.pipeline !== this.opts.pipeline)
          return this.ignore('malformed', `${where}: not a resync window`);
        const [schema, table] = splitTableName(w.table);
        if (!this.opts.isSelected(schema, table)) return this.ignore('unselected-table', `${where}: table ${w.table} is not in the selection`);
        if (this.windows.size >= MAX_RESYNC_WINDOWS) {
          const oldest = this.windows.keys().next().value!;
          this.windows.delete(oldest);
          this.opts.onIgnored('window-evicted', `resync window ${oldest} closed: more than ${MAX_RESYNC_WINDOWS} open`);
        }
        this.windows.set(w.id, { table: w.table, keys: new Set() });
        return { events: [], end: null };
      }
      case 'resync.high': {
        const c = parseJson(payload) as ResyncChunk | null;
        if (!isResyncChunk(c) || c.pipeline !== this.opts.pipeline) return this.ignore('malformed', `${where}: not a resync chunk`);
        if (!this.opts.isSelected(c.table.schema, c.table.table))
          return this.ignore('unselected-table', `${where}: table ${c.table.schema}.${c.table.table} is not in the selection`);
        return this.resyncChunk(c, lsn);
      }
      case 'ddl': {
        // The forward source's event trigger: published at its place in commit order (apply runs it there).
        if (!this.opts.publishDdl) return this.ignore('ddl-not-replicated', `${where}: this cluster is not the forward source, or ddl.forward is off`);
        const d = parseDdlRecord(payload);
        if (!d || d.pipeline !== this.opts.pipeline) return this.ignore('malformed', `${where}: not a DDL record`);
        const outside = d.objects.find(
          (o) => (o.type === 'table' || o.type === 'table column') && !this.opts.isSelected(o.schema, tableOfIdentity(o.schema, o.identity)),
        );
        if (outside) return this.ignore('unselected-table', `${where}: ${d.tag} on ${outside.identity}, which is not in the selection`);
        return this.emit({ kind: 'control', control: 'ddl', id: d.tag, payload, lsn, txn: this.context(), index: 0, last: false });
      }
      default:
        return this.ignore('unknown-kind', `${where}: unknown kind`);
    }
  }

  /** Notes a changed key for every open resync window of this table. */
  private touch(rel: Relation, tuple: TupleValue[] | null): void {
    if (!tuple || this.windows.size === 0) return;
    const def = this.table(rel);
    const name = `${def.schema}.${def.table}`;
    let key: string | null = null;
    for (const w of this.windows.values()) {
      if (w.table !== name) continue;
      key ??= JSON.stringify(
        rel.columns.flatMap((c, i) => {
          if (!c.key) return [];
          const v = tuple[i];
          return [v === undefined || v === UNCHANGED ? null : v];
        }),
      );
      w.keys.add(key);
    }
  }

  private emitRow(msg: Extract<PgoutputMessage, { tag: 'insert' | 'update' | 'delete' }>, lsn: Lsn): { events: CaptureEvent[]; end: null } {
    const rel = msg.relation;
    if (this.windows.size) {
      this.touch(rel, msg.tag === 'insert' ? msg.newTuple : msg.tag === 'update' ? msg.newTuple : msg.oldTuple);
      if (msg.tag === 'update' && msg.oldTuple) this.touch(rel, msg.oldTuple);
    }
    if (this.opts.isControlTable(rel.schema, rel.table)) {
      return msg.tag === 'delete' ? { events: [], end: null } : this.controlRecord(rel, msg.newTuple, lsn);
    }
    if (this.opts.isHeartbeatTable(rel.schema, rel.table)) {
      if (msg.tag === 'delete') return { events: [], end: null };
      // cdc.heartbeat is shared by every pipeline on the cluster: only our own row is a heartbeat.
      const p = rel.columns.findIndex((c) => c.name === 'pipeline');
      if (p < 0 || msg.newTuple[p] !== this.opts.pipeline) return { events: [], end: null };
      return this.emit({ kind: 'control', control: 'heartbeat', id: null, payload: null, lsn, txn: this.context(), index: 0, last: false });
    }
    const table = this.table(rel);
    const ctx = this.context();
    const where = (): string => `${rel.schema}.${rel.table} at LSN ${formatLsn(lsn)} (xid ${ctx.xid})`;
    let before: Row | null = null;
    let after: Row | null = null;
    let unchanged: string[] = [];
    if (msg.tag === 'insert') {
      after = this.row(table, msg.newTuple, where, null).row;
    } else if (msg.tag === 'update') {
      before = msg.oldTuple ? this.row(table, msg.oldTuple, where, msg.oldIsKeyOnly ? 'key' : null).row : null;
      const r = this.row(table, msg.newTuple, where, null);
      after = r.row;
      unchanged = r.unchanged;
    } else {
      before = this.row(table, msg.oldTuple, where, msg.oldIsKeyOnly ? 'key' : null).row;
    }
    const keySource = msg.tag === 'delete' ? before : msg.tag === 'update' && before ? before : after;
    const key = keyOf(table, keySource);
    const op = msg.tag === 'insert' ? 'c' : msg.tag === 'update' ? 'u' : 'd';
    return this.emit({ kind: 'change', table, relationOid: rel.oid, op, before, after, key, unchanged, lsn, txn: ctx, index: 0, last: false });
  }

  private row(table: TableDef, tuple: readonly TupleValue[], where: () => string, only: 'key' | null): { row: Row; unchanged: string[] } {
    const row: Row = {};
    const unchanged: string[] = [];
    table.columns.forEach((col, i) => {
      const v = tuple[i];
      if (only === 'key' && !col.key) return;
      if (v === UNCHANGED) {
        unchanged.push(col.name);
        return;
      }
      if (v === null || v === undefined) {
        row[col.name] = null;
        return;
      }
      try {
        row[col.name] = fromPgText(kindOfType(col.typeOid), v);
      } catch (err) {
        throw new PgBridgeError('ENCODE', `cannot encode column ${col.name} (${col.typeName}) of ${where()}: ${errorMessage(err)}`, {
          details: { table: `${table.schema}.${table.table}`, column: col.name },
        });
      }
    });
    return { row, unchanged };
  }

  private table(rel: Relation): TableDef {
    const t = this.tables.get(rel.oid);
    if (t) return t;
    const def = this.tableDef(rel);
    this.tables.set(rel.oid, def);
    return def;
  }

  /** The relation under the pipeline's names (selection.tables.<t>.rename / renameColumns of this cluster). */
  private tableDef(rel: Relation): TableDef {
    const n = this.opts.naming;
    const [schema, table] = n?.logical(rel.schema, rel.table) ?? [rel.schema, rel.table];
    return {
      schema,
      table,
      replicaIdentity: rel.replicaIdentity,
      columns: rel.columns.map((c) => ({
        name: n ? n.logicalColumn(schema, table, c.name) : c.name,
        typeOid: c.typeOid,
        typeMod: c.typeMod,
        typeName: this.opts.typeName(c.typeOid, c.typeMod),
        key: c.key,
      })),
    };
  }
}

function keyOf(table: TableDef, row: Row | null): Row | null {
  if (!row) return null;
  const keyCols = table.columns.filter((c) => c.key);
  if (keyCols.length === 0) return null;
  const key: Row = {};
  for (const c of keyCols) key[c.name] = row[c.name] ?? null;
  return key;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** Shape check of a resync chunk: every field capture reads, so a bad one is refused before it is used. */
function isResyncChunk(c: unknown): c is ResyncChunk {
  if (!c || typeof c !== 'object') return false;
  const x = c as Partial<ResyncChunk>;
  const t = x.table;
  if (typeof x.id !== 'string' || typeof x.pipeline !== 'string' || !t || typeof t.schema !== 'string' || typeof t.table !== 'string') return false;
  if (
    !Array.isArray(t.columns) ||
    !t.columns.every((col) => col && typeof col.name === 'string' && typeof col.typeOid === 'number' && typeof col.typeName === 'string')
  )
    return false;
  const width = t.columns.length;
  if (!Array.isArray(x.key) || !x.key.every((k) => t.columns.some((col) => col.name === k))) return false;
  return Array.isArray(x.rows) && x.rows.every((r) => Array.isArray(r) && r.length === width && r.every((v) => v === null || typeof v === 'string'));
}
