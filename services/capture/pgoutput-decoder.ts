/**
 * pgoutput (protocol version 1) → typed messages with every value as PostgreSQL's text
 * form. Unchanged TOAST values are marked, never turned into undefined or NULL; no value is
 * parsed (no Date, no JSON.parse), so exactness is the default.
 * https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html
 */
import { lsnFromBigint, type Lsn } from '../../shared/lsn.js';

/** A value in a tuple: text, NULL, or "unchanged TOAST datum, not sent". */
export type TupleValue = string | null | typeof UNCHANGED;
export const UNCHANGED: unique symbol = Symbol('unchanged-toast');

export interface RelationColumn {
  readonly name: string;
  readonly key: boolean;
  readonly typeOid: number;
  readonly typeMod: number;
}

export interface Relation {
  readonly oid: number;
  readonly schema: string;
  readonly table: string;
  readonly replicaIdentity: 'default' | 'nothing' | 'full' | 'index';
  readonly columns: readonly RelationColumn[];
}

export type PgoutputMessage =
  | { tag: 'begin'; finalLsn: Lsn; commitTimeUs: bigint; xid: number }
  | { tag: 'commit'; commitLsn: Lsn; endLsn: Lsn; commitTimeUs: bigint }
  | { tag: 'origin'; originLsn: Lsn; name: string }
  | { tag: 'relation'; relation: Relation }
  | { tag: 'type'; oid: number; schema: string; name: string }
  | { tag: 'insert'; relation: Relation; newTuple: TupleValue[] }
  | { tag: 'update'; relation: Relation; oldTuple: TupleValue[] | null; oldIsKeyOnly: boolean; newTuple: TupleValue[] }
  | { tag: 'delete'; relation: Relation; oldTuple: TupleValue[]; oldIsKeyOnly: boolean }
  | { tag: 'truncate'; relations: Relation[]; cascade: boolean; restartIdentity: boolean }
  | { tag: 'message'; transactional: boolean; lsn: Lsn; prefix: string; content: Buffer };

/** Microseconds between 1970-01-01 and 2000-01-01 (PostgreSQL's epoch). */
const PG_EPOCH_US = 946_684_800_000_000n;

class Reader {
  pos = 0;
  constructor(private readonly buf: Buffer) {}
  u8(): number {
    return this.buf.readUInt8(this.pos++);
  }
  i16(): number {
    const v = this.buf.readInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  i32(): number {
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  u32(): number {
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  i64(): bigint {
    const v = this.buf.readBigInt64BE(this.pos);
    this.pos += 8;
    return v;
  }
  lsn(): Lsn {
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return lsnFromBigint(v);
  }
  /** Commit/begin time → µs since the Unix epoch. */
  timeUs(): bigint {
    return this.i64() + PG_EPOCH_US;
  }
  cstring(): string {
    const end = this.buf.indexOf(0, this.pos);
    if (end < 0) throw new Error('unterminated string in pgoutput message');
    const s = this.buf.toString('utf8', this.pos, end);
    this.pos = end + 1;
    return s;
  }
  bytes(n: number): Buffer {
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
}

export class PgoutputDecoder {
  private readonly relations = new Map<number, Relation>();
  readonly typeNames = new Map<number, string>();

  decode(buf: Buffer): PgoutputMessage {
    const r = new Reader(buf);
    const tag = String.fromCharCode(r.u8());
    switch (tag) {
      case 'B':
        return { tag: 'begin', finalLsn: r.lsn(), commitTimeUs: r.timeUs(), xid: r.u32() };
      case 'C': {
        r.u8(); // flags, unused
        return { tag: 'commit', commitLsn: r.lsn(), endLsn: r.lsn(), commitTimeUs: r.timeUs() };
      }
      case 'O':
        return { tag: 'origin', originLsn: r.lsn(), name: r.cstring() };
      case 'R': {
        const oid = r.u32();
        const schema = r.cstring();
        const table = r.cstring();
        const ri = String.fromCharCode(r.u8());
        const replicaIdentity = ri === 'f' ? 'full' : ri === 'i' ? 'index' : ri === 'n' ? 'nothing' : 'default';
        const n = r.i16();
        const columns: RelationColumn[] = [];
        for (let i = 0; i < n; i++) {
          const flags = r.u8();
          columns.push({ key: (flags & 1) === 1, name: r.cstring(), typeOid: r.u32(), typeMod: r.i32() });
        }
        const relation: Relation = { oid, schema, table, replicaIdentity, columns };
        this.relations.set(oid, relation);
        return { tag: 'relation', relation };
      }
      case 'Y': {
        const oid = r.u32();
        const schema = r.cstring();
        const name = r.cstring();
        this.typeNames.set(oid, `${schema}.${name}`);
        return { tag: 'type', oid, schema, name };
      }
      case 'I': {
        const relation = this.relation(r.u32());
        r.u8(); // 'N'
        return { tag: 'insert', relation, newTuple: this.tuple(r) };
      }
      case 'U': {
        const relation = this.relation(r.u32());
        let kind = String.fromCharCode(r.u8());
        let oldTuple: TupleValue[] | null = null;
        let oldIsKeyOnly = false;
        if (kind === 'K' || kind === 'O') {
          oldIsKeyOnly = kind === 'K';
          oldTuple = this.tuple(r);
          kind = String.fromCharCode(r.u8());
        }
        if (kind !== 'N') throw new Error(`pgoutput update: expected N, got ${kind}`);
        return { tag: 'update', relation, oldTuple, oldIsKeyOnly, newTuple: this.tuple(r) };
      }
      case 'D': {
        const relation = this.relation(r.u32());
        const kind = String.fromCharCode(r.u8());
        return { tag: 'delete', relation, oldIsKeyOnly: kind === 'K', oldTuple: this.tuple(r) };
      }
      case 'T': {
        const n = r.u32();
        const flags = r.u8();
        const relations: Relation[] = [];
        for (let i = 0; i < n; i++) relations.push(this.relation(r.u32()));
        return { tag: 'truncate', relations, cascade: (flags & 1) === 1, restartIdentity: (flags & 2) === 2 };
      }
      case 'M': {
        const flags = r.u8();
        const lsn = r.lsn();
        const prefix = r.cstring();
        const len = r.u32();
        return { tag: 'message', transactional: (flags & 1) === 1, lsn, prefix, content: Buffer.from(r.bytes(len)) };
      }
      default:
        throw new Error(`unknown pgoutput message tag ${JSON.stringify(tag)}`);
    }
  }

  private relation(oid: number): Relation {
    const rel = this.relations.get(oid);
    if (!rel) throw new Error(`pgoutput: change for relation ${oid} before its Relation message`);
    return rel;
  }

  private tuple(r: Reader): TupleValue[] {
    const n = r.i16();
    const out: TupleValue[] = new Array<TupleValue>(n);
    for (let i = 0; i < n; i++) {
      const kind = String.fromCharCode(r.u8());
      if (kind === 'n') out[i] = null;
      else if (kind === 'u') out[i] = UNCHANGED;
      else if (kind === 't') out[i] = r.bytes(r.u32()).toString('utf8');
      else throw new Error(`pgoutput tuple: unsupported value kind ${JSON.stringify(kind)}`);
    }
    return out;
  }
}
