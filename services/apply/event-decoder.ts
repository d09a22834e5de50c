/**
 * Kafka message → apply event. Row records come back keyed by PostgreSQL column names;
 * values stay as decoded (BigInt, Buffer, text) until the writer turns them into params.
 */
import { CONTROL_RECORD_NAME, ENCODED_PREFIX, SNAPSHOT_CHUNK_RECORD_NAME, pgName } from '../../shared/avro.js';
import { PgBridgeError } from '../../shared/errors.js';
import { lsnFromBigint, type Lsn } from '../../shared/lsn.js';
import type { SchemaReader } from '../../shared/registry.js';
import type { SnapshotChunkEvent } from './chunk-loader.js';

export type Row = Record<string, unknown>;

export interface Position {
  readonly topic: string;
  readonly partition: number;
  readonly offset: bigint;
}

interface Common {
  readonly pos: Position;
  readonly sourceCluster: string;
  readonly origin: string;
  readonly commitLsn: Lsn;
  /** Source commit time, µs since the Unix epoch. */
  readonly commitTs: bigint;
  /** Last event of its source transaction. */
  readonly last: boolean;
}

export interface ChangeEvent extends Common {
  readonly kind: 'change';
  readonly schema: string;
  readonly table: string;
  readonly op: 'c' | 'u' | 'd' | 'r' | 't';
  readonly before: Row | null;
  readonly after: Row | null;
  readonly unchanged: readonly string[];
  readonly snapshot: boolean;
}

export interface ControlEvent extends Common {
  readonly kind: 'control';
  readonly control: string;
  readonly id: string | null;
  readonly payload: string | null;
}

export type ApplyEvent = ChangeEvent | ControlEvent;

/** The decoded record keyed by PostgreSQL column names; copied only when a name was encoded (pgx_…). */
function rowOf(rec: unknown): Row | null {
  if (rec === null || rec === undefined) return null;
  const r = rec as Record<string, unknown>;
  const keys = Object.keys(r);
  if (!keys.some((k) => k.startsWith(ENCODED_PREFIX))) return r;
  const out: Row = {};
  for (const k of keys) out[pgName(k)] = r[k];
  return out;
}

/**
 * Puts back the values their field type could not carry (numeric NaN, infinities: the
 * envelope's `special` map, PostgreSQL text keyed before.<column> / after.<column>).
 */
function withSpecial(row: Row | null, special: Record<string, string> | undefined, prefix: string): Row | null {
  if (!row || !special) return row;
  let out: Row | null = null;
  for (const [k, text] of Object.entries(special)) {
    if (!k.startsWith(prefix)) continue;
    out ??= { ...row };
    out[k.slice(prefix.length)] = text;
  }
  return out ?? row;
}

/** Like decodeEvent, and snapshot chunk records (initial sync) as well. */
export async function decodeRecord(store: SchemaReader, value: Buffer | null, pos: Position): Promise<ApplyEvent | SnapshotChunkEvent> {
  const rec = await store.decode(value);
  if (rec.recordName !== SNAPSHOT_CHUNK_RECORD_NAME) return eventOf(rec.recordName, rec.schemaId, rec.value as Record<string, any>, pos);
  const v = rec.value as Record<string, any>;
  return {
    kind: 'chunk',
    pos,
    sourceCluster: v.cluster,
    origin: v.origin,
    commitLsn: lsnFromBigint(v.lsn),
    commitTs: v.commitTs,
    schema: v.schema,
    table: v.table,
    columns: v.columns,
    format: v.format,
    rows: Number(v.rows),
    data: v.data,
    snapshot: v.snapshot,
    range: BigInt(v.range),
  };
}

export async function decodeEvent(store: SchemaReader, value: Buffer | null, pos: Position): Promise<ApplyEvent> {
  const rec = await store.decode(value);
  return eventOf(rec.recordName, rec.schemaId, rec.value as Record<string, any>, pos);
}

function eventOf(recordName: string, schemaId: number, v: Record<string, any>, pos: Position): ApplyEvent {
  const rec = { recordName, schemaId };
  if (rec.recordName === CONTROL_RECORD_NAME) {
    return {
      kind: 'control',
      pos,
      control: v.kind,
      sourceCluster: v.cluster,
      origin: v.origin,
      commitLsn: lsnFromBigint(v.commitLsn),
      commitTs: v.commitTs,
      last: v.last,
      id: v.id ?? null,
      payload: v.payload ?? null,
    };
  }
  if (!rec.recordName.endsWith('.Envelope') || !v.source || !v.txn) {
    throw new PgBridgeError('POISON', `record ${rec.recordName} (schema id ${rec.schemaId}) is not a pgbridge change envelope`);
  }
  return {
    kind: 'change',
    pos,
    schema: v.source.schema,
    table: v.source.table,
    op: v.op,
    before: withSpecial(rowOf(v.before), v.special, 'before.'),
    after: withSpecial(rowOf(v.after), v.special, 'after.'),
    unchanged: v.unchanged ?? [],
    snapshot: !!v.source.snapshot,
    sourceCluster: v.source.cluster,
    origin: v.origin,
    commitLsn: lsnFromBigint(v.source.commitLsn),
    commitTs: v.source.commitTs,
    last: v.txn.last,
  };
}
