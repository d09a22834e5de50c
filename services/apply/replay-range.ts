/**
 * A replay range (pgbridge replay): the offsets of a direction topic that apply re-applies on
 * purpose, stored with the apply position in cdc.apply_progress.
 *
 * `pgbridge replay` moves `next_offset` back and sets, in the same row:
 * - replay_until: the position apply had reached (offsets below it are the replayed range);
 * - replay_lsn: the source commit LSN stored then, restored once the range is done;
 * - commit_lsn: the highest commit LSN before the replay's start (0/0 from the log start), so
 *   the duplicate skip by commit LSN (INV-4, docs/invariants.md) skips only what it skipped the first time
 *   (copies of transactions a capture restart published twice), not the whole range;
 * - replay_tables / replay_since: filters (--tables, --from <timestamp>): other events of the
 *   range move the position without writing;
 * - replay_id: marks the conflicts recorded in the range (cdc.conflicts.replay_id);
 * - replay_mode: `replay` (the destination holds the range already: tables without a primary
 *   key are passed over, since a replayed insert there cannot be told from a new row) or
 *   `rebuild` (an empty destination: every table is written).
 * Apply clears the columns in the transaction whose progress row passes replay_until.
 */
import { splitTableName } from '../../shared/selection.js';

export interface ReplayRange {
  readonly id: string;
  readonly mode: 'replay' | 'rebuild';
  /** Offsets below this one are replayed. */
  readonly until: bigint;
  /** Commit LSN stored before the replay (text form), restored when the range is done. */
  readonly lsn: string | null;
  /** Only these tables (schema.table) are written in the range; null: every table. */
  readonly tables: ReadonlySet<string> | null;
  /** Only changes committed at or after this time (µs since the Unix epoch) are written in the range. */
  readonly sinceUs: bigint | null;
}

/**
 * Columns of the replay range (setup adds them; pgbridge replay adds them to an older helper
 * schema too). Only when missing: an ALTER would wait for a running apply's transaction.
 */
export const REPLAY_COLUMNS_SQL = `DO $replay$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'cdc.apply_progress'::regclass AND attname = 'replay_until' AND NOT attisdropped) THEN
    ALTER TABLE cdc.apply_progress ADD COLUMN IF NOT EXISTS replay_until bigint, ADD COLUMN IF NOT EXISTS replay_id text,
      ADD COLUMN IF NOT EXISTS replay_lsn pg_lsn, ADD COLUMN IF NOT EXISTS replay_tables text[], ADD COLUMN IF NOT EXISTS replay_since timestamptz,
      ADD COLUMN IF NOT EXISTS replay_mode text;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'cdc.conflicts'::regclass AND attname = 'replay_id' AND NOT attisdropped) THEN
    ALTER TABLE cdc.conflicts ADD COLUMN IF NOT EXISTS replay_id text;
  END IF;
END $replay$;
`;

/**
 * Selects the replay columns of cdc.apply_progress `p` as text, whether or not the helper schema
 * has them yet (an apply upgraded before setup ran again reads nulls).
 */
export const REPLAY_SELECT = `to_jsonb(p)->>'replay_until' AS replay_until, to_jsonb(p)->>'replay_id' AS replay_id, to_jsonb(p)->>'replay_lsn' AS replay_lsn, to_jsonb(p)->>'replay_mode' AS replay_mode,
  to_jsonb(p)->'replay_tables' AS replay_tables,
  (EXTRACT(EPOCH FROM (to_jsonb(p)->>'replay_since')::timestamptz) * 1000000)::bigint::text AS replay_since_us`;

export interface ReplayColumns {
  replay_until: string | null;
  replay_id: string | null;
  replay_lsn: string | null;
  replay_mode: string | null;
  /** jsonb text (RAW_TYPES) or already parsed. */
  replay_tables: string | string[] | null;
  replay_since_us: string | null;
}

export function replayRangeOf(row: ReplayColumns): ReplayRange | null {
  if (row.replay_until === null || row.replay_until === undefined) return null;
  const tables = typeof row.replay_tables === 'string' ? (JSON.parse(row.replay_tables) as string[] | null) : row.replay_tables;
  return {
    id: row.replay_id ?? 'replay',
    mode: row.replay_mode === 'rebuild' ? 'rebuild' : 'replay',
    until: BigInt(row.replay_until),
    lsn: row.replay_lsn,
    tables: tables ? new Set(tables) : null,
    sinceUs: row.replay_since_us === null || row.replay_since_us === undefined ? null : BigInt(row.replay_since_us),
  };
}

/** Whether an offset lies in the replayed range. */
export function inReplay(r: ReplayRange | null | undefined, offset: bigint): r is ReplayRange {
  return !!r && offset < r.until;
}

/**
 * Whether the range's filters leave a record of `schema.table` out (position moves, nothing is
 * written). Snapshot records are not filtered by time: a snapshot row is a table's state, not a change.
 */
export function filteredOut(r: ReplayRange, schema: string, table: string, commitTs: bigint, snapshot: boolean): boolean {
  if (r.tables && !r.tables.has(`${schema}.${table}`)) return true;
  return !snapshot && r.sinceUs !== null && commitTs < r.sinceUs;
}

/** Whether a table without a primary key is passed over at this offset (a replay, not a rebuild). */
export function keylessPassedOver(r: ReplayRange | null | undefined, offset: bigint): boolean {
  return inReplay(r, offset) && r.mode === 'replay';
}

/** Parses a --tables list (schema.table,…): trimmed names, each with a schema. */
export function parseTableList(raw: string): string[] {
  const out: string[] = [];
  for (const part of raw.split(',')) {
    const name = part.trim();
    if (!name) continue;
    const [schema, table] = splitTableName(name);
    if (!schema || !table) throw new Error(`"${name}" is not schema.table`);
    out.push(`${schema}.${table}`);
  }
  return out;
}
