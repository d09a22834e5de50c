/**
 * Writes change events into the open destination transaction, detecting and resolving
 * conflicts. The common case is one statement per event whose WHERE clause also proves
 * "no conflict"; only when it touches nothing is the existing row read to classify.
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { rowToJson, toPgParam } from '../../shared/avro.js';
import { policyFor, type ConflictPolicy, type PipelineConfig } from '../../shared/config.js';
import { ClusterNaming } from '../../shared/naming.js';
import { PgBridgeError, errorMessage } from '../../shared/errors.js';
import { formatLsn } from '../../shared/lsn.js';
import { qi, qt } from '../../shared/pg.js';
import { isSelected } from '../../shared/selection.js';
import { incomingWins, originDiffers, resolve, type ConflictKind, type Resolution, type Stamp } from './conflict-resolver.js';
import type { ChangeEvent, Row } from './event-decoder.js';
import type { ShapeGaps } from './shape-gaps.js';
import { inReplay, keylessPassedOver, type ReplayRange } from './replay-range.js';

interface Column {
  readonly name: string;
  readonly type: string;
  readonly generated: boolean;
  /** GENERATED ALWAYS AS IDENTITY: inserts need OVERRIDING SYSTEM VALUE, and an UPDATE cannot set it. */
  readonly identityAlways: boolean;
}

interface TableInfo {
  readonly schema: string;
  readonly table: string;
  readonly qname: string;
  readonly columns: ReadonlyMap<string, Column>;
  /** Primary key columns; empty for tables matched on all columns (REPLICA IDENTITY FULL). */
  readonly key: readonly string[];
  /** Unique indexes other than the primary key (a collision there is multiple_unique_conflicts). */
  readonly uniques: readonly UniqueIndex[];
  /** A primary key whose columns all have canonical text forms: changes can be batched (batchShape). */
  readonly batchableKey: boolean;
  /** A partitioned table (its rows live in partitions: a ctid names a row only with its tableoid). */
  readonly partitioned: boolean;
  /** ' OVERRIDING SYSTEM VALUE' when a column is GENERATED ALWAYS AS IDENTITY (the source's value is kept), else ''. */
  readonly overriding: string;
}

interface UniqueIndex {
  readonly name: string;
  /** Key columns; null for expression or partial indexes (the holding row is not looked up). */
  readonly columns: readonly string[] | null;
}

/** A destination row, locked, and who last wrote it. */
interface Existing {
  /** jsonb text: parsing it here would round large numbers. */
  readonly rowJson: string;
  readonly stamp: Stamp;
  readonly ctid: string;
}

/** Which batch an event can join (same shape) and its key within the batch. */
export interface BatchShape {
  readonly shape: string;
  readonly key: string;
}

export interface ConflictRecord {
  readonly kind: ConflictKind;
  readonly resolution: Resolution;
}

export interface WriteResult {
  readonly rows: number;
  readonly conflicts: ConflictRecord[];
  /** Of `rows`, those written by a set-based statement (the rest went one by one). */
  readonly setRows?: number;
}

/** Thrown by a `fail` policy: the direction stops, nothing of the transaction is applied. */
export class ConflictStop extends PgBridgeError {}

export class RowWriter {
  private readonly tables = new Map<string, TableInfo>();
  /** The range pgbridge replay asked to re-apply, while apply is in it (see replay-range.ts). */
  replay: ReplayRange | null = null;

  constructor(
    private readonly client: pg.Client,
    private readonly cfg: PipelineConfig,
    private readonly direction: string,
    /** Destination cluster name (local writes carry replication origin 0). */
    private readonly localCluster: string,
    /** replication origin id → cluster name, on the destination. */
    private readonly originNames: ReadonlyMap<number, string>,
    /**
     * Reverse direction while DDL is replicated forward: an event written against a shape the
     * destination has left behind (a column or table renamed or dropped by a replicated DDL
     * while the event was on its way) is mapped to the new names, or loses what no longer
     * exists, instead of stopping (shape-gaps.ts).
     */
    private readonly gaps: ShapeGaps | null = null,
  ) {
    this.roidents = new Map([[localCluster, 0], ...[...originNames].map(([id, name]): [string, number] => [name, id])]);
  }

  /** cluster name → replication origin id on the destination (0: written locally). */
  private readonly roidents: Map<string, number>;

  /** Forget cached table shapes (after DDL on the destination). */
  invalidate(): void {
    this.tables.clear();
  }

  private async info(schema: string, table: string): Promise<TableInfo> {
    const k = `${schema}.${table}`;
    const hit = this.tables.get(k);
    if (hit) return hit;
    const r = await this.client
      .query<{ name: string; type: string; generated: string; identity: string; pk: boolean }>(
        `SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, a.attgenerated AS generated, a.attidentity AS identity,
              COALESCE(a.attnum = ANY(i.indkey), false) AS pk
         FROM pg_attribute a
         LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
        WHERE a.attrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum`,
        [schema, table],
      )
      .catch((err: unknown) => {
        throw new PgBridgeError('DESTINATION_REJECTED', `table ${k} is not usable on the destination: ${errorMessage(err)}`, { cause: err });
      });
    const u = await this.client.query<{ name: string; plain: boolean; cols: string }>(
      `SELECT c.relname AS name, i.indexprs IS NULL AND i.indpred IS NULL AS plain,
              (SELECT json_agg(a.attname ORDER BY k.o) FROM unnest(i.indkey) WITH ORDINALITY k(n, o)
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n)::text AS cols
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass AND i.indisunique AND NOT i.indisprimary`,
      [schema, table],
    );
    const columns = new Map<string, Column>();
    for (const c of r.rows) columns.set(c.name, { name: c.name, type: c.type, generated: c.generated !== '', identityAlways: c.identity === 'a' });
    const uniques = u.rows.map((x) => ({ name: x.name, columns: x.plain && x.cols ? (JSON.parse(x.cols) as string[]) : null }));
    const key = r.rows.filter((c) => c.pk).map((c) => c.name);
    const batchableKey = key.length > 0 && key.every((k) => CANONICAL_KEY_TYPE.test(columns.get(k)!.type));
    const kind = await this.client.query<{ relkind: string }>(
      `SELECT relkind FROM pg_class WHERE oid = (quote_ident($1) || '.' || quote_ident($2))::regclass`,
      [schema, table],
    );
    const partitioned = kind.rows[0]?.relkind === 'p';
    const overriding = [...columns.values()].some((c) => c.identityAlways) ? ' OVERRIDING SYSTEM VALUE' : '';
    const t: TableInfo = { schema, table, qname: qt(schema, table), columns, key, uniques, batchableKey, partitioned, overriding };
    this.tables.set(k, t);
    return t;
  }

  private async q(text: string, values: unknown[]): Promise<pg.QueryResult> {
    // Named statements are parsed and planned once per connection.
    const name = `pgb_${createHash('sha1').update(text).digest('hex').slice(0, 24)}`;
    return this.client.query({ name, text, values });
  }

  /** Applies one change event. */
  async write(event: ChangeEvent): Promise<WriteResult> {
    let ev = event;
    let t: TableInfo;
    try {
      t = await this.info(ev.schema, ev.table);
    } catch (err) {
      if (!this.gaps || (await this.exists(ev.schema, ev.table))) throw err;
      const to = await this.gaps.renamedTable(ev.schema, ev.table, (n) => this.exists(ev.schema, n));
      if (to === null || !isSelected(this.cfg, ev.schema, to)) return { rows: 0, conflicts: [] };
      ev = { ...ev, table: to };
      t = await this.info(ev.schema, to);
    }
    const unknown = (): string | undefined => [ev.before, ev.after].flatMap((row) => Object.keys(row ?? {})).find((c) => !t.columns.has(c));
    if (unknown() !== undefined) {
      // The destination may have been altered since its shape was cached: look again once.
      this.tables.delete(`${ev.schema}.${ev.table}`);
      t = await this.info(ev.schema, ev.table);
      const missing = unknown();
      if (missing !== undefined && !this.gaps)
        throw new PgBridgeError('DESTINATION_REJECTED', `column ${missing} of ${t.schema}.${t.table} does not exist on the destination`);
      if (missing !== undefined) ev = await this.gaps!.adapt(ev, (c) => t.columns.has(c));
    }
    // A replayed change of a table without a key cannot be told from a new one (it would double rows).
    if (t.key.length === 0 && keylessPassedOver(this.replay, ev.pos.offset)) return { rows: 0, conflicts: [] };
    switch (ev.op) {
      case 'c':
      case 'r':
        return this.insert(t, ev);
      case 'u':
        return this.guarded(t, ev, ev.before ?? ev.after!, () => this.update(t, ev));
      case 'd':
        return this.delete(t, ev);
      case 't':
        return this.truncate([ev]);
    }
  }

  private async exists(schema: string, table: string): Promise<boolean> {
    const r = await this.client.query<{ t: string | null }>(`SELECT to_regclass(quote_ident($1) || '.' || quote_ident($2))::text AS t`, [schema, table]);
    return r.rows[0]?.t != null;
  }

  /**
   * The tables of one source TRUNCATE, truncated by one statement: PostgreSQL refuses to
   * truncate a table that another one references unless both are in the same statement.
   * Partitioned tables are truncated with their partitions, the others ONLY (a source
   * TRUNCATE lists inheritance children that it truncated on their own).
   */
  async truncate(evs: readonly ChangeEvent[]): Promise<WriteResult> {
    const names: string[] = [];
    for (const ev of evs) {
      const t = await this.info(ev.schema, ev.table);
      const name = `${t.partitioned ? '' : 'ONLY '}${t.qname}`;
      if (!names.includes(name)) names.push(name);
    }
    if (names.length) await this.client.query(`TRUNCATE ${names.join(', ')}`);
    return { rows: 0, conflicts: [] };
  }

  /**
   * Runs a write on a table with unique keys besides the primary key. A collision
   * on one of them is rolled back to before the event (including any conflict row it recorded)
   * and reported as multiple_unique_conflicts, instead of failing the destination transaction
   * as a poison event. Tables without such keys pay nothing.
   */
  private async guarded(t: TableInfo, ev: ChangeEvent, keyRow: Row, fn: () => Promise<WriteResult>): Promise<WriteResult> {
    if (t.uniques.length === 0) return fn();
    await this.client.query('SAVEPOINT pgbridge_event');
    let result: WriteResult;
    try {
      result = await fn();
    } catch (err) {
      const e = err as { code?: string; constraint?: string };
      if (e.code !== '23505' || !t.uniques.some((x) => x.name === e.constraint)) throw err;
      await this.client.query('ROLLBACK TO SAVEPOINT pgbridge_event');
      await this.client.query('RELEASE SAVEPOINT pgbridge_event');
      const res = await this.conflict(t, ev, 'multiple_unique_conflicts', await this.uniqueHolder(t, ev.after!, keyRow), keyRow);
      return { rows: 0, conflicts: [res] };
    }
    await this.client.query('RELEASE SAVEPOINT pgbridge_event');
    return result;
  }

  /** The row (other than the one keyRow names) that holds one of row's unique values, if it can be found. */
  private async uniqueHolder(t: TableInfo, row: Row, keyRow: Row | null): Promise<Existing | null> {
    for (const u of t.uniques) {
      if (!u.columns || !u.columns.every((c) => row[c] !== null && row[c] !== undefined)) continue;
      const values = u.columns.map((c) => toPgParam(row[c]));
      let sql = u.columns.map((c, i) => `x.${qi(c)} = $${i + 1}`).join(' AND ');
      if (keyRow && t.key.length > 0 && t.key.every((k) => k in keyRow)) {
        sql += ` AND NOT (${t.key.map((k, i) => `x.${qi(k)} IS NOT DISTINCT FROM $${values.length + i + 1}`).join(' AND ')})`;
        values.push(...t.key.map((k) => toPgParam(keyRow[k])));
      }
      const hit = await this.lookup(t, sql, values);
      if (hit) return hit;
    }
    return null;
  }

  private incoming(ev: ChangeEvent): Stamp {
    return { ts: ev.commitTs, origin: ev.origin };
  }

  /** Columns an INSERT writes: generated columns never (the destination computes them). */
  private writable(t: TableInfo, row: Row, unchanged: readonly string[]): string[] {
    const skip = new Set(unchanged);
    return Object.keys(row).filter((c) => !skip.has(c) && !t.columns.get(c)!.generated);
  }

  /**
   * Columns an UPDATE sets: as writable, less GENERATED ALWAYS identity columns, which
   * PostgreSQL lets an UPDATE set only to DEFAULT. Their value on the source changes only by
   * `UPDATE … SET col = DEFAULT`, which is not carried (docs/operations.md).
   */
  private settable(t: TableInfo, row: Row, unchanged: readonly string[]): string[] {
    return this.writable(t, row, unchanged).filter((c) => !t.columns.get(c)!.identityAlways);
  }

  /**
   * WHERE clause matching one row of `${t.qname} x`: by primary key, or (no key) by every
   * column, first match only. Columns are qualified: the row stamp query joins a function
   * whose columns (timestamp, roident) would otherwise shadow user columns of those names.
   */
  private match(t: TableInfo, row: Row, startAt: number): { sql: string; values: unknown[] } {
    if (t.key.length > 0) {
      const by = this.identity(t, row);
      return {
        sql: by.map((k, i) => `x.${qi(k)} = $${startAt + i}`).join(' AND '),
        values: by.map((k) => toPgParam(row[k])),
      };
    }
    // REPLICA IDENTITY FULL: compare the text forms (json, point and xml have no equality operator).
    const cols = Object.keys(row).filter((c) => !t.columns.get(c)!.generated);
    const cond = cols.map((c, i) => `y.${qi(c)}::text IS NOT DISTINCT FROM ($${startAt + i}::${t.columns.get(c)!.type})::text`).join(' AND ');
    // A partitioned table: the same ctid can name a row in each partition.
    const id = t.partitioned ? ['(x.tableoid, x.ctid)', 'y.tableoid, y.ctid'] : ['x.ctid', 'y.ctid'];
    return {
      sql: `${id[0]} = (SELECT ${id[1]} FROM ${t.qname} y WHERE ${cond} LIMIT 1 FOR UPDATE)`,
      values: cols.map((c) => toPgParam(row[c])),
    };
  }

  /**
   * The columns that find the row of a keyed table: its primary key, or, when the event's row
   * lacks it, a unique index of the destination whose columns the row has. That is the case of
   * REPLICA IDENTITY USING INDEX on the source: pgoutput sends an old row with the index's
   * columns and every other column null.
   */
  private identity(t: TableInfo, row: Row): readonly string[] {
    const has = (c: string): boolean => c in row && row[c] !== null && row[c] !== undefined;
    if (t.key.every(has)) return t.key;
    const by = t.uniques.find((u) => u.columns?.length && u.columns.every(has))?.columns;
    if (by) return by;
    throw new PgBridgeError(
      'POISON',
      `event for ${t.schema}.${t.table} lacks key column(s) ${t.key.filter((k) => !has(k)).join(', ')}, and no unique index of the destination table covers the columns it has (${Object.keys(row).filter(has).join(', ')})`,
    );
  }

  /** Reads the destination row (locked) and who last wrote it. */
  private async existing(t: TableInfo, row: Row): Promise<Existing | null> {
    const m = this.match(t, row, 1);
    return this.lookup(t, m.sql, m.values);
  }

  private async lookup(t: TableInfo, where: string, values: unknown[]): Promise<Existing | null> {
    const r = await this.q(
      `SELECT to_jsonb(x.*) AS row, x.tableoid::text || x.ctid::text AS ctid,
              (EXTRACT(EPOCH FROM c.timestamp) * 1000000)::bigint::text AS ts, c.roident::int AS roident
         FROM ${t.qname} x
         LEFT JOIN LATERAL pg_xact_commit_timestamp_origin(x.xmin) c ON true
        WHERE ${where} LIMIT 1 FOR UPDATE OF x`,
      values,
    );
    const hit = r.rows[0] as { row: string; ctid: string; ts: string | null; roident: string | number | null } | undefined;
    if (!hit) return null;
    // Values arrive as text (RAW_TYPES): '0' means a local write.
    const roident = hit.roident === null ? 0 : Number(hit.roident);
    const origin = roident === 0 ? this.localCluster : (this.originNames.get(roident) ?? `origin#${roident}`);
    return { rowJson: hit.row, ctid: hit.ctid, stamp: { ts: hit.ts === null ? null : BigInt(hit.ts), origin } };
  }

  private async insertRow(t: TableInfo, row: Row, unchanged: readonly string[], onConflictNothing: boolean): Promise<number> {
    const cols = this.writable(t, row, unchanged);
    const text = `INSERT INTO ${t.qname} (${cols.map(qi).join(', ')})${t.overriding} VALUES (${cols.map((_, i) => `$${i + 1}`).join(', ')})${onConflictNothing ? ' ON CONFLICT DO NOTHING' : ''}`;
    const r = await this.q(
      text,
      cols.map((c) => toPgParam(row[c])),
    );
    return r.rowCount ?? 0;
  }

  private async updateRow(t: TableInfo, where: Row, row: Row, unchanged: readonly string[]): Promise<number> {
    const cols = this.settable(t, row, unchanged);
    if (cols.length === 0) return 1;
    const m = this.match(t, where, cols.length + 1);
    const text = `UPDATE ${t.qname} x SET ${cols.map((c, i) => `${qi(c)} = $${i + 1}`).join(', ')} WHERE ${m.sql}`;
    const r = await this.q(text, [...cols.map((c) => toPgParam(row[c])), ...m.values]);
    return r.rowCount ?? 0;
  }

  /**
   * The common case of an update or delete in one statement: it touches the row only when
   * there is no conflict, i.e. the row was last written by the incoming origin, or earlier
   * than the incoming change (the same rule as originDiffers, evaluated in the database).
   * Touching nothing sends the event down the path that reads the row and classifies.
   * A tie on the timestamp is decided against the local cluster, the only other writer of
   * a two-cluster pipeline.
   */
  private noConflictSql(ev: ChangeEvent, at: number): { sql: string; values: unknown[] } {
    const st = this.stamp(ev);
    return { sql: noConflict(`$${at}::oid`, `$${at + 1}::bigint`, `$${at + 2}::boolean`), values: [st.roident, st.commitTs, st.tie] };
  }

  /** What the no-conflict condition compares of an event: its origin's roident here, its commit time (µs), its tie flag. */
  private stamp(ev: ChangeEvent): { roident: string; commitTs: string; tie: boolean } {
    // An origin with no replication origin here matches no row's roident (4294967295 is never assigned).
    return { roident: String(this.roidents.get(ev.origin) ?? 4294967295), commitTs: ev.commitTs.toString(), tie: ev.origin > this.localCluster };
  }

  /** Fast path of update(): primary key unchanged, no conflict. Returns false to take the full path. */
  private async updateIfNoConflict(t: TableInfo, ev: ChangeEvent, where: Row, after: Row): Promise<boolean> {
    if (t.key.length === 0 || keyMoves(t, where, after)) return false;
    const cols = this.settable(t, after, ev.unchanged);
    if (cols.length === 0) return false;
    const m = this.match(t, where, cols.length + 1);
    const nc = this.noConflictSql(ev, cols.length + m.values.length + 1);
    const r = await this.q(`UPDATE ${t.qname} x SET ${cols.map((c, i) => `${qi(c)} = $${i + 1}`).join(', ')} WHERE ${m.sql} AND ${nc.sql}`, [
      ...cols.map((c) => toPgParam(after[c])),
      ...m.values,
      ...nc.values,
    ]);
    return (r.rowCount ?? 0) === 1;
  }

  /** Fast path of delete(), as updateIfNoConflict. */
  private async deleteIfNoConflict(t: TableInfo, ev: ChangeEvent, where: Row): Promise<boolean> {
    if (t.key.length === 0) return false;
    const m = this.match(t, where, 1);
    const nc = this.noConflictSql(ev, m.values.length + 1);
    const r = await this.q(`DELETE FROM ${t.qname} x WHERE ${m.sql} AND ${nc.sql}`, [...m.values, ...nc.values]);
    return (r.rowCount ?? 0) === 1;
  }

  private async deleteRow(t: TableInfo, where: Row): Promise<number> {
    const m = this.match(t, where, 1);
    const r = await this.q(`DELETE FROM ${t.qname} x WHERE ${m.sql}`, m.values);
    return r.rowCount ?? 0;
  }

  /**
   * The batch an event can join: events of one shape (table, op, written columns) go to the
   * destination as one set-based statement (writeMany). Null when the event must be written
   * alone: no primary key, a key column whose text form does not tell equal values apart,
   * an update that moves the key or touches a table with other unique indexes (their checks
   * would see the rows in statement order, not in source order), a missing key.
   */
  batchShape(ev: ChangeEvent): BatchShape | null | Promise<BatchShape | null> {
    // Synchronous once the table's shape is cached: no promise per event on the hot path.
    const t = this.tables.get(`${ev.schema}.${ev.table}`);
    // With gaps, a table the destination lacks goes to write(), which maps or skips its events.
    if (!t)
      return this.info(ev.schema, ev.table).then(
        () => this.batchShape(ev),
        (err: unknown) => (this.gaps ? null : Promise.reject(err)),
      );
    if (!t.batchableKey) return null;
    const row = ev.op === 'd' ? ev.before : ev.op === 'u' ? (ev.before ?? ev.after) : ev.after;
    if (!row || !t.key.every((k) => row[k] !== null && row[k] !== undefined)) return null;
    if ([ev.before, ev.after].some((r) => r && Object.keys(r).some((c) => !t.columns.has(c)))) return null;
    let cols: string[] = [];
    if (ev.op === 'c' || ev.op === 'r') {
      cols = this.writable(t, ev.after!, []);
    } else if (ev.op === 'u') {
      if (!ev.after || t.uniques.length > 0 || keyMoves(t, row, ev.after)) return null;
      cols = this.settable(t, ev.after, ev.unchanged);
      if (cols.length === 0) return null;
    } else if (ev.op !== 'd') {
      return null;
    }
    const key = t.key.length === 1 ? String(textOf(row[t.key[0]!])) : JSON.stringify(t.key.map((k) => textOf(row[k])));
    return { shape: `${ev.op}\n${t.qname}\n${cols.join(',')}`, key };
  }

  /**
   * Writes a batch of one shape (see batchShape; keys distinct) with one statement whose
   * parameters are one text array per column, after which every row it did not touch goes
   * through the single-row path (write), which classifies and resolves the conflict exactly
   * as if the event had come alone:
   * - insert: `INSERT … SELECT … FROM unnest(…) ON CONFLICT DO NOTHING`; rows a unique key refused;
   * - update, delete: `UPDATE … FROM unnest(…)` / `DELETE … USING unnest(…)` with the same
   *   no-conflict condition as the single-row fast path, per row (each event has its own
   *   origin and commit time); rows that are missing or were last written by another origin.
   */
  async writeMany(evs: readonly ChangeEvent[]): Promise<WriteResult> {
    const first = evs[0]!;
    const t = await this.info(first.schema, first.table);
    const done = first.op === 'd' ? await this.deleteSet(t, evs) : first.op === 'u' ? await this.updateSet(t, evs) : await this.insertSet(t, evs);
    let rows = done.size;
    const conflicts: ConflictRecord[] = [];
    if (done.size < evs.length) {
      const held = await this.alreadyHeld(t, evs, done);
      for (const [i, ev] of evs.entries()) {
        if (done.has(i + 1) || held.has(i + 1)) continue;
        const w = await this.write(ev);
        rows += w.rows;
        conflicts.push(...w.conflicts);
      }
    }
    return { rows, conflicts, setRows: done.size };
  }

  /**
   * Ordinals of replayed events (pgbridge replay) the destination shows already: an insert
   * whose row is there with the same values, a delete whose row is gone. They are neither
   * written nor recorded as conflicts: without this a replay over a destination that holds
   * the range records one insert_exists per row, one by one (20,000 replayed inserts of rows
   * b held: 385 rows/s and 20,000 conflict rows; with this check 5,042 rows/s and none). Under
   * fail and fail-strict they still go the single-row way, and stop.
   */
  private async alreadyHeld(t: TableInfo, evs: readonly ChangeEvent[], done: ReadonlySet<number>): Promise<Set<number>> {
    const first = evs[0]!;
    const policy = this.policy(t, first);
    const replayed = evs.filter((ev, i) => !done.has(i + 1) && inReplay(this.replay, ev.pos.offset));
    if (!replayed.length || policy === 'fail' || policy === 'fail-strict' || first.op === 'u') return new Set();
    const ordinalOf = new Map(replayed.map((ev) => [ev, evs.indexOf(ev) + 1]));
    const type = (c: string): string => t.columns.get(c)!.type;
    let r: pg.QueryResult;
    if (first.op === 'd') {
      const keys = [...t.key];
      r = await this.q(
        `SELECT v.n::int AS n FROM unnest(${keys.map((_, i) => `$${i + 1}::text[]`).join(', ')}) WITH ORDINALITY AS v(${keys.map((_, i) => `k${i}`).join(', ')}, n)
          WHERE NOT EXISTS (SELECT 1 FROM ${t.qname} x WHERE ${keyMatch(t, keys)})`,
        this.columnArrays(replayed, keys, (ev) => ev.before!),
      );
    } else {
      const cols = this.writable(t, first.after!, []);
      if (!t.key.every((k) => cols.includes(k))) return new Set();
      const on = t.key.map((k) => `x.${qi(k)} = v.c${cols.indexOf(k)}::${type(k)}`).join(' AND ');
      const same = cols.map((c, i) => `x.${qi(c)}::text IS NOT DISTINCT FROM (v.c${i}::${type(c)})::text`).join(' AND ');
      r = await this.q(
        `SELECT v.n::int AS n FROM unnest(${cols.map((_, i) => `$${i + 1}::text[]`).join(', ')}) WITH ORDINALITY AS v(${cols.map((_, i) => `c${i}`).join(', ')}, n)
           JOIN ${t.qname} x ON ${on} WHERE ${same}`,
        this.columnArrays(replayed, cols, (ev) => ev.after!),
      );
    }
    return new Set([...ordinals(r)].map((n) => ordinalOf.get(replayed[n - 1]!)!));
  }

  /** One text[] parameter per column: text forms, cast to the column type in SQL. */
  private columnArrays(evs: readonly ChangeEvent[], cols: readonly string[], rowOf: (ev: ChangeEvent) => Row): (string | null)[][] {
    const arrays = cols.map(() => new Array<string | null>(evs.length));
    for (let r = 0; r < evs.length; r++) {
      const row = rowOf(evs[r]!);
      for (let c = 0; c < cols.length; c++) arrays[c]![r] = textOf(row[cols[c]!]);
    }
    return arrays;
  }

  /** The no-conflict condition of noConflictSql, per row of `v` (columns ro, ts, tie). */
  private noConflictArrays(evs: readonly ChangeEvent[]): { sql: string; arrays: string[][] } {
    const ro: string[] = [];
    const ts: string[] = [];
    const tie: string[] = [];
    for (const ev of evs) {
      const st = this.stamp(ev);
      ro.push(st.roident);
      ts.push(st.commitTs);
      tie.push(st.tie ? 't' : 'f');
    }
    return { sql: noConflict('v.pgb_ro::oid', 'v.pgb_ts::bigint', 'v.pgb_tie::boolean'), arrays: [ro, ts, tie] };
  }

  /** Ordinals (1-based) of the rows inserted. */
  private async insertSet(t: TableInfo, evs: readonly ChangeEvent[]): Promise<Set<number>> {
    const cols = this.writable(t, evs[0]!.after!, []);
    const names = cols.map((_, i) => `c${i}`);
    const typed = (c: string, i: number): string => `v.c${i}::${t.columns.get(c)!.type}`;
    const keyJoin = t.key.map((k) => `ins.${qi(k)} = ${typed(k, cols.indexOf(k))}`).join(' AND ');
    const text = `WITH v AS (SELECT * FROM unnest(${cols.map((_, i) => `$${i + 1}::text[]`).join(', ')}) WITH ORDINALITY AS v(${names.join(', ')}, n)),
      ins AS (INSERT INTO ${t.qname} (${cols.map(qi).join(', ')})${t.overriding} SELECT ${cols.map(typed).join(', ')} FROM v ORDER BY v.n ON CONFLICT DO NOTHING RETURNING ${t.key.map(qi).join(', ')})
      SELECT v.n::int AS n FROM ins JOIN v ON ${keyJoin}`;
    const r = await this.q(
      text,
      this.columnArrays(evs, cols, (ev) => ev.after!),
    );
    return ordinals(r);
  }

  /** Ordinals of the rows updated (present and last written without conflict). */
  private async updateSet(t: TableInfo, evs: readonly ChangeEvent[]): Promise<Set<number>> {
    const first = evs[0]!;
    const cols = this.settable(t, first.after!, first.unchanged);
    const keys = [...t.key];
    const nc = this.noConflictArrays(evs);
    const names = [...cols.map((_, i) => `c${i}`), ...keys.map((_, i) => `k${i}`), 'pgb_ro', 'pgb_ts', 'pgb_tie'];
    const params = [...this.columnArrays(evs, cols, (ev) => ev.after!), ...this.columnArrays(evs, keys, (ev) => ev.before ?? ev.after!), ...nc.arrays];
    const text = `UPDATE ${t.qname} x SET ${cols.map((c, i) => `${qi(c)} = v.c${i}::${t.columns.get(c)!.type}`).join(', ')}
      FROM unnest(${params.map((_, i) => `$${i + 1}::text[]`).join(', ')}) WITH ORDINALITY AS v(${names.join(', ')}, n)
      WHERE ${keyMatch(t, keys)} AND ${nc.sql}
      RETURNING v.n::int AS n`;
    const r = await this.q(text, params);
    return ordinals(r);
  }

  /** Ordinals of the rows deleted. */
  private async deleteSet(t: TableInfo, evs: readonly ChangeEvent[]): Promise<Set<number>> {
    const keys = [...t.key];
    const nc = this.noConflictArrays(evs);
    const names = [...keys.map((_, i) => `k${i}`), 'pgb_ro', 'pgb_ts', 'pgb_tie'];
    const params = [...this.columnArrays(evs, keys, (ev) => ev.before!), ...nc.arrays];
    const text = `DELETE FROM ${t.qname} x
      USING unnest(${params.map((_, i) => `$${i + 1}::text[]`).join(', ')}) WITH ORDINALITY AS v(${names.join(', ')}, n)
      WHERE ${keyMatch(t, keys)} AND ${nc.sql}
      RETURNING v.n::int AS n`;
    const r = await this.q(text, params);
    return ordinals(r);
  }

  private async insert(t: TableInfo, ev: ChangeEvent): Promise<WriteResult> {
    const after = ev.after!;
    if (t.key.length === 0) return this.guarded(t, ev, after, async () => ({ rows: await this.insertRow(t, after, [], false), conflicts: [] }));
    // The common case costs one statement (no savepoint): ON CONFLICT DO NOTHING covers every unique key.
    if ((await this.insertRow(t, after, [], true)) === 1) return { rows: 1, conflicts: [] };
    const cur = await this.existing(t, after);
    if (cur && ev.op === 'r') {
      // An initial-sync or resync row over an existing row is expected, not a conflict: the
      // policy decides who wins (resync rows carry the time of their read), nothing is recorded.
      const policy = this.policy(t, ev);
      if (policy === 'ignore' || ((policy === 'last-writer-wins' || inReplay(this.replay, ev.pos.offset)) && !incomingWins(this.incoming(ev), cur.stamp)))
        return { rows: 0, conflicts: [] };
      return this.guarded(t, ev, after, async () => ({ rows: await this.updateRow(t, after, after, []), conflicts: [] }));
    }
    if (!cur) {
      // Not the primary key: another unique constraint holds a different row.
      const res = await this.conflict(t, ev, 'multiple_unique_conflicts', await this.uniqueHolder(t, after, null), after);
      return { rows: 0, conflicts: [res] };
    }
    return this.guarded(t, ev, after, async () => {
      const res = await this.conflict(t, ev, 'insert_exists', cur, after);
      if (res.resolution !== 'apply_remote') return { rows: 0, conflicts: [res] };
      return { rows: await this.updateRow(t, after, after, []), conflicts: [res] };
    });
  }

  private async update(t: TableInfo, ev: ChangeEvent): Promise<WriteResult> {
    const after = ev.after!;
    const where = ev.before ?? after;
    if (await this.updateIfNoConflict(t, ev, where, after)) return { rows: 1, conflicts: [] };
    const cur = await this.existing(t, where);
    const conflicts: ConflictRecord[] = [];
    if (!cur) {
      const res = await this.conflict(t, ev, 'update_missing', null, where);
      conflicts.push(res);
      // DTS behaviour: the update becomes an insert of the new row (unchanged TOAST values
      // are not known here: those columns take their defaults, and the conflict row says so).
      if (res.resolution !== 'apply_remote') return { rows: 0, conflicts };
      if ((await this.insertRow(t, after, ev.unchanged, true)) === 1) return { rows: 1, conflicts };
      // The insert touched nothing: its key, or another unique key, is held by another row.
      // Say so rather than report a write that did not happen.
      const taken = t.key.length > 0 ? await this.existing(t, after) : null;
      if (!taken) {
        conflicts.push(await this.conflict(t, ev, 'multiple_unique_conflicts', await this.uniqueHolder(t, after, null), after));
        return { rows: 0, conflicts };
      }
      const res2 = await this.conflict(t, ev, 'update_exists', taken, after);
      conflicts.push(res2);
      if (res2.resolution !== 'apply_remote') return { rows: 0, conflicts };
      return { rows: await this.updateRow(t, after, after, ev.unchanged), conflicts };
    }
    if (originDiffers(this.incoming(ev), cur.stamp)) {
      const res = await this.conflict(t, ev, 'update_origin_differs', cur, where);
      conflicts.push(res);
      if (res.resolution !== 'apply_remote') return { rows: 0, conflicts };
    }
    return { rows: await this.updateMoving(t, ev, cur, where, after, conflicts), conflicts };
  }

  /** UPDATE that may change the primary key; a new key held by another row is update_exists. */
  private async updateMoving(t: TableInfo, ev: ChangeEvent, cur: Existing, where: Row, after: Row, conflicts: ConflictRecord[]): Promise<number> {
    const moves = t.key.length > 0 && keyMoves(t, where, after);
    if (moves) {
      const taken = await this.existing(t, after);
      // A key whose text changes but whose value does not (numeric 1.0 → 1.00, citext case)
      // finds the row itself: not a conflict, and deleting it would lose the row.
      if (taken && taken.ctid !== cur.ctid) {
        const res = await this.conflict(t, ev, 'update_exists', taken, after);
        conflicts.push(res);
        if (res.resolution !== 'apply_remote') return 0;
        await this.deleteRow(t, after);
      }
    }
    return this.updateRow(t, where, after, ev.unchanged);
  }

  private async delete(t: TableInfo, ev: ChangeEvent): Promise<WriteResult> {
    const before = ev.before!;
    if (await this.deleteIfNoConflict(t, ev, before)) return { rows: 1, conflicts: [] };
    const cur = await this.existing(t, before);
    if (!cur) {
      const res = await this.conflict(t, ev, 'delete_missing', null, before);
      return { rows: 0, conflicts: [res] };
    }
    const conflicts: ConflictRecord[] = [];
    if (originDiffers(this.incoming(ev), cur.stamp)) {
      const res = await this.conflict(t, ev, 'delete_origin_differs', cur, before);
      conflicts.push(res);
      if (res.resolution !== 'apply_remote') return { rows: 0, conflicts };
    }
    return { rows: await this.deleteRow(t, before), conflicts };
  }

  /**
   * The table's policy; in a replayed range `overwrite` decides as `last-writer-wins`: a replayed
   * event is old, and must not undo a later write of the other cluster (the range converges to
   * the state it had, and the clusters stay equal).
   */
  private policy(t: TableInfo, ev: ChangeEvent): ConflictPolicy {
    // Policies are keyed by the pipeline's table names; the writer works in the destination's.
    const [schema, table] = new ClusterNaming(this.cfg, this.localCluster).logical(t.schema, t.table) ?? [t.schema, t.table];
    const policy = policyFor(this.cfg, schema, table);
    return policy === 'overwrite' && inReplay(this.replay, ev.pos.offset) ? 'last-writer-wins' : policy;
  }

  /** Decides, records the conflict in cdc.conflicts (same transaction) and stops on `fail` / `fail-strict`. */
  private async conflict(t: TableInfo, ev: ChangeEvent, kind: ConflictKind, cur: Existing | null, keyRow: Row): Promise<ConflictRecord> {
    const policy = this.policy(t, ev);
    const replayId = inReplay(this.replay, ev.pos.offset) ? this.replay.id : null;
    const resolution = resolve(kind, policy, this.incoming(ev), cur?.stamp ?? null);
    const key = t.key.length ? Object.fromEntries(this.identity(t, keyRow).map((k) => [k, rowToJson({ v: keyRow[k] })!.v])) : rowToJson(keyRow);
    const where = `${ev.pos.topic}/${ev.pos.partition}@${ev.pos.offset} (source ${ev.sourceCluster} commit LSN ${formatLsn(ev.commitLsn)})`;
    if (resolution === 'fail') {
      // The key is a row value: at debug level only (PGBRIDGE_LOG_LEVEL=debug), never in the message.
      const during = replayId
        ? ` during replay ${replayId} (the replayed range re-applies events the destination may hold already: pgbridge replay under fail stops at the first one; see docs/operations.md, "Replay and rebuild")`
        : '';
      throw new ConflictStop(
        'CONFLICT',
        `${kind} on ${t.schema}.${t.table} at ${where}${during}: policy "${policy}" stops this direction; nothing of the source transaction was applied`,
        {
          details: { table: `${t.schema}.${t.table}`, kind, topic: ev.pos.topic, partition: ev.pos.partition, offset: String(ev.pos.offset) },
          sensitive: { key },
        },
      );
    }
    const incoming = rowToJson(ev.after ?? ev.before);
    // A conflict of a replayed event carries the replay's id (a helper schema without the column never sees one).
    await this.q(
      `INSERT INTO cdc.conflicts (pipeline, direction, table_name, key, kind, incoming, existing, resolution, policy, source_cluster, source_commit_lsn, source_commit_ts, topic, kafka_partition, kafka_offset${replayId ? ', replay_id' : ''})
       VALUES ($15, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10::pg_lsn, 'epoch'::timestamptz + $11::bigint * interval '1 microsecond', $12, $13, $14${replayId ? ', $16' : ''})`,
      [
        this.direction,
        `${t.schema}.${t.table}`,
        JSON.stringify(key),
        kind,
        JSON.stringify(incoming),
        cur ? cur.rowJson : null,
        kind === 'update_missing' && ev.unchanged.length ? `${resolution} (unchanged TOAST columns ${ev.unchanged.join(', ')} took defaults)` : resolution,
        policy,
        ev.sourceCluster,
        formatLsn(ev.commitLsn),
        ev.commitTs.toString(),
        ev.pos.topic,
        ev.pos.partition,
        ev.pos.offset.toString(),
        this.cfg.pipeline,
        ...(replayId ? [replayId] : []),
      ],
    );
    return { kind, resolution };
  }
}

/**
 * The no-conflict condition on a destination row `x`, given SQL for the incoming origin's
 * roident (oid), commit time (µs, bigint) and tie flag (boolean): the row was last written by
 * that origin, or before the incoming change (the same rule as originDiffers, in the database).
 */
function noConflict(roident: string, commitTsUs: string, tie: string): string {
  const ts = `('epoch'::timestamptz + ${commitTsUs} * interval '1 microsecond')`;
  return `(SELECT c.roident IS NOT DISTINCT FROM ${roident} OR c.timestamp IS NULL OR c.timestamp < ${ts} OR (c.timestamp = ${ts} AND ${tie})
             FROM pg_xact_commit_timestamp_origin(x.xmin) c)`;
}

/** `x.<key> = v.k<i>::<type>` for each key column: a destination row against a row of the unnest. */
function keyMatch(t: TableInfo, keys: readonly string[]): string {
  return keys.map((k, i) => `x.${qi(k)} = v.k${i}::${t.columns.get(k)!.type}`).join(' AND ');
}

/** The ordinals (`v.n`, 1-based) a set-based statement returned. */
function ordinals(r: pg.QueryResult): Set<number> {
  return new Set(r.rows.map((x: { n: string | number }) => Number(x.n)));
}

/**
 * Key column types whose text form is canonical (equal values print alike), so a batch can
 * tell two events of one key apart from two keys. numeric (1.0 and 1.00), citext, floats
 * (-0 and 0) and the rest go one event at a time.
 */
const CANONICAL_KEY_TYPE =
  /^(smallint|integer|bigint|text|character varying(\(\d+\))?|uuid|date|timestamp(\(\d\))? (with|without) time zone|bytea|oid|boolean)$/;

/** Text form of a value for a text[] parameter (bytea as \x hex, as PostgreSQL reads it). */
function textOf(value: unknown): string | null {
  const p = toPgParam(value);
  return Buffer.isBuffer(p) ? `\\x${p.toString('hex')}` : p;
}

/**
 * Whether an update changes the primary key. An old row without the key (REPLICA IDENTITY
 * USING INDEX: the key columns arrive null) cannot tell, and the row is found by its index.
 */
function keyMoves(t: TableInfo, where: Row, after: Row): boolean {
  return t.key.some((k) => k in after && where[k] !== null && where[k] !== undefined && toPgParam(after[k])?.toString() !== toPgParam(where[k])?.toString());
}
