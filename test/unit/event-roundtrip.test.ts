/**
 * The event contract end to end without a stack: pgoutput bytes → capture's decoder and
 * change builder → capture's Avro encoder → Confluent wire format → apply's event decoder.
 * The registry is a unit-test fake of the two interfaces the stages own (SchemaRegistrar,
 * SchemaReader): an in-memory subject → id table. The real registry is tested in
 * test/integration/registry.test.ts.
 */
import type avro from 'avsc';
import { describe, expect, it } from 'vitest';
import {
  decodeEvent,
  decodeRecord,
  type ApplyEvent,
  type ChangeEvent as AppliedChange,
  type ControlEvent as AppliedControl,
} from '../../services/apply/event-decoder.js';
import { EventEncoder, type OutMessage } from '../../services/capture/avro-encoder.js';
import { ChangeBuilder, type CaptureEvent } from '../../services/capture/change-builder.js';
import { PgoutputDecoder, UNCHANGED, type PgoutputMessage } from '../../services/capture/pgoutput-decoder.js';
import { avroType, wireEncode, wireSchemaId } from '../../shared/avro.js';
import { PgBridgeError } from '../../shared/errors.js';
import { formatLsn, lsnFromBigint } from '../../shared/lsn.js';
import type { DecodedRecord, SchemaReader, SchemaRegistrar } from '../../shared/registry.js';

/** In-memory registry: one id per distinct schema, subjects remembered with their versions. */
class FakeRegistry implements SchemaRegistrar, SchemaReader {
  readonly subjects = new Map<string, number[]>();
  private readonly ids = new Map<string, number>();
  private readonly schemas = new Map<number, avro.Type>();
  registrations = 0;

  async register(subject: string, schema: Record<string, unknown>): Promise<number> {
    this.registrations++;
    const text = JSON.stringify(schema);
    let id = this.ids.get(text);
    if (id === undefined) {
      id = this.ids.size + 1;
      this.ids.set(text, id);
      this.schemas.set(id, avroType(schema as avro.Schema));
    }
    const versions = this.subjects.get(subject) ?? [];
    if (!versions.includes(id)) versions.push(id);
    this.subjects.set(subject, versions);
    return id;
  }

  async decode(buf: Buffer | null): Promise<DecodedRecord> {
    const id = wireSchemaId(buf);
    const type = id === null ? undefined : this.schemas.get(id);
    if (id === null || !type) throw new Error(`fake registry: no schema for ${buf?.subarray(0, 5).toString('hex')}`);
    return { schemaId: id, recordName: type.name ?? '', value: type.fromBuffer(buf!.subarray(5)) as Record<string, unknown> };
  }
}

const TYPE_NAMES: Record<number, string> = {
  16: 'boolean',
  17: 'bytea',
  20: 'bigint',
  21: 'smallint',
  23: 'integer',
  25: 'text',
  700: 'real',
  701: 'double precision',
  1082: 'date',
  1184: 'timestamp with time zone',
  1700: 'numeric(10,2)',
  2950: 'uuid',
  3802: 'jsonb',
};
const NUMERIC_10_2 = ((10 << 16) | 2) + 4;

/** public.items: one column per type family. */
const COLUMNS: [name: string, oid: number, mod: number, key: boolean][] = [
  ['id', 20, -1, true],
  ['flag', 16, -1, false],
  ['small', 21, -1, false],
  ['n', 23, -1, false],
  ['r', 700, -1, false],
  ['d', 701, -1, false],
  ['price', 1700, NUMERIC_10_2, false],
  ['day', 1082, -1, false],
  ['at', 1184, -1, false],
  ['doc', 3802, -1, false],
  ['u', 2950, -1, false],
  ['raw', 17, -1, false],
  ['body', 25, -1, false],
  ['order no', 23, -1, false],
];

const pos = (offset: number) => ({ topic: 'p.a.to.b', partition: 0, offset: BigInt(offset) });

/** The capture side: decoder, builder and encoder of cluster a, wired as capture wires them. */
function capture(registry: FakeRegistry) {
  const decoder = new PgoutputDecoder();
  const builder = new ChangeBuilder({
    cluster: 'a',
    skipForeign: true,
    pipeline: 'p',
    originCluster: (n) => n.replace(/^cdc_p_/, ''),
    typeName: (oid) => TYPE_NAMES[oid] ?? 'text',
    isHeartbeatTable: (s, t) => s === 'cdc' && t === 'heartbeat',
    isControlTable: (s, t) => s === 'cdc' && t === 'control',
    obeyOriginRecords: false,
    isSelected: (s) => s === 'public',
    publishDdl: true,
    onIgnored: () => undefined,
  });
  const encoder = new EventEncoder(registry, 'p.a.to.b', 'a', 'shop');
  let xid = 700;
  return {
    decoder,
    /** One source transaction of pgoutput messages (decoded from bytes first) → the messages capture would produce. */
    async txn(body: Buffer[], commitLsn = 0x1000n): Promise<{ events: CaptureEvent[]; out: OutMessage[] }> {
      const lsn = lsnFromBigint(commitLsn);
      const events: CaptureEvent[] = [];
      const feed = (m: PgoutputMessage) => events.push(...builder.push(m, lsn).events);
      feed({ tag: 'begin', finalLsn: lsn, commitTimeUs: 1_764_489_600_000_001n, xid: xid++ });
      for (const b of body) feed(decoder.decode(b));
      feed({ tag: 'commit', commitLsn: lsn, endLsn: lsnFromBigint(commitLsn + 0x40n), commitTimeUs: 1_764_489_600_000_001n });
      const out: OutMessage[] = [];
      for (const ev of events) out.push(await encoder.encode(ev));
      return { events, out };
    },
  };
}

/** pgoutput messages as bytes (protocol version 1). */
const wire = {
  relation(oid: number, schema: string, table: string, cols: typeof COLUMNS, identity = 'd'): Buffer {
    const parts: Buffer[] = [Buffer.from('R'), u32(oid), cstr(schema), cstr(table), Buffer.from(identity), i16(cols.length)];
    for (const [name, typeOid, mod, key] of cols) parts.push(Buffer.from([key ? 1 : 0]), cstr(name), u32(typeOid), i32(mod));
    return Buffer.concat(parts);
  },
  insert: (oid: number, values: (string | null)[]) => Buffer.concat([Buffer.from('I'), u32(oid), Buffer.from('N'), tuple(values)]),
  update: (oid: number, old: (string | null)[] | null, values: (string | null | typeof UNCHANGED)[]) =>
    Buffer.concat([Buffer.from('U'), u32(oid), ...(old ? [Buffer.from('K'), tuple(old)] : []), Buffer.from('N'), tuple(values)]),
  delete: (oid: number, key: (string | null)[]) => Buffer.concat([Buffer.from('D'), u32(oid), Buffer.from('K'), tuple(key)]),
};
function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}
function i32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
}
function i16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
}
const cstr = (s: string) => Buffer.concat([Buffer.from(s, 'utf8'), Buffer.from([0])]);
function tuple(values: (string | null | typeof UNCHANGED)[]): Buffer {
  const parts = [i16(values.length)];
  for (const v of values) {
    if (v === null) parts.push(Buffer.from('n'));
    else if (v === UNCHANGED) parts.push(Buffer.from('u'));
    else {
      const t = Buffer.from(v, 'utf8');
      parts.push(Buffer.from('t'), u32(t.length), t);
    }
  }
  return Buffer.concat(parts);
}

async function applySide(registry: FakeRegistry, out: OutMessage[]): Promise<ApplyEvent[]> {
  return Promise.all(out.map((m, i) => decodeEvent(registry, m.value, pos(i))));
}

const change = (e: ApplyEvent): AppliedChange => {
  expect(e.kind).toBe('change');
  return e as AppliedChange;
};

const ROW_MAX = [
  '9223372036854775807',
  't',
  '32767',
  '2147483647',
  '3.4028235e+38',
  '1.7976931348623157e+308',
  '99999999.99',
  '5874897-12-31',
  '294276-12-31 23:59:59.999999+00',
  '{"a": [1, 2.50]}',
  'ffffffff-ffff-ffff-ffff-ffffffffffff',
  '\\x00ff',
  'Zoë 🚀',
  '1',
];
const ROW_MIN = [
  '-9223372036854775808',
  'f',
  '-32768',
  '-2147483648',
  '-0',
  '-1.7976931348623157e+308',
  '-99999999.99',
  '4713-01-01 BC',
  '4714-11-24 00:00:00+00 BC',
  'null',
  '00000000-0000-0000-0000-000000000000',
  '\\x',
  '',
  '-1',
];

describe('event round trip: pgoutput → capture encoder → wire → apply decoder', () => {
  it('an insert at the maximum of every type family comes back as the same values, with its source and framing', async () => {
    const reg = new FakeRegistry();
    const cap = capture(reg);
    const { out } = await cap.txn([wire.relation(16384, 'public', 'items', COLUMNS), wire.insert(16384, ROW_MAX)], 0x1_0000_2000n);
    expect(out).toHaveLength(1);
    const ev = change((await applySide(reg, out))[0]!);
    expect(ev).toMatchObject({
      schema: 'public',
      table: 'items',
      op: 'c',
      before: null,
      sourceCluster: 'a',
      origin: 'a',
      last: true,
      snapshot: false,
      unchanged: [],
    });
    expect(formatLsn(ev.commitLsn)).toBe('1/2000');
    expect(ev.commitTs).toBe(1_764_489_600_000_001n);
    expect(ev.after).toEqual({
      id: 9223372036854775807n,
      flag: true,
      small: 32767,
      n: 2147483647,
      r: Math.fround(3.4028235e38),
      d: 1.7976931348623157e308,
      price: '99999999.99',
      day: '5874897-12-31',
      at: '294276-12-31 23:59:59.999999+00',
      doc: '{"a": [1, 2.50]}',
      u: 'ffffffff-ffff-ffff-ffff-ffffffffffff',
      raw: Buffer.from([0, 255]),
      body: 'Zoë 🚀',
      'order no': 1,
    });
  });

  it('the minimum of every type family, -0 and the empty string included', async () => {
    const reg = new FakeRegistry();
    const cap = capture(reg);
    const { out } = await cap.txn([wire.relation(16384, 'public', 'items', COLUMNS), wire.insert(16384, ROW_MIN)]);
    const after = change((await applySide(reg, out))[0]!).after!;
    expect(after.id).toBe(-9223372036854775808n);
    expect(Object.is(after.r, -0)).toBe(true);
    expect(after).toMatchObject({
      flag: false,
      small: -32768,
      n: -2147483648,
      price: '-99999999.99',
      day: '4713-01-01 BC',
      at: '4714-11-24 00:00:00+00 BC',
      doc: 'null',
      body: '',
    });
    expect((after.raw as Buffer).length).toBe(0);
  });

  it('NULL in every column stays NULL (not a default, not "unchanged")', async () => {
    const reg = new FakeRegistry();
    const cap = capture(reg);
    const nulls = ['1', ...COLUMNS.slice(1).map(() => null)];
    const { out } = await cap.txn([wire.relation(16384, 'public', 'items', COLUMNS), wire.insert(16384, nulls)]);
    const ev = change((await applySide(reg, out))[0]!);
    expect(
      Object.entries(ev.after!)
        .filter(([k]) => k !== 'id')
        .every(([, v]) => v === null),
    ).toBe(true);
    expect(ev.unchanged).toEqual([]);
  });

  it('values the field type cannot carry (numeric NaN, date and timestamptz infinity) come back as their text', async () => {
    const reg = new FakeRegistry();
    const cap = capture(reg);
    const row = [...ROW_MAX];
    row[6] = 'NaN';
    row[7] = 'infinity';
    row[8] = '-infinity';
    const { out } = await cap.txn([wire.relation(16384, 'public', 'items', COLUMNS), wire.insert(16384, row)]);
    expect(change((await applySide(reg, out))[0]!).after).toMatchObject({ price: 'NaN', day: 'infinity', at: '-infinity' });
  });

  it('a transaction of several changes: order, op, old key, unchanged TOAST columns, only the last marked last', async () => {
    const reg = new FakeRegistry();
    const cap = capture(reg);
    const short: typeof COLUMNS = [
      ['id', 20, -1, true],
      ['body', 25, -1, false],
    ];
    const { out } = await cap.txn([
      wire.relation(20000, 'public', 'notes', short),
      wire.insert(20000, ['1', 'first']),
      wire.update(20000, null, ['1', UNCHANGED]),
      wire.update(20000, ['1', null], ['2', 'moved']),
      wire.delete(20000, ['2', null]),
    ]);
    const evs = (await applySide(reg, out)).map(change);
    expect(evs.map((e) => e.op)).toEqual(['c', 'u', 'u', 'd']);
    expect(evs.map((e) => e.last)).toEqual([false, false, false, true]);
    // The one header apply reads when it cannot decode a record: does it end its transaction?
    expect(out.map((m) => [...(m.headers as ReadonlyMap<Buffer, Buffer>)].map(([k, v]) => `${k.toString()}=${v.toString()}`))).toEqual([
      ['pgbridge.txn_last=0'],
      ['pgbridge.txn_last=0'],
      ['pgbridge.txn_last=0'],
      ['pgbridge.txn_last=1'],
    ]);
    expect(evs[1]).toMatchObject({ before: null, after: { id: 1n, body: null }, unchanged: ['body'] });
    expect(evs[2]).toMatchObject({ before: { id: 1n, body: null }, after: { id: 2n, body: 'moved' } });
    expect(evs[3]).toMatchObject({ before: { id: 2n, body: null }, after: null });
  });

  it("the key message holds the key columns, in the table's own key schema", async () => {
    const reg = new FakeRegistry();
    const cap = capture(reg);
    const { out } = await cap.txn([wire.relation(16384, 'public', 'items', COLUMNS), wire.insert(16384, ROW_MAX)]);
    const key = await reg.decode(out[0]!.key);
    expect(key.recordName).toBe('pgbridge.public.items.Key');
    expect(key.value).toEqual({ id: 9223372036854775807n });
    expect([...reg.subjects.keys()].sort()).toEqual(['p.a.to.b-pgbridge.public.items.Envelope', 'p.a.to.b-pgbridge.public.items.Key']);
  });

  it('a new column set (ALTER TABLE) registers a new version; each event decodes with its writer schema', async () => {
    const reg = new FakeRegistry();
    const cap = capture(reg);
    const v1: typeof COLUMNS = [
      ['id', 20, -1, true],
      ['body', 25, -1, false],
    ];
    const v2: typeof COLUMNS = [...v1, ['added', 16, -1, false]];
    const first = await cap.txn([wire.relation(30000, 'public', 'evolving', v1), wire.insert(30000, ['1', 'old'])]);
    const again = await cap.txn([wire.insert(30000, ['2', 'same shape'])], 0x2000n);
    const second = await cap.txn([wire.relation(30000, 'public', 'evolving', v2), wire.insert(30000, ['3', 'new', 't'])], 0x3000n);
    expect(wireSchemaId(first.out[0]!.value)).toBe(wireSchemaId(again.out[0]!.value));
    expect(wireSchemaId(second.out[0]!.value)).not.toBe(wireSchemaId(first.out[0]!.value));
    expect(reg.subjects.get('p.a.to.b-pgbridge.public.evolving.Envelope')).toHaveLength(2);
    const [a, b] = await applySide(reg, [first.out[0]!, second.out[0]!]);
    expect(change(a!).after).toEqual({ id: 1n, body: 'old' });
    expect(change(b!).after).toEqual({ id: 3n, body: 'new', added: true });
  });

  it('a heartbeat row becomes a control record that apply reads as one', async () => {
    const reg = new FakeRegistry();
    const cap = capture(reg);
    const hb: typeof COLUMNS = [
      ['pipeline', 25, -1, true],
      ['cluster', 25, -1, true],
      ['at', 1184, -1, false],
    ];
    const { out } = await cap.txn([wire.relation(40000, 'cdc', 'heartbeat', hb), wire.update(40000, null, ['p', 'a', '2026-11-30 08:00:00+00'])], 0x5000n);
    const ev = (await decodeRecord(reg, out[0]!.value, pos(9))) as AppliedControl;
    expect(ev).toMatchObject({ kind: 'control', control: 'heartbeat', sourceCluster: 'a', origin: 'a', last: true, id: null, payload: null });
    expect(ev.pos.offset).toBe(9n);
    expect(formatLsn(ev.commitLsn)).toBe('0/5000');
    expect(out[0]!.key).toBeNull();
  });

  it('apply refuses a record that is not a pgbridge envelope as poison, naming its schema id', async () => {
    const reg = new FakeRegistry();
    const id = await reg.register('p.a.to.b-other.Thing', { type: 'record', name: 'other.Thing', fields: [{ name: 'x', type: 'int' }] });
    const value = wireEncode(id, avroType({ type: 'record', name: 'other.Thing', fields: [{ name: 'x', type: 'int' }] } as avro.Schema).toBuffer({ x: 1 }));
    const err = await decodeEvent(reg, value, pos(0)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PgBridgeError);
    expect(err).toMatchObject({ code: 'POISON', message: `record other.Thing (schema id ${id}) is not a pgbridge change envelope` });
  });

  it('a value its column type cannot hold stops the encoder with table and LSN, never the value', async () => {
    const reg = new FakeRegistry();
    const encoder = new EventEncoder(reg, 'p.a.to.b', 'a', 'shop');
    const table = {
      schema: 'public',
      table: 't',
      replicaIdentity: 'default' as const,
      columns: [{ name: 'id', typeOid: 23, typeName: 'integer', typeMod: -1, key: true }],
    };
    const txn = { xid: 1, commitLsn: lsnFromBigint(0x10n), commitTimeUs: 1n, origin: 'a' };
    const err = await encoder
      .encode({
        kind: 'change',
        table,
        relationOid: 1,
        op: 'c',
        before: null,
        after: { id: 2 ** 40 },
        key: { id: 2 ** 40 },
        unchanged: [],
        lsn: lsnFromBigint(0x10n),
        txn,
        index: 0,
        last: true,
      })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ENCODE' });
    expect((err as Error).message).toBe('cannot encode a change of public.t at LSN 0/10: invalid "int" value');
    expect((err as Error).message).not.toContain(String(2 ** 40));
  });
});
