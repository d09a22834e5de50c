/**
 * Writes change events into the open destination transaction, detecting and resolving
 * conflicts. The common case is one statement per event whose WHERE clause also proves
 * "no conflict"; only when it touches nothing is the existing row read to classify.
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { rowToJson, toPgParam } from '../../shared/avro.js';
import { policyFor, type PipelineConfig } from '../../shared/config.js';
import { PgBridgeError, errorMessage } from '../../shared/errors.js';
import { formatLsn } from '../../shared/lsn.js';
import { qi, qt } from '../../shared/pg.js';
import { originDiffers, resolve, type ConflictKind, type Resolution, type Stamp } from './conflict-resolver.js';
import type { ChangeEvent, Row } from './event-decoder.js';

interface Column {
  readonly name: string;
  readonly type: string;
  readonly generated: boolean;
}

interface TableInfo {
  readonly schema: string;
  readonly table: string;
  readonly qname: string;
  readonly columns: ReadonlyMap<string, Column>;
  /** Primary key columns; empty for tables matched on all columns (REPLICA IDENTITY FULL). */
  readonly key: readonly string[];
}

export interface ConflictRecord {
  readonly kind: ConflictKind;
  readonly resolution: Resolution;
}

export interface WriteResult {
  readonly rows: number;
  readonly conflicts: ConflictRecord[];
}

/** Thrown by a `fail` policy: the direction stops, nothing of the transaction is applied. */
export class ConflictStop extends PgBridgeError {}

export class RowWriter {
  private readonly tables = new Map<string, TableInfo>();

  constructor(
    private readonly client: pg.Client,
    private readonly cfg: PipelineConfig,
    private readonly direction: string,
    /** Destination cluster name (local writes carry replication origin 0). */
    private readonly localCluster: string,
    /** replication origin id → cluster name, on the destination. */
    private readonly originNames: ReadonlyMap<number, string>,
  ) {}

  /** Forget cached table shapes (after DDL on the destination). */
  invalidate(): void {
    this.tables.clear();
  }

  private async info(schema: string, table: string): Promise<TableInfo> {
    const k = `${schema}.${table}`;
    const hit = this.tables.get(k);
    if (hit) return hit;
    const r = await this.client.query<{ name: string; type: string; generated: string; pk: boolean }>(
      `SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, a.attgenerated AS generated,
              COALESCE(a.attnum = ANY(i.indkey), false) AS pk
         FROM pg_attribute a
         LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
        WHERE a.attrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum`,
      [schema, table],
    ).catch((err: unknown) => {
      throw new PgBridgeError('DESTINATION_REJECTED', `table ${k} is not usable on the destination: ${errorMessage(err)}`, { cause: err });
    });
    const columns = new Map<string, Column>();
    for (const c of r.rows) columns.set(c.name, { name: c.name, type: c.type, generated: c.generated !== '' });
    const t: TableInfo = { schema, table, qname: qt(schema, table), columns, key: r.rows.filter((c) => c.pk).map((c) => c.name) };
    this.tables.set(k, t);
    return t;
  }

  private async q(text: string, values: unknown[]): Promise<pg.QueryResult> {
    // Named statements are parsed and planned once per connection.
    const name = `pgb_${createHash('sha1').update(text).digest('hex').slice(0, 24)}`;
    return this.client.query({ name, text, values });
  }

  /** Applies one change event. */
  async write(ev: ChangeEvent): Promise<WriteResult> {
    const t = await this.info(ev.schema, ev.table);
    for (const row of [ev.before, ev.after]) {
      for (const c of Object.keys(row ?? {})) {
        if (!t.columns.has(c)) {
          throw new PgBridgeError('DESTINATION_REJECTED', `column ${c} of ${t.schema}.${t.table} does not exist on the destination`);
        }
      }
    }
    switch (ev.op) {
      case 'c':
      case 'r':
        return this.insert(t, ev);
      case 'u':
        return this.update(t, ev);
      case 'd':
        return this.delete(t, ev);
      case 't':
        await this.client.query(`TRUNCATE ONLY ${t.qname}`);
        return { rows: 0, conflicts: [] };
    }
  }

  private incoming(ev: ChangeEvent): Stamp {
    return { ts: ev.commitTs, origin: ev.origin };
  }

  private writable(t: TableInfo, row: Row, unchanged: readonly string[]): string[] {
    const skip = new Set(unchanged);
    return Object.keys(row).filter((c) => !skip.has(c) && !t.columns.get(c)!.generated);
  }

  /** WHERE clause matching one row: by primary key, or (no key) by every column, first match only. */
  private match(t: TableInfo, row: Row, startAt: number): { sql: string; values: unknown[] } {
    if (t.key.length > 0) {
      const missing = t.key.filter((k) => !(k in row));
      if (missing.length) throw new PgBridgeError('POISON', `event for ${t.schema}.${t.table} lacks key column(s) ${missing.join(', ')}`);
      return {
        sql: t.key.map((k, i) => `${qi(k)} = $${startAt + i}`).join(' AND '),
        values: t.key.map((k) => toPgParam(row[k])),
      };
    }
    // REPLICA IDENTITY FULL: compare the text forms (json, point and xml have no equality operator).
    const cols = Object.keys(row).filter((c) => !t.columns.get(c)!.generated);
    const cond = cols.map((c, i) => `${qi(c)}::text IS NOT DISTINCT FROM ($${startAt + i}::${t.columns.get(c)!.type})::text`).join(' AND ');
    return {
      sql: `ctid = (SELECT ctid FROM ${t.qname} WHERE ${cond} LIMIT 1 FOR UPDATE)`,
      values: cols.map((c) => toPgParam(row[c])),
    };
  }

  /** Reads the destination row (locked) and who last wrote it. */
  private async existing(t: TableInfo, row: Row): Promise<{ rowJson: string; stamp: Stamp } | null> {
    const m = this.match(t, row, 1);
    const r = await this.q(
      `SELECT to_jsonb(x.*) AS row,
              (EXTRACT(EPOCH FROM c.timestamp) * 1000000)::bigint::text AS ts, c.roident::int AS roident
         FROM ${t.qname} x
         LEFT JOIN LATERAL pg_xact_commit_timestamp_origin(x.xmin) c ON true
        WHERE ${m.sql.replace(/^ctid =/, 'x.ctid =')} FOR UPDATE OF x`,
      m.values,
    );
    const hit = r.rows[0] as { row: string; ts: string | null; roident: number | null } | undefined;
    if (!hit) return null;
    const origin = !hit.roident ? this.localCluster : this.originNames.get(hit.roident) ?? `origin#${hit.roident}`;
    // Kept as jsonb text: parsing it here would round large numbers.
    return { rowJson: hit.row, stamp: { ts: hit.ts === null ? null : BigInt(hit.ts), origin } };
  }

  private async insertRow(t: TableInfo, row: Row, unchanged: readonly string[], onConflictNothing: boolean): Promise<number> {
    const cols = this.writable(t, row, unchanged);
    const text = `INSERT INTO ${t.qname} (${cols.map(qi).join(', ')}) VALUES (${cols.map((_, i) => `$${i + 1}`).join(', ')})${onConflictNothing ? ' ON CONFLICT DO NOTHING' : ''}`;
    const r = await this.q(text, cols.map((c) => toPgParam(row[c])));
    return r.rowCount ?? 0;
  }

  private async updateRow(t: TableInfo, where: Row, row: Row, unchanged: readonly string[]): Promise<number> {
    const cols = this.writable(t, row, unchanged);
    if (cols.length === 0) return 1;
    const m = this.match(t, where, cols.length + 1);
    const text = `UPDATE ${t.qname} SET ${cols.map((c, i) => `${qi(c)} = $${i + 1}`).join(', ')} WHERE ${m.sql}`;
    const r = await this.q(text, [...cols.map((c) => toPgParam(row[c])), ...m.values]);
    return r.rowCount ?? 0;
  }

  private async deleteRow(t: TableInfo, where: Row): Promise<number> {
    const m = this.match(t, where, 1);
    const r = await this.q(`DELETE FROM ${t.qname} WHERE ${m.sql}`, m.values);
    return r.rowCount ?? 0;
  }

  private async insert(t: TableInfo, ev: ChangeEvent): Promise<WriteResult> {
    const after = ev.after!;
    if (t.key.length === 0) return { rows: await this.insertRow(t, after, [], false), conflicts: [] };
    if ((await this.insertRow(t, after, [], true)) === 1) return { rows: 1, conflicts: [] };
    const cur = await this.existing(t, after);
    if (!cur) {
      // Not the primary key: another unique constraint holds a different row.
      const res = await this.conflict(t, ev, 'multiple_unique_conflicts', null, after);
      return { rows: 0, conflicts: [res] };
    }
    const res = await this.conflict(t, ev, 'insert_exists', cur, after);
    if (res.resolution === 'apply_remote') await this.updateRow(t, after, after, []);
    return { rows: res.resolution === 'apply_remote' ? 1 : 0, conflicts: [res] };
  }

  private async update(t: TableInfo, ev: ChangeEvent): Promise<WriteResult> {
    const after = ev.after!;
    const where = ev.before ?? after;
    const cur = await this.existing(t, where);
    if (!cur) {
      const res = await this.conflict(t, ev, 'update_missing', null, where);
      // DTS behaviour: the update becomes an insert of the new row (unchanged TOAST values
      // are not known here: those columns take their defaults, and the conflict row says so).
      if (res.resolution === 'apply_remote') await this.insertRow(t, after, ev.unchanged, true);
      return { rows: 1, conflicts: [res] };
    }
    if (originDiffers(this.incoming(ev), cur.stamp)) {
      const res = await this.conflict(t, ev, 'update_origin_differs', cur, where);
      if (res.resolution === 'keep_local') return { rows: 0, conflicts: [res] };
      return { rows: await this.updateMoving(t, ev, where, after), conflicts: [res] };
    }
    const conflicts: ConflictRecord[] = [];
    const rows = await this.updateMoving(t, ev, where, after, conflicts);
    return { rows, conflicts };
  }

  /** UPDATE that may change the primary key; a taken new key is update_exists. */
  private async updateMoving(t: TableInfo, ev: ChangeEvent, where: Row, after: Row, conflicts: ConflictRecord[] = []): Promise<number> {
    const moves = t.key.length > 0 && t.key.some((k) => k in after && toPgParam(after[k])?.toString() !== toPgParam(where[k])?.toString());
    if (moves) {
      const taken = await this.existing(t, after);
      if (taken) {
        const res = await this.conflict(t, ev, 'update_exists', taken, after);
        conflicts.push(res);
        if (res.resolution === 'keep_local') return 0;
        await this.deleteRow(t, after);
      }
    }
    return this.updateRow(t, where, after, ev.unchanged);
  }

  private async delete(t: TableInfo, ev: ChangeEvent): Promise<WriteResult> {
    const before = ev.before!;
    const cur = await this.existing(t, before);
    if (!cur) {
      const res = await this.conflict(t, ev, 'delete_missing', null, before);
      return { rows: 0, conflicts: [res] };
    }
    if (originDiffers(this.incoming(ev), cur.stamp)) {
      const res = await this.conflict(t, ev, 'delete_origin_differs', cur, before);
      if (res.resolution === 'keep_local') return { rows: 0, conflicts: [res] };
    }
    return { rows: await this.deleteRow(t, before), conflicts: [] };
  }

  /** Decides, records the conflict in cdc.conflicts (same transaction) and stops on `fail`. */
  private async conflict(t: TableInfo, ev: ChangeEvent, kind: ConflictKind, cur: { rowJson: string; stamp: Stamp } | null, keyRow: Row): Promise<ConflictRecord> {
    const policy = policyFor(this.cfg, t.schema, t.table);
    const resolution = resolve(kind, policy, this.incoming(ev), cur?.stamp ?? null);
    const key = t.key.length ? Object.fromEntries(t.key.map((k) => [k, rowToJson({ v: keyRow[k] })!.v])) : rowToJson(keyRow);
    const where = `${ev.pos.topic}/${ev.pos.partition}@${ev.pos.offset} (source ${ev.sourceCluster} commit LSN ${formatLsn(ev.commitLsn)})`;
    if (resolution === 'fail') {
      throw new ConflictStop('CONFLICT', `${kind} on ${t.schema}.${t.table} key ${JSON.stringify(key)} at ${where}: policy "fail" stops this direction; nothing of the source transaction was applied`, {
        details: { table: `${t.schema}.${t.table}`, key, kind, topic: ev.pos.topic, partition: ev.pos.partition, offset: String(ev.pos.offset) },
      });
    }
    const incoming = rowToJson(ev.after ?? ev.before);
    await this.q(
      `INSERT INTO cdc.conflicts (direction, table_name, key, kind, incoming, existing, resolution, policy, source_cluster, source_commit_lsn, source_commit_ts, topic, kafka_partition, kafka_offset)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::pg_lsn, 'epoch'::timestamptz + $11::bigint * interval '1 microsecond', $12, $13, $14)`,
      [
        this.direction, `${t.schema}.${t.table}`, JSON.stringify(key), kind, JSON.stringify(incoming), cur ? cur.rowJson : null,
        kind === 'update_missing' && ev.unchanged.length ? `${resolution} (unchanged TOAST columns ${ev.unchanged.join(', ')} took defaults)` : resolution,
        policy, ev.sourceCluster, formatLsn(ev.commitLsn), ev.commitTs.toString(), ev.pos.topic, ev.pos.partition, ev.pos.offset.toString(),
      ],
    );
    return { kind, resolution };
  }
}
