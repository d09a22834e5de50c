/**
 * Publishes to the direction topic inside Kafka transactions (idempotent producer, acks=all,
 * one in-flight request): a group of whole source transactions becomes visible to
 * read_committed consumers all at once or not at all. Messages are sent in chunks while the
 * group is open, so a huge source transaction never sits in memory (INV-7, docs/invariants.md).
 */
import type { Compression, KafkaClient, TransactionalProducer } from '../../shared/kafka.js';
import type { OutMessage } from './avro-encoder.js';

/**
 * A send goes out when this many bytes of keys and values are buffered (and at every
 * commit): one record batch per send, well under the broker's default 1 MiB batch limit
 * (message.max.bytes). Few large sends cost less per message than many small ones.
 */
const CHUNK_BYTES = 512 * 1024;
/** One send is one record batch, which the broker's message.max.bytes (1 MiB by default) bounds: large records go out alone. */
const BATCH_BYTES = 1000 * 1000;

export class KafkaPublisher {
  private producer: TransactionalProducer | null = null;
  private buffer: OutMessage[] = [];
  private bufferBytes = 0;
  /** Messages in the open transaction (sent or buffered). */
  private inTx = 0;
  /** Offset of the last record sent in the open transaction, and of the last one committed. */
  private sentOffset: bigint | null = null;
  private committed: bigint | null = null;

  constructor(
    private readonly kafka: KafkaClient,
    private readonly transactionalId: string,
    private readonly topic: string,
    /** Kafka transaction timeout: a source transaction must be published within it. */
    private readonly transactionTimeoutMs = 600_000,
    /** Every message to this partition (a one-partition topic), else the producer's partitioner. */
    private readonly partition?: number,
    private readonly compression: Compression = 'none',
  ) {}

  async connect(): Promise<void> {
    this.producer = this.kafka.transactionalProducer(this.transactionalId, this.transactionTimeoutMs, { compression: this.compression });
    // The first transaction's InitProducerId fences an older instance with the same
    // transactional id and aborts whatever transaction it left open (crash recovery).
    await this.producer.connect();
  }

  get openMessages(): number {
    return this.inTx;
  }

  async add(msg: OutMessage): Promise<void> {
    const size = msg.value.length + (msg.key?.length ?? 0);
    if (this.buffer.length && size > BATCH_BYTES / 8 && this.bufferBytes + size > BATCH_BYTES) await this.flush();
    this.buffer.push(msg);
    this.inTx++;
    this.bufferBytes += size;
    if (this.bufferBytes >= CHUNK_BYTES || (size > BATCH_BYTES / 8 && this.bufferBytes >= BATCH_BYTES / 2)) await this.flush();
  }

  private async flush(): Promise<void> {
    if (this.buffer.length === 0) return;
    if (!this.producer) throw new Error('publisher not connected');
    const messages = this.buffer;
    this.buffer = [];
    this.bufferBytes = 0;
    const last = await this.producer.send(this.topic, messages, this.partition);
    if (last !== null) this.sentOffset = last;
  }

  /** Offset of the last record of the last committed transaction (null before the first). */
  get committedOffset(): bigint | null {
    return this.committed;
  }

  /** Sends what is buffered and commits the Kafka transaction; on return every message is durably acked. */
  async commit(): Promise<void> {
    await this.flush();
    this.inTx = 0;
    if (this.producer?.open) {
      await this.producer.commit();
      if (this.sentOffset !== null) this.committed = this.sentOffset;
    }
  }

  async abort(): Promise<void> {
    this.sentOffset = this.committed;
    this.buffer = [];
    this.bufferBytes = 0;
    this.inTx = 0;
    await this.producer?.abort().catch(() => undefined);
  }

  async disconnect(): Promise<void> {
    await this.abort();
    await this.producer?.close();
    this.producer = null;
  }
}
