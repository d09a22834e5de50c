/**
 * The pgoutput decoder against messages built by hand, byte by byte, as the protocol
 * documentation lays them out ("Logical Replication Message Formats", protocol version 1):
 * big-endian integers, NUL-terminated strings, times in µs since 2000-01-01.
 */
import { describe, expect, it } from 'vitest';
import { PgoutputDecoder, UNCHANGED, type PgoutputMessage } from '../../services/capture/pgoutput-decoder.js';
import { formatLsn } from '../../shared/lsn.js';

/** A message writer in the protocol's terms: Int8/16/32/64, String (NUL-terminated), Byten. */
class Msg {
  private readonly parts: Buffer[] = [];
  constructor(tag: string) {
    this.byte(tag);
  }
  byte(c: string | number): this {
    this.parts.push(Buffer.from([typeof c === 'string' ? c.charCodeAt(0) : c]));
    return this;
  }
  int16(n: number): this {
    const b = Buffer.alloc(2);
    b.writeInt16BE(n);
    this.parts.push(b);
    return this;
  }
  int32(n: number): this {
    const b = Buffer.alloc(4);
    if (n < 0) b.writeInt32BE(n);
    else b.writeUInt32BE(n);
    this.parts.push(b);
    return this;
  }
  int64(n: bigint): this {
    const b = Buffer.alloc(8);
    b.writeBigInt64BE(n);
    this.parts.push(b);
    return this;
  }
  string(s: string): this {
    this.parts.push(Buffer.from(s, 'utf8'), Buffer.from([0]));
    return this;
  }
  bytes(b: Buffer): this {
    this.parts.push(b);
    return this;
  }
  /** TupleData: Int16 column count, then per column 'n' (null), 'u' (unchanged TOAST) or 't' Int32 length + text. */
  tuple(values: (string | null | typeof UNCHANGED)[]): this {
    this.int16(values.length);
    for (const v of values) {
      if (v === null) this.byte('n');
      else if (v === UNCHANGED) this.byte('u');
      else {
        const text = Buffer.from(v, 'utf8');
        this.byte('t').int32(text.length).bytes(text);
      }
    }
    return this;
  }
  get buffer(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** µs between the Unix epoch and PostgreSQL's (2000-01-01). */
const PG_EPOCH_US = 946_684_800_000_000n;

/** Relation 16384 public.accounts (id int4 key, name text, note varchar(20)), replica identity default. */
function accountsRelation(oid = 16384, ri = 'd'): Buffer {
  return new Msg('R')
    .int32(oid)
    .string('public')
    .string('accounts')
    .byte(ri)
    .int16(3)
    .byte(1)
    .string('id')
    .int32(23)
    .int32(-1)
    .byte(0)
    .string('name')
    .int32(25)
    .int32(-1)
    .byte(0)
    .string('note')
    .int32(1043)
    .int32(24).buffer;
}

function decoderWithAccounts(): PgoutputDecoder {
  const d = new PgoutputDecoder();
  d.decode(accountsRelation());
  return d;
}

function as<T extends PgoutputMessage['tag']>(m: PgoutputMessage, tag: T): Extract<PgoutputMessage, { tag: T }> {
  expect(m.tag).toBe(tag);
  return m as Extract<PgoutputMessage, { tag: T }>;
}

describe('pgoutput decoder (protocol version 1 messages built by hand)', () => {
  it('Begin: final LSN, commit time moved to the Unix epoch, xid as unsigned 32-bit', () => {
    const commitUnixUs = 1_764_489_600_123_456n; // 2025-11-30 08:00:00.123456 UTC
    const m = as(
      new PgoutputDecoder().decode(
        new Msg('B')
          .int64(0x1_6b37_48n)
          .int64(commitUnixUs - PG_EPOCH_US)
          .int32(0xfffffffe).buffer,
      ),
      'begin',
    );
    expect(formatLsn(m.finalLsn)).toBe('0/16B3748');
    expect(m.commitTimeUs).toBe(commitUnixUs);
    expect(m.xid).toBe(4_294_967_294);
  });

  it('Commit: commit LSN and end LSN apart (the slot is acked with the end), flags skipped', () => {
    const m = as(new PgoutputDecoder().decode(new Msg('C').byte(0).int64(0x2_0000_0010n).int64(0x2_0000_0040n).int64(0n).buffer), 'commit');
    expect(formatLsn(m.commitLsn)).toBe('2/10');
    expect(formatLsn(m.endLsn)).toBe('2/40');
    expect(m.commitTimeUs).toBe(PG_EPOCH_US);
  });

  it('a commit time before 2000 (negative on the wire) comes out before 2000 too', () => {
    const m = as(new PgoutputDecoder().decode(new Msg('C').byte(0).int64(1n).int64(2n).int64(-1n).buffer), 'commit');
    expect(m.commitTimeUs).toBe(PG_EPOCH_US - 1n);
  });

  it('Origin: the origin LSN and the replication origin name (what loop prevention reads)', () => {
    const m = as(new PgoutputDecoder().decode(new Msg('O').int64(0xabcn).string('cdc_p_b').buffer), 'origin');
    expect(m).toEqual({ tag: 'origin', originLsn: 0xabcn, name: 'cdc_p_b' });
  });

  it('Relation: names, key flags, type OIDs and typmods in column order', () => {
    const m = as(new PgoutputDecoder().decode(accountsRelation()), 'relation');
    expect(m.relation).toEqual({
      oid: 16384,
      schema: 'public',
      table: 'accounts',
      replicaIdentity: 'default',
      columns: [
        { name: 'id', key: true, typeOid: 23, typeMod: -1 },
        { name: 'name', key: false, typeOid: 25, typeMod: -1 },
        { name: 'note', key: false, typeOid: 1043, typeMod: 24 },
      ],
    });
  });

  it('Relation: every replica identity setting (d, n, f, i) and names outside ASCII', () => {
    const ids = { d: 'default', n: 'nothing', f: 'full', i: 'index' } as const;
    for (const [code, name] of Object.entries(ids)) {
      expect(as(new PgoutputDecoder().decode(accountsRelation(1, code)), 'relation').relation.replicaIdentity).toBe(name);
    }
    const m = as(
      new PgoutputDecoder().decode(
        new Msg('R').int32(7).string('Schéma').string('tab "x"').byte('d').int16(1).byte(1).string('ключ').int32(20).int32(-1).buffer,
      ),
      'relation',
    );
    expect(m.relation.schema).toBe('Schéma');
    expect(m.relation.table).toBe('tab "x"');
    expect(m.relation.columns[0]!.name).toBe('ключ');
  });

  it('Type: remembers the name of a user type by OID', () => {
    const d = new PgoutputDecoder();
    const m = as(d.decode(new Msg('Y').int32(90001).string('app').string('mood').buffer), 'type');
    expect(m).toEqual({ tag: 'type', oid: 90001, schema: 'app', name: 'mood' });
    expect(d.typeNames.get(90001)).toBe('app.mood');
  });

  it('Insert: every value as PostgreSQL text, NULL as null, multi-byte text by its byte length', () => {
    const d = decoderWithAccounts();
    const m = as(d.decode(new Msg('I').int32(16384).byte('N').tuple(['42', 'Zoë 🚀', null]).buffer), 'insert');
    expect(m.relation.table).toBe('accounts');
    expect(m.newTuple).toEqual(['42', 'Zoë 🚀', null]);
  });

  it('Insert: an empty string is text, not NULL', () => {
    const m = as(decoderWithAccounts().decode(new Msg('I').int32(16384).byte('N').tuple(['1', '', null]).buffer), 'insert');
    expect(m.newTuple[1]).toBe('');
    expect(m.newTuple[2]).toBeNull();
  });

  it('Update without old tuple: the new row only, unchanged TOAST marked (never undefined or NULL)', () => {
    const m = as(decoderWithAccounts().decode(new Msg('U').int32(16384).byte('N').tuple(['1', UNCHANGED, 'x']).buffer), 'update');
    expect(m.oldTuple).toBeNull();
    expect(m.oldIsKeyOnly).toBe(false);
    expect(m.newTuple[1]).toBe(UNCHANGED);
    expect(m.newTuple).toEqual(['1', UNCHANGED, 'x']);
  });

  it('Update with a K (old key) tuple: the key columns of the old row, the others null', () => {
    const m = as(decoderWithAccounts().decode(new Msg('U').int32(16384).byte('K').tuple(['1', null, null]).byte('N').tuple(['2', 'n', null]).buffer), 'update');
    expect(m.oldIsKeyOnly).toBe(true);
    expect(m.oldTuple).toEqual(['1', null, null]);
    expect(m.newTuple).toEqual(['2', 'n', null]);
  });

  it('Update with an O (whole old row, REPLICA IDENTITY FULL) tuple', () => {
    const m = as(
      decoderWithAccounts().decode(new Msg('U').int32(16384).byte('O').tuple(['1', 'old', 'o']).byte('N').tuple(['1', 'new', 'o']).buffer),
      'update',
    );
    expect(m.oldIsKeyOnly).toBe(false);
    expect(m.oldTuple).toEqual(['1', 'old', 'o']);
    expect(m.newTuple).toEqual(['1', 'new', 'o']);
  });

  it('Update: anything but N after the old tuple is refused', () => {
    expect(() => decoderWithAccounts().decode(new Msg('U').int32(16384).byte('K').tuple(['1', null, null]).byte('X').tuple(['1', null, null]).buffer)).toThrow(
      /expected N, got X/,
    );
  });

  it('Delete: K (key) and O (whole row) old tuples', () => {
    const d = decoderWithAccounts();
    const k = as(d.decode(new Msg('D').int32(16384).byte('K').tuple(['9', null, null]).buffer), 'delete');
    expect(k).toMatchObject({ oldIsKeyOnly: true, oldTuple: ['9', null, null] });
    const o = as(d.decode(new Msg('D').int32(16384).byte('O').tuple(['9', 'n', 'x']).buffer), 'delete');
    expect(o).toMatchObject({ oldIsKeyOnly: false, oldTuple: ['9', 'n', 'x'] });
  });

  it('Truncate: every relation named, CASCADE (bit 1) and RESTART IDENTITY (bit 2) flags', () => {
    const d = decoderWithAccounts();
    d.decode(new Msg('R').int32(16390).string('public').string('orders').byte('d').int16(1).byte(1).string('id').int32(20).int32(-1).buffer);
    const m = as(d.decode(new Msg('T').int32(2).byte(3).int32(16384).int32(16390).buffer), 'truncate');
    expect(m.relations.map((r) => r.table)).toEqual(['accounts', 'orders']);
    expect(m.cascade).toBe(true);
    expect(m.restartIdentity).toBe(true);
    const plain = as(d.decode(new Msg('T').int32(1).byte(0).int32(16390).buffer), 'truncate');
    expect(plain).toMatchObject({ cascade: false, restartIdentity: false });
  });

  it('Message: transactional flag, LSN, prefix and content kept as bytes (not parsed)', () => {
    const content = Buffer.from([0x00, 0xff, 0x7b, 0x7d]);
    const m = as(new PgoutputDecoder().decode(new Msg('M').byte(1).int64(0x30n).string('cdc.barrier').int32(content.length).bytes(content).buffer), 'message');
    expect(m.transactional).toBe(true);
    expect(m.lsn).toBe(0x30n);
    expect(m.prefix).toBe('cdc.barrier');
    expect(m.content.equals(content)).toBe(true);
    const nt = as(new PgoutputDecoder().decode(new Msg('M').byte(0).int64(1n).string('x').int32(0).buffer), 'message');
    expect(nt.transactional).toBe(false);
    expect(nt.content.length).toBe(0);
  });

  it('a newer Relation message for the same OID replaces the old shape (ALTER TABLE)', () => {
    const d = decoderWithAccounts();
    d.decode(
      new Msg('R')
        .int32(16384)
        .string('public')
        .string('accounts')
        .byte('d')
        .int16(2)
        .byte(1)
        .string('id')
        .int32(23)
        .int32(-1)
        .byte(0)
        .string('added')
        .int32(16)
        .int32(-1).buffer,
    );
    const m = as(d.decode(new Msg('I').int32(16384).byte('N').tuple(['1', 't']).buffer), 'insert');
    expect(m.relation.columns.map((c) => c.name)).toEqual(['id', 'added']);
  });

  it('refuses, naming the problem: a change before its Relation, an unknown tag, binary values, an unterminated string', () => {
    expect(() => new PgoutputDecoder().decode(new Msg('I').int32(555).byte('N').tuple(['1']).buffer)).toThrow(/relation 555 before its Relation message/);
    expect(() => new PgoutputDecoder().decode(new Msg('Z').buffer)).toThrow(/unknown pgoutput message tag "Z"/);
    const binary = new Msg('I')
      .int32(16384)
      .byte('N')
      .int16(1)
      .byte('b')
      .int32(1)
      .bytes(Buffer.from([1])).buffer;
    expect(() => decoderWithAccounts().decode(binary)).toThrow(/unsupported value kind "b"/);
    expect(() => new PgoutputDecoder().decode(new Msg('O').int64(1n).bytes(Buffer.from('no-nul')).buffer)).toThrow(/unterminated string/);
  });
});
