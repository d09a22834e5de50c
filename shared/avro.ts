/**
 * Avro schemas of pgbridge events and the exact value mapping between PostgreSQL's text
 * form and Avro. Numbers that Avro holds exactly travel as Avro numbers (int8 as a BigInt
 * long), bytea as bytes, and every other type as PostgreSQL's own text form with its type
 * name in the field's `pg.type` attribute: exact by construction, for built-in and user types.
 */
import avro from 'avsc';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connectField, connectTypeFor } from './connect-types.js';

// ---------------------------------------------------------------- BigInt long

/** avsc's default long throws beyond ±2^53; this one reads and writes BigInt. */
const bigIntLongMethods = {
  fromBuffer: (buf: Buffer) => buf.readBigInt64LE(),
  toBuffer: (n: bigint) => {
    const buf = Buffer.alloc(8);
    buf.writeBigInt64LE(BigInt(n));
    return buf;
  },
  fromJSON: (v: unknown) => BigInt(v as string),
  toJSON: (n: bigint) => Number(n),
  isValid: (n: unknown) => typeof n === 'bigint',
  compare: (a: bigint, b: bigint) => (a === b ? 0 : a < b ? -1 : 1),
};

interface Tap {
  buf: Buffer;
  pos: number;
  writeLong(n: number): void;
}

const SAFE = 2n ** 52n;

/**
 * Writes the zigzag varint straight from the BigInt. avsc's abstract long goes through an
 * 8-byte Buffer per value (toBuffer, then repacking), which was an allocation per long
 * field of every event; values within ±2^52 take avsc's own number path.
 */
function writeBigLong(tap: Tap, val: bigint): void {
  const n = typeof val === 'bigint' ? val : BigInt(val);
  if (n > -SAFE && n < SAFE) {
    tap.writeLong(Number(n));
    return;
  }
  let z = n >= 0n ? n << 1n : (-n << 1n) - 1n;
  const buf = tap.buf;
  while (z > 0x7fn) {
    buf[tap.pos++] = Number(z & 0x7fn) | 0x80;
    z >>= 7n;
  }
  buf[tap.pos++] = Number(z);
}

/** Reads a zigzag varint as a BigInt, with a number fast path for the first 49 bits. */
function readBigLong(tap: Tap): bigint {
  const buf = tap.buf;
  let pos = tap.pos;
  let b = buf[pos++]!;
  let n = b & 0x7f;
  let mul = 128;
  let i = 1;
  while (b & 0x80 && i < 7) {
    b = buf[pos++]!;
    n += (b & 0x7f) * mul;
    mul *= 128;
    i++;
  }
  if (!(b & 0x80)) {
    tap.pos = pos;
    return BigInt(n % 2 ? -(n + 1) / 2 : n / 2);
  }
  let z = BigInt(n);
  let shift = 49n;
  do {
    b = buf[pos++]!;
    z |= BigInt(b & 0x7f) << shift;
    shift += 7n;
  } while (b & 0x80);
  tap.pos = pos;
  return z & 1n ? -((z + 1n) >> 1n) : z >> 1n;
}

function bigIntLongType(): avro.Type {
  // avsc's LongType.__with freezes the type it makes; build the same abstract long type
  // with the direct _write/_read above before freezing it.
  const AbstractLong = Object.getPrototypeOf(avro.types.LongType.__with(bigIntLongMethods)).constructor as new (noUnpack: boolean) => Record<string, unknown>;
  const t = new AbstractLong(false);
  t._toBuffer = bigIntLongMethods.toBuffer;
  t._fromBuffer = bigIntLongMethods.fromBuffer;
  t._fromJSON = bigIntLongMethods.fromJSON;
  t._toJSON = bigIntLongMethods.toJSON;
  t._isValid = bigIntLongMethods.isValid;
  t.compare = bigIntLongMethods.compare;
  t._write = writeBigLong;
  t._read = readBigLong;
  return Object.freeze(t) as unknown as avro.Type;
}

export const BigIntLong = bigIntLongType();

/** avsc options that every pgbridge Avro type is built with (also given to the registry client). */
export const AVRO_OPTIONS = {
  typeHook: (schema: avro.Schema, opts: unknown): avro.Type | undefined => {
    // Connect semantic types (shared/connect-types.ts): PostgreSQL text in memory.
    const semantic = connectTypeFor(schema, opts);
    if (semantic) return semantic;
    if (
      schema === 'long' ||
      (typeof schema === 'object' &&
        !Array.isArray(schema) &&
        (schema as { type?: unknown }).type === 'long' &&
        !(schema as { logicalType?: unknown }).logicalType)
    ) {
      return BigIntLong;
    }
    return undefined;
  },
} as const;

export function avroType(schema: avro.Schema): avro.Type {
  // A fresh options object each time: avsc stores named types in opts.registry, and a shared
  // registry would refuse the next version of the same record name.
  return avro.Type.forSchema(schema, { typeHook: AVRO_OPTIONS.typeHook } as unknown as Partial<avro.ForSchemaOptions>);
}

// ---------------------------------------------------------------- names

const AVRO_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Prefix of an Avro field name that encodes a PostgreSQL name Avro cannot carry (hex of its UTF-8). */
export const ENCODED_PREFIX = 'pgx_';

/** PostgreSQL identifier → Avro name, reversibly (names Avro cannot hold are hex-encoded). */
export function avroName(pgName: string): string {
  if (AVRO_NAME.test(pgName) && !pgName.startsWith(ENCODED_PREFIX)) return pgName;
  return ENCODED_PREFIX + Buffer.from(pgName, 'utf8').toString('hex');
}

export function pgName(name: string): string {
  return name.startsWith(ENCODED_PREFIX) ? Buffer.from(name.slice(ENCODED_PREFIX.length), 'hex').toString('utf8') : name;
}

// ---------------------------------------------------------------- column values

export type AvroKind = 'boolean' | 'int' | 'long' | 'float' | 'double' | 'bytes' | 'string';

/** Built-in type OIDs carried as Avro numbers / booleans / bytes; everything else is text. */
const KIND_BY_OID: ReadonlyMap<number, AvroKind> = new Map<number, AvroKind>([
  [16, 'boolean'],
  [21, 'int'],
  [23, 'int'],
  [20, 'long'],
  [26, 'long'], // oid
  [700, 'float'],
  [701, 'double'],
  [17, 'bytes'],
]);

export function kindOfType(typeOid: number): AvroKind {
  return KIND_BY_OID.get(typeOid) ?? 'string';
}

export type AvroValue = boolean | number | bigint | Buffer | string | null;

/** PostgreSQL text form → Avro value. Throws with the reason when the text does not fit. */
export function fromPgText(kind: AvroKind, text: string): AvroValue {
  switch (kind) {
    case 'boolean':
      if (text === 't' || text === 'true') return true;
      if (text === 'f' || text === 'false') return false;
      throw new Error(`not a boolean (${text.length} characters)`);
    case 'int': {
      const n = Number(text);
      if (!Number.isInteger(n)) throw new Error(`not an integer (${text.length} characters)`);
      return n;
    }
    case 'long':
      return BigInt(text);
    case 'float':
    case 'double': {
      const n = Number(text);
      if (Number.isNaN(n) && text !== 'NaN') throw new Error(`not a float (${text.length} characters)`);
      return n;
    }
    case 'bytes':
      if (!text.startsWith('\\x')) throw new Error('bytea not in hex form (bytea_output must be hex)');
      return Buffer.from(text.slice(2), 'hex');
    case 'string':
      return text;
  }
}

/** Avro value → the text (or Buffer for bytea) that the destination column parses back to the same value. */
export function toPgParam(value: unknown): string | Buffer | null {
  if (value === null || value === undefined) return null;
  if (typeof value === 'string') return value;
  if (typeof value === 'boolean') return value ? 't' : 'f';
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'number') {
    if (Object.is(value, -0)) return '-0';
    if (Number.isNaN(value)) return 'NaN';
    if (value === Infinity) return 'Infinity';
    if (value === -Infinity) return '-Infinity';
    return String(value);
  }
  if (Buffer.isBuffer(value)) return value;
  throw new Error(`cannot write a ${typeof value} to PostgreSQL`);
}

/** Canonical JSON of a row (for cdc.conflicts, logs and the dead-letter topic): text forms, bytea as \x hex. */
export function rowToJson(row: Record<string, unknown> | null | undefined): Record<string, string | null> | null {
  if (!row) return null;
  const out: Record<string, string | null> = {};
  for (const [k, v] of Object.entries(row)) {
    const p = toPgParam(v);
    out[k] = Buffer.isBuffer(p) ? `\\x${p.toString('hex')}` : p;
  }
  return out;
}

// ---------------------------------------------------------------- table schemas

export interface ColumnDef {
  readonly name: string;
  readonly typeOid: number;
  readonly typeName: string;
  readonly typeMod: number;
  readonly key: boolean;
}

export interface TableDef {
  readonly schema: string;
  readonly table: string;
  readonly columns: readonly ColumnDef[];
  readonly replicaIdentity: 'default' | 'nothing' | 'full' | 'index';
}

export const NAMESPACE = 'pgbridge';

export function tableRecordBase(t: { schema: string; table: string }): string {
  return `${NAMESPACE}.${avroName(t.schema)}.${avroName(t.table)}`;
}

function columnField(c: ColumnDef, nullable: boolean): Record<string, unknown> {
  const kind = connectField(c)?.type ?? kindOfType(c.typeOid);
  const field: Record<string, unknown> = {
    name: avroName(c.name),
    type: nullable ? ['null', kind] : kind,
    'pg.type': c.typeName,
  };
  if (nullable) field.default = null;
  if (avroName(c.name) !== c.name) field['pg.column'] = c.name;
  return field;
}

/**
 * The columns of a table whose values can be special (shared/connect-types.ts), with the test:
 * capture sends such a value as null and its text in the envelope's `special` map.
 */
const specialCache = new WeakMap<TableDef, readonly { name: string; special: (text: string) => boolean }[]>();
export function specialColumns(t: TableDef): readonly { name: string; special: (text: string) => boolean }[] {
  let s = specialCache.get(t);
  if (!s) {
    s = t.columns.flatMap((c) => {
      const special = connectField(c)?.special;
      return special ? [{ name: c.name, special }] : [];
    });
    specialCache.set(t, s);
  }
  return s;
}

/** Key schema: the replica-identity columns (primary key, or all columns under REPLICA IDENTITY FULL). */
export function keySchema(t: TableDef): Record<string, unknown> {
  return {
    type: 'record',
    name: `${tableRecordBase(t)}.Key`,
    fields: t.columns.filter((c) => c.key).map((c) => columnField(c, t.replicaIdentity === 'full')),
  };
}

/** Debezium-shaped envelope with origin, txn and unchanged (TOAST) columns. */
export function envelopeSchema(t: TableDef): Record<string, unknown> {
  const base = tableRecordBase(t);
  return {
    type: 'record',
    name: `${base}.Envelope`,
    'pg.schema': t.schema,
    'pg.table': t.table,
    fields: [
      { name: 'before', type: ['null', { type: 'record', name: `${base}.Value`, fields: t.columns.map((c) => columnField(c, true)) }], default: null },
      { name: 'after', type: ['null', `${base}.Value`], default: null },
      { name: 'op', type: 'string', doc: 'c insert, u update, d delete, r snapshot read, t truncate' },
      {
        name: 'source',
        type: {
          type: 'record',
          name: `${NAMESPACE}.Source`,
          fields: [
            { name: 'cluster', type: 'string' },
            { name: 'db', type: 'string' },
            { name: 'schema', type: 'string' },
            { name: 'table', type: 'string' },
            { name: 'lsn', type: 'long' },
            { name: 'commitLsn', type: 'long' },
            { name: 'xid', type: 'long' },
            { name: 'commitTs', type: 'long', doc: 'source commit time, microseconds since the Unix epoch' },
            { name: 'snapshot', type: 'boolean', default: false },
          ],
        },
      },
      { name: 'origin', type: 'string', doc: 'cluster where the change was first written' },
      {
        name: 'txn',
        type: {
          type: 'record',
          name: `${NAMESPACE}.Txn`,
          fields: [
            { name: 'id', type: 'string' },
            { name: 'index', type: 'long' },
            { name: 'last', type: 'boolean' },
          ],
        },
      },
      { name: 'unchanged', type: { type: 'array', items: 'string' }, default: [], doc: 'TOASTed columns not sent: leave them as they are' },
      {
        name: 'special',
        type: { type: 'map', values: 'string' },
        default: {},
        doc: 'values their field type cannot carry (numeric NaN, date or timestamp infinity, timestamps beyond 64-bit microseconds) as PostgreSQL text, keyed before.<column> or after.<column>; the field itself is null',
      },
      { name: 'ts_us', type: 'long' },
    ],
  };
}

const schemasDir = (): string => {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const d of [join(here, '../schemas'), join(here, '../../schemas')]) {
    try {
      readFileSync(join(d, 'control.avsc'));
      return d;
    } catch {
      /* try the next */
    }
  }
  throw new Error('schemas/control.avsc not found');
};

let controlCache: Record<string, unknown> | undefined;
/** Control records (transaction end, heartbeat, barrier, DDL): schemas/control.avsc */
export function controlSchema(): Record<string, unknown> {
  controlCache ??= JSON.parse(readFileSync(join(schemasDir(), 'control.avsc'), 'utf8')) as Record<string, unknown>;
  return controlCache;
}

export const CONTROL_RECORD_NAME = `${NAMESPACE}.Control`;

let chunkCache: Record<string, unknown> | undefined;
/** Initial-sync snapshot chunks (rows in COPY text format): schemas/snapshot-chunk.avsc */
export function snapshotChunkSchema(): Record<string, unknown> {
  chunkCache ??= JSON.parse(readFileSync(join(schemasDir(), 'snapshot-chunk.avsc'), 'utf8')) as Record<string, unknown>;
  return chunkCache;
}

export const SNAPSHOT_CHUNK_RECORD_NAME = `${NAMESPACE}.SnapshotChunk`;

/** Subject under TopicRecordNameStrategy: <topic>-<record full name>. */
export function subjectFor(topic: string, schema: Record<string, unknown>): string {
  return `${topic}-${schema.name as string}`;
}

// ---------------------------------------------------------------- Confluent wire format

/** Confluent wire format: magic byte 0, the schema id, the Avro body. */
export function wireEncode(schemaId: number, payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + payload.length);
  out.writeUInt8(0, 0);
  out.writeUInt32BE(schemaId, 1);
  payload.copy(out, 5);
  return out;
}

export function wireSchemaId(buf: Buffer | null): number | null {
  if (!buf || buf.length < 5 || buf[0] !== 0) return null;
  return buf.readUInt32BE(1);
}
