/**
 * The snapshot chunk record (schemas/snapshot-chunk.avsc): one Kafka record per chunk of a
 * table, rows in PostgreSQL's text COPY format. Registered under TopicRecordNameStrategy like
 * every other record of the direction topic.
 */
import type avro from 'avsc';
import { SNAPSHOT_CHUNK_RECORD_NAME, avroType, snapshotChunkSchema, subjectFor } from '../../shared/avro.js';
import { formatLsn, type Lsn } from '../../shared/lsn.js';
import type { SchemaStore } from '../../shared/registry.js';
import type { OutMessage } from '../capture/avro-encoder.js';

export { SNAPSHOT_CHUNK_RECORD_NAME };

export const COPY_TEXT_FORMAT = 'pg-copy-text';

/**
 * Largest data of one chunk. The broker's default message.max.bytes (1 MiB + 12 bytes) bounds
 * a whole record batch, so a chunk record with its column list must stay below it.
 */
export const MAX_CHUNK_BYTES = 960 * 1024;

export interface SnapshotColumn {
  readonly name: string;
  readonly type: string;
  readonly key: boolean;
}

/** A decoded chunk record (longs as BigInt). */
export interface SnapshotChunk {
  readonly cluster: string;
  readonly origin: string;
  readonly db: string;
  readonly schema: string;
  readonly table: string;
  readonly columns: readonly SnapshotColumn[];
  readonly format: string;
  readonly rows: bigint;
  readonly data: Buffer;
  readonly snapshot: string;
  readonly range: bigint;
  readonly seq: bigint;
  readonly lsn: bigint;
  readonly commitTs: bigint;
  readonly ts_us: bigint;
}

export class ChunkEncoder {
  private codec: Promise<{ id: number; type: avro.Type }> | null = null;

  constructor(
    private readonly store: SchemaStore,
    private readonly topic: string,
  ) {}

  async encode(c: Omit<SnapshotChunk, 'ts_us'>, commitLsn: Lsn): Promise<OutMessage> {
    this.codec ??= (async () => {
      const s = snapshotChunkSchema();
      return { id: await this.store.register(subjectFor(this.topic, s), s), type: avroType(s as avro.Schema) };
    })().catch((err: unknown) => {
      this.codec = null;
      throw err;
    });
    const { id, type } = await this.codec;
    const value = encodeWire(id, type, { ...c, ts_us: BigInt(Date.now()) * 1000n }, c.data.length);
    return {
      key: null,
      value,
      headers: {
        'pgbridge.kind': 'snapshot-chunk',
        'pgbridge.origin': c.origin,
        'pgbridge.commit_lsn': formatLsn(commitLsn),
        'pgbridge.txn_last': '1',
        'pgbridge.table': `${c.schema}.${c.table}`,
      },
    };
  }
}

/**
 * Confluent wire format (magic byte, schema id, Avro) written straight into one buffer sized
 * for the data: a chunk's MiB is copied once here, not once by Avro and again for the header.
 */
function encodeWire(schemaId: number, type: avro.Type, value: unknown, dataBytes: number): Buffer {
  for (let room = dataBytes + 64 * 1024; ; room *= 2) {
    const buf = Buffer.allocUnsafe(room);
    buf.writeUInt8(0, 0);
    buf.writeUInt32BE(schemaId, 1);
    const end = type.encode(value, buf, 5);
    if (end > 0) return buf.subarray(0, end);
  }
}
