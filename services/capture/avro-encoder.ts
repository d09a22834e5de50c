/**
 * Change and control events → Kafka messages in Confluent wire format. One key schema and
 * one envelope schema per table version, registered under TopicRecordNameStrategy; a new
 * column set (Relation message after ALTER TABLE) registers a new version. Ids are cached.
 *
 * Per message: the Confluent framing and the Avro body are written into one scratch buffer
 * and copied out once (one allocation for the value, one for the key), and the only header,
 * `pgbridge.txn_last`, is one of two pre-encoded maps (docs/events.md).
 */
import type avro from 'avsc';
import { avroName, avroType, controlSchema, envelopeSchema, keySchema, specialColumns, subjectFor, type TableDef } from '../../shared/avro.js';
import { PgBridgeError, errorMessage } from '../../shared/errors.js';
import { formatLsn } from '../../shared/lsn.js';
import type { ProducedMessage } from '../../shared/kafka.js';
import type { SchemaRegistrar } from '../../shared/registry.js';
import type { CaptureEvent, ChangeEvent, ControlEvent, Row } from './change-builder.js';

export interface OutMessage {
  readonly key: Buffer | null;
  readonly value: Buffer;
  readonly headers: ProducedMessage['headers'];
}

/**
 * The one header capture sends: whether the record ends its source transaction. Everything
 * else is in the record itself; apply reads this one only for a record it cannot decode.
 */
const TXN_LAST = Buffer.from('pgbridge.txn_last');
const LAST_HEADERS: ReadonlyMap<Buffer, Buffer> = new Map([[TXN_LAST, Buffer.from('1')]]);
const NOT_LAST_HEADERS: ReadonlyMap<Buffer, Buffer> = new Map([[TXN_LAST, Buffer.from('0')]]);

const NO_SPECIAL: Record<string, string> = Object.freeze({}) as Record<string, string>;

interface TableCodec {
  readonly keyId: number | null;
  readonly keyType: avro.Type | null;
  readonly valueId: number;
  readonly valueType: avro.Type;
}

export class EventEncoder {
  private readonly byTable = new WeakMap<TableDef, Promise<TableCodec>>();
  private readonly byFingerprint = new Map<string, Promise<TableCodec>>();
  private control: Promise<{ id: number; type: avro.Type }> | null = null;
  /** Where messages are framed and encoded before the one copy out; grows to the largest message. */
  private scratch = Buffer.allocUnsafe(64 * 1024);
  /** `txn.id` of the transaction being encoded (xid:commitLsn), made once per transaction. */
  private txnIdOf: object | null = null;
  private txnId = '';

  constructor(
    private readonly store: SchemaRegistrar,
    private readonly topic: string,
    private readonly cluster: string,
    private readonly database: string,
  ) {}

  async encode(ev: CaptureEvent): Promise<OutMessage> {
    return ev.kind === 'change' ? this.encodeChange(ev) : this.encodeControl(ev);
  }

  private codec(t: TableDef): Promise<TableCodec> {
    let p = this.byTable.get(t);
    if (!p) {
      const ks = keySchema(t);
      const vs = envelopeSchema(t);
      const fp = JSON.stringify([ks, vs]);
      p = this.byFingerprint.get(fp);
      if (!p) {
        p = (async () => {
          const hasKey = (ks.fields as unknown[]).length > 0;
          const keyId = hasKey ? await this.store.register(subjectFor(this.topic, ks), ks) : null;
          const valueId = await this.store.register(subjectFor(this.topic, vs), vs);
          return { keyId, keyType: hasKey ? avroType(ks as avro.Schema) : null, valueId, valueType: avroType(vs as avro.Schema) };
        })();
        p.catch(() => this.byFingerprint.delete(fp));
        this.byFingerprint.set(fp, p);
      }
      this.byTable.set(t, p);
    }
    return p;
  }

  private async encodeChange(ev: ChangeEvent): Promise<OutMessage> {
    const c = await this.codec(ev.table);
    const t = ev.table;
    const before = toRecord(t, ev.before);
    const after = toRecord(t, ev.after);
    // Values the field type cannot carry go as null, with their text in `special`.
    const specials = specialColumns(t);
    let special: Record<string, string> = NO_SPECIAL;
    let keySpecial = false;
    if (specials.length) {
      for (const [side, row, rec] of [
        ['before', ev.before, before],
        ['after', ev.after, after],
      ] as const) {
        if (!row || !rec) continue;
        for (const sp of specials) {
          const v = row[sp.name];
          if (typeof v !== 'string' || !sp.special(v)) continue;
          if (special === NO_SPECIAL) special = {};
          special[`${side}.${sp.name}`] = v;
          rec[avroName(sp.name)] = null;
        }
      }
      keySpecial = !!ev.key && specials.some((sp) => typeof ev.key![sp.name] === 'string' && sp.special(ev.key![sp.name] as string));
    }
    const envelope = {
      before,
      after,
      op: ev.op,
      source: {
        cluster: this.cluster,
        db: this.database,
        schema: t.schema,
        table: t.table,
        lsn: BigInt(ev.lsn),
        commitLsn: BigInt(ev.txn.commitLsn),
        xid: BigInt(ev.txn.xid),
        commitTs: ev.txn.commitTimeUs,
        snapshot: ev.snapshot ?? false,
      },
      origin: ev.txn.origin,
      txn: { id: this.txnIdFor(ev.txn), index: BigInt(ev.index), last: ev.last },
      unchanged: [...ev.unchanged],
      special,
      ts_us: BigInt(Date.now()) * 1000n,
    };
    let value: Buffer;
    let key: Buffer | null = null;
    try {
      value = this.frame(c.valueId, c.valueType, envelope);
      // A key column holding a special value: the key cannot be written in its types, so the
      // message goes without a key (docs/events.md); apply reads the row from the envelope.
      if (c.keyType && c.keyId !== null && ev.key && !keySpecial) key = this.frame(c.keyId, c.keyType, toRecord(t, ev.key, true));
    } catch (err) {
      // avsc quotes the value it refused (`invalid "int": …`): a row value, so the message keeps the type only.
      const reason = errorMessage(err).replace(/^(invalid "[^"]*"):.*$/s, '$1 value');
      throw new PgBridgeError('ENCODE', `cannot encode a change of ${t.schema}.${t.table} at LSN ${formatLsn(ev.lsn)}: ${reason}`, {
        details: { table: `${t.schema}.${t.table}`, lsn: formatLsn(ev.lsn) },
      });
    }
    return { key, value, headers: ev.last ? LAST_HEADERS : NOT_LAST_HEADERS };
  }

  private txnIdFor(txn: ChangeEvent['txn']): string {
    if (this.txnIdOf !== txn) {
      this.txnIdOf = txn;
      this.txnId = `${txn.xid}:${formatLsn(txn.commitLsn)}`;
    }
    return this.txnId;
  }

  /** Confluent wire format (magic byte 0, schema id, Avro body) in a buffer of its own. */
  private frame(schemaId: number, type: avro.Type, value: unknown): Buffer {
    for (;;) {
      const buf = this.scratch;
      const end = type.encode(value, buf, 5);
      if (end >= 0) {
        buf[0] = 0;
        buf.writeUInt32BE(schemaId, 1);
        const out = Buffer.allocUnsafe(end);
        buf.copy(out, 0, 0, end);
        return out;
      }
      // avsc returns minus the bytes missing.
      this.scratch = Buffer.allocUnsafe(Math.max(buf.length * 2, buf.length - end));
    }
  }

  private async encodeControl(ev: ControlEvent): Promise<OutMessage> {
    this.control ??= (async () => {
      const s = controlSchema();
      return { id: await this.store.register(subjectFor(this.topic, s), s), type: avroType(s as avro.Schema) };
    })().catch((err: unknown) => {
      this.control = null;
      throw err;
    });
    const c = await this.control;
    const rec = {
      kind: ev.control,
      cluster: this.cluster,
      origin: ev.txn.origin,
      lsn: BigInt(ev.lsn),
      commitLsn: BigInt(ev.txn.commitLsn),
      xid: BigInt(ev.txn.xid),
      commitTs: ev.txn.commitTimeUs,
      txnIndex: BigInt(ev.index),
      last: ev.last,
      id: ev.id,
      payload: ev.payload,
      ts_us: BigInt(Date.now()) * 1000n,
    };
    return { key: null, value: this.frame(c.id, c.type, rec), headers: ev.last ? LAST_HEADERS : NOT_LAST_HEADERS };
  }
}

/** Row keyed by PostgreSQL column names → Avro record keyed by Avro field names (unchanged columns are null; see `unchanged`). */
function toRecord(t: TableDef, row: Row | null, keyOnly = false): Record<string, unknown> | null {
  if (!row) return null;
  const out: Record<string, unknown> = {};
  for (const c of t.columns) {
    if (keyOnly && !c.key) continue;
    out[avroName(c.name)] = row[c.name] ?? null;
  }
  return out;
}
