/**
 * The Kafka client (@platformatic/kafka) behind the few calls pgbridge makes. Its types stay
 * in this file: the services see pgbridge's own producer, group consumer, reader and admin.
 *
 * - TransactionalProducer: idempotent, acks=all, one Kafka transaction at a time (capture).
 * - GroupConsumer: a consumer group member (assignment, heartbeats, advisory offset commits)
 *   whose fetch loop pgbridge runs itself, read_committed, from positions the service gives
 *   (apply: the stored position is authoritative, INV-3 in docs/invariants.md), with seek.
 * - TopicReader: reads partitions from given offsets, no group (tests, tools).
 * - KafkaAdmin: topics, offsets, groups, configs.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { ConnectionOptions as TlsConnectionOptions } from 'node:tls';
import {
  Admin,
  Consumer,
  FetchIsolationLevels,
  ListOffsetTimestamps,
  ProduceAcks,
  Producer,
  compatibilityPartitioner,
  type ClusterMetadata,
  type fetchV17,
  type RecordsBatch,
} from '@platformatic/kafka';

type FetchResponse = fetchV17.FetchResponse;
type Transaction = Awaited<ReturnType<Producer['beginTransaction']>>;
import { MESSAGE_OVERHEAD_BYTES, type PipelineConfig } from './config.js';
import type { Logger } from './log.js';
import { readPem } from './tls-files.js';

/** Where the brokers are and how to reach them. */
export interface KafkaConnection {
  readonly brokers: readonly string[];
  readonly clientId: string;
  readonly connectTimeoutMs?: number;
  readonly requestTimeoutMs?: number;
  /** TLS towards the brokers (kafka.ssl); absent: plaintext. */
  readonly tls?: TlsConnectionOptions;
  /** SASL authentication (kafka.sasl). */
  readonly sasl?: { readonly mechanism: 'PLAIN' | 'SCRAM-SHA-256' | 'SCRAM-SHA-512'; readonly username: string; readonly password: string };
}

export type HeaderValues = Readonly<Record<string, Buffer | string>>;

/** A message to produce. Headers may be pre-encoded (name and value Buffers) to save work per message. */
export interface ProducedMessage {
  readonly key: Buffer | null;
  readonly value: Buffer;
  readonly headers?: HeaderValues | ReadonlyMap<Buffer, Buffer>;
}

/** Where messages go: a fixed partition, or (undefined) the key's hash, round-robin without a key. */
export type PartitionChoice = number | undefined;

/** A consumed record (control records and aborted transactions are never delivered). */
export interface ConsumedMessage {
  readonly topic: string;
  readonly partition: number;
  readonly offset: bigint;
  readonly key: Buffer | null;
  readonly value: Buffer | null;
  readonly headers: Readonly<Record<string, Buffer>>;
}

export interface TopicOffsets {
  readonly partition: number;
  /** Log start offset. */
  readonly low: bigint;
  /** End offset (the next offset to be written, commit markers included). */
  readonly high: bigint;
}

const IS_CONTROL = 0x20;
const IS_TRANSACTIONAL = 0x10;

/**
 * The connection settings of the pipeline's Kafka: brokers, timeouts, and kafka.ssl (CA,
 * client certificate; the broker certificate is always verified) and kafka.sasl (PLAIN,
 * SCRAM-SHA-256, SCRAM-SHA-512).
 */
export function kafkaConnection(cfg: PipelineConfig, clientId: string): KafkaConnection {
  const { ssl, sasl } = cfg.kafka;
  return {
    brokers: cfg.kafka.brokers,
    clientId,
    connectTimeoutMs: cfg.kafka.connectionTimeoutMs,
    requestTimeoutMs: cfg.kafka.requestTimeoutMs,
    ...(ssl
      ? {
          tls: {
            rejectUnauthorized: true,
            ...(ssl.caFile ? { ca: readPem('kafka.ssl.caFile', ssl.caFile) } : {}),
            ...(ssl.certFile ? { cert: readPem('kafka.ssl.certFile', ssl.certFile) } : {}),
            ...(ssl.keyFile ? { key: readPem('kafka.ssl.keyFile', ssl.keyFile) } : {}),
          },
        }
      : {}),
    ...(sasl
      ? { sasl: { mechanism: sasl.mechanism.toUpperCase() as 'PLAIN' | 'SCRAM-SHA-256' | 'SCRAM-SHA-512', username: sasl.username, password: sasl.password } }
      : {}),
  };
}

/** The client of a pipeline's Kafka, named `<kafka.clientId>-<clientId>`; `timeouts` shortens the config's for a quick look (status). */
export function kafkaClient(cfg: PipelineConfig, clientId: string, log?: Logger, timeouts: Pick<KafkaConnection, 'connectTimeoutMs'> = {}): KafkaClient {
  return new KafkaClient({ ...kafkaConnection(cfg, `${cfg.kafka.clientId}-${clientId}`), ...timeouts }, log);
}

/** Protocol error names (e.g. PRODUCER_FENCED) anywhere in an error's chain. */
function kafkaErrorIds(err: unknown, out = new Set<string>(), depth = 0): Set<string> {
  if (!err || typeof err !== 'object' || depth > 6) return out;
  const e = err as { apiId?: string; code?: string; errors?: unknown[]; cause?: unknown };
  if (e.apiId) out.add(e.apiId);
  if (e.code) out.add(e.code);
  for (const x of e.errors ?? []) kafkaErrorIds(x, out, depth + 1);
  if (e.cause) kafkaErrorIds(e.cause, out, depth + 1);
  return out;
}

/** An error of the Kafka client (anything it raised). */
export function isKafkaError(err: unknown): boolean {
  return [...kafkaErrorIds(err)].some((c) => c.startsWith('PLT_KFK_'));
}

/** The broker could not be reached or did not answer in time. */
export function isKafkaConnectionError(err: unknown): boolean {
  const ids = kafkaErrorIds(err);
  return ids.has('PLT_KFK_NETWORK') || ids.has('PLT_KFK_TIMEOUT');
}

/** Another producer with our transactional id has taken over: retrying cannot help. */
export function isKafkaFenced(err: unknown): boolean {
  const ids = kafkaErrorIds(err);
  return ids.has('PRODUCER_FENCED') || ids.has('INVALID_PRODUCER_EPOCH') || ids.has('TRANSACTIONAL_ID_AUTHORIZATION_FAILED');
}

/**
 * InitProducerId must ask for a new producer id (-1/-1): the client sends 0/0 unless told,
 * which the broker takes as "bump producer 0, epoch 0" and answers PRODUCER_FENCED as soon
 * as the transactional id has a producer, i.e. on every restart.
 */
const NEW_PRODUCER = { producerId: -1n, producerEpoch: -1 } as const;

/** Fast first retries (CONCURRENT_TRANSACTIONS right after a commit), then up to 2 s apart. */
function retryDelay(_client: unknown, _op: string, attempt: number): number {
  return Math.min(2_000, 10 * 2 ** Math.min(attempt, 10));
}

export class KafkaClient {
  constructor(
    readonly connection: KafkaConnection,
    private readonly log?: Logger,
  ) {}

  /** Options every client of this connection shares. */
  base(
    suffix: string,
    retries = 8,
  ): {
    clientId: string;
    bootstrapBrokers: string[];
    connectTimeout: number;
    requestTimeout: number;
    retries: number;
    retryDelay: typeof retryDelay;
    tls?: TlsConnectionOptions;
    sasl?: KafkaConnection['sasl'];
  } {
    const c = this.connection;
    return {
      clientId: suffix ? `${c.clientId}-${suffix}` : c.clientId,
      bootstrapBrokers: [...c.brokers],
      connectTimeout: c.connectTimeoutMs ?? 3_000,
      requestTimeout: c.requestTimeoutMs ?? 30_000,
      retries,
      retryDelay,
      ...(c.tls ? { tls: c.tls } : {}),
      ...(c.sasl ? { sasl: { ...c.sasl } } : {}),
    };
  }

  admin(opts: { retries?: number } = {}): KafkaAdmin {
    return new KafkaAdmin(new Admin(this.base('admin', opts.retries ?? 3)));
  }

  /** Idempotent producer (acks=all) outside transactions: the dead-letter topic, tests. */
  producer(): PlainProducer {
    return new PlainProducer(
      new Producer({ ...this.base('producer', 20), ...NEW_PRODUCER, idempotent: true, acks: ProduceAcks.ALL, partitioner: compatibilityPartitioner }),
    );
  }

  transactionalProducer(transactionalId: string, transactionTimeoutMs: number, opts: { compression?: Compression } = {}): TransactionalProducer {
    return new TransactionalProducer(
      new Producer({
        ...this.base('tx', 20),
        ...NEW_PRODUCER,
        idempotent: true,
        acks: ProduceAcks.ALL,
        transactionalId,
        // The client sends `timeout` as the transaction timeout of InitProducerId (and as the
        // produce request's ack timeout): a source transaction must be published within it.
        timeout: transactionTimeoutMs,
        partitioner: compatibilityPartitioner,
        ...(opts.compression && opts.compression !== 'none' ? { compression: opts.compression } : {}),
      }),
    );
  }

  groupConsumer(opts: GroupConsumerOptions): GroupConsumer {
    return new GroupConsumer(this, opts, this.log);
  }

  reader(opts: ReaderOptions = {}): TopicReader {
    return new TopicReader(this, opts);
  }
}

export type Compression = 'none' | 'lz4' | 'zstd' | 'gzip' | 'snappy';

function toHeaderMap(h: ProducedMessage['headers']): Map<Buffer, Buffer> | undefined {
  if (!h) return undefined;
  if (h instanceof Map) return h as Map<Buffer, Buffer>;
  const m = new Map<Buffer, Buffer>();
  for (const [k, v] of Object.entries(h as HeaderValues)) m.set(Buffer.from(k), typeof v === 'string' ? Buffer.from(v) : v);
  return m;
}

interface ToProduce {
  topic: string;
  partition?: number;
  key?: Buffer;
  value: Buffer;
  headers?: Map<Buffer, Buffer>;
}

function toProduce(topic: string, msgs: readonly ProducedMessage[], partition?: PartitionChoice): ToProduce[] {
  const out = new Array<ToProduce>(msgs.length);
  for (let i = 0; i < msgs.length; i++) {
    const m = msgs[i]!;
    const o: ToProduce = { topic, value: m.value };
    // A fixed partition spares the partitioner's hash of every key.
    if (partition !== undefined) o.partition = partition;
    if (m.key) o.key = m.key;
    if (m.headers) o.headers = toHeaderMap(m.headers);
    out[i] = o;
  }
  return out;
}

export class PlainProducer {
  constructor(private readonly p: Producer) {}

  /** Sends and waits for acks=all. Returns the offset of each message's partition's last record. */
  async send(topic: string, messages: readonly ProducedMessage[]): Promise<void> {
    await this.p.send({ messages: toProduce(topic, messages) as never });
  }

  async close(): Promise<void> {
    await this.p.close(true);
  }
}

/**
 * One Kafka transaction at a time. The first begin() runs InitProducerId for the
 * transactional id: it fences an older instance with the same id and aborts whatever
 * transaction it left open (crash recovery).
 */
export class TransactionalProducer {
  private tx: Transaction | null = null;
  private sent = false;

  constructor(private readonly p: Producer) {}

  /** InitProducerId now (fencing), so that a zombie is fenced before anything is read. */
  async connect(): Promise<void> {
    await this.begin();
  }

  private async begin(): Promise<Transaction> {
    if (!this.tx) {
      this.tx = (await this.p.beginTransaction()) as Transaction;
      this.sent = false;
    }
    return this.tx;
  }

  /** Sends inside the open transaction (begun on demand). Returns the offset of the last record written when all went to one partition, else null. */
  async send(topic: string, messages: readonly ProducedMessage[], partition?: PartitionChoice): Promise<bigint | null> {
    const tx = await this.begin();
    this.sent = true;
    const r = await tx.send({ messages: toProduce(topic, messages, partition) as never });
    // The client reports, per partition written, the base offset of the batch it wrote.
    const o = r.offsets ?? [];
    return o.length === 1 && o[0]!.topic === topic ? o[0]!.offset + BigInt(messages.length) - 1n : null;
  }

  get open(): boolean {
    return this.tx !== null && this.sent;
  }

  async commit(): Promise<void> {
    const tx = this.tx;
    if (!tx) return;
    this.tx = null;
    // An empty transaction has nothing on the broker to end.
    if (this.sent) await tx.commit();
    else await tx.cancel();
  }

  async abort(): Promise<void> {
    const tx = this.tx;
    if (!tx) return;
    this.tx = null;
    if (this.sent) await tx.abort();
    else await tx.cancel();
  }

  async close(): Promise<void> {
    await this.abort().catch(() => undefined);
    await this.p.close(true).catch(() => undefined);
  }
}

export interface ReaderOptions {
  /** read_committed (default) or read_uncommitted (sees open and aborted transactions' records). */
  readonly readCommitted?: boolean;
  readonly maxWaitMs?: number;
  readonly maxBytesPerPartition?: number;
}

/** One fetch for one partition: records in order, aborted transactions and control records removed. */
interface PartitionFetch {
  readonly messages: ConsumedMessage[];
  /** Offset to fetch next (past control records too). */
  readonly next: bigint;
  readonly highWatermark: bigint;
  readonly logStart: bigint;
  readonly errorCode: number;
  /** The response's first batch starts after `from`: nothing was taken (see partitionRecords). */
  readonly leadingHole?: boolean;
}

const OFFSET_OUT_OF_RANGE = 1;

/**
 * The records of one partition's fetch response. Records of aborted transactions are dropped
 * the way the Java client does it: from the first offset the broker lists for an aborted
 * producer until that producer's abort marker, even when the marker lies beyond this response
 * (@platformatic/kafka keeps such records: it only drops ranges whose marker it has seen).
 */
function partitionRecords(
  topic: string,
  partition: number,
  p: FetchResponse['responses'][number]['partitions'][number],
  from: bigint,
  acceptLeadingHole = false,
): PartitionFetch {
  const messages: ConsumedMessage[] = [];
  let next = from;
  const aborted = (p.abortedTransactions ?? [])
    .slice()
    .sort((a: { firstOffset: bigint }, b: { firstOffset: bigint }) => (a.firstOffset < b.firstOffset ? -1 : a.firstOffset > b.firstOffset ? 1 : 0));
  const aborting = new Set<bigint>();
  let ai = 0;
  let prevLast: bigint | null = null;
  for (const batch of (p.records ?? []) as RecordsBatch[]) {
    const lastOffset = batch.firstOffset + BigInt(batch.lastOffsetDelta);
    if (lastOffset < from) continue;
    // Offsets of a direction topic are contiguous (no compaction; markers take offsets too).
    // A response whose batches jump over offsets lacks records that the log has: seen with
    // 1 MiB read_committed fetches of a topic with aborted transactions (offsets 956–4158
    // absent, batches from 4159 on; a fetch of one batch from 956 returned them). Taking the
    // batches after the hole would skip those records for good, and the aborted range that
    // starts in the hole would make the filter below drop the batches after it too. So: stop
    // at the hole, and the next fetch starts there. A hole before the first batch is taken
    // only when a fetch of a single batch from `from` shows it again (fetchPartitions).
    const holeAt = prevLast === null ? from : prevLast + 1n;
    if (batch.firstOffset > holeAt && (prevLast !== null || !acceptLeadingHole)) {
      if (prevLast === null)
        return { messages, next: from, highWatermark: p.highWatermark, logStart: p.logStartOffset, errorCode: p.errorCode, leadingHole: true };
      break;
    }
    prevLast = lastOffset;
    if (lastOffset + 1n > next) next = lastOffset + 1n;
    while (ai < aborted.length && aborted[ai]!.firstOffset <= lastOffset) aborting.add(aborted[ai++]!.producerId);
    if (batch.attributes & IS_CONTROL) {
      // Control record key: version int16, type int16 (0 abort, 1 commit).
      if (batch.attributes & IS_TRANSACTIONAL && batch.records[0]?.key?.readInt16BE(2) === 0) aborting.delete(batch.producerId);
      continue;
    }
    if (batch.attributes & IS_TRANSACTIONAL && aborting.has(batch.producerId)) continue;
    for (const r of batch.records) {
      const offset = batch.firstOffset + BigInt(r.offsetDelta);
      if (offset < from) continue;
      const headers: Record<string, Buffer> = {};
      for (const [k, v] of r.headers) if (k) headers[k.toString()] = v ?? Buffer.alloc(0);
      messages.push({ topic, partition, offset, key: r.key ?? null, value: r.value ?? null, headers });
    }
  }
  return { messages, next, highWatermark: p.highWatermark, logStart: p.logStartOffset, errorCode: p.errorCode };
}

/** Fetches for (topic, partition, offset) triples, grouped by leader. */
async function fetchPartitions(
  consumer: Consumer,
  topic: string,
  positions: ReadonlyMap<number, bigint>,
  opts: Required<ReaderOptions>,
): Promise<Map<number, PartitionFetch>> {
  const meta: ClusterMetadata = await consumer.metadata({ topics: [topic] });
  const t = meta.topics.get(topic);
  if (!t) throw new Error(`topic ${topic} not found`);
  /** One Fetch request to a leader for some partitions, each at most `maxBytes`; their records, by partition. */
  const fetchFrom = async (node: number, partitions: readonly number[], maxBytes: number, acceptLeadingHole = false): Promise<[number, PartitionFetch][]> => {
    const r = await consumer.fetch({
      node,
      topics: [
        {
          topicId: t.id,
          partitions: partitions.map((partition) => ({
            partition,
            currentLeaderEpoch: -1,
            fetchOffset: positions.get(partition)!,
            lastFetchedEpoch: -1,
            partitionMaxBytes: maxBytes,
          })),
        },
      ],
      maxWaitTime: opts.maxWaitMs,
      minBytes: 1,
      maxBytes: maxBytes * partitions.length,
      isolationLevel: opts.readCommitted ? FetchIsolationLevels.READ_COMMITTED : FetchIsolationLevels.READ_UNCOMMITTED,
    });
    const got: [number, PartitionFetch][] = [];
    for (const rt of r.responses) {
      for (const p of rt.partitions) {
        const from = positions.get(p.partitionIndex);
        if (from !== undefined && partitions.includes(p.partitionIndex))
          got.push([p.partitionIndex, partitionRecords(topic, p.partitionIndex, p, from, acceptLeadingHole)]);
      }
    }
    return got;
  };
  const leaderOf = (partition: number): number => {
    const leader = t.partitions[partition]?.leader;
    if (leader === undefined) throw new Error(`partition ${topic}/${partition} has no leader`);
    return leader;
  };
  const byNode = new Map<number, number[]>();
  for (const partition of positions.keys()) {
    const leader = leaderOf(partition);
    byNode.set(leader, [...(byNode.get(leader) ?? []), partition]);
  }
  const out = new Map<number, PartitionFetch>(
    (await Promise.all([...byNode].map(([node, partitions]) => fetchFrom(node, partitions, opts.maxBytesPerPartition)))).flat(),
  );
  // A response that started after the position: ask for that partition again, one batch only
  // (maxBytes 1: the broker still returns the first batch whole), and believe a hole that
  // this shows too.
  for (const [partition, f] of out) {
    if (f.leadingHole) for (const [p, again] of await fetchFrom(leaderOf(partition), [partition], 1, true)) out.set(p, again);
  }
  return out;
}

function samePositions(a: ReadonlyMap<number, bigint>, b: ReadonlyMap<number, bigint>): boolean {
  if (a.size !== b.size) return false;
  for (const [p, o] of a) if (b.get(p) !== o) return false;
  return true;
}

function readerDefaults(o: ReaderOptions): Required<ReaderOptions> {
  return { readCommitted: o.readCommitted ?? true, maxWaitMs: o.maxWaitMs ?? 100, maxBytesPerPartition: o.maxBytesPerPartition ?? 1024 * 1024 };
}

/** Reads a topic's partitions from given offsets, outside any group. */
export class TopicReader {
  private readonly consumer: Consumer;
  private readonly opts: Required<ReaderOptions>;

  constructor(client: KafkaClient, opts: ReaderOptions) {
    this.opts = readerDefaults(opts);
    this.consumer = new Consumer({ ...client.base('reader'), groupId: `pgbridge-reader-${process.pid}-${Date.now()}` });
  }

  /** One fetch per partition from the given offsets (empty arrays when nothing is there within maxWaitMs). */
  async fetch(
    topic: string,
    positions: ReadonlyMap<number, bigint>,
  ): Promise<Map<number, { messages: ConsumedMessage[]; next: bigint; highWatermark: bigint }>> {
    const r = await fetchPartitions(this.consumer, topic, positions, this.opts);
    for (const [p, f] of r)
      if (f.errorCode === OFFSET_OUT_OF_RANGE) throw new Error(`offset ${positions.get(p)} out of range for ${topic}/${p} (log starts at ${f.logStart})`);
    return r;
  }

  async close(): Promise<void> {
    await this.consumer.close(true).catch(() => undefined);
  }
}

/** Every record of a topic from each partition's start to its end offset at the time of the call. */
export async function readTopic(client: KafkaClient, topic: string, opts: ReaderOptions = {}): Promise<ConsumedMessage[]> {
  const admin = client.admin();
  const reader = client.reader(opts);
  try {
    const offsets = await admin.topicOffsets(topic);
    const pos = new Map(offsets.filter((o) => o.high > o.low).map((o) => [o.partition, o.low]));
    const end = new Map(offsets.map((o) => [o.partition, o.high]));
    const out: ConsumedMessage[] = [];
    while (pos.size) {
      const r = await reader.fetch(topic, pos);
      for (const [p, f] of r) {
        out.push(...f.messages);
        // read_committed stops at the last stable offset: an open transaction ends the read there.
        const stuck = f.next === pos.get(p) && f.messages.length === 0;
        if (f.next >= end.get(p)! || stuck) pos.delete(p);
        else pos.set(p, f.next);
      }
    }
    return out.sort((a, b) => a.partition - b.partition || (a.offset < b.offset ? -1 : 1));
  } finally {
    await reader.close();
    await admin.close();
  }
}

/**
 * Reads every partition of a topic from its log start, on and on, handing each fetch's
 * records to `onMessages` until stop() (tests and tools; no group, nothing committed).
 */
export function followTopic(
  client: KafkaClient,
  topic: string,
  opts: ReaderOptions,
  onMessages: (messages: ConsumedMessage[]) => void | Promise<void>,
): { ready: Promise<void>; stop(): Promise<void> } {
  let running = true;
  const admin = client.admin();
  const reader = client.reader(opts);
  let ready!: () => void;
  const started = new Promise<void>((r) => (ready = r));
  const loop = (async () => {
    try {
      const pos = new Map((await admin.topicOffsets(topic)).map((o) => [o.partition, o.low]));
      ready();
      while (running) {
        const r = await reader.fetch(topic, pos);
        for (const [p, f] of r) {
          pos.set(p, f.next);
          if (f.messages.length) await onMessages(f.messages);
        }
      }
    } finally {
      ready();
      await reader.close();
      await admin.close();
    }
  })();
  return {
    ready: Promise.race([started, loop]),
    async stop() {
      running = false;
      await loop;
    },
  };
}

export interface GroupConsumerOptions extends ReaderOptions {
  readonly groupId: string;
  readonly topic: string;
  /** Static membership (KIP-345): a restart with the same id takes the partitions over at once. */
  readonly groupInstanceId?: string;
  readonly sessionTimeoutMs?: number;
  readonly heartbeatIntervalMs?: number;
}

export interface ConsumedBatch {
  readonly topic: string;
  readonly partition: number;
  readonly messages: readonly ConsumedMessage[];
  readonly highWatermark: bigint;
  /** The group rebalanced or the consumer is stopping since this batch was fetched. */
  readonly isStale: () => boolean;
}

export interface GroupConsumerHandlers {
  /**
   * Partitions assigned (after every join). Returns where to start reading each one; a
   * partition it leaves out starts at the group's committed offset, else at the log start.
   */
  onAssign(partitions: number[], offsets: readonly TopicOffsets[]): Promise<ReadonlyMap<number, bigint>>;
  onBatch(batch: ConsumedBatch): Promise<void>;
  onError(err: Error): void;
}

/**
 * A member of a consumer group that runs its own fetch loop: the group decides which
 * partitions this member reads, the service decides from where (seek), and offsets are
 * committed only when the service says so (advisory; INV-3).
 */
export class GroupConsumer {
  private readonly consumer: Consumer;
  private readonly opts: Required<ReaderOptions>;
  private running = false;
  private loop: Promise<void> | null = null;
  /** Bumped on every join: batches fetched under an older one are stale. */
  private generation = 0;
  private assignedGeneration = -1;
  private readonly positions = new Map<number, bigint>();
  private wake: (() => void) | null = null;

  constructor(
    private readonly client: KafkaClient,
    private readonly o: GroupConsumerOptions,
    private readonly log?: Logger,
  ) {
    this.opts = readerDefaults(o);
    this.consumer = new Consumer({
      ...client.base('consumer', 8),
      groupId: o.groupId,
      ...(o.groupInstanceId ? { groupInstanceId: o.groupInstanceId } : {}),
      sessionTimeout: o.sessionTimeoutMs ?? 10_000,
      heartbeatInterval: o.heartbeatIntervalMs ?? 3_000,
      rebalanceTimeout: o.sessionTimeoutMs ?? 10_000,
      autocommit: false,
    });
  }

  /** Joins the group and starts the fetch loop; resolves once joined. */
  async start(h: GroupConsumerHandlers): Promise<void> {
    this.running = true;
    this.consumer.on('consumer:group:join', () => {
      this.generation++;
      this.wake?.();
    });
    // A failed rejoin (after a rebalance or a lost session) is the client's 'error' event:
    // this member no longer reads anything, so the run fails and is restarted.
    this.consumer.on('error', (err: Error) => {
      this.log?.warn({ err: err.message }, 'Kafka consumer group error');
      if (this.running) h.onError(err);
    });
    this.consumer.topics.trackAll(this.o.topic);
    await this.consumer.joinGroup({});
    this.loop = this.run(h).catch((err: unknown) => {
      if (this.running) h.onError(err as Error);
    });
  }

  /** The next fetch of this partition starts at `offset`. */
  seek(partition: number, offset: bigint): void {
    if (this.positions.has(partition)) this.positions.set(partition, offset);
  }

  /** Advisory commit of the group's offset (the next offset to read). */
  async commit(partition: number, offset: bigint): Promise<void> {
    await this.consumer.commit({ offsets: [{ topic: this.o.topic, partition, offset, leaderEpoch: -1 }] });
  }

  private async run(h: GroupConsumerHandlers): Promise<void> {
    const admin = this.client.admin();
    let prefetch: { gen: number; asked: Map<number, bigint>; result: Promise<Map<number, PartitionFetch>> } | null = null;
    try {
      while (this.running) {
        if (this.assignedGeneration !== this.generation) {
          const gen = this.generation;
          const partitions = (this.consumer.assignments ?? []).filter((a) => a.topic === this.o.topic).flatMap((a) => a.partitions);
          this.positions.clear();
          const offsets = partitions.length ? await admin.topicOffsets(this.o.topic) : [];
          const wanted = await h.onAssign(partitions, offsets);
          const missing = partitions.filter((p) => !wanted.has(p));
          const committed = missing.length ? await admin.groupOffsets(this.o.groupId, this.o.topic) : new Map<number, bigint>();
          for (const p of partitions) {
            const low = offsets.find((o) => o.partition === p)?.low ?? 0n;
            const c = committed.get(p);
            this.positions.set(p, wanted.get(p) ?? (c !== undefined && c >= low ? c : low));
          }
          this.assignedGeneration = gen;
        }
        if (this.positions.size === 0) {
          await new Promise<void>((resolve) => {
            this.wake = resolve;
            setTimeout(resolve, 1_000);
          });
          this.wake = null;
          continue;
        }
        const gen = this.assignedGeneration;
        // The next fetch goes out while the service works on this one's records; it is used
        // only if nothing moved meanwhile (no seek, no rebalance).
        let asked: Map<number, bigint>;
        let fetched: Map<number, PartitionFetch>;
        if (prefetch && prefetch.gen === gen && samePositions(prefetch.asked, this.positions)) {
          asked = prefetch.asked;
          fetched = await prefetch.result;
        } else {
          asked = new Map(this.positions);
          fetched = await fetchPartitions(this.consumer, this.o.topic, asked, this.opts);
        }
        prefetch = null;
        if ([...fetched.values()].some((f) => f.messages.length > 0)) {
          const next = new Map(asked);
          for (const [p, f] of fetched) if (f.errorCode === 0) next.set(p, f.next);
          const result = fetchPartitions(this.consumer, this.o.topic, next, this.opts);
          result.catch(() => undefined);
          prefetch = { gen, asked: next, result };
        }
        for (const [p, f] of fetched) {
          if (!this.running || gen !== this.generation) break;
          // A seek during the fetch wins over what this fetch read.
          if (this.positions.get(p) !== asked.get(p)) continue;
          if (f.errorCode === OFFSET_OUT_OF_RANGE)
            throw new Error(`offset ${asked.get(p)} is out of range for ${this.o.topic}/${p} (log starts at ${f.logStart})`);
          this.positions.set(p, f.next);
          if (f.messages.length === 0) continue;
          await h.onBatch({
            topic: this.o.topic,
            partition: p,
            messages: f.messages,
            highWatermark: f.highWatermark,
            isStale: () => !this.running || gen !== this.generation,
          });
        }
      }
    } finally {
      await admin.close();
    }
  }

  /** Stops the loop after the batch in flight, then leaves the group. */
  async stop(): Promise<void> {
    this.running = false;
    this.wake?.();
    await this.loop?.catch(() => undefined);
    this.loop = null;
  }

  async close(): Promise<void> {
    await this.stop();
    await (this.consumer.leaveGroup(true) as unknown as Promise<void>).catch(() => undefined);
    await this.consumer.close(true).catch(() => undefined);
  }
}

export interface NewTopic {
  readonly topic: string;
  readonly partitions?: number;
  readonly replicationFactor?: number;
  readonly configs?: Readonly<Record<string, string>>;
}

export class KafkaAdmin {
  constructor(private readonly a: Admin) {}

  async listTopics(): Promise<string[]> {
    return this.a.listTopics();
  }

  async createTopics(topics: readonly NewTopic[]): Promise<void> {
    for (const t of topics) {
      await this.a.createTopics({
        topics: [t.topic],
        partitions: t.partitions ?? 1,
        replicas: t.replicationFactor ?? -1,
        configs: Object.entries(t.configs ?? {}).map(([name, value]) => ({ name, value })),
      });
    }
    if (topics.length) await this.waitForLeaders(topics.map((t) => t.topic));
  }

  private async waitForLeaders(topics: string[]): Promise<void> {
    for (let i = 0; i < 100; i++) {
      const m = await this.a.metadata({ topics, forceUpdate: true }).catch(() => null);
      if (m && topics.every((t) => m.topics.get(t)?.partitions.every((p) => p.leader >= 0))) return;
      await sleep(100);
    }
  }

  async deleteTopics(topics: readonly string[]): Promise<void> {
    if (topics.length) await this.a.deleteTopics({ topics: [...topics] });
  }

  /** Partitions of a topic with their replica counts (empty when the topic does not exist). */
  async topicPartitions(topic: string): Promise<{ partition: number; replicas: number }[]> {
    const m = await this.a.metadata({ topics: [topic], forceUpdate: true });
    return (m.topics.get(topic)?.partitions ?? []).map((p, i) => ({ partition: i, replicas: p.replicas.length }));
  }

  /** Log start and end offset of every partition of a topic. */
  async topicOffsets(topic: string): Promise<TopicOffsets[]> {
    const meta = await this.a.metadata({ topics: [topic], forceUpdate: true });
    const t = meta.topics.get(topic);
    if (!t) throw new Error(`topic ${topic} does not exist`);
    const partitions = t.partitions.map((_, i) => i);
    const ask = async (timestamp: bigint): Promise<Map<number, bigint>> => {
      const r = await this.a.listOffsets({ topics: [{ name: topic, partitions: partitions.map((partitionIndex) => ({ partitionIndex, timestamp })) }] });
      return new Map((r.find((x) => x.name === topic)?.partitions ?? []).map((p) => [p.partitionIndex, p.offset]));
    };
    const [low, high] = await Promise.all([ask(ListOffsetTimestamps.EARLIEST), ask(ListOffsetTimestamps.LATEST)]);
    return partitions.map((partition) => ({ partition, low: low.get(partition) ?? 0n, high: high.get(partition) ?? 0n }));
  }

  /**
   * Kafka's offsets-for-times (ListOffsets with a timestamp): per partition, the first offset
   * whose record timestamp is at or after `ms` (milliseconds since the Unix epoch); the end
   * offset when no record is that recent.
   */
  async offsetsForTime(topic: string, ms: bigint): Promise<Map<number, bigint>> {
    const offsets = await this.topicOffsets(topic);
    const r = await this.a.listOffsets({ topics: [{ name: topic, partitions: offsets.map((o) => ({ partitionIndex: o.partition, timestamp: ms })) }] });
    const found = new Map((r.find((x) => x.name === topic)?.partitions ?? []).map((p) => [p.partitionIndex, p.offset]));
    return new Map(
      offsets.map((o) => {
        const at = found.get(o.partition);
        return [o.partition, at === undefined || at < 0n ? o.high : at];
      }),
    );
  }

  /** Members of a consumer group (empty when it has none or does not exist). */
  async groupMembers(groupId: string): Promise<{ memberId: string; instanceId: string | null; clientId: string; host: string }[]> {
    const g = (await this.a.describeGroups({ groups: [groupId] })).get(groupId);
    return [...(g?.members.values() ?? [])].map((m) => ({ memberId: m.id, instanceId: m.groupInstanceId ?? null, clientId: m.clientId, host: m.clientHost }));
  }

  /** The group's committed offsets for a topic (partitions without one left out). */
  async groupOffsets(groupId: string, topic: string): Promise<Map<number, bigint>> {
    const r = await this.a.listConsumerGroupOffsets({ groups: [groupId] });
    const out = new Map<number, bigint>();
    for (const t of r.find((g) => g.groupId === groupId)?.topics ?? []) {
      if (t.name !== topic) continue;
      for (const p of t.partitions) if (p.committedOffset >= 0n) out.set(p.partitionIndex, p.committedOffset);
    }
    return out;
  }

  async setGroupOffsets(groupId: string, topic: string, offsets: ReadonlyMap<number, bigint>): Promise<void> {
    await this.a.alterConsumerGroupOffsets({
      groupId,
      topics: [{ name: topic, partitionOffsets: [...offsets].map(([partition, offset]) => ({ partition, offset })) }],
    });
  }

  /** The group's state (Empty, Stable, PreparingRebalance, …, Dead when unknown) and member count. */
  async groupState(groupId: string): Promise<{ state: string; members: number }> {
    const g = (await this.a.describeGroups({ groups: [groupId] })).get(groupId);
    return { state: g?.state ?? 'Dead', members: g?.members.size ?? 0 };
  }

  async deleteGroups(groups: readonly string[]): Promise<void> {
    if (groups.length) await this.a.deleteGroups({ groups: [...groups] });
  }

  /** Deletes records before `offset` (the log start moves there). */
  async deleteRecords(topic: string, partition: number, offset: bigint): Promise<void> {
    await this.a.deleteRecords({ topics: [{ name: topic, partitions: [{ partition, offset }] }] });
  }

  /** Broker ids of the cluster. */
  async brokers(): Promise<number[]> {
    const m = await this.a.metadata({ topics: [], forceUpdate: true });
    return [...m.brokers.keys()];
  }

  /** Config values of a broker or topics (names not set explicitly come back with their defaults). */
  async describeConfigs(kind: 'broker' | 'topic', names: readonly string[], keys: readonly string[]): Promise<Map<string, Map<string, string | null>>> {
    const resourceType = kind === 'broker' ? 4 : 2;
    const r = await this.a.describeConfigs({
      resources: names.map((resourceName) => ({ resourceType, resourceName, configurationKeys: [...keys] })),
      includeSynonyms: false,
    });
    return new Map(r.map((x) => [x.resourceName, new Map(x.configs.map((c) => [c.name, c.value ?? null]))]));
  }

  /** Sets one config of a topic (incremental: its other configs stay). */
  async setTopicConfig(topic: string, name: string, value: string): Promise<void> {
    await this.a.incrementalAlterConfigs({ resources: [{ resourceType: 2, resourceName: topic, configs: [{ name, configOperation: 0, value }] }] });
  }

  async close(): Promise<void> {
    await this.a.close().catch(() => undefined);
  }
}

/** The max.message.bytes a direction topic needs: capture's largest record (topics.maxMessageBytes) and the batch around it. */
export function topicMaxMessageBytes(cfg: PipelineConfig): number {
  return cfg.topics.maxMessageBytes + MESSAGE_OVERHEAD_BYTES;
}

/** Creates the direction topics when missing (idempotent). Returns the topics created. */
export async function ensureTopics(admin: KafkaAdmin, cfg: PipelineConfig, extra: readonly string[] = []): Promise<string[]> {
  const existing = new Set(await admin.listTopics());
  const wanted = [...cfg.directions.map((d) => d.topic), ...extra].filter((t) => !existing.has(t));
  // The topic is the replayable log: keep everything unless the operator says otherwise.
  const maxBytes = String(topicMaxMessageBytes(cfg));
  // The dead-letter topic takes apply's rejected records whole: the same limit.
  await admin.createTopics(
    wanted.map((topic) => ({
      topic,
      partitions: cfg.topics.partitions,
      replicationFactor: cfg.topics.replicationFactor,
      configs: { 'retention.ms': '-1', 'max.message.bytes': maxBytes },
    })),
  );
  // Topics made before the limit existed (or with a lower one) are raised to it.
  const old = [...cfg.directions.map((d) => d.topic), ...extra].filter((t) => existing.has(t));
  if (old.length) {
    const now = await admin.describeConfigs('topic', old, ['max.message.bytes']);
    for (const t of old) {
      if (Number(now.get(t)?.get('max.message.bytes') ?? 0) < Number(maxBytes)) await admin.setTopicConfig(t, 'max.message.bytes', maxBytes);
    }
  }
  return wanted;
}

/**
 * Records a read_committed consumer still has to read in a partition of a direction topic,
 * from the stored next offset to the partition's end offset. Capture writes only in Kafka
 * transactions, so the last offset before the end is a commit marker that no consumer
 * receives: a caught-up apply stores end - 1, and that counts as 0.
 */
export function recordsBehind(end: bigint, next: bigint): number {
  return Math.max(0, Number(end - next) - 1);
}
