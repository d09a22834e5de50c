/**
 * Publishes to the direction topic inside Kafka transactions (idempotent producer, acks=all,
 * one in-flight request): a group of whole source transactions becomes visible to
 * read_committed consumers all at once or not at all. Messages are sent in chunks while the
 * group is open, so a huge source transaction never sits in memory (INV-7).
 */
import type { Kafka, Producer, Transaction } from 'kafkajs';
import type { OutMessage } from './avro-encoder.js';

const CHUNK = 500;
const CHUNK_BYTES = 4 * 1024 * 1024;

export class KafkaPublisher {
  private producer: Producer | null = null;
  private tx: Transaction | null = null;
  private buffer: OutMessage[] = [];
  private bufferBytes = 0;
  /** Messages in the open transaction (sent or buffered). */
  private inTx = 0;
  /** Offset of the last record sent in the open transaction, and of the last one committed. */
  private sentOffset: bigint | null = null;
  private committed: bigint | null = null;

  constructor(
    private readonly kafka: Kafka,
    private readonly transactionalId: string,
    private readonly topic: string,
    /** Kafka transaction timeout: a source transaction must be published within it. */
    private readonly transactionTimeoutMs = 600_000,
  ) {}

  async connect(): Promise<void> {
    this.producer = this.kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      transactionalId: this.transactionalId,
      transactionTimeout: this.transactionTimeoutMs,
      allowAutoTopicCreation: false,
      // Right after a commit the broker may answer the next transaction's first request with
      // CONCURRENT_TRANSACTIONS while it writes the markers; kafkajs' default first retry
      // waits ~300 ms, which dominated latency. Retry quickly and often instead.
      retry: { initialRetryTime: 10, maxRetryTime: 2_000, retries: 20 },
    });
    // connect() runs InitProducerId: it fences an older instance with the same transactional
    // id and aborts whatever transaction it left open (crash recovery).
    await this.producer.connect();
  }

  get openMessages(): number {
    return this.inTx;
  }

  async add(msg: OutMessage): Promise<void> {
    this.buffer.push(msg);
    this.inTx++;
    this.bufferBytes += msg.value.length + (msg.key?.length ?? 0);
    if (this.buffer.length >= CHUNK || this.bufferBytes >= CHUNK_BYTES) await this.flush();
  }

  private async flush(): Promise<void> {
    if (this.buffer.length === 0) return;
    if (!this.producer) throw new Error('publisher not connected');
    this.tx ??= await this.producer.transaction();
    const messages = this.buffer.map((m) => ({ key: m.key, value: m.value, headers: m.headers }));
    this.buffer = [];
    this.bufferBytes = 0;
    const meta = await this.tx.send({ topic: this.topic, acks: -1, messages });
    const base = meta.find((m) => m.topicName === this.topic)?.baseOffset;
    if (base !== undefined) this.sentOffset = BigInt(base) + BigInt(messages.length) - 1n;
  }

  /** Offset of the last record of the last committed transaction (null before the first). */
  get committedOffset(): bigint | null {
    return this.committed;
  }

  /** Sends what is buffered and commits the Kafka transaction; on return every message is durably acked. */
  async commit(): Promise<void> {
    await this.flush();
    const tx = this.tx;
    this.tx = null;
    this.inTx = 0;
    if (tx) {
      await tx.commit();
      if (this.sentOffset !== null) this.committed = this.sentOffset;
    }
  }

  async abort(): Promise<void> {
    this.sentOffset = this.committed;
    this.buffer = [];
    this.bufferBytes = 0;
    this.inTx = 0;
    const tx = this.tx;
    this.tx = null;
    if (tx) await tx.abort().catch(() => undefined);
  }

  async disconnect(): Promise<void> {
    await this.abort();
    await this.producer?.disconnect().catch(() => undefined);
    this.producer = null;
  }
}
