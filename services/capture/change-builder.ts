/**
 * pgoutput messages of one committed transaction → change events and control events, in
 * order, one at a time (INV-7: nothing holds a whole transaction). One event is held back
 * so that the last event of a transaction can carry `txn.last = true`.
 */
import { fromPgText, kindOfType, type AvroValue, type TableDef } from '../../shared/avro.js';
import { PgBridgeError, errorMessage } from '../../shared/errors.js';
import { formatLsn, type Lsn } from '../../shared/lsn.js';
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
  readonly control: 'heartbeat' | 'barrier' | 'watermark';
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
}

export const ORIGIN_MESSAGE_PREFIX = 'cdc.origin';
export const BARRIER_MESSAGE_PREFIX = 'cdc.barrier';
/** Resync chunk watermarks (pgbridge resync): low opens a window, high carries the chunk read inside it. */
export const RESYNC_LOW_PREFIX = 'cdc.resync.low';
export const RESYNC_HIGH_PREFIX = 'cdc.resync.high';

/** Payload of a high watermark: the chunk the resync read between its low and high watermarks. */
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
      case 'message': {
        if (!msg.transactional) return { events: [], end: null };
        this.requireTxn('message');
        if (msg.prefix === ORIGIN_MESSAGE_PREFIX) {
          // Fallback loop marker written by apply when it cannot use replication origins (INV-5).
          this.txn!.origin = msg.content.toString('utf8');
          return { events: [], end: null };
        }
        if (msg.prefix === BARRIER_MESSAGE_PREFIX) {
          return this.emit({ kind: 'control', control: 'barrier', id: msg.content.toString('utf8'), payload: null, lsn, txn: this.context(), index: 0, last: false });
        }
        if (msg.prefix === RESYNC_LOW_PREFIX) {
          const w = JSON.parse(msg.content.toString('utf8')) as { id: string; pipeline: string; table: string };
          if (w.pipeline === this.opts.pipeline) this.windows.set(w.id, { table: w.table, keys: new Set() });
          return { events: [], end: null };
        }
        if (msg.prefix === RESYNC_HIGH_PREFIX) return this.resyncChunk(JSON.parse(msg.content.toString('utf8')) as ResyncChunk, lsn);
        return { events: [], end: null };
      }
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
          out.push(...this.emit({ kind: 'change', table, relationOid: rel.oid, op: 't', before: null, after: null, key: null, unchanged: [], lsn, txn: this.context(), index: 0, last: false }).events);
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
    if (!w) return { events: [], end: null }; // low watermark not seen (before our start): the resync retries that chunk
    const out: CaptureEvent[] = [];
    const keyIdx = chunk.key.map((k) => chunk.table.columns.findIndex((c) => c.name === k));
    for (const raw of chunk.rows) {
      if (w.keys.has(JSON.stringify(keyIdx.map((i) => raw[i] ?? null)))) continue;
      const { row: after } = this.row(chunk.table, raw, () => `${chunk.table.schema}.${chunk.table.table} (resync chunk ${chunk.id})`, null);
      const key = keyOf(chunk.table, after);
      out.push(...this.emit({ kind: 'change', table: chunk.table, relationOid: 0, op: 'r', before: null, after, key, unchanged: [], lsn, txn: this.context(), snapshot: true, index: 0, last: false }).events);
    }
    return { events: out, end: null };
  }

  /** Notes a changed key for every open resync window of this table. */
  private touch(rel: Relation, tuple: TupleValue[] | null): void {
    if (!tuple || this.windows.size === 0) return;
    const name = `${rel.schema}.${rel.table}`;
    let key: string | null = null;
    for (const w of this.windows.values()) {
      if (w.table !== name) continue;
      key ??= JSON.stringify(rel.columns.flatMap((c, i) => {
        if (!c.key) return [];
        const v = tuple[i];
        return [v === undefined || v === UNCHANGED ? null : v];
      }));
      w.keys.add(key);
    }
  }

  private emitRow(msg: Extract<PgoutputMessage, { tag: 'insert' | 'update' | 'delete' }>, lsn: Lsn): { events: CaptureEvent[]; end: null } {
    const rel = msg.relation;
    if (this.windows.size) {
      this.touch(rel, msg.tag === 'insert' ? msg.newTuple : msg.tag === 'update' ? msg.newTuple : msg.oldTuple);
      if (msg.tag === 'update' && msg.oldTuple) this.touch(rel, msg.oldTuple);
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

  private tableDef(rel: Relation): TableDef {
    return {
      schema: rel.schema,
      table: rel.table,
      replicaIdentity: rel.replicaIdentity,
      columns: rel.columns.map((c) => ({ name: c.name, typeOid: c.typeOid, typeMod: c.typeMod, typeName: this.opts.typeName(c.typeOid, c.typeMod), key: c.key })),
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
