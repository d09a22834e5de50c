import { describe, expect, it } from 'vitest';
import { ChangeBuilder, MAX_RESYNC_WINDOWS, type CaptureEvent } from '../../services/capture/change-builder.js';
import { UNCHANGED, type PgoutputMessage, type Relation } from '../../services/capture/pgoutput-decoder.js';
import { lsnFromBigint } from '../../shared/lsn.js';
import { tableOfIdentity } from '../../shared/ddl.js';

const rel: Relation = {
  oid: 1,
  schema: 's',
  table: 't',
  replicaIdentity: 'default',
  columns: [
    { name: 'id', key: true, typeOid: 23, typeMod: -1 },
    { name: 'big', key: false, typeOid: 25, typeMod: -1 },
  ],
};
const hb: Relation = {
  oid: 2,
  schema: 'cdc',
  table: 'heartbeat',
  replicaIdentity: 'default',
  columns: [
    { name: 'pipeline', key: true, typeOid: 25, typeMod: -1 },
    { name: 'cluster', key: true, typeOid: 25, typeMod: -1 },
  ],
};

const ctl: Relation = {
  oid: 3,
  schema: 'cdc',
  table: 'control',
  replicaIdentity: 'default',
  columns: [
    { name: 'id', key: true, typeOid: 20, typeMod: -1 },
    { name: 'pipeline', key: false, typeOid: 25, typeMod: -1 },
    { name: 'kind', key: false, typeOid: 25, typeMod: -1 },
    { name: 'payload', key: false, typeOid: 25, typeMod: -1 },
    { name: 'written_at', key: false, typeOid: 1184, typeMod: -1 },
  ],
};

/** A row of cdc.control as pgbridge's roles write it. */
function control(kind: string, payload: unknown, pipeline = 'p'): PgoutputMessage {
  return {
    tag: 'insert',
    relation: ctl,
    newTuple: ['1', pipeline, kind, typeof payload === 'string' ? payload : JSON.stringify(payload), '2026-01-01 00:00:00+00'],
  };
}

function builder(skipForeign = true, opts: { obeyOrigin?: boolean; ignored?: string[]; ddl?: boolean } = {}): ChangeBuilder {
  return new ChangeBuilder({
    cluster: 'a',
    skipForeign,
    pipeline: 'p',
    originCluster: (n) => (n.startsWith('cdc_p_') ? n.slice(6) : n),
    typeName: (oid) => (oid === 23 ? 'integer' : 'text'),
    isHeartbeatTable: (s, t) => s === 'cdc' && t === 'heartbeat',
    isControlTable: (s, t) => s === 'cdc' && t === 'control',
    obeyOriginRecords: opts.obeyOrigin ?? true,
    isSelected: (s) => s === 's',
    publishDdl: opts.ddl ?? true,
    onIgnored: (reason) => opts.ignored?.push(reason),
  });
}

/** Feeds one transaction; returns its events and whether it was skipped. */
function txn(b: ChangeBuilder, body: PgoutputMessage[], n = 1): { events: CaptureEvent[]; skipped: boolean } {
  const lsn = lsnFromBigint(BigInt(n * 100));
  const out: CaptureEvent[] = [];
  out.push(...b.push({ tag: 'begin', finalLsn: lsn, commitTimeUs: 1n, xid: n }, lsn).events);
  for (const m of body) out.push(...b.push(m, lsn).events);
  const end = b.push({ tag: 'commit', commitLsn: lsn, endLsn: lsnFromBigint(BigInt(n * 100 + 10)), commitTimeUs: 1n }, lsn);
  out.push(...end.events);
  return { events: out, skipped: end.end!.skipped };
}

describe('change builder', () => {
  it('frames a transaction: indexes in order, only the last event marked last', () => {
    const b = builder();
    b.push({ tag: 'relation', relation: rel }, lsnFromBigint(1n));
    const { events } = txn(
      b,
      [1, 2, 3].map((i) => ({ tag: 'insert', relation: rel, newTuple: [String(i), 'x'] }) as PgoutputMessage),
    );
    expect(events.map((e) => [e.index, e.last])).toEqual([
      [0, false],
      [1, false],
      [2, true],
    ]);
    expect(events.map((e) => (e.kind === 'change' ? e.after!.id : null))).toEqual([1, 2, 3]);
  });

  it('marks unchanged TOAST columns and leaves them out of the row', () => {
    const b = builder();
    const { events } = txn(b, [{ tag: 'update', relation: rel, oldTuple: null, oldIsKeyOnly: false, newTuple: ['1', UNCHANGED] }]);
    const e = events[0]!;
    expect(e.kind === 'change' && [e.unchanged, e.after]).toEqual([['big'], { id: 1 }]);
  });

  it('tags origins from the Origin message and the origin control record, and skips foreign ones unless told to publish', () => {
    const body = (): PgoutputMessage[] => [{ tag: 'insert', relation: rel, newTuple: ['1', 'x'] }];
    const viaOrigin: PgoutputMessage = { tag: 'origin', originLsn: lsnFromBigint(5n), name: 'cdc_p_b' };
    const viaMarker = control('origin', 'b');
    const skip = builder(true);
    expect(txn(skip, [viaOrigin, ...body()])).toEqual({ events: [], skipped: true });
    expect(txn(skip, [viaMarker, ...body()], 2)).toEqual({ events: [], skipped: true });
    expect(txn(skip, body(), 3).events[0]!.txn.origin).toBe('a');
    const publish = builder(false);
    expect(txn(publish, [viaOrigin, ...body()]).events[0]!.txn.origin).toBe('b');
    expect(txn(publish, [viaMarker, ...body()], 2).events[0]!.txn.origin).toBe('b');
  });

  it("turns our own heartbeat row into a control event and ignores other pipelines' rows", () => {
    const b = builder();
    const own = txn(b, [{ tag: 'update', relation: hb, oldTuple: null, oldIsKeyOnly: false, newTuple: ['p', 'a'] }]);
    expect(own.events.map((e) => (e.kind === 'control' ? e.control : e.kind))).toEqual(['heartbeat']);
    const other = txn(b, [{ tag: 'update', relation: hb, oldTuple: null, oldIsKeyOnly: false, newTuple: ['other', 'a'] }], 2);
    expect(other.events).toEqual([]);
  });

  it('names table, column, LSN and the reason when a value cannot be encoded', () => {
    const b = builder();
    expect(() => txn(b, [{ tag: 'insert', relation: rel, newTuple: ['not a number', 'x'] }])).toThrow(
      /column id \(integer\) of s\.t at LSN 0\/64 \(xid 1\): not an integer/,
    );
  });
});

describe('resync watermarks (DBLog-style)', () => {
  const def = {
    schema: 's',
    table: 't',
    replicaIdentity: 'default' as const,
    columns: [
      { name: 'id', typeOid: 23, typeMod: -1, typeName: 'integer', key: true },
      { name: 'big', typeOid: 25, typeMod: -1, typeName: 'text', key: false },
    ],
  };

  it('publishes the chunk at the high watermark without the keys that changed inside the window', () => {
    const b = builder();
    b.push({ tag: 'relation', relation: rel }, lsnFromBigint(1n));
    txn(b, [control('resync.low', { id: 'r1', pipeline: 'p', table: 's.t' })], 1);
    txn(b, [{ tag: 'update', relation: rel, oldTuple: null, oldIsKeyOnly: false, newTuple: ['2', 'new'] }], 2);
    txn(b, [{ tag: 'delete', relation: rel, oldTuple: ['3', null], oldIsKeyOnly: true }], 3);
    const high = txn(
      b,
      [
        control('resync.high', {
          id: 'r1',
          pipeline: 'p',
          table: def,
          key: ['id'],
          rows: [
            ['1', 'a'],
            ['2', 'old'],
            ['3', 'gone'],
          ],
        }),
      ],
      4,
    );
    expect(high.events.map((e) => e.kind === 'change' && [e.op, e.after, e.snapshot, e.last])).toEqual([['r', { id: 1, big: 'a' }, true, true]]);
  });

  it('ignores watermarks of other pipelines and a high watermark whose low one it never saw', () => {
    const b = builder();
    txn(b, [control('resync.low', { id: 'r2', pipeline: 'other', table: 's.t' }, 'other')], 1);
    expect(txn(b, [control('resync.high', { id: 'r2', pipeline: 'other', table: def, key: ['id'], rows: [['1', 'a']] }, 'other')], 2).events).toEqual([]);
    expect(txn(b, [control('resync.high', { id: 'r3', pipeline: 'p', table: def, key: ['id'], rows: [['1', 'a']] })], 3).events).toEqual([]);
  });
});

describe('control input capture does not obey', () => {
  const def = {
    schema: 's',
    table: 't',
    replicaIdentity: 'default' as const,
    columns: [{ name: 'id', typeOid: 23, typeMod: -1, typeName: 'integer', key: true }],
  };
  const message = (prefix: string, content: string): PgoutputMessage => ({
    tag: 'message',
    transactional: true,
    lsn: lsnFromBigint(7n),
    prefix,
    content: Buffer.from(content),
  });
  const insert: PgoutputMessage = { tag: 'insert', relation: rel, newTuple: ['1', 'x'] };

  it('never obeys logical messages (any login can emit them): no origin, barrier or resync from them', () => {
    const ignored: string[] = [];
    const b = builder(true, { ignored });
    expect(txn(b, [message('cdc.origin', 'b'), insert]).events.map((e) => e.txn.origin)).toEqual(['a']);
    expect(txn(b, [message('cdc.barrier', 'x')], 2).events).toEqual([]);
    txn(b, [message('cdc.resync.low', JSON.stringify({ id: 'w', pipeline: 'p', table: 's.t' }))], 3);
    expect(txn(b, [message('cdc.resync.high', JSON.stringify({ id: 'w', pipeline: 'p', table: def, key: ['id'], rows: [['1']] }))], 4).events).toEqual([]);
    expect(txn(b, [message('cdc.resync.high', '{not json')], 5).events).toEqual([]);
    expect(ignored).toEqual(['logical-message', 'logical-message', 'logical-message', 'logical-message', 'logical-message']);
  });

  it('ignores an origin record in replication-origin mode, and one that is not first in its transaction', () => {
    const ignored: string[] = [];
    const strict = builder(true, { obeyOrigin: false, ignored });
    expect(txn(strict, [control('origin', 'b'), insert]).events.map((e) => e.txn.origin)).toEqual(['a']);
    const late = builder(true, { ignored });
    expect(txn(late, [insert, control('origin', 'b')]).events.map((e) => e.txn.origin)).toEqual(['a']);
    expect(ignored).toEqual(['origin-not-obeyed', 'malformed']);
  });

  it('refuses malformed records and chunks for tables outside the selection, without throwing', () => {
    const ignored: string[] = [];
    const b = builder(true, { ignored });
    expect(txn(b, [control('resync.high', '{not json')]).events).toEqual([]);
    txn(b, [control('resync.low', { id: 'c1', pipeline: 'p', table: 'cdc.apply_progress' })], 2);
    expect(
      txn(b, [control('resync.high', { id: 'c1', pipeline: 'p', table: { ...def, schema: 'cdc', table: 'apply_progress' }, key: ['id'], rows: [['1']] })], 3)
        .events,
    ).toEqual([]);
    txn(b, [control('resync.low', { id: 'c2', pipeline: 'p', table: 's.t' })], 4);
    expect(txn(b, [control('resync.high', { id: 'c2', pipeline: 'p', table: def, key: ['id'], rows: [['1', 'extra column']] })], 5).events).toEqual([]);
    expect(txn(b, [control('nonsense', 'x')], 6).events).toEqual([]);
    expect(ignored).toEqual(['malformed', 'unselected-table', 'unselected-table', 'malformed', 'unknown-kind']);
  });

  it('keeps at most MAX_RESYNC_WINDOWS windows open, evicting the oldest', () => {
    const ignored: string[] = [];
    const b = builder(true, { ignored });
    for (let i = 0; i <= MAX_RESYNC_WINDOWS; i++) txn(b, [control('resync.low', { id: `w${i}`, pipeline: 'p', table: 's.t' })], i + 1);
    expect(ignored).toEqual(['window-evicted']);
    expect(txn(b, [control('resync.high', { id: 'w0', pipeline: 'p', table: def, key: ['id'], rows: [['1']] })], 100).events).toEqual([]);
    expect(txn(b, [control('resync.high', { id: `w${MAX_RESYNC_WINDOWS}`, pipeline: 'p', table: def, key: ['id'], rows: [['1']] })], 101).events.length).toBe(
      1,
    );
  });
});

describe('ddl records (forward DDL replication)', () => {
  const ddl = (over: Record<string, unknown> = {}) => ({
    pipeline: 'p',
    tag: 'ALTER TABLE',
    sql: 'ALTER TABLE t ADD COLUMN c int',
    searchPath: 's, public',
    role: 'u',
    objects: [{ type: 'table', schema: 's', identity: 's.t' }],
    ...over,
  });

  it('publishes a ddl record at its place in the transaction, between the rows around it', () => {
    const b = builder();
    const ins = (id: string): PgoutputMessage => ({ tag: 'insert', relation: rel, newTuple: [id, 'x'] });
    const { events } = txn(b, [ins('1'), control('ddl', ddl()), ins('2')]);
    expect(events.map((e) => (e.kind === 'control' ? `${e.control}:${e.id}` : e.op))).toEqual(['c', 'ddl:ALTER TABLE', 'c']);
    const d = events[1]!;
    expect(d.kind === 'control' && JSON.parse(d.payload!).sql).toBe('ALTER TABLE t ADD COLUMN c int');
    expect(events.map((e) => e.last)).toEqual([false, false, true]);
  });

  it('does not publish ddl records when it is not the forward source, nor malformed ones, nor ones on tables outside the selection', () => {
    const ignored: string[] = [];
    expect(txn(builder(true, { ddl: false, ignored }), [control('ddl', ddl())]).events).toEqual([]);
    const b = builder(true, { ignored });
    expect(txn(b, [control('ddl', { ...ddl(), sql: 42 })], 2).events).toEqual([]);
    expect(txn(b, [control('ddl', ddl({ objects: [{ type: 'table column', schema: 'other', identity: 'other.t.c' }] }))], 3).events).toEqual([]);
    expect(ignored).toEqual(['ddl-not-replicated', 'malformed', 'unselected-table']);
  });

  it('reads the table name out of quoted object identities', () => {
    expect(tableOfIdentity('s', 's.t')).toBe('t');
    expect(tableOfIdentity('My S', '"My S"."a ""b"".c".col')).toBe('a "b".c');
    expect(tableOfIdentity('s', 's.t.col')).toBe('t');
  });
});
