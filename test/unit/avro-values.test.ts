/**
 * The value mapping between PostgreSQL's text form and Avro (shared/avro.ts): which type
 * travels as which Avro kind, every kind at its extremes and as NULL, and the way back to a
 * parameter the destination parses to the same value. Also names, schemas and the
 * Confluent wire framing.
 */
import avro from 'avsc';
import { describe, expect, it } from 'vitest';
import {
  avroName,
  avroType,
  envelopeSchema,
  fromPgText,
  keySchema,
  kindOfType,
  pgName,
  rowToJson,
  subjectFor,
  tableRecordBase,
  toPgParam,
  wireEncode,
  wireSchemaId,
  type TableDef,
} from '../../shared/avro.js';

/** The value a nullable field of `kind` reads back as after a trip through Avro. */
function trip(kind: string, value: unknown): unknown {
  const t = avroType({ type: 'record', name: 'R', fields: [{ name: 'v', type: ['null', kind], default: null }] } as avro.Schema);
  return (t.fromBuffer(t.toBuffer({ v: value })) as { v: unknown }).v;
}

describe('Avro value mapping: which PostgreSQL type travels as which Avro kind', () => {
  it('bool, int2, int4, int8, oid, float4, float8 and bytea as Avro kinds; everything else as text', () => {
    expect([16, 21, 23, 20, 26, 700, 701, 17].map(kindOfType)).toEqual(['boolean', 'int', 'int', 'long', 'long', 'float', 'double', 'bytes']);
    // numeric, text, varchar, date, timestamptz, json, jsonb, uuid, int4[], a user type OID
    for (const oid of [1700, 25, 1043, 1082, 1184, 114, 3802, 2950, 1007, 90001]) expect(kindOfType(oid), String(oid)).toBe('string');
  });
});

describe('Avro value mapping: PostgreSQL text → Avro value → parameter, per kind', () => {
  it('boolean: t/f and true/false; anything else refused without quoting the value', () => {
    expect(fromPgText('boolean', 't')).toBe(true);
    expect(fromPgText('boolean', 'false')).toBe(false);
    expect(() => fromPgText('boolean', 'yes-secret')).toThrow('not a boolean (10 characters)');
    expect(toPgParam(true)).toBe('t');
    expect(toPgParam(false)).toBe('f');
    expect(trip('boolean', false)).toBe(false);
  });

  it('int (int2, int4): the extremes survive the trip; a fraction is refused', () => {
    for (const text of ['-32768', '32767', '-2147483648', '2147483647', '0']) {
      const v = fromPgText('int', text);
      expect(trip('int', v)).toBe(Number(text));
      expect(toPgParam(trip('int', v))).toBe(text);
    }
    expect(() => fromPgText('int', '1.5')).toThrow('not an integer (3 characters)');
  });

  it('long (int8, oid): ±2^63 exactly, as BigInt, beyond what a double holds', () => {
    for (const text of ['-9223372036854775808', '9223372036854775807', '9007199254740993', '4294967295']) {
      const v = fromPgText('long', text);
      expect(typeof v).toBe('bigint');
      expect(trip('long', v)).toBe(BigInt(text));
      expect(toPgParam(trip('long', v))).toBe(text);
    }
  });

  it('float and double: NaN, ±Infinity and -0 come back as the text PostgreSQL parses to the same value', () => {
    expect(toPgParam(trip('double', fromPgText('double', 'NaN')))).toBe('NaN');
    expect(toPgParam(trip('double', fromPgText('double', 'Infinity')))).toBe('Infinity');
    expect(toPgParam(trip('double', fromPgText('double', '-Infinity')))).toBe('-Infinity');
    expect(toPgParam(trip('double', fromPgText('double', '-0')))).toBe('-0');
    expect(toPgParam(trip('double', fromPgText('double', '1.7976931348623157e+308')))).toBe('1.7976931348623157e+308');
    expect(toPgParam(trip('double', fromPgText('double', '5e-324')))).toBe('5e-324');
    expect(() => fromPgText('double', 'abc')).toThrow('not a float (3 characters)');
  });

  it('float (float4): a value float4 holds keeps the text PostgreSQL printed', () => {
    for (const text of ['3.4028235e+38', '1.1754944e-38', '0.5', '-1.25']) {
      expect(Number(toPgParam(trip('float', fromPgText('float', text))))).toBe(Math.fround(Number(text)));
    }
  });

  it('bytes (bytea): hex form in, the same bytes out, \\x hex in JSON rows; escape form refused', () => {
    const v = fromPgText('bytes', '\\x00ff10') as Buffer;
    expect(Buffer.isBuffer(v)).toBe(true);
    expect([...(trip('bytes', v) as Buffer)]).toEqual([0, 255, 16]);
    expect(toPgParam(v)).toBe(v);
    expect(fromPgText('bytes', '\\x')).toEqual(Buffer.alloc(0));
    expect(() => fromPgText('bytes', 'abc\\000')).toThrow(/bytea_output must be hex/);
  });

  it('string: PostgreSQL text passes unchanged (numeric, timestamps, json, arrays, multi-byte)', () => {
    const texts = ['NaN', '-0.000000000000000000001', 'infinity', '4713-01-01 BC', '{"a": 1.50}', '{1,NULL,"x y"}', '𝄞 é', ''];
    for (const text of texts) {
      expect(fromPgText('string', text)).toBe(text);
      expect(trip('string', text)).toBe(text);
      expect(toPgParam(text)).toBe(text);
    }
  });

  it('NULL stays NULL in every kind (never a placeholder, never the empty string)', () => {
    for (const kind of ['boolean', 'int', 'long', 'float', 'double', 'bytes', 'string']) {
      expect(trip(kind, null), kind).toBeNull();
    }
    expect(toPgParam(null)).toBeNull();
    expect(toPgParam(undefined)).toBeNull();
  });

  it('refuses to write a value PostgreSQL has no text for', () => {
    expect(() => toPgParam({ a: 1 })).toThrow('cannot write a object to PostgreSQL');
  });

  it('rowToJson: every column as its text form, bytea as \\x hex, null kept', () => {
    expect(rowToJson({ id: 7n, ok: true, f: -0, b: Buffer.from([0xde, 0xad]), t: 'x', n: null })).toEqual({
      id: '7',
      ok: 't',
      f: '-0',
      b: '\\xdead',
      t: 'x',
      n: null,
    });
    expect(rowToJson(null)).toBeNull();
  });
});

describe('Avro names and schemas', () => {
  it('PostgreSQL names Avro cannot carry are hex-encoded, reversibly; valid ones stay', () => {
    for (const name of ['id', 'Mixed_Case', 'with space', '1st', 'ключ', 'a-b', 'pgx_looks_encoded', '']) {
      const a = avroName(name);
      expect(a, name).toMatch(/^[A-Za-z_][A-Za-z0-9_]*$/);
      expect(pgName(a), name).toBe(name);
    }
    expect(avroName('id')).toBe('id');
    expect(avroName('with space')).toBe('pgx_77697468207370616365');
  });

  const t: TableDef = {
    schema: 'app',
    table: 'order lines',
    replicaIdentity: 'default',
    columns: [
      { name: 'id', typeOid: 20, typeName: 'bigint', typeMod: -1, key: true },
      { name: 'qty', typeOid: 23, typeName: 'integer', typeMod: -1, key: false },
      { name: 'note text', typeOid: 25, typeName: 'text', typeMod: -1, key: false },
    ],
  };

  it('the key schema holds the key columns, not nullable; under REPLICA IDENTITY FULL every column, nullable', () => {
    expect(keySchema(t)).toEqual({
      type: 'record',
      name: 'pgbridge.app.pgx_6f72646572206c696e6573.Key',
      fields: [{ name: 'id', type: 'long', 'pg.type': 'bigint' }],
    });
    const full: TableDef = { ...t, replicaIdentity: 'full', columns: t.columns.map((c) => ({ ...c, key: true })) };
    const fields = keySchema(full).fields as { name: string; type: unknown; default?: unknown }[];
    expect(fields.map((f) => f.type)).toEqual([
      ['null', 'long'],
      ['null', 'int'],
      ['null', 'string'],
    ]);
    expect(fields.every((f) => f.default === null)).toBe(true);
  });

  it('the envelope names the table, keeps real column names in pg.column, and subjects follow TopicRecordNameStrategy', () => {
    const env = envelopeSchema(t) as { name: string; fields: { name: string; type: unknown }[] };
    expect(env.name).toBe(`${tableRecordBase(t)}.Envelope`);
    expect(env.fields.map((f) => f.name)).toEqual(['before', 'after', 'op', 'source', 'origin', 'txn', 'unchanged', 'special', 'ts_us']);
    const value = (env.fields[0]!.type as [string, { fields: Record<string, unknown>[] }])[1];
    expect(value.fields[2]).toEqual({ name: 'pgx_6e6f74652074657874', type: ['null', 'string'], 'pg.type': 'text', default: null, 'pg.column': 'note text' });
    expect(subjectFor('p.a.to.b', env)).toBe('p.a.to.b-pgbridge.app.pgx_6f72646572206c696e6573.Envelope');
  });
});

describe('Confluent wire format', () => {
  it('magic byte 0, the schema id big-endian, then the body; the id reads back', () => {
    const framed = wireEncode(0x01020304, Buffer.from([9, 8]));
    expect([...framed]).toEqual([0, 1, 2, 3, 4, 9, 8]);
    expect(wireSchemaId(framed)).toBe(0x01020304);
    expect(wireSchemaId(wireEncode(4_294_967_295, Buffer.alloc(0)))).toBe(4_294_967_295);
  });

  it('not wire format: null, too short, or another magic byte', () => {
    expect(wireSchemaId(null)).toBeNull();
    expect(wireSchemaId(Buffer.from([0, 0, 0, 1]))).toBeNull();
    expect(wireSchemaId(Buffer.from('{"json":1}'))).toBeNull();
  });
});
