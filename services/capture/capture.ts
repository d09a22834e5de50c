/**
 * capture-<cluster>: stream (slot) → decode (pgoutput → events) → encode (Avro) → publish
 * (Kafka transaction) → checkpoint (slot ack). Wired here; each stage lives in its own file.
 */
import type pg from 'pg';
import { Counter, Gauge, type Registry } from 'prom-client';
import { clusterByName, originCluster, serviceConnection, slotName, type ClusterConfig, type Direction, type PipelineConfig } from '../../shared/config.js';
import { PgBridgeError, errorMessage } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import { ServiceRun } from '../../shared/service-run.js';
import { formatLsn, parseLsn, ZERO_LSN, type Lsn } from '../../shared/lsn.js';
import type { KafkaClient } from '../../shared/kafka.js';
import { clientConfig, connect } from '../../shared/pg.js';
import { SchemaStore } from '../../shared/registry.js';
import { EventEncoder } from './avro-encoder.js';
import { ChangeBuilder, type CaptureEvent, type IgnoredReason, type TransactionEnd } from './change-builder.js';
import { isControlTable } from '../../shared/control-records.js';
import { isSelected } from '../../shared/selection.js';
import { ClusterNaming } from '../../shared/naming.js';
import { KafkaPublisher } from './kafka-publisher.js';
import type { PgoutputMessage } from './pgoutput-decoder.js';
import { ReplicationStream } from './replication-stream.js';

export const HEARTBEAT_SCHEMA = 'cdc';
export const HEARTBEAT_TABLE = 'heartbeat';

export interface CaptureMetrics {
  events: Counter;
  bytes: Counter;
  transactions: Counter;
  skippedTransactions: Counter;
  ackedLsn: Gauge;
  slotLagBytes: Gauge;
  slotRetainedBytes: Gauge;
  slotWalKeepLimitBytes: Gauge;
  ignoredControl: Counter;
}

export function captureMetrics(registry: Registry): CaptureMetrics {
  return {
    events: new Counter({ name: 'pgbridge_capture_events_total', help: 'Change and control events published', labelNames: ['kind'], registers: [registry] }),
    bytes: new Counter({ name: 'pgbridge_capture_bytes_total', help: 'Bytes of Kafka message keys and values published', registers: [registry] }),
    transactions: new Counter({ name: 'pgbridge_capture_transactions_total', help: 'Source transactions published', registers: [registry] }),
    skippedTransactions: new Counter({
      name: 'pgbridge_capture_skipped_transactions_total',
      help: 'Source transactions not published (written by apply from another cluster, or empty)',
      labelNames: ['reason'],
      registers: [registry],
    }),
    ackedLsn: new Gauge({ name: 'pgbridge_capture_acked_lsn', help: 'Last LSN acknowledged to the slot (as a number)', registers: [registry] }),
    slotLagBytes: new Gauge({
      name: 'pgbridge_capture_slot_lag_bytes',
      help: 'WAL bytes between the current WAL position and the slot confirmed_flush_lsn',
      registers: [registry],
    }),
    slotRetainedBytes: new Gauge({
      name: 'pgbridge_capture_slot_retained_bytes',
      help: 'WAL bytes the slot keeps on the server (current WAL position minus the slot restart_lsn)',
      registers: [registry],
    }),
    slotWalKeepLimitBytes: new Gauge({
      name: 'pgbridge_capture_slot_wal_keep_limit_bytes',
      help: 'max_slot_wal_keep_size of the source cluster in bytes (-1: no limit); past it the server invalidates the slot',
      registers: [registry],
    }),
    ignoredControl: new Counter({
      name: 'pgbridge_capture_ignored_control_total',
      help: 'Control inputs not obeyed: logical messages (forgeable), malformed or unselected control records',
      labelNames: ['reason'],
      registers: [registry],
    }),
  };
}

/** The direction whose topic this cluster publishes to. */
export function outgoing(cfg: PipelineConfig, cluster: string): Direction {
  const d = cfg.directions.find((x) => x.from === cluster);
  if (!d) throw new PgBridgeError('CONFIG_INVALID', `cluster "${cluster}" is not in this pipeline`);
  return d;
}

interface SlotInfo {
  confirmedFlush: Lsn;
  walStatus: string | null;
  plugin: string;
  database: string;
}

/** INV-6 (docs/invariants.md): the slot must exist, be pgoutput on our database, and not have lost WAL. */
export async function checkSlot(client: pg.Client, slot: string, cluster: ClusterConfig): Promise<SlotInfo> {
  const r = await client.query<{ plugin: string; database: string; confirmed_flush_lsn: string | null; wal_status: string | null }>(
    'SELECT plugin, database, confirmed_flush_lsn::text, wal_status FROM pg_replication_slots WHERE slot_name = $1',
    [slot],
  );
  const row = r.rows[0];
  if (!row) {
    throw new PgBridgeError(
      'SLOT_MISSING',
      `replication slot ${slot} does not exist on cluster ${cluster.name} (${cluster.host}:${cluster.port}). ` +
        'It is never recreated on its own: changes made since it was lost would be missed. Run `pgbridge setup` for a new pipeline, or resync.',
      { details: { slot } },
    );
  }
  if (row.wal_status === 'lost') {
    throw new PgBridgeError(
      'SLOT_INVALIDATED',
      `replication slot ${slot} on cluster ${cluster.name} has lost required WAL (wal_status=lost; max_slot_wal_keep_size passed). Changes are gone from WAL: resync is needed.`,
      { details: { slot } },
    );
  }
  if (row.plugin !== 'pgoutput') throw new PgBridgeError('SLOT_MISSING', `slot ${slot} uses plugin ${row.plugin}, not pgoutput`);
  if (row.database !== cluster.database) throw new PgBridgeError('SLOT_MISSING', `slot ${slot} belongs to database ${row.database}, not ${cluster.database}`);
  return {
    confirmedFlush: row.confirmed_flush_lsn ? parseLsn(row.confirmed_flush_lsn) : ZERO_LSN,
    walStatus: row.wal_status,
    plugin: row.plugin,
    database: row.database,
  };
}

/**
 * INV-6: the cluster must still be the system (and timeline) the slot was first read on. A
 * restore from a file backup or a point-in-time recovery brings the slot back with a WAL
 * history that no longer matches what was published: stop rather than continue from there.
 * The first start records the identity in cdc.capture_state.
 */
export async function checkSystem(client: pg.Client, pipeline: string, cluster: ClusterConfig): Promise<void> {
  const now = await client.query<{ sys: string; tli: string }>(
    'SELECT (SELECT system_identifier::text FROM pg_control_system()) AS sys, (SELECT timeline_id::text FROM pg_control_checkpoint()) AS tli',
  );
  const { sys, tli } = now.rows[0]!;
  const r = await client.query<{ system_identifier: string; timeline: string }>(
    `INSERT INTO cdc.capture_state (pipeline, cluster, system_identifier, timeline) VALUES ($1, $2, $3, $4)
     ON CONFLICT (pipeline, cluster) DO UPDATE SET checked_at = clock_timestamp()
     RETURNING system_identifier::text, timeline::text`,
    [pipeline, cluster.name, sys, tli],
  );
  const stored = r.rows[0]!;
  if (stored.system_identifier !== sys || stored.timeline !== tli) {
    throw new PgBridgeError(
      'SYSTEM_CHANGED',
      `cluster ${cluster.name} (${cluster.host}:${cluster.port}) is system ${sys} on timeline ${tli}, but this pipeline first captured system ${stored.system_identifier} on timeline ${stored.timeline}: ` +
        'it was restored or failed over, and its WAL no longer matches what was published. Resync from a known-good side, then delete its row in cdc.capture_state.',
      { details: { system: sys, timeline: tli } },
    );
  }
}

/**
 * INV-6, the slot ahead of our durable position: the slot has released WAL up to what was
 * committed to the topic, so the topic must still hold it. A topic that was deleted and
 * made again, or that ends before the last record this capture recorded as published,
 * lost events that the slot can no longer give: stop rather than stream on from there.
 */
export async function checkPublished(client: pg.Client, kafka: KafkaClient, pipeline: string, cluster: ClusterConfig, topic: string): Promise<void> {
  const r = await client.query<{ published_offset: string | null; published_lsn: string | null; published_at: string | null }>(
    'SELECT published_offset::text, published_lsn::text, published_at::text FROM cdc.capture_state WHERE pipeline = $1 AND cluster = $2',
    [pipeline, cluster.name],
  );
  const row = r.rows[0];
  if (!row?.published_offset) return;
  const admin = kafka.admin();
  let end: bigint | null;
  try {
    const topics = await admin.listTopics();
    end = topics.includes(topic) ? ((await admin.topicOffsets(topic)).find((o) => o.partition === 0)?.high ?? 0n) : null;
  } finally {
    await admin.close();
  }
  const published = BigInt(row.published_offset);
  if (end === null || end <= published) {
    const where = end === null ? `topic ${topic} does not exist` : `topic ${topic} ends at offset ${end}`;
    throw new PgBridgeError(
      'SLOT_AHEAD',
      `${where}, but capture of cluster ${cluster.name} had committed records to it up to offset ${published} (recorded ${row.published_at}, slot then at ${row.published_lsn}): ` +
        'the topic was deleted or recreated, and the slot has already released the WAL of those events. Resync the direction, then clear published_offset in cdc.capture_state.',
      { details: { topic, end: end === null ? null : String(end), published: String(published) } },
    );
  }
}

/** A row change larger than topics.maxMessageBytes: capture stops, naming table, key columns and position (key values are sensitive: debug log only). */
export function tooLarge(ev: CaptureEvent, size: number, limit: number, cluster: string): PgBridgeError {
  const mib = (n: number): string => `${(n / 1048576).toFixed(1)} MiB`;
  const where = `at LSN ${formatLsn(ev.lsn)} (xid ${ev.txn.xid}, commit LSN ${formatLsn(ev.txn.commitLsn)}) on cluster ${cluster}`;
  if (ev.kind !== 'change')
    return new PgBridgeError(
      'ROW_TOO_LARGE',
      `control record ${ev.control} ${where} is ${size} bytes (${mib(size)}) encoded, over topics.maxMessageBytes ${limit} (${mib(limit)})`,
    );
  const table = `${ev.table.schema}.${ev.table.table}`;
  const keyCols = ev.table.columns.filter((c) => c.key).map((c) => c.name);
  const key = keyCols.length ? `key (${keyCols.join(', ')}), values logged at debug level` : 'no key columns';
  return new PgBridgeError(
    'ROW_TOO_LARGE',
    `row too large: ${ev.op === 'd' ? 'delete' : ev.op === 'u' ? 'update' : 'insert'} of ${table} ${key}, ${where}, is ${size} bytes (${mib(size)}) encoded, over topics.maxMessageBytes ${limit} (${mib(limit)}). ` +
      "Nothing of its transaction was published and the slot still holds it: raise topics.maxMessageBytes (run pgbridge setup to raise the topics' max.message.bytes) and start capture again, or change the row at the source and resync the table.",
    { details: { table, keyColumns: keyCols, bytes: size, limit, lsn: formatLsn(ev.lsn), xid: ev.txn.xid }, sensitive: { key: ev.key } },
  );
}

export interface CaptureDeps {
  readonly cfg: PipelineConfig;
  readonly cluster: string;
  readonly kafka: KafkaClient;
  readonly log: Logger;
  readonly metrics: CaptureMetrics;
}

/**
 * One run of the capture: from the slot's confirmed position until stop() or a failure.
 * run() resolves after a clean stop and rejects with the failure otherwise; a new instance
 * is made for every restart (nothing carries over but what the slot and Kafka hold).
 */
export class CaptureRun extends ServiceRun {
  private readonly cluster: ClusterConfig;
  private readonly slot: string;
  private readonly direction: Direction;
  private readonly store: SchemaStore;
  private readonly encoder: EventEncoder;
  private readonly publisher: KafkaPublisher;
  private readonly stream: ReplicationStream;
  private readonly builder: ChangeBuilder;
  private control: pg.Client | null = null;
  private readonly typeNames = new Map<string, string>();
  protected readonly log: Logger;

  /** Offset last written to cdc.capture_state.published_offset. */
  private recordedOffset: bigint | null = null;
  /** Highest LSN told to the slot. */
  private acked: Lsn = ZERO_LSN;
  /** End LSN of the last source transaction in the open group (published when the group commits). */
  private groupEnd: Lsn | null = null;
  private groupTxns = 0;
  private groupRows = 0;
  private groupEvents: { change: number; control: number; bytes: number } = { change: 0, control: 0, bytes: 0 };
  private lingerTimer: NodeJS.Timeout | null = null;
  /** The linger passed while a transaction was arriving: close the group at its commit. */
  private lingerExpired = false;
  private statusTimer: NodeJS.Timeout | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private lagTimer: NodeJS.Timeout | null = null;
  /** Serializes message handling, group commits and acks. */
  private streaming = false;

  constructor(private readonly deps: CaptureDeps) {
    super();
    const { cfg, cluster } = deps;
    this.cluster = serviceConnection(clusterByName(cfg, cluster), 'capture');
    this.slot = slotName(cfg, cluster);
    this.direction = outgoing(cfg, cluster);
    this.log = deps.log.child({ cluster, slot: this.slot, topic: this.direction.topic });
    this.store = new SchemaStore(
      cfg.registry,
      (what, attempt, err) => this.log.warn({ attempt, err: errorMessage(err) }, `registry: ${what} failed, retrying`),
      cfg.retry.otherMinutes * 60_000,
    );
    this.encoder = new EventEncoder(this.store, this.direction.topic, cluster, this.cluster.database);
    // One partition (the default; docs/decisions.md, "One partition per topic"): name it rather than hash every key to find it.
    this.publisher = new KafkaPublisher(
      deps.kafka,
      `pgbridge-${cfg.pipeline}-capture-${cluster}`,
      this.direction.topic,
      undefined,
      cfg.topics.partitions === 1 ? 0 : undefined,
      cfg.capture.compression,
    );
    this.stream = new ReplicationStream(clientConfig(this.cluster, `pgbridge-capture-${cluster}`), this.slot, this.slot);
    const heartbeat = `${HEARTBEAT_SCHEMA}.${HEARTBEAT_TABLE}`;
    this.builder = new ChangeBuilder({
      cluster,
      skipForeign: cfg.capture.foreignOrigins === 'skip',
      // Origins of this pipeline map to their cluster; any other origin name is kept as it is.
      originCluster: (name) => originCluster(cfg, name) ?? name,
      typeName: (oid, mod) => this.typeNames.get(`${oid}:${mod}`) ?? String(oid),
      isHeartbeatTable: (s, t) => `${s}.${t}` === heartbeat,
      pipeline: cfg.pipeline,
      isControlTable,
      obeyOriginRecords: cfg.origin.method !== 'replication-origin',
      isSelected: (s, t) => isSelected(cfg, s, t),
      naming: new ClusterNaming(cfg, cluster),
      publishDdl: cfg.ddl.forward === 'replicate' && this.direction.forward,
      onIgnored: (reason, detail) => this.ignored(reason, detail),
    });
  }

  get ready(): boolean {
    return this.streaming && !this.failure;
  }

  /** Reasons already logged: an ignored control input is logged once per reason and counted always. */
  private readonly ignoredLogged = new Set<IgnoredReason>();

  private ignored(reason: IgnoredReason, detail: string): void {
    this.deps.metrics.ignoredControl.inc({ reason });
    if (this.ignoredLogged.has(reason)) return;
    this.ignoredLogged.add(reason);
    this.log.warn({ reason, detail }, 'control input ignored (counted in pgbridge_capture_ignored_control_total; logged once per reason)');
  }

  get ackedLsn(): Lsn {
    return this.acked;
  }

  async run(): Promise<void> {
    try {
      this.control = await connect(this.cluster, `pgbridge-capture-${this.deps.cluster}-control`);
      // A server restart or a terminated backend ends this session with an 'error' event: fail
      // the run (the supervisor starts a new one) rather than let it escape as an uncaught exception.
      this.control.on('error', (err) => this.fail(err));
      const slot = await checkSlot(this.control, this.slot, this.cluster);
      await checkSystem(this.control, this.deps.cfg.pipeline, this.cluster);
      await checkPublished(this.control, this.deps.kafka, this.deps.cfg.pipeline, this.cluster, this.direction.topic);
      this.acked = slot.confirmedFlush;
      this.deps.metrics.ackedLsn.set(Number(this.acked));
      await this.publisher.connect();
      await this.stream.start(slot.confirmedFlush, {
        onMessage: (msg, lsn) => this.serial(() => this.onMessage(msg, lsn)),
        onKeepalive: (lsn, reply) => void this.serial(() => this.onKeepalive(lsn, reply)).catch((e: Error) => this.fail(e)),
        onError: (err) => this.fail(err),
      });
      this.streaming = true;
      this.log.info({ lsn: formatLsn(this.acked) }, 'capture streaming');
      const statusMs = this.deps.cfg.capture.statusIntervalSeconds * 1000;
      this.statusTimer = setInterval(
        () =>
          void this.serial(async () => {
            await this.stream.ack(this.acked);
            await this.recordPublished();
          }).catch((e: Error) => this.fail(e)),
        statusMs,
      );
      if (this.deps.cfg.capture.heartbeatSeconds > 0) {
        this.heartbeatTimer = setInterval(() => void this.heartbeat(), this.deps.cfg.capture.heartbeatSeconds * 1000);
        void this.heartbeat();
      }
      this.lagTimer = setInterval(() => void this.measureLag(), 5000);
    } catch (err) {
      this.fail(err as Error);
    }
    return this.done;
  }

  /** Graceful stop: finish the open group (publish and ack what Kafka holds), then close. */
  protected async drain(): Promise<void> {
    this.clearTimers();
    // Stop taking messages but keep the connection: the ack of the group published below must
    // reach the slot, or the next start publishes that group again (a needless replay).
    this.stream.pause();
    try {
      await this.serial(async () => {
        if (this.failure) return;
        if (this.builder.inTransaction) {
          // Part of a transaction may already sit in the open Kafka transaction: abort all of
          // it. Nothing of the group was acked, so the slot sends it again on the next start.
          await this.publisher.abort();
        } else if (this.groupEnd !== null) {
          await this.commitGroupAndAck(true);
        }
        await this.recordPublished();
      });
    } catch (err) {
      this.log.error({ err: errorMessage(err) }, 'could not publish the last group on stop; it will be re-read from the slot');
    }
    await this.stream.stop();
    await this.close();
  }

  protected async teardownAfterFailure(): Promise<void> {
    this.streaming = false;
    this.clearTimers();
    await this.stream.stop();
    await this.publisher.abort();
    await this.close();
  }

  private clearTimers(): void {
    for (const t of [this.lingerTimer, this.statusTimer, this.heartbeatTimer, this.lagTimer]) if (t) clearInterval(t);
    this.lingerTimer = this.statusTimer = this.heartbeatTimer = this.lagTimer = null;
  }

  private async close(): Promise<void> {
    await this.publisher.disconnect();
    await this.control?.end().catch(() => undefined);
    this.control = null;
  }

  private async onMessage(msg: PgoutputMessage, lsn: Lsn): Promise<void> {
    if (msg.tag === 'relation') await this.resolveTypes(msg.relation.columns);
    const { events, end } = this.builder.push(msg, lsn);
    for (const ev of events) await this.publish(ev);
    if (end) await this.endTransaction(end);
  }

  private async publish(ev: CaptureEvent): Promise<void> {
    const m = await this.encoder.encode(ev);
    const size = m.value.length + (m.key?.length ?? 0);
    // Before the record is sent: the Kafka transaction holding the rest of its source
    // transaction is aborted on the way out, so none of it becomes visible.
    if (size > this.deps.cfg.topics.maxMessageBytes) throw tooLarge(ev, size, this.deps.cfg.topics.maxMessageBytes, this.deps.cluster);
    await this.publisher.add(m);
    if (ev.kind === 'change') this.groupEvents.change++;
    else this.groupEvents.control++;
    this.groupEvents.bytes += m.value.length + (m.key?.length ?? 0);
    this.groupRows++;
  }

  private async endTransaction(end: TransactionEnd): Promise<void> {
    if (end.skipped || end.events === 0) {
      this.deps.metrics.skippedTransactions.inc({ reason: end.skipped ? 'foreign-origin' : 'empty' });
    } else {
      this.deps.metrics.transactions.inc();
    }
    this.groupEnd = end.endLsn;
    this.groupTxns++;
    const b = this.deps.cfg.capture.batch;
    // The linger runs from the first transaction of the group: under steady load a group
    // closes after lingerMs at the latest, so latency stays bounded by it.
    if (this.groupTxns >= b.maxTransactions || this.groupRows >= b.maxRows || b.lingerMs === 0 || this.lingerExpired) {
      await this.commitGroupAndAck(true);
    } else if (!this.lingerTimer) {
      this.lingerTimer = setTimeout(() => {
        this.lingerTimer = null;
        void this.serial(async () => {
          // The next transaction may have started (and sent events) since the timer fired:
          // a Kafka transaction holds whole source transactions only, so that one's COMMIT closes the group.
          if (!this.builder.inTransaction) await this.commitGroupAndAck(true);
          else this.lingerExpired = true;
        }).catch((e: Error) => this.fail(e));
      }, b.lingerMs);
    }
  }

  /** INV-1: the slot hears of a commit LSN only after Kafka acked every event up to it. */
  private async commitGroupAndAck(ack: boolean): Promise<void> {
    if (this.groupEnd === null) return;
    if (this.lingerTimer) {
      clearTimeout(this.lingerTimer);
      this.lingerTimer = null;
    }
    this.lingerExpired = false;
    const end = this.groupEnd;
    await this.publisher.commit();
    this.progressed = true;
    const m = this.deps.metrics;
    m.events.inc({ kind: 'change' }, this.groupEvents.change);
    m.events.inc({ kind: 'control' }, this.groupEvents.control);
    m.bytes.inc(this.groupEvents.bytes);
    this.groupEnd = null;
    this.groupTxns = 0;
    this.groupRows = 0;
    this.groupEvents = { change: 0, control: 0, bytes: 0 };
    if (end > this.acked) {
      this.acked = end;
      m.ackedLsn.set(Number(end));
      if (ack) await this.stream.ack(end);
    }
  }

  /** Notes in cdc.capture_state the last record committed to the topic (for checkPublished), when it moved. */
  private async recordPublished(): Promise<void> {
    const offset = this.publisher.committedOffset;
    if (offset === null || offset === this.recordedOffset || !this.control) return;
    await this.control.query(
      'UPDATE cdc.capture_state SET published_offset = $3, published_lsn = $4, published_at = clock_timestamp() WHERE pipeline = $1 AND cluster = $2',
      [this.deps.cfg.pipeline, this.deps.cluster, offset.toString(), formatLsn(this.acked)],
    );
    this.recordedOffset = offset;
  }

  /**
   * A keepalive tells how far the server has sent WAL. When nothing is received-but-unpublished
   * (no open transaction, no open group, nothing queued), every change up to there is in Kafka,
   * so the slot may advance there too (INV-1: idle and filtered WAL must not be pinned).
   */
  private async onKeepalive(serverLsn: Lsn, reply: boolean): Promise<void> {
    const idle = !this.builder.inTransaction && this.groupEnd === null && this.stream.drained;
    if (idle && serverLsn > this.acked) {
      this.acked = serverLsn;
      this.deps.metrics.ackedLsn.set(Number(serverLsn));
      await this.stream.ack(serverLsn);
    } else if (reply) {
      await this.stream.ack(this.acked);
    }
  }

  private async resolveTypes(columns: readonly { typeOid: number; typeMod: number }[]): Promise<void> {
    const missing = columns.filter((c) => !this.typeNames.has(`${c.typeOid}:${c.typeMod}`));
    if (missing.length === 0 || !this.control) return;
    const r = await this.control.query<{ oid: string; mod: string; name: string }>(
      'SELECT t.oid::text AS oid, t.mod::text AS mod, format_type(t.oid::oid, t.mod::int) AS name FROM unnest($1::int8[], $2::int4[]) AS t(oid, mod)',
      [missing.map((c) => c.typeOid), missing.map((c) => c.typeMod)],
    );
    for (const row of r.rows) this.typeNames.set(`${row.oid}:${row.mod}`, row.name);
  }

  private async heartbeat(): Promise<void> {
    if (!this.control || this.failure || this.stopping) return;
    try {
      // Keeps an idle slot moving and lets apply measure end-to-end latency.
      await this.control.query(
        `INSERT INTO ${HEARTBEAT_SCHEMA}.${HEARTBEAT_TABLE} (pipeline, cluster, ts, seq) VALUES ($1, $2, now(), 1)
         ON CONFLICT (pipeline, cluster) DO UPDATE SET ts = now(), seq = ${HEARTBEAT_SCHEMA}.${HEARTBEAT_TABLE}.seq + 1`,
        [this.deps.cfg.pipeline, this.deps.cluster],
      );
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'heartbeat write failed');
    }
  }

  private async measureLag(): Promise<void> {
    if (!this.control || this.failure || this.stopping) return;
    try {
      const r = await this.control.query<{ lag: string | null; retained: string | null; keep: string }>(
        `SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::text AS lag, (pg_current_wal_lsn() - restart_lsn)::text AS retained,
                pg_size_bytes(current_setting('max_slot_wal_keep_size'))::text AS keep
           FROM pg_replication_slots WHERE slot_name = $1`,
        [this.slot],
      );
      const row = r.rows[0];
      const m = this.deps.metrics;
      if (row?.lag !== undefined && row.lag !== null) m.slotLagBytes.set(Number(row.lag));
      if (row?.retained !== undefined && row.retained !== null) m.slotRetainedBytes.set(Number(row.retained));
      if (row) m.slotWalKeepLimitBytes.set(Number(row.keep));
      if (r.rows.length === 0) this.fail(new PgBridgeError('SLOT_MISSING', `replication slot ${this.slot} was dropped while capture ran`));
    } catch (err) {
      this.log.debug({ err: errorMessage(err) }, 'slot lag query failed');
    }
  }
}
