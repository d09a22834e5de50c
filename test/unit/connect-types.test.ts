/**
 * Connect semantic types (shared/connect-types.ts): the Avro schema a Connect converter reads,
 * and PostgreSQL text → wire → the same text for every value, extremes included; values the
 * wire form cannot carry are special.
 */
import { describe, expect, it } from 'vitest';
import { avroType, envelopeSchema, keySchema, specialColumns, type TableDef } from '../../shared/avro.js';
import { connectField, wire } from '../../shared/connect-types.js';

// typmod of numeric(p,s): ((p << 16) | s) + 4; of varchar(n): n + 4; of time types: the precision.
const numericMod = (p: number, s: number): number => ((p << 16) | (s & 0x7ff)) + 4;

const table: TableDef = {
  schema: 's',
  table: 't',
  replicaIdentity: 'default',
  columns: [
    { name: 'id', typeOid: 23, typeName: 'integer', typeMod: -1, key: true },
    { name: 'price', typeOid: 1700, typeName: 'numeric(14,2)', typeMod: numericMod(14, 2), key: false },
    { name: 'big', typeOid: 1700, typeName: 'numeric(1000,500)', typeMod: numericMod(1000, 500), key: false },
    { name: 'int_only', typeOid: 1700, typeName: 'numeric(5,0)', typeMod: numericMod(5, 0), key: false },
    { name: 'free', typeOid: 1700, typeName: 'numeric', typeMod: -1, key: false },
    { name: 'd', typeOid: 1082, typeName: 'date', typeMod: -1, key: false },
    { name: 't', typeOid: 1083, typeName: 'time without time zone', typeMod: -1, key: false },
    { name: 'ts', typeOid: 1114, typeName: 'timestamp(3) without time zone', typeMod: 3, key: false },
    { name: 'tz', typeOid: 1184, typeName: 'timestamp with time zone', typeMod: -1, key: false },
    { name: 'j', typeOid: 3802, typeName: 'jsonb', typeMod: -1, key: false },
    { name: 'u', typeOid: 2950, typeName: 'uuid', typeMod: -1, key: false },
    { name: 'v', typeOid: 1043, typeName: 'character varying(20)', typeMod: 24, key: false },
    { name: 'small', typeOid: 21, typeName: 'smallint', typeMod: -1, key: false },
  ],
};

describe('Connect semantic types', () => {
  it('gives the Avro schema a Connect converter maps to the source type', () => {
    const env = envelopeSchema(table) as { fields: { name: string; type: unknown }[] };
    const value = (env.fields[0]!.type as [string, { fields: { name: string; type: [string, unknown] }[] }])[1];
    const field = (n: string) => value.fields.find((f) => f.name === n)!.type[1];
    expect(field('price')).toEqual({
      type: 'bytes',
      logicalType: 'decimal',
      precision: 14,
      scale: 2,
      'connect.parameters': { 'connect.decimal.precision': '14' },
    });
    expect(field('free')).toBe('string');
    expect(field('d')).toEqual({ type: 'int', 'connect.name': 'io.debezium.time.Date' });
    expect(field('ts')).toEqual({
      type: 'long',
      'connect.name': 'io.debezium.time.MicroTimestamp',
      'connect.parameters': { '__debezium.source.column.scale': '3' },
    });
    expect(field('tz')).toEqual({ type: 'string', 'connect.name': 'io.debezium.time.ZonedTimestamp' });
    expect(field('j')).toEqual({ type: 'string', 'connect.name': 'io.debezium.data.Json', 'connect.parameters': { '__debezium.source.column.type': 'JSONB' } });
    expect(field('u')).toEqual({ type: 'string', 'connect.name': 'io.debezium.data.Uuid' });
    expect(field('v')).toEqual({
      type: 'string',
      'connect.parameters': { '__debezium.source.column.type': 'VARCHAR', '__debezium.source.column.length': '20' },
    });
    expect(field('small')).toEqual({ type: 'int', 'connect.type': 'int16' });
    expect(connectField({ typeOid: 1700, typeMod: numericMod(2, 5) })).toBeNull();
    expect(connectField({ typeOid: 1700, typeMod: numericMod(5, -2) })).toBeNull();
    expect(env.fields.map((f) => f.name)).toContain('special');
  });

  it('round-trips every value through the Avro envelope as the same PostgreSQL text', () => {
    const type = avroType(envelopeSchema(table) as never);
    const rows: Record<string, string | number | null>[] = [
      {
        id: 1,
        price: '123456789012.34',
        big: `-${'9'.repeat(500)}.${'0'.repeat(499)}1`,
        int_only: '-99999',
        free: 'NaN',
        d: '2026-11-30',
        t: '24:00:00',
        ts: '2026-11-30 07:00:00.123',
        tz: '2026-11-30 07:00:00.123456+00',
        j: '{"a": [1, 2.50]}',
        u: '7f1b0e6c-8a1e-4f6e-9d6a-2b8d1f0c9e11',
        v: 'x',
        small: -32768,
      },
      {
        id: 2,
        price: '-0.01',
        big: '0.' + '0'.repeat(500),
        int_only: '0',
        free: '1e-3',
        d: '4713-01-01 BC',
        t: '00:00:00',
        ts: '4713-01-01 00:00:00 BC',
        tz: '4714-11-24 00:00:00+00 BC',
        j: 'null',
        u: '00000000-0000-0000-0000-000000000000',
        v: '',
        small: 32767,
      },
      {
        id: 3,
        price: '0.00',
        big: '1.5'.padEnd(502, '0'),
        int_only: '1',
        free: null,
        d: '5874897-12-31',
        t: '23:59:59.999999',
        ts: '294246-12-31 23:59:59.999999',
        tz: '294276-12-31 23:59:59.999999+00',
        j: '"é"',
        u: null,
        v: null,
        small: 0,
      },
      {
        id: 4,
        price: '-128.00',
        big: null,
        int_only: '127',
        free: null,
        d: '0001-01-01 BC',
        t: '12:34:56.5',
        ts: '1969-12-31 23:59:59.999999',
        tz: 'infinity',
        j: null,
        u: null,
        v: null,
        small: null,
      },
      {
        id: 5,
        price: '1.28',
        big: null,
        int_only: '-129',
        free: null,
        d: '1970-01-01',
        t: '00:00:00.000001',
        ts: '0001-01-01 00:00:00',
        tz: '-infinity',
        j: null,
        u: null,
        v: null,
        small: null,
      },
      {
        id: 6,
        price: '-1.29',
        big: null,
        int_only: '32768',
        free: null,
        d: '1999-12-31',
        t: '01:02:03',
        ts: '2000-02-29 12:00:00',
        tz: '0001-01-01 00:00:00+00 BC',
        j: null,
        u: null,
        v: null,
        small: null,
      },
    ];
    for (const after of rows) {
      const env = {
        before: null,
        after,
        op: 'c',
        source: { cluster: 'a', db: 'd', schema: 's', table: 't', lsn: 1n, commitLsn: 1n, xid: 1n, commitTs: 1n, snapshot: false },
        origin: 'a',
        txn: { id: 'x', index: 0n, last: true },
        unchanged: [],
        special: {},
        ts_us: 1n,
      };
      const back = type.fromBuffer(type.toBuffer(env)) as { after: Record<string, unknown> };
      expect(back.after).toEqual(after);
    }
  });

  it("writes decimals as two's complement big-endian with the scale, and timestamptz as ISO 8601", () => {
    expect(wire.decimalToBytes('1.28', 2)!.toString('hex')).toBe('0080');
    expect(wire.decimalToBytes('-1.28', 2)!.toString('hex')).toBe('80');
    expect(wire.decimalToBytes('-1.29', 2)!.toString('hex')).toBe('ff7f');
    expect(wire.bytesToDecimal(Buffer.from('ff7f', 'hex'), 2)).toBe('-1.29');
    expect(wire.timestamptzToIso('2026-11-30 07:00:00.5+00')).toBe('2026-11-30T07:00:00.5Z');
    expect(wire.timestamptzToIso('0044-03-15 12:00:00+00 BC')).toBe('-0043-03-15T12:00:00Z');
    expect(wire.timestamptzToIso('294276-12-31 23:59:59.999999+00')).toBe('+294276-12-31T23:59:59.999999Z');
    expect(wire.isoToTimestamptz('-0043-03-15T12:00:00Z')).toBe('0044-03-15 12:00:00+00 BC');
    expect(wire.timestampMicros('1970-01-01 00:00:00.000001')).toBe(1n);
    expect(wire.timestampText(-1n, false)).toBe('1969-12-31 23:59:59.999999');
  });

  it('marks the values the wire form cannot carry as special', () => {
    const sp = Object.fromEntries(specialColumns(table).map((c) => [c.name, c.special]));
    expect(Object.keys(sp).sort()).toEqual(['big', 'd', 'int_only', 'price', 'ts']);
    expect(sp.price!('NaN')).toBe(true);
    expect(sp.price!('1.00')).toBe(false);
    expect(sp.d!('infinity')).toBe(true);
    expect(sp.d!('-infinity')).toBe(true);
    expect(sp.ts!('infinity')).toBe(true);
    expect(sp.ts!('294276-12-31 23:59:59.999999')).toBe(true);
    expect(sp.ts!('294246-12-31 23:59:59.999999')).toBe(false);
    expect(keySchema(table).fields).toEqual([{ name: 'id', type: 'int', 'pg.type': 'integer' }]);
  });

  it('the fast paths give what the exact BigInt functions give', () => {
    let seed = 42;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let i = 0; i < 5000; i++) {
      const scale = rnd(6);
      const int = String(rnd(2 ** 31) * (rnd(3) === 0 ? 1 : rnd(100000) + 1)).slice(0, rnd(16) + 1);
      const text = `${rnd(2) ? '-' : ''}${int}${scale ? `.${String(rnd(10 ** scale)).padStart(scale, '0')}` : ''}`;
      const bytes = wire.decimalToBytes(text, scale)!;
      expect(bytes.equals(wire.exact.decimalToBytes(text, scale)!), text).toBe(true);
      expect(wire.bytesToDecimal(bytes, scale), text).toBe(wire.exact.bytesToDecimal(bytes, scale));
      expect(wire.bytesToDecimal(bytes, scale).replace(/^-(0\.?0*)$/, '$1')).toBe(text.replace(/^-(0\.?0*)$/, '$1').replace(/^(-?)0+(\d)/, '$1$2'));
      // Half within years 1687-2252 (the fast range), half anywhere in 64 bits.
      const us = BigInt(rnd(2 ** 31)) * BigInt(rnd(2 ** (i % 2 ? 21 : 31))) * (rnd(2) ? 1n : -1n) + BigInt(rnd(1_000_000));
      const ts = wire.timestampText(us, false);
      expect(ts, String(us)).toBe(wire.exact.timestampText(us, false));
      expect(wire.timestampMicros(ts)).toBe(us);
      expect(wire.exact.timestampMicros(ts)).toBe(us);
      const tz = wire.timestampText(us, true);
      expect(wire.timestamptzToIso(tz)).toBe(wire.exact.timestamptzToIso(tz));
    }
  });
});
