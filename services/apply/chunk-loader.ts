/**
 * Loads snapshot chunk records (pgbridge.SnapshotChunk, rows in COPY text format) into the
 * destination, inside apply's open transaction (so the progress row commits with the rows:
 * a chunk is applied once, even after a crash between COPY and COMMIT).
 *
 * - A table that was empty when apply loaded the first chunk of this sync (recorded in
 *   cdc.snapshot_loads in the same transaction): straight `COPY … FROM STDIN`. Should a
 *   key already be there (a range published twice by a sync killed between Kafka's commit
 *   and its own progress row), the COPY is rolled back to a savepoint and the chunk takes
 *   the path below.
 * - Otherwise: COPY into a temporary staging table, one set-based `INSERT … ON CONFLICT DO
 *   NOTHING` for the new keys, then the existing keys under the conflict policy as an
 *   initial-sync row (op r) is treated: `ignore` keeps the destination row, `overwrite` and
 *   `fail` take the source row (one UPDATE … FROM), `last-writer-wins` and rows refused by
 *   another unique key go through the row writer one by one, exactly as op=r events would.
 */
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { policyFor, type Direction, type PipelineConfig } from '../../shared/config.js';
import { ClusterNaming } from '../../shared/naming.js';
import { PgBridgeError } from '../../shared/errors.js';
import type { Lsn } from '../../shared/lsn.js';
import { qi, qt } from '../../shared/pg.js';
import { isSelected } from '../../shared/selection.js';
import { COPY_TEXT_FORMAT } from '../snapshot/chunk-record.js';
import type { ChangeEvent, Position } from './event-decoder.js';
import type { ConflictRecord, RowWriter, WriteResult } from './row-writer.js';
import { inReplay, keylessPassedOver } from './replay-range.js';

/** A decoded snapshot chunk record. */
export interface SnapshotChunkEvent {
  readonly kind: 'chunk';
  readonly pos: Position;
  readonly sourceCluster: string;
  readonly origin: string;
  readonly commitLsn: Lsn;
  readonly commitTs: bigint;
  readonly schema: string;
  readonly table: string;
  readonly columns: readonly { readonly name: string; readonly type: string; readonly key: boolean }[];
  readonly format: string;
  readonly rows: number;
  readonly data: Buffer;
  readonly snapshot: string;
  /** The key range of the table the chunk was read from (two chunks of one range may hold the same keys: a range read again). */
  readonly range: bigint;
}

/** A row of a chunk as the op=r change event it stands for (after null: the chunk as a whole, for the checks). */
export function snapshotRowOf(ev: SnapshotChunkEvent, after: Record<string, string | null> | null): ChangeEvent {
  return {
    kind: 'change',
    pos: ev.pos,
    sourceCluster: ev.sourceCluster,
    origin: ev.origin,
    commitLsn: ev.commitLsn,
    commitTs: ev.commitTs,
    last: true,
    schema: ev.schema,
    table: ev.table,
    op: 'r',
    before: null,
    after,
    unchanged: [],
    snapshot: true,
  };
}

export class ChunkLoader {
  /** snapshot + table → empty when this sync's first chunk reached it (cdc.snapshot_loads). */
  private readonly emptyAtStart = new Map<string, boolean>();

  constructor(
    private readonly client: pg.Client,
    private readonly cfg: PipelineConfig,
    private readonly direction: Direction,
    private readonly writer: RowWriter,
  ) {}

  async load(ev: SnapshotChunkEvent): Promise<WriteResult> {
    // The chunk names the destination's table and columns (apply translated them); the selection the pipeline's.
    const name = `${ev.schema}.${ev.table}`;
    const [ls, lt] = new ClusterNaming(this.cfg, this.direction.to).logical(ev.schema, ev.table) ?? ['', ''];
    if (!isSelected(this.cfg, ls, lt)) {
      throw new PgBridgeError('DESTINATION_REJECTED', `snapshot chunk for ${name}, which is not a table of pipeline ${this.cfg.pipeline}'s selection: refused`);
    }
    if (ev.format !== COPY_TEXT_FORMAT)
      throw new PgBridgeError('POISON', `snapshot chunk for ${name} in format ${JSON.stringify(ev.format)}; this apply reads ${COPY_TEXT_FORMAT}`);
    if (ev.rows === 0) return { rows: 0, conflicts: [] };
    const target = qt(ev.schema, ev.table);
    // A replay (not a rebuild) passes over tables without a key: their rows would be doubled.
    if (keylessPassedOver(this.writer.replay, ev.pos.offset) && (await this.primaryKey(ev.schema, ev.table)).length === 0) return { rows: 0, conflicts: [] };
    const cols = ev.columns.map((c) => qi(c.name)).join(', ');
    // The chunk's transaction commits without waiting for its WAL flush: a crash that loses it
    // loses its progress row with it, so the chunk is read again from Kafka (no fsync per chunk).
    if (await this.wasEmpty(ev, target)) {
      // One round trip before the COPY; COMMIT ends the savepoint with the transaction.
      await this.client.query('SET LOCAL synchronous_commit = off; SAVEPOINT pgbridge_chunk');
      try {
        const n = await this.copyIn(`COPY ${target} (${cols}) FROM STDIN`, ev.data);
        return { rows: n, conflicts: [] };
      } catch (err) {
        if ((err as { code?: string }).code !== '23505') throw err;
        await this.client.query('ROLLBACK TO SAVEPOINT pgbridge_chunk');
        await this.client.query('RELEASE SAVEPOINT pgbridge_chunk');
      }
    }
    await this.client.query('SET LOCAL synchronous_commit = off');
    return this.merge(ev, target, cols);
  }

  /**
   * A chunk that a plain COPY loads, on any connection: its table was empty when the first chunk
   * of its sync reached it (known from that chunk, loaded here), and no replay is going on.
   */
  straightCopy(ev: SnapshotChunkEvent): boolean {
    return (
      ev.format === COPY_TEXT_FORMAT &&
      ev.rows > 0 &&
      this.writer.replay == null &&
      isSelected(this.cfg, ev.schema, ev.table) &&
      this.emptyAtStart.get(`${ev.snapshot}\n${qt(ev.schema, ev.table)}`) === true
    );
  }

  /**
   * Empty when the first chunk of this sync reached it? Decided once per sync and table, in the
   * transaction that loads that chunk, and then remembered. (Should that transaction roll back,
   * a restarted apply finds the table no longer empty and merges: slower, same rows.)
   */
  private async wasEmpty(ev: SnapshotChunkEvent, target: string): Promise<boolean> {
    const key = `${ev.snapshot}\n${target}`;
    const known = this.emptyAtStart.get(key);
    if (known !== undefined) return known;
    const r = await this.client.query<{ was_empty: boolean }>(
      `WITH ins AS (
         INSERT INTO cdc.snapshot_loads (pipeline, direction, table_name, snapshot, was_empty)
         SELECT $1, $2, $3, $4, NOT EXISTS (SELECT 1 FROM ${target})
         ON CONFLICT DO NOTHING RETURNING was_empty)
       SELECT was_empty FROM ins
       UNION ALL SELECT was_empty FROM cdc.snapshot_loads WHERE pipeline = $1 AND direction = $2 AND table_name = $3 AND snapshot = $4`,
      [this.cfg.pipeline, this.direction.id, `${ev.schema}.${ev.table}`, ev.snapshot],
    );
    const empty = r.rows[0]?.was_empty === true;
    this.emptyAtStart.set(key, empty);
    return empty;
  }

  private async copyIn(sql: string, data: Buffer): Promise<number> {
    const stream = this.client.query(copyFrom(sql));
    await pipeline(Readable.from([data]), stream);
    return stream.rowCount;
  }

  private async merge(ev: SnapshotChunkEvent, target: string, cols: string): Promise<WriteResult> {
    const c = this.client;
    const stage = 'pgbridge_chunk_stage';
    await c.query(`DROP TABLE IF EXISTS pg_temp.${stage}`);
    await c.query(`CREATE TEMP TABLE ${stage} ON COMMIT DROP AS SELECT ${cols} FROM ${target} WITH NO DATA`);
    await this.copyIn(`COPY pg_temp.${stage} (${cols}) FROM STDIN`, ev.data);
    const key = await this.primaryKey(ev.schema, ev.table);
    // OVERRIDING SYSTEM VALUE: a GENERATED ALWAYS identity column takes the source's value, as
    // COPY gives it (harmless on a table without one). Generated columns are not in the chunk.
    if (key.length === 0) {
      // Rows without a key are inserted, as op=r events of such a table are.
      const r = await c.query(`INSERT INTO ${target} (${cols}) OVERRIDING SYSTEM VALUE SELECT ${cols} FROM pg_temp.${stage}`);
      return { rows: r.rowCount ?? 0, conflicts: [] };
    }
    const k = key.map(qi);
    const on = k.map((x) => `s.${x} = x.${x}`).join(' AND ');
    // New keys: one statement; what it inserted leaves the staging table.
    const ins = await c.query(
      `WITH ins AS (INSERT INTO ${target} (${cols}) OVERRIDING SYSTEM VALUE SELECT ${cols} FROM pg_temp.${stage} ON CONFLICT DO NOTHING RETURNING ${k.join(', ')})
       DELETE FROM pg_temp.${stage} s USING ins x WHERE ${on}`,
    );
    let rows = ins.rowCount ?? 0;
    if (rows === ev.rows) return { rows, conflicts: [] };
    const [ps, pt] = new ClusterNaming(this.cfg, this.direction.to).logical(ev.schema, ev.table) ?? [ev.schema, ev.table];
    const policy = policyFor(this.cfg, ps, pt);
    if (policy !== 'ignore' && inReplay(this.writer.replay, ev.pos.offset)) {
      // A replayed chunk (pgbridge replay) holds a table's state of the sync's time: it takes a
      // row only when the row is older (last-writer-wins, whatever the policy), so a replay
      // never sets a row back in time. What another unique key refuses goes row by row.
      rows += await this.mergeOlder(ev, target, on, key);
    } else if (policy === 'ignore') {
      // The destination row stays (an initial-sync row over an existing one is not a conflict).
      await c.query(`DELETE FROM pg_temp.${stage} s USING ${target} x WHERE ${on}`);
    } else if (policy === 'overwrite' || policy === 'fail' || policy === 'fail-strict') {
      await c.query('SAVEPOINT pgbridge_chunk');
      try {
        const set = await this.setList(ev, key);
        if (set.length) {
          const up = await c.query(`UPDATE ${target} x SET ${set.join(', ')} FROM pg_temp.${stage} s WHERE ${on}`);
          rows += up.rowCount ?? 0;
        }
        await c.query(`DELETE FROM pg_temp.${stage} s USING ${target} x WHERE ${on}`);
        await c.query('RELEASE SAVEPOINT pgbridge_chunk');
      } catch (err) {
        // Another unique key refused an update: leave all of them to the row writer.
        if ((err as { code?: string }).code !== '23505') throw err;
        await c.query('ROLLBACK TO SAVEPOINT pgbridge_chunk');
        await c.query('RELEASE SAVEPOINT pgbridge_chunk');
      }
    }
    // What is left (last-writer-wins, other unique keys) goes row by row, as op=r events would.
    const left = await c.query<Record<string, string | null>>(
      `SELECT ${ev.columns.map((col) => `${qi(col.name)}::text AS ${qi(col.name)}`).join(', ')} FROM pg_temp.${stage}`,
    );
    const conflicts: ConflictRecord[] = [];
    for (const after of left.rows) {
      const w = await this.writer.write(snapshotRowOf(ev, after));
      rows += w.rows;
      conflicts.push(...w.conflicts);
    }
    return { rows, conflicts };
  }

  /** Updates the rows last written before the chunk's time from the staging table; they and the newer ones leave it. */
  private async mergeOlder(ev: SnapshotChunkEvent, target: string, on: string, key: readonly string[]): Promise<number> {
    const c = this.client;
    const set = await this.setList(ev, key);
    let rows = 0;
    await c.query('SAVEPOINT pgbridge_chunk');
    try {
      if (set.length) {
        const older = `(SELECT t.timestamp IS NULL OR t.timestamp < 'epoch'::timestamptz + $1::bigint * interval '1 microsecond' FROM pg_xact_commit_timestamp_origin(x.xmin) t)`;
        const up = await c.query(`UPDATE ${target} x SET ${set.join(', ')} FROM pg_temp.pgbridge_chunk_stage s WHERE ${on} AND ${older}`, [
          ev.commitTs.toString(),
        ]);
        rows = up.rowCount ?? 0;
      }
      await c.query(`DELETE FROM pg_temp.pgbridge_chunk_stage s USING ${target} x WHERE ${on}`);
      await c.query('RELEASE SAVEPOINT pgbridge_chunk');
    } catch (err) {
      if ((err as { code?: string }).code !== '23505') throw err;
      await c.query('ROLLBACK TO SAVEPOINT pgbridge_chunk');
      await c.query('RELEASE SAVEPOINT pgbridge_chunk');
      rows = 0;
    }
    return rows;
  }

  /**
   * `col = s.col` for the chunk's columns an UPDATE may set: not the key, and not a GENERATED
   * ALWAYS identity column (PostgreSQL lets an UPDATE set it only to DEFAULT; it stays).
   */
  private async setList(ev: SnapshotChunkEvent, key: readonly string[]): Promise<string[]> {
    const r = await this.client.query<{ name: string }>(
      `SELECT attname AS name FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attidentity = 'a'`,
      [qt(ev.schema, ev.table)],
    );
    const always = new Set(r.rows.map((x) => x.name));
    return ev.columns.filter((col) => !key.includes(col.name) && !always.has(col.name)).map((col) => `${qi(col.name)} = s.${qi(col.name)}`);
  }

  private async primaryKey(schema: string, table: string): Promise<string[]> {
    const r = await this.client.query<{ name: string }>(
      `SELECT a.attname AS name FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
        WHERE i.indrelid = $1::regclass AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)`,
      [qt(schema, table)],
    );
    return r.rows.map((x) => x.name);
  }
}
