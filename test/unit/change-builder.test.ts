import { describe, expect, it } from 'vitest';
import { ChangeBuilder, type CaptureEvent } from '../../services/capture/change-builder.js';
import { UNCHANGED, type PgoutputMessage, type Relation } from '../../services/capture/pgoutput-decoder.js';
import { lsnFromBigint } from '../../shared/lsn.js';

const rel: Relation = { oid: 1, schema: 's', table: 't', replicaIdentity: 'default', columns: [
  { name: 'id', key: true, typeOid: 23, typeMod: -1 },
  { name: 'big', key: false, typeOid: 25, typeMod: -1 },
] };
const hb: Relation = { oid: 2, schema: 'cdc', table: 'heartbeat', replicaIdentity: 'default', columns: [
  { name: 'pipeline', key: true, typeOid: 25, typeMod: -1 },
  { name: 'cluster', key: true, typeOid: 25, typeMod: -1 },
] };

function builder(skipForeign = true): ChangeBuilder {
  return new ChangeBuilder({
    cluster: 'a', skipForeign, pipeline: 'p',
    originCluster: (n) => (n.startsWith('cdc_p_') ? n.slice(6) : n),
    typeName: (oid) => (oid === 23 ? 'integer' : 'text'),
    isHeartbeatTable: (s, t) => s === 'cdc' && t === 'heartbeat',
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
    const { events } = txn(b, [1, 2, 3].map((i) => ({ tag: 'insert', relation: rel, newTuple: [String(i), 'x'] }) as PgoutputMessage));
    expect(events.map((e) => [e.index, e.last])).toEqual([[0, false], [1, false], [2, true]]);
    expect(events.map((e) => (e.kind === 'change' ? e.after!.id : null))).toEqual([1, 2, 3]);
  });

  it('marks unchanged TOAST columns and leaves them out of the row', () => {
    const b = builder();
    const { events } = txn(b, [{ tag: 'update', relation: rel, oldTuple: null, oldIsKeyOnly: false, newTuple: ['1', UNCHANGED] }]);
    const e = events[0]!;
    expect(e.kind === 'change' && [e.unchanged, e.after]).toEqual([['big'], { id: 1 }]);
  });

  it('tags origins from the Origin message and the cdc.origin marker, and skips foreign ones unless told to publish', () => {
    const body = (): PgoutputMessage[] => [{ tag: 'insert', relation: rel, newTuple: ['1', 'x'] }];
    const viaOrigin: PgoutputMessage = { tag: 'origin', originLsn: lsnFromBigint(5n), name: 'cdc_p_b' };
    const viaMarker: PgoutputMessage = { tag: 'message', transactional: true, lsn: lsnFromBigint(5n), prefix: 'cdc.origin', content: Buffer.from('b') };
    const skip = builder(true);
    expect(txn(skip, [viaOrigin, ...body()])).toEqual({ events: [], skipped: true });
    expect(txn(skip, [viaMarker, ...body()], 2)).toEqual({ events: [], skipped: true });
    expect(txn(skip, body(), 3).events[0]!.txn.origin).toBe('a');
    const publish = builder(false);
    expect(txn(publish, [viaOrigin, ...body()]).events[0]!.txn.origin).toBe('b');
    expect(txn(publish, [viaMarker, ...body()], 2).events[0]!.txn.origin).toBe('b');
  });

  it('turns our own heartbeat row into a control event and ignores other pipelines\' rows', () => {
    const b = builder();
    const own = txn(b, [{ tag: 'update', relation: hb, oldTuple: null, oldIsKeyOnly: false, newTuple: ['p', 'a'] }]);
    expect(own.events.map((e) => (e.kind === 'control' ? e.control : e.kind))).toEqual(['heartbeat']);
    const other = txn(b, [{ tag: 'update', relation: hb, oldTuple: null, oldIsKeyOnly: false, newTuple: ['other', 'a'] }], 2);
    expect(other.events).toEqual([]);
  });

  it('names table, column, LSN and the reason when a value cannot be encoded', () => {
    const b = builder();
    expect(() => txn(b, [{ tag: 'insert', relation: rel, newTuple: ['not a number', 'x'] }])).toThrow(/column id \(integer\) of s\.t at LSN 0\/64 \(xid 1\): not an integer/);
  });
});

describe('resync watermarks (DBLog-style)', () => {
  const def = { schema: 's', table: 't', replicaIdentity: 'default' as const, columns: [
    { name: 'id', typeOid: 23, typeMod: -1, typeName: 'integer', key: true },
    { name: 'big', typeOid: 25, typeMod: -1, typeName: 'text', key: false },
  ] };
  const msg = (prefix: string, payload: unknown): PgoutputMessage => ({ tag: 'message', transactional: true, lsn: lsnFromBigint(7n), prefix, content: Buffer.from(JSON.stringify(payload)) });

  it('publishes the chunk at the high watermark without the keys that changed inside the window', () => {
    const b = builder();
    b.push({ tag: 'relation', relation: rel }, lsnFromBigint(1n));
    txn(b, [msg('cdc.resync.low', { id: 'r1', pipeline: 'p', table: 's.t' })], 1);
    txn(b, [{ tag: 'update', relation: rel, oldTuple: null, oldIsKeyOnly: false, newTuple: ['2', 'new'] }], 2);
    txn(b, [{ tag: 'delete', relation: rel, oldTuple: ['3', null], oldIsKeyOnly: true }], 3);
    const high = txn(b, [msg('cdc.resync.high', { id: 'r1', pipeline: 'p', table: def, key: ['id'], rows: [['1', 'a'], ['2', 'old'], ['3', 'gone']] })], 4);
    expect(high.events.map((e) => e.kind === 'change' && [e.op, e.after, e.snapshot, e.last])).toEqual([['r', { id: 1, big: 'a' }, true, true]]);
  });

  it('ignores watermarks of other pipelines and a high watermark whose low one it never saw', () => {
    const b = builder();
    txn(b, [msg('cdc.resync.low', { id: 'r2', pipeline: 'other', table: 's.t' })], 1);
    expect(txn(b, [msg('cdc.resync.high', { id: 'r2', pipeline: 'other', table: def, key: ['id'], rows: [['1', 'a']] })], 2).events).toEqual([]);
    expect(txn(b, [msg('cdc.resync.high', { id: 'r3', pipeline: 'p', table: def, key: ['id'], rows: [['1', 'a']] })], 3).events).toEqual([]);
  });
});
