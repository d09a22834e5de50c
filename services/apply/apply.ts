/**
 * apply <from>→<to>: consume (read_committed) → filter (origin) → resolve/write (one
 * destination transaction per group of whole source transactions) → checkpoint (progress
 * row in the same transaction, Kafka offset commit after COMMIT).
 */
import type pg from 'pg';
import { Counter, Gauge, type Registry } from 'prom-client';
import { clusterByName, originCluster, serviceConnection, originName, type Direction, type PipelineConfig } from '../../shared/config.js';
import { PgBridgeError, classifyPgError, errorMessage } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import {
  recordsBehind,
  type ConsumedBatch,
  type ConsumedMessage,
  type GroupConsumer,
  type KafkaClient,
  type PlainProducer,
  type TopicOffsets,
} from '../../shared/kafka.js';
import { ServiceRun } from '../../shared/service-run.js';
import { formatLsn, parseLsn, type Lsn } from '../../shared/lsn.js';
import { connect } from '../../shared/pg.js';
import { SchemaStore } from '../../shared/registry.js';
import { writeControl } from '../../shared/control-records.js';
import { ChunkLoader, snapshotRowOf, type SnapshotChunkEvent } from './chunk-loader.js';
import { ChunkPool } from './chunk-pool.js';
import { decodeRecord, type ApplyEvent, type ChangeEvent, type ControlEvent, type Position, type Row } from './event-decoder.js';
import { EventGuard, type Refusal } from './event-guard.js';
import { THROTTLE_REFRESH_MS, Throttle, configuredLimit, storedLimit } from './throttle.js';
import { ClusterNaming } from '../../shared/naming.js';
import { operationOfOp, operationsOf, tableSettings, type Operation } from '../../shared/table-settings.js';
import { ConflictStop, RowWriter, type BatchShape, type WriteResult } from './row-writer.js';
import { REPLAY_SELECT, filteredOut, inReplay, replayRangeOf, type ReplayColumns, type ReplayRange } from './replay-range.js';
import { parseDdlRecord, renamedTablesTouched, runsOutsideTransaction } from '../../shared/ddl.js';
import { runDdl } from './ddl-runner.js';
import { ShapeGaps } from './shape-gaps.js';

export interface ApplyMetrics {
  transactions: Counter;
  rows: Counter;
  setRows: Counter;
  conflicts: Counter;
  droppedLoopbacks: Counter;
  filteredOperations: Counter;
  skippedDuplicates: Counter;
  deadLettered: Counter;
  refused: Counter;
  ddl: Counter;
  shapeGaps: Counter;
  unverifiedLsn: Counter;
  throttleRows: Gauge;
  throttleBytes: Gauge;
  throttledSeconds: Counter;
  lagOffsets: Gauge;
  lagSeconds: Gauge;
  /** The source commit time (seconds since the epoch) of what was last applied: pgbridge_apply_lag_seconds counts from it at each scrape. */
  appliedSourceTime(seconds: number): void;
}

export function applyMetrics(registry: Registry): ApplyMetrics {
  let sourceTime: number | null = null;
  return {
    transactions: new Counter({ name: 'pgbridge_apply_transactions_total', help: 'Source transactions applied', registers: [registry] }),
    rows: new Counter({ name: 'pgbridge_apply_rows_total', help: 'Rows written to the destination', registers: [registry] }),
    setRows: new Counter({
      name: 'pgbridge_apply_set_rows_total',
      help: 'Rows written by set-based statements (one statement per batch of one table, op and column set); the rest of pgbridge_apply_rows_total went one by one',
      registers: [registry],
    }),
    conflicts: new Counter({
      name: 'pgbridge_apply_conflicts_total',
      help: 'Conflicts detected, by kind and resolution',
      labelNames: ['kind', 'resolution'],
      registers: [registry],
    }),
    droppedLoopbacks: new Counter({
      name: 'pgbridge_apply_dropped_loopback_events_total',
      help: 'Events dropped because they originated at the destination',
      registers: [registry],
    }),
    filteredOperations: new Counter({
      name: 'pgbridge_apply_filtered_operations_total',
      help: 'Changes not applied because selection.tables.<table>.operations leaves their operation out in this direction',
      labelNames: ['operation'],
      registers: [registry],
    }),
    skippedDuplicates: new Counter({
      name: 'pgbridge_apply_skipped_duplicate_events_total',
      help: 'Events at or below the stored source commit LSN (replayed), skipped',
      registers: [registry],
    }),
    deadLettered: new Counter({ name: 'pgbridge_apply_dead_lettered_total', help: 'Poison messages written to the dead-letter topic', registers: [registry] }),
    refused: new Counter({
      name: 'pgbridge_apply_refused_total',
      help: 'Records refused before writing (table outside the selection, wrong source cluster, unknown op, commit LSN beyond the source)',
      labelNames: ['reason'],
      registers: [registry],
    }),
    ddl: new Counter({
      name: 'pgbridge_apply_ddl_total',
      help: 'Replicated DDL commands run on the destination, by command tag',
      labelNames: ['tag'],
      registers: [registry],
    }),
    shapeGaps: new Counter({
      name: 'pgbridge_apply_shape_gaps_total',
      help: 'Reverse direction: column values (what=column) or changes (what=table) left out because a replicated DDL dropped that column or table on the destination while they were on their way; values or changes mapped to a name a replicated DDL renamed them to (what=renamed)',
      labelNames: ['what'],
      registers: [registry],
    }),
    unverifiedLsn: new Counter({
      name: 'pgbridge_apply_unverified_lsn_total',
      help: 'Records applied without the commit-LSN check because the source cluster was unreachable',
      registers: [registry],
    }),
    throttleRows: new Gauge({
      name: 'pgbridge_apply_throttle_rows_per_second',
      help: 'Throttle in force: rows per second apply may read (0: no limit)',
      registers: [registry],
    }),
    throttleBytes: new Gauge({
      name: 'pgbridge_apply_throttle_bytes_per_second',
      help: 'Throttle in force: message bytes per second apply may read (0: no limit)',
      registers: [registry],
    }),
    throttledSeconds: new Counter({ name: 'pgbridge_apply_throttled_seconds_total', help: 'Time apply waited to keep to its throttle', registers: [registry] }),
    lagOffsets: new Gauge({
      name: 'pgbridge_apply_lag_offsets',
      help: 'Records still to read between the applied position and the end of the partition (commit markers not counted)',
      labelNames: ['partition'],
      registers: [registry],
    }),
    // Read at scrape time, so it grows while nothing is applied (capture sends a heartbeat every few seconds).
    lagSeconds: new Gauge({
      name: 'pgbridge_apply_lag_seconds',
      help: 'Now minus the source commit time of the last applied transaction or heartbeat (0 before the first)',
      registers: [registry],
      collect() {
        if (sourceTime !== null) this.set(Math.max(0, Date.now() / 1000 - sourceTime));
      },
    }),
    appliedSourceTime: (seconds) => {
      sourceTime = seconds;
    },
  };
}

interface Stored {
  nextOffset: bigint;
  commitLsn: Lsn;
  /** A range pgbridge replay asked to re-apply (offsets below replay.until), or null. */
  replay: ReplayRange | null;
}

interface Group {
  /** A destination transaction is open (BEGIN sent). */
  open: boolean;
  partition: number;
  startOffset: bigint;
  lastOffset: bigint;
  /** Inside a source transaction (its last event not seen yet). */
  inTxn: boolean;
  txns: number;
  rows: number;
  setRows: number;
  lastCommitLsn: Lsn | null;
  lastCommitTs: bigint | null;
  heartbeatTs: bigint | null;
  conflicts: { kind: string; resolution: string }[];
  dropped: number;
  /** A DDL ran in this group: it commits at the end of the DDL's source transaction (a sequence point). */
  ddl: boolean;
}

export interface ApplyDeps {
  readonly cfg: PipelineConfig;
  readonly direction: Direction;
  readonly kafka: KafkaClient;
  readonly log: Logger;
  readonly metrics: ApplyMetrics;
}

/** The Kafka consumer group of a direction's apply (its static member id too). */
export function applyGroupId(cfg: PipelineConfig, direction: string): string {
  return `pgbridge-${cfg.pipeline}-apply-${direction}`;
}

/** Most changes written by one set-based statement (parameters are one array per column, so this bounds memory, not parameter count). */
const BATCH_ROWS = 5000;

export class ApplyRun extends ServiceRun {
  protected readonly log: Logger;
  private readonly store: SchemaStore;
  private readonly guard: EventGuard;
  private readonly throttle = new Throttle();
  private throttleReadAt = 0;
  private client: pg.Client | null = null;
  private writer: RowWriter | null = null;
  private chunks: ChunkLoader | null = null;
  /** Loaders of snapshot chunks side by side (apply.snapshotLoaders), when their origins are there. */
  private pool: ChunkPool | null = null;
  private passScheduled = false;
  private consumer: GroupConsumer | null = null;
  private dlq: PlainProducer | null = null;
  private originMode: 'replication-origin' | 'message' = 'replication-origin';
  private readonly stored = new Map<number, Stored>();
  /** Changes waiting to go out as one set-based statement (same table, op and columns; distinct keys), all in the open group. */
  private pending: ChangeEvent[] = [];
  private pendingShape = '';
  private readonly pendingKeys = new Set<string>();
  /** TRUNCATE events waiting to go out as one statement (one source TRUNCATE names several tables), before the pending rows. */
  private truncates: { m: ConsumedMessage; pos: Position; ev: ChangeEvent }[] = [];
  /** Offset of the last rejected change retried with fresh table shapes (rejected). */
  private reshapedAt = -1n;
  /** After a failed batch, events up to this offset are written one by one. */
  private unbatchedUntil = -1n;
  /** schema.table → changes committed before this LSN are already in the initial-sync snapshot of the table. */
  private readonly watermarks = new Map<string, Lsn>();
  private group: Group | null = null;
  /** Offsets sent to the dead-letter topic after a destination rejection, skipped on the replay of their group. */
  private readonly skip = new Set<string>();
  private consuming = false;
  /** Per-event trace lines are built only when trace is on (the hot path pays nothing otherwise). */
  private readonly traceEvents: boolean;
  /** The destination's names of renamed tables and columns. */
  private readonly naming: ClusterNaming;

  constructor(private readonly deps: ApplyDeps) {
    super();
    const d = deps.direction;
    this.log = deps.log.child({ direction: d.id, topic: d.topic });
    this.store = new SchemaStore(
      deps.cfg.registry,
      (what, attempt, err) => this.log.warn({ attempt, err: errorMessage(err) }, `registry: ${what} failed, retrying`),
      deps.cfg.retry.otherMinutes * 60_000,
    );
    this.traceEvents = this.log.isLevelEnabled('trace');
    this.naming = new ClusterNaming(deps.cfg, d.to);
    this.guard = new EventGuard(deps.cfg, d, this.log, () => deps.metrics.unverifiedLsn.inc());
  }

  get ready(): boolean {
    return this.consuming && !this.failure;
  }

  get groupId(): string {
    return applyGroupId(this.deps.cfg, this.deps.direction.id);
  }

  async run(): Promise<void> {
    try {
      await this.open();
      const consumer = this.deps.kafka.groupConsumer({
        groupId: this.groupId,
        topic: this.deps.direction.topic,
        // Holding the replication origin makes this the one apply of the direction, so a
        // fixed member id is safe: a restart after a crash takes the partitions over at once
        // instead of waiting for the dead member's session to expire.
        ...(this.originMode === 'replication-origin' ? { groupInstanceId: this.groupId } : {}),
        readCommitted: true,
        maxWaitMs: 50,
        // 1 MiB fetches: 4 MiB kept 60 MiB more of decoded batches alive for no gain
        // (bench/stages, 1M-row transaction: peak RSS 245 → 185 MiB at the same rate).
        // A record batch larger than this still comes whole (the broker returns at least one).
        maxBytesPerPartition: 1024 * 1024,
        // After a crash without a restart, the group waits this long before another member gets the partition.
        sessionTimeoutMs: 10_000,
        heartbeatIntervalMs: 3_000,
      });
      this.consumer = consumer;
      await consumer.start({
        onAssign: (partitions, offsets) => this.serialValue(() => this.onAssign(partitions, offsets)),
        onBatch: (batch) => this.serial(() => this.onBatch(batch)),
        onError: (err) => this.fail(err),
      });
      this.consuming = true;
      this.log.info({ originMode: this.originMode, groupId: this.groupId }, 'apply consuming');
    } catch (err) {
      this.fail(err as Error);
    }
    return this.done;
  }

  /** serial() for a step that returns a value. */
  private async serialValue<T>(fn: () => Promise<T>): Promise<T> {
    let out: T | undefined;
    await this.serial(async () => {
      out = await fn();
    });
    if (this.failure) throw this.failure;
    return out as T;
  }

  protected async drain(): Promise<void> {
    this.consuming = false;
    // stop() waits for the batch in flight; a group at a transaction boundary is
    // committed at the end of its batch, one inside a source transaction is rolled back.
    await this.consumer?.stop().catch(() => undefined);
    await this.serial(() => this.rollbackGroup()).catch(() => undefined);
    await this.close();
  }

  protected async teardownAfterFailure(): Promise<void> {
    this.consuming = false;
    await this.consumer?.stop().catch(() => undefined);
    await this.close();
  }

  private async close(): Promise<void> {
    await this.consumer?.close().catch(() => undefined);
    this.consumer = null;
    await this.dlq?.close().catch(() => undefined);
    this.dlq = null;
    await this.pool?.close();
    this.pool = null;
    await this.client?.end().catch(() => undefined);
    this.client = null;
    await this.guard.close();
  }

  /** Destination session: replica role (no user triggers or FK actions), origin, progress. */
  private async open(): Promise<void> {
    const { cfg, direction } = this.deps;
    const dest = serviceConnection(clusterByName(cfg, direction.to), 'apply');
    const client = await connect(dest, `pgbridge-apply-${direction.id}`);
    this.client = client;
    client.on('error', (err) => this.fail(err));
    await client.query('SET session_replication_role = replica');
    const origin = originName(cfg, direction.from);
    const method = cfg.origin.method;
    if (method !== 'message') {
      try {
        await client.query('SELECT pg_replication_origin_session_setup($1)', [origin]);
        this.originMode = 'replication-origin';
      } catch (err) {
        const code = (err as { code?: string }).code;
        // 55006: the origin is held by another session: a second apply instance of this
        // direction that is running (this one is its standby and takes over when it stops),
        // or a previous apply that died and PostgreSQL has not noticed yet. Either way: wait.
        if (code === '55006') {
          throw new PgBridgeError(
            'STANDBY',
            `replication origin ${origin} on ${direction.to} is held by another session (another apply of ${direction.id} running, or one that died and is not yet noticed); waiting to take over`,
            { retriable: true, cause: err, details: { origin } },
          );
        }
        if (method === 'replication-origin' || (code !== '42501' && code !== '42704')) {
          throw new PgBridgeError(
            'CONNECTION',
            `cannot use replication origin ${origin} on cluster ${direction.to}: ${errorMessage(err)}${code === '42704' ? ' (run pgbridge setup)' : ''}`,
            { retriable: code !== '42704' && code !== '42501', cause: err },
          );
        }
        this.log.warn({ err: errorMessage(err) }, 'replication origins unavailable; marking transactions with an origin control record (cdc.control) instead');
        this.originMode = 'message';
      }
    } else {
      this.originMode = 'message';
    }
    const names = new Map<number, string>();
    // Snapshot loaders' origins first: for each cluster the row writer compares with the origin
    // of apply itself, which comes last (loaded rows carry the oldest commit time instead).
    const r = await client.query<{ id: string; name: string }>(
      `SELECT roident::text AS id, roname AS name FROM pg_replication_origin ORDER BY roname LIKE '%~load%' DESC, roident`,
    );
    for (const o of r.rows) {
      const cluster = originCluster(cfg, o.name);
      if (cluster) names.set(Number(o.id), cluster);
    }
    // Reverse direction while DDL goes forward: events written before a drop arrived lose what was dropped.
    const gaps =
      !direction.forward && cfg.ddl.forward === 'replicate'
        ? new ShapeGaps(client, cfg.pipeline, (table, column, to) => this.shapeGap(table, column, to))
        : null;
    this.writer = new RowWriter(client, cfg, direction.id, direction.to, names, gaps);
    this.chunks = new ChunkLoader(client, cfg, direction, this.writer);
    this.pool = await ChunkPool.open(cfg, direction, this.log);
    await this.pool?.readLoaded(client).catch(async (err: unknown) => {
      this.log.warn({ err: errorMessage(err) }, "cdc.chunk_loads is not readable (run pgbridge setup): snapshot chunks load on apply's own connection");
      await this.pool?.close();
      this.pool = null;
    });
    // The session returns every value as text (RAW_TYPES): partition is "0", not 0.
    const p = await client
      .query<
        { partition: string; next_offset: string; commit_lsn: string } & ReplayColumns
      >(`SELECT partition, next_offset::text, commit_lsn::text, ${REPLAY_SELECT} FROM cdc.apply_progress p WHERE pipeline = $1 AND direction = $2`, [cfg.pipeline, direction.id])
      .catch((err: unknown) => {
        throw new PgBridgeError('CONNECTION', `cdc.apply_progress is not readable on ${direction.to} (run pgbridge setup): ${errorMessage(err)}`, {
          retriable: false,
          cause: err,
        });
      });
    for (const row of p.rows) {
      const replay = replayRangeOf(row);
      this.stored.set(Number(row.partition), { nextOffset: BigInt(row.next_offset), commitLsn: parseLsn(row.commit_lsn), replay });
      if (replay) {
        this.writer.replay = replay;
        this.log.info(
          {
            replay: replay.id,
            partition: Number(row.partition),
            from: row.next_offset,
            until: String(replay.until),
            tables: replay.tables ? [...replay.tables] : 'all',
          },
          'replaying: offsets below the replay end are applied again',
        );
      }
    }
    await this.readThrottle();
    const w = await client.query<{ table_name: string; lsn: string }>(
      'SELECT table_name, lsn::text FROM cdc.table_watermarks WHERE pipeline = $1 AND direction = $2',
      [cfg.pipeline, direction.id],
    );
    for (const row of w.rows) this.watermarks.set(row.table_name, parseLsn(row.lsn));
    if (cfg.apply.deadLetterTopic) {
      this.dlq = this.deps.kafka.producer();
    }
  }

  private readonly gapsLogged = new Set<string>();

  /** A value (column) or change (table) of the reverse direction mapped to a new name, or left out: counted, logged once per object. */
  private shapeGap(table: string, column: string | null, renamedTo: string | null): void {
    this.deps.metrics.shapeGaps.inc({ what: renamedTo !== null ? 'renamed' : column === null ? 'table' : 'column' });
    const name = column === null ? table : `${table}.${column}`;
    if (this.gapsLogged.has(name)) return;
    this.gapsLogged.add(name);
    if (renamedTo !== null)
      this.log.info({ object: name, renamedTo }, 'changes written under a name a replicated DDL has renamed since are applied under the new name');
    else
      this.log.warn(
        { object: name },
        column === null
          ? 'changes for a table the destination no longer has (dropped by a replicated DDL) are skipped'
          : 'values of a column the destination no longer has (dropped by a replicated DDL) are left out',
      );
  }

  /** On every assignment: roll back a group in flight and read from the stored positions (INV-3, INV-6: docs/invariants.md). */
  private async onAssign(partitions: number[], offsets: readonly TopicOffsets[]): Promise<Map<number, bigint>> {
    await this.rollbackGroup();
    const topic = this.deps.direction.topic;
    const from = new Map<number, bigint>();
    for (const p of partitions) {
      const s = this.stored.get(p);
      const low = offsets.find((o) => o.partition === p)?.low ?? 0n;
      if (s && s.nextOffset < low) {
        throw new PgBridgeError(
          'OFFSET_BELOW_LOG_START',
          `stored position ${topic}/${p}@${s.nextOffset} is below the log start ${low}: events were deleted by retention before they were applied. Resync this direction.`,
        );
      }
      if (s) from.set(p, s.nextOffset);
    }
    this.log.info({ partitions, positions: partitions.map((p) => this.stored.get(p)?.nextOffset.toString() ?? 'start') }, 'partitions assigned');
    return from;
  }

  private async onBatch(batch: ConsumedBatch): Promise<void> {
    const p = batch.partition;
    const pos0 = { topic: batch.topic, partition: p };
    this.log.debug({ partition: p, offset: String(batch.messages[0]?.offset), count: batch.messages.length }, 'batch');
    await this.refreshThrottle();
    for (const m of batch.messages) {
      if (batch.isStale()) {
        await this.rollbackGroup();
        return;
      }
      const off = m.offset;
      const s = this.stored.get(p);
      // Already applied (the stored position wins over Kafka's committed offset): INV-3.
      if ((s && off < s.nextOffset) || (this.group && off <= this.group.lastOffset) || this.pool?.holds(p, off)) continue;
      if (this.throttle.active) {
        const replay = await this.throttleWait(m);
        if (replay !== null) {
          this.consumer!.seek(p, replay);
          return;
        }
        if (batch.isStale()) {
          await this.rollbackGroup();
          return;
        }
      }
      const replay = await this.handle(m, { ...pos0, offset: off });
      if (replay !== null) {
        // A destination rejection sent to the dead-letter topic: the group was rolled back;
        // read it again from its start without the rejected message.
        this.consumer!.seek(p, replay);
        return;
      }
    }
    this.deps.metrics.lagOffsets.set({ partition: String(p) }, recordsBehind(batch.highWatermark, this.stored.get(p)?.nextOffset ?? 0n));
    if (this.group && !this.group.inTxn) {
      const replay = await this.flushAndCommit();
      if (replay !== null) this.consumer!.seek(p, replay);
    }
    if (this.pool?.inFlight) this.passWhenLoaded(p);
  }

  /**
   * Once the loads in flight have finished, and no batch came meanwhile to pass them, apply's
   * position moves over them and commits (otherwise the last chunks of a sync would wait for
   * the next record).
   */
  private passWhenLoaded(partition: number): void {
    if (this.passScheduled) return;
    this.passScheduled = true;
    void this.pool!.whenSettled()
      .then(() =>
        this.serial(async () => {
          this.passScheduled = false;
          if (!this.pool?.inFlight || this.stopping) return;
          let replay = await this.passLoads(false);
          if (replay === null && this.group && !this.group.inTxn) replay = await this.flushAndCommit();
          if (replay !== null) this.consumer!.seek(partition, replay);
          if (this.pool.inFlight) this.passWhenLoaded(partition);
        }),
      )
      .catch(() => undefined);
  }

  /** Reads the throttle again when THROTTLE_REFRESH_MS have passed since the last read. */
  private async refreshThrottle(): Promise<void> {
    if (performance.now() - this.throttleReadAt > THROTTLE_REFRESH_MS) await this.readThrottle();
  }

  /** The throttle in force: the one `pgbridge throttle` stored on the destination, else the pipeline file's. */
  private async readThrottle(): Promise<void> {
    const { cfg, direction } = this.deps;
    this.throttleReadAt = performance.now();
    const stored = await storedLimit(this.client!, cfg.pipeline, direction.id).catch((err: unknown) => {
      this.log.warn({ err: errorMessage(err) }, "cdc.apply_throttle is not readable (run pgbridge setup); using the pipeline file's throttle");
      return null;
    });
    const limit = stored ?? configuredLimit(cfg, direction.id);
    const before = this.throttle.current;
    this.throttle.set(limit);
    if (limit.rowsPerSecond !== before.rowsPerSecond || limit.bytesPerSecond !== before.bytesPerSecond) {
      this.log.info({ rowsPerSecond: limit.rowsPerSecond, bytesPerSecond: limit.bytesPerSecond, from: limit.source }, 'throttle in force');
    }
    this.deps.metrics.throttleRows.set(limit.rowsPerSecond);
    this.deps.metrics.throttleBytes.set(limit.bytesPerSecond);
  }

  /**
   * Keeps to the throttle before reading a message. The wait is taken in steps of at least
   * 100 ms (the debt carries over, so the average holds). A stored limit is read again every
   * THROTTLE_REFRESH_MS here too, so a change reaches an apply that is working through a
   * long backlog. Returns a replay offset when the group was rolled back.
   */
  private async throttleWait(m: ConsumedMessage): Promise<bigint | null> {
    await this.refreshThrottle();
    let wait = this.throttle.take(1, m.value?.length ?? 0);
    // Waits go to transaction boundaries, where the group can commit first (rows show at the
    // throttled pace, and no destination transaction stays open while waiting); inside a long
    // source transaction, once a second's worth of debt has built up.
    const atBoundary = !this.group?.inTxn;
    if (wait < (atBoundary ? 100 : 1000)) return null;
    if (atBoundary) {
      const replay = await this.flushAndCommit();
      if (replay !== null) return replay;
    }
    this.deps.metrics.throttledSeconds.inc(wait / 1000);
    // In steps of at most 1 s, so that a stop or a lowered limit is not kept waiting.
    while (wait > 0 && !this.stopping) {
      const step = Math.min(wait, 1000);
      await new Promise((r) => setTimeout(r, step));
      wait -= step;
    }
    return null;
  }

  /** Returns an offset to replay from when the group had to be rolled back, else null. */
  private async handle(m: ConsumedMessage, pos: Position): Promise<bigint | null> {
    const key = this.skip.size ? `${pos.partition}:${pos.offset}` : '';
    if (key && this.skip.has(key)) {
      this.skip.delete(key);
      this.advance(pos, m.headers?.['pgbridge.txn_last']?.toString() !== '0', null, null);
      return null;
    }
    let ev: ApplyEvent | SnapshotChunkEvent;
    try {
      ev = await decodeRecord(this.store, m.value, pos);
    } catch (err) {
      if (err instanceof PgBridgeError && (err.code === 'POISON' || err.code === 'SCHEMA_UNKNOWN')) {
        await this.poison(m, pos, err);
        // Boundaries of a record we cannot read come from its header; without one it counts as a whole transaction.
        this.advance(pos, m.headers?.['pgbridge.txn_last']?.toString() !== '0', null, null);
        return null;
      }
      throw err;
    }
    if (this.pool) {
      const replay = await this.viaPool(m, pos, ev);
      if (replay !== undefined) return replay;
    }
    if (ev.kind === 'chunk') return this.handleChunk(m, pos, ev);
    const s = this.stored.get(pos.partition);
    if (this.traceEvents)
      this.log.trace(
        {
          offset: String(pos.offset),
          kind: ev.kind,
          op: ev.kind === 'change' ? ev.op : ev.control,
          table: ev.kind === 'change' ? `${ev.schema}.${ev.table}` : undefined,
          lsn: formatLsn(ev.commitLsn),
          origin: ev.origin,
          last: ev.last,
        },
        'event',
      );
    // Initial-sync rows (op r) all carry the slot's consistent point: they are deduplicated by offset only.
    const snapshotRow = (ev.kind === 'change' && ev.snapshot) || (ev.kind === 'control' && ev.control === 'watermark');
    // Applied already: committed (stored) or earlier in the open group (a capture replay can
    // put two copies of a transaction into one group).
    const applied = this.group?.lastCommitLsn != null && (!s || this.group.lastCommitLsn > s.commitLsn) ? this.group.lastCommitLsn : s?.commitLsn;
    if (applied !== undefined && !snapshotRow && ev.commitLsn <= applied && !(this.group?.inTxn ?? false)) {
      // INV-4: a transaction at or below the stored commit LSN was applied before (capture replayed it).
      this.deps.metrics.skippedDuplicates.inc();
      return null;
    }
    let refusal = this.guard.refuse(ev);
    if (refusal instanceof Promise) refusal = await refusal;
    if (refusal) return this.refuseRecord(m, pos, refusal, ev.last);
    if (ev.kind === 'change' && s && inReplay(s.replay, pos.offset) && filteredOut(s.replay, ev.schema, ev.table, ev.commitTs, ev.snapshot)) {
      // Outside the replay's --tables / --from time: the position moves, nothing is written.
      this.advance(pos, ev.last, snapshotRow ? null : ev.commitLsn, snapshotRow ? null : ev.commitTs);
      return null;
    }
    if (!this.group?.open) await this.beginGroup(pos);
    const g = this.group!;
    const filtered = ev.kind === 'change' ? this.filteredOperation(ev) : null;
    if (ev.origin === this.deps.direction.to) {
      // INV-5: it started at the destination; applying it again would loop.
      g.dropped++;
    } else if (filtered) {
      this.deps.metrics.filteredOperations.inc({ operation: filtered });
    } else if (ev.kind === 'change' && !ev.snapshot && this.watermarks.size && ev.commitLsn < (this.watermarks.get(`${ev.schema}.${ev.table}`) ?? 0n)) {
      // The table was read by the initial sync in a snapshot taken after this change.
      this.deps.metrics.skippedDuplicates.inc();
    } else if (ev.kind === 'change' && ev.op === 't') {
      // Rows buffered before it go first; the tables of one TRUNCATE gather until the next write.
      if (this.pending.length) {
        const replay = await this.flushBatch();
        if (replay !== null) return replay;
      }
      this.truncates.push({ m, pos, ev: this.toDestination(ev) });
    } else if (ev.kind === 'change') {
      // The shape is known without a query once the table is cached: no promise per event then.
      const dev = this.toDestination(ev);
      let shape = pos.offset > this.unbatchedUntil ? this.writer!.batchShape(dev) : null;
      if (shape instanceof Promise) shape = await shape;
      const replay = shape ? await this.addToBatch(dev, shape) : await this.writeAlone(m, pos, dev);
      if (replay !== null) return replay;
    } else if (ev.control === 'ddl') {
      return this.applyDdl(pos, ev);
    } else if (ev.control === 'barrier' && ev.id) {
      const replay = await this.flushBatch();
      if (replay !== null) return replay;
      await this.client!.query('INSERT INTO cdc.barriers (pipeline, direction, id, source_commit_lsn) VALUES ($1, $2, $3, $4::pg_lsn) ON CONFLICT DO NOTHING', [
        this.deps.cfg.pipeline,
        this.deps.direction.id,
        ev.id,
        formatLsn(ev.commitLsn),
      ]);
    } else if (ev.control === 'heartbeat') {
      g.heartbeatTs = ev.commitTs;
    } else if (ev.control === 'watermark' && ev.id && ev.payload) {
      const lsn = parseLsn(ev.payload);
      await this.client!.query(
        `INSERT INTO cdc.table_watermarks (pipeline, direction, table_name, lsn) VALUES ($1, $2, $3, $4::pg_lsn)
         ON CONFLICT (pipeline, direction, table_name) DO UPDATE SET lsn = EXCLUDED.lsn`,
        [this.deps.cfg.pipeline, this.deps.direction.id, ev.id, ev.payload],
      );
      // In memory only once committed would be stricter; a rollback replays the event, which sets it again.
      this.watermarks.set(ev.id, lsn);
    }
    // Snapshot rows and watermarks do not move the stored source position: a resync taken
    // "now" must not make streamed transactions still on their way look applied (INV-4).
    this.advance(pos, ev.last, snapshotRow ? null : ev.commitLsn, snapshotRow ? null : ev.commitTs);
    const b = this.deps.cfg.apply.batch;
    if (!g.inTxn && (g.ddl || g.txns >= b.maxTransactions || g.rows + this.pending.length >= b.maxRows)) return this.flushAndCommit();
    return null;
  }

  /**
   * A replicated DDL command (forward direction): a sequence point. Everything before it is
   * written; the transactions before its own commit first, and the destination transaction
   * that runs it holds its source transaction only, with the progress row (a crash before
   * that commit runs it again, one after never). The table shapes cached by the writer are
   * forgotten; the registry learns the new shape from capture's next Relation message.
   */
  private async applyDdl(pos: Position, ev: ControlEvent): Promise<bigint | null> {
    const d = parseDdlRecord(ev.payload ?? '')!; // the guard refused it if malformed
    const replay = await this.flushBatch();
    if (replay !== null) return replay;
    if (inReplay(this.stored.get(pos.partition)?.replay, pos.offset)) {
      // pgbridge replay: the destination has this schema change already (running it again would fail).
      this.log.info({ tag: d.tag, offset: String(pos.offset) }, 'replayed range: DDL passed over (the destination has it)');
      this.advance(pos, ev.last, ev.commitLsn, ev.commitTs);
      return null;
    }
    const renamed = renamedTablesTouched(this.deps.cfg, d);
    if (renamed.length) {
      await this.rollbackGroup();
      throw new PgBridgeError(
        'DDL_FAILED',
        `replicated DDL (${d.tag}) at ${pos.topic}/${pos.partition}@${pos.offset}, source commit LSN ${formatLsn(ev.commitLsn)}, touches ${renamed.join(', ')}, which the clusters name differently (selection.tables.<t>.rename / renameColumns): its text names ${this.deps.direction.from}'s tables and columns and cannot run on ${this.deps.direction.to} as it is. ` +
          `Command: ${d.sql.slice(0, 2000)}. Apply stopped before it: make the equivalent change on ${this.deps.direction.to} by hand, move cdc.apply_progress past offset ${pos.offset}, then start apply again.`,
        {
          details: { topic: pos.topic, partition: pos.partition, offset: String(pos.offset), tag: d.tag, tables: renamed },
        },
      );
    }
    let g = this.group!;
    if (!g.inTxn && g.txns > 0) {
      await this.commitGroup();
      await this.beginGroup(pos);
      g = this.group!;
    }
    const outside = runsOutsideTransaction(d);
    if (outside && g.open) {
      // Nothing is written in it yet (CONCURRENTLY runs alone in its source transaction).
      await this.client!.query('ROLLBACK');
      g.open = false;
    }
    let done: 'applied' | 'already';
    try {
      done = await runDdl(this.client!, ev, d, this.deps.direction.to);
    } catch (err) {
      await this.rollbackGroup();
      throw err;
    }
    this.writer!.invalidate();
    this.deps.metrics.ddl.inc({ tag: d.tag });
    this.log.info(
      { tag: d.tag, offset: String(pos.offset), lsn: formatLsn(ev.commitLsn), objects: d.objects.map((o) => o.identity) },
      done === 'applied' ? 'replicated DDL applied' : 'replicated DDL (CONCURRENTLY) was done already, before a restart: its position is recorded now',
    );
    g.ddl = true;
    this.advance(pos, ev.last, ev.commitLsn, ev.commitTs);
    if (ev.last) await this.commitGroup();
    return null;
  }

  /** A change under the destination's names of its table and columns (selection.tables.<t>.rename / renameColumns). */
  private toDestination(ev: ChangeEvent): ChangeEvent {
    const n = this.naming;
    if (!n.any) return ev;
    const [schema, table] = n.physical(ev.schema, ev.table);
    if (!n.hasColumns(ev.schema, ev.table)) return schema === ev.schema && table === ev.table ? ev : { ...ev, schema, table };
    const row = (r: Row | null): Row | null => (r ? n.rowToCluster(ev.schema, ev.table, r) : r);
    return { ...ev, schema, table, before: row(ev.before), after: row(ev.after), unchanged: ev.unchanged.map((c) => n.column(ev.schema, ev.table, c)) };
  }

  private chunkToDestination(ev: SnapshotChunkEvent): SnapshotChunkEvent {
    const n = this.naming;
    if (!n.any) return ev;
    const [schema, table] = n.physical(ev.schema, ev.table);
    return { ...ev, schema, table, columns: ev.columns.map((c) => ({ ...c, name: n.column(ev.schema, ev.table, c.name) })) };
  }

  /** The operation of a change when the table's settings leave it out in this direction (it is not applied), else null. */
  private filteredOperation(ev: ChangeEvent): Operation | null {
    if (ev.snapshot) return null;
    const op = operationOfOp(ev.op);
    const s = tableSettings(this.deps.cfg, ev.schema, ev.table);
    return op && s?.operations && !operationsOf(s, this.deps.direction.id).includes(op) ? op : null;
  }

  /**
   * Set-based apply: consecutive changes of one shape go out as one statement. A key seen
   * again in the batch is a sequence point (its changes must land in order), as is any event
   * that is not batchable (writeAlone).
   */
  private async addToBatch(ev: ChangeEvent, shape: BatchShape): Promise<bigint | null> {
    if (this.pending.length && (this.pendingShape !== shape.shape || this.pendingKeys.has(shape.key))) {
      const replay = await this.flushBatch();
      if (replay !== null) return replay;
    }
    this.pending.push(ev);
    this.pendingShape = shape.shape;
    this.pendingKeys.add(shape.key);
    return this.pending.length >= BATCH_ROWS ? this.flushBatch() : null;
  }

  /** One change through the single-row path, after the batch before it. */
  private async writeAlone(m: ConsumedMessage, pos: Position, ev: ChangeEvent): Promise<bigint | null> {
    const replay = await this.flushBatch();
    if (replay !== null) return replay;
    try {
      this.count(await this.writer!.write(ev));
    } catch (err) {
      return this.rejected(m, pos, ev, err);
    }
    return null;
  }

  /** Rows and conflicts of a write, into the open group. */
  private count(r: WriteResult): void {
    const g = this.group!;
    g.rows += r.rows;
    g.setRows += r.setRows ?? 0;
    for (const c of r.conflicts) g.conflicts.push(c);
  }

  /** A record the guard refused: poison (dead letter or stop); its position is passed without its LSN. */
  private async refuseRecord(m: ConsumedMessage, pos: Position, refusal: Refusal, last: boolean): Promise<null> {
    this.deps.metrics.refused.inc({ reason: refusal.reason });
    await this.poison(m, pos, new PgBridgeError('POISON', `refused: ${refusal.message}`));
    // Its LSN and time are not taken: a forged position must not move the stored one.
    this.advance(pos, last, null, null);
    return null;
  }

  // ---- snapshot chunks (initial sync): loaded by ChunkLoader, deduplicated by offset only

  /**
   * With loaders: a chunk a loader committed before (a replay) is passed over; a chunk of a
   * table that was empty when its sync began goes to a loader; anything else waits for the
   * loads in flight (a sequence point) and then takes the usual path (undefined).
   */
  private async viaPool(m: ConsumedMessage, pos: Position, ev: ApplyEvent | SnapshotChunkEvent): Promise<bigint | null | undefined> {
    const pool = this.pool!;
    if (ev.kind === 'chunk' && pool.isLoaded(pos) && !pool.inFlight) {
      this.deps.metrics.skippedDuplicates.inc();
      this.advance(pos, true, null, null);
      return null;
    }
    if (
      ev.kind === 'chunk' &&
      ev.origin !== this.deps.direction.to &&
      !this.group?.inTxn &&
      this.chunks!.straightCopy(ev) &&
      !(await this.guard.refuse(snapshotRowOf(ev, null)))
    ) {
      // What apply's own transaction holds commits first (the table's first chunk recorded it empty there).
      if (this.group?.open) {
        const replay = await this.flushAndCommit();
        if (replay !== null) return replay;
      }
      await pool.dispatch(m, pos, ev);
      return this.passLoads(false);
    }
    if (pool.inFlight) {
      const replay = await this.passLoads(true);
      if (replay !== null) return replay;
    }
    return undefined;
  }

  /**
   * Moves apply's position over the chunks the loaders finished, in record order (all of them
   * when `all`, waiting). A chunk a loader could not load goes the usual way, on apply's connection.
   */
  private async passLoads(all: boolean): Promise<bigint | null> {
    const pool = this.pool!;
    const done = all ? await pool.settle() : pool.takeSettled();
    for (let i = 0; i < done.length; i++) {
      const d = done[i]!;
      const r = await d.result;
      if ('error' in r) {
        // After the loads still in flight: the chunk then meets the merge, dead-letter and stop rules.
        done.push(...(await pool.settle()));
        this.log.debug(
          { offset: String(d.pos.offset), table: `${d.ev.schema}.${d.ev.table}`, err: errorMessage(r.error) },
          'snapshot chunk back from its loader',
        );
        const replay = await this.handleChunk(d.m, d.pos, d.ev);
        if (replay !== null) return replay;
        continue;
      }
      this.advance(d.pos, true, null, null);
      this.count({ rows: r.rows, conflicts: [] });
    }
    return null;
  }

  /** A snapshot chunk is a transaction of its own; it does not move the stored source position. */
  private async handleChunk(m: ConsumedMessage, pos: Position, ev: SnapshotChunkEvent): Promise<bigint | null> {
    // The checks of a snapshot row (op r) of its table.
    const refusal = await this.guard.refuse(snapshotRowOf(ev, null));
    if (refusal) return this.refuseRecord(m, pos, refusal, true);
    const s = this.stored.get(pos.partition);
    if (s && inReplay(s.replay, pos.offset) && filteredOut(s.replay, ev.schema, ev.table, ev.commitTs, true)) {
      this.advance(pos, true, null, null);
      return null;
    }
    await this.beginGroup(pos);
    const g = this.group!;
    if (ev.origin === this.deps.direction.to) {
      g.dropped++;
    } else {
      const replay = await this.flushBatch();
      if (replay !== null) return replay;
      try {
        this.count(await this.chunks!.load(this.chunkToDestination(ev)));
      } catch (err) {
        return this.rejected(m, pos, ev, err);
      }
    }
    this.advance(pos, true, null, null);
    const b = this.deps.cfg.apply.batch;
    if (g.txns >= b.maxTransactions || g.rows >= b.maxRows) await this.commitGroup();
    return null;
  }

  private advance(pos: Position, last: boolean, commitLsn: Lsn | null, commitTs: bigint | null): void {
    if (!this.group) {
      this.group = this.newGroup(pos);
      this.group.inTxn = false;
    }
    const g = this.group;
    g.lastOffset = pos.offset;
    g.inTxn = !last;
    if (last) {
      g.txns++;
      if (commitLsn !== null) g.lastCommitLsn = commitLsn;
      if (commitTs !== null) g.lastCommitTs = commitTs;
    }
  }

  private newGroup(pos: Position): Group {
    return {
      open: false,
      partition: pos.partition,
      startOffset: pos.offset,
      lastOffset: pos.offset - 1n,
      inTxn: false,
      txns: 0,
      rows: 0,
      setRows: 0,
      lastCommitLsn: null,
      lastCommitTs: null,
      heartbeatTs: null,
      conflicts: [],
      dropped: 0,
      ddl: false,
    };
  }

  private async beginGroup(pos: Position): Promise<void> {
    if (this.group?.open) return;
    await this.client!.query('BEGIN');
    if (this.originMode === 'message') {
      // INV-5 fallback: the marker must come first in the transaction, before any row.
      await writeControl(this.client!, this.deps.cfg.pipeline, 'origin', this.deps.direction.from);
    }
    const g = this.group ?? this.newGroup(pos);
    g.open = true;
    this.group = g;
  }

  /**
   * Writes the buffered batch (set-based). When the statement fails, the group is rolled back and
   * replayed from its start one row at a time up to the last buffered offset, so the row at
   * fault is found and handled (dead letter or stop) like any other. Returns that replay
   * offset, or null.
   */
  private async flushBatch(): Promise<bigint | null> {
    if (this.truncates.length) {
      const replay = await this.flushTruncates();
      if (replay !== null) return replay;
    }
    const evs = this.pending;
    if (!evs.length) return null;
    this.pending = [];
    this.pendingShape = '';
    this.pendingKeys.clear();
    try {
      this.count(await this.writer!.writeMany(evs));
      return null;
    } catch (err) {
      if (err instanceof ConflictStop || classifyPgError(err).retriable) throw err;
      const start = this.group?.startOffset ?? evs[0]!.pos.offset;
      this.unbatchedUntil = evs[evs.length - 1]!.pos.offset;
      this.log.warn({ err: errorMessage(err), offset: String(start) }, 'a set-based write failed; replaying the group row by row');
      await this.rollbackGroup();
      return start;
    }
  }

  /** The gathered TRUNCATE events as one statement; a refusal is handled like any rejected change (its last event). */
  private async flushTruncates(): Promise<bigint | null> {
    const set = this.truncates;
    this.truncates = [];
    try {
      this.count(await this.writer!.truncate(set.map((x) => x.ev)));
      return null;
    } catch (err) {
      const last = set[set.length - 1]!;
      return this.rejected(last.m, last.pos, last.ev, err);
    }
  }

  /** Writes the batch, then commits the group. A replay offset when the batch failed (the group was rolled back). */
  private async flushAndCommit(): Promise<bigint | null> {
    const replay = await this.flushBatch();
    if (replay !== null) return replay;
    await this.commitGroup();
    return null;
  }

  /** INV-3: rows, progress row and origin position commit together; the Kafka offset follows. */
  private async commitGroup(): Promise<void> {
    const g = this.group;
    if (!g) return;
    const replay = await this.flushBatch();
    if (replay !== null) throw new PgBridgeError('INTERNAL', `set-based write failed at commit; replay from ${replay}`, { retriable: true });
    const c = this.client!;
    const prev = this.stored.get(g.partition);
    const next = g.lastOffset + 1n;
    const commitLsn = g.lastCommitLsn ?? prev?.commitLsn ?? (0n as Lsn);
    if (!g.open) await c.query('BEGIN');
    await c.query(
      `INSERT INTO cdc.apply_progress (pipeline, direction, partition, next_offset, commit_lsn, commit_ts, heartbeat_ts, updated_at)
       VALUES ($7, $1, $2, $3, $4::pg_lsn, 'epoch'::timestamptz + $5::bigint * interval '1 microsecond', 'epoch'::timestamptz + $6::bigint * interval '1 microsecond', clock_timestamp())
       ON CONFLICT (pipeline, direction, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, commit_lsn = EXCLUDED.commit_lsn,
         commit_ts = COALESCE(EXCLUDED.commit_ts, cdc.apply_progress.commit_ts), heartbeat_ts = COALESCE(EXCLUDED.heartbeat_ts, cdc.apply_progress.heartbeat_ts), updated_at = EXCLUDED.updated_at`,
      [
        this.deps.direction.id,
        g.partition,
        next.toString(),
        formatLsn(commitLsn),
        g.lastCommitTs?.toString() ?? null,
        g.heartbeatTs?.toString() ?? null,
        this.deps.cfg.pipeline,
      ],
    );
    if (this.pool?.passedLoads(g.partition, next)) {
      // Loaded chunks below the position need no marker any more (INV-3 holds them now).
      await c.query('DELETE FROM cdc.chunk_loads WHERE pipeline = $1 AND direction = $2 AND kafka_partition = $3 AND kafka_offset < $4', [
        this.deps.cfg.pipeline,
        this.deps.direction.id,
        g.partition,
        next.toString(),
      ]);
    }
    const range = prev?.replay ?? null;
    let storedLsn = commitLsn;
    if (range && next >= range.until) {
      // The replayed range is done: back to the commit LSN stored before it (the duplicate skip's high-water mark).
      const r = await c.query<{ commit_lsn: string }>(
        `UPDATE cdc.apply_progress SET commit_lsn = GREATEST(commit_lsn, COALESCE(replay_lsn, commit_lsn)), replay_until = NULL, replay_id = NULL, replay_lsn = NULL, replay_tables = NULL, replay_since = NULL, replay_mode = NULL
          WHERE pipeline = $1 AND direction = $2 AND partition = $3 RETURNING commit_lsn::text`,
        [this.deps.cfg.pipeline, this.deps.direction.id, g.partition],
      );
      storedLsn = parseLsn(r.rows[0]?.commit_lsn ?? formatLsn(commitLsn));
    }
    if (this.originMode === 'replication-origin' && g.lastCommitLsn !== null && g.lastCommitTs !== null) {
      // The destination commit then carries the source commit time (what last-writer-wins
      // compares) and pgoutput tags it with our origin (loop prevention, INV-5).
      await c.query(`SELECT pg_replication_origin_xact_setup($1::pg_lsn, 'epoch'::timestamptz + $2::bigint * interval '1 microsecond')`, [
        formatLsn(g.lastCommitLsn),
        g.lastCommitTs.toString(),
      ]);
    }
    await c.query('COMMIT');
    this.log.debug({ partition: g.partition, offset: String(next), txns: g.txns, rows: g.rows, lsn: formatLsn(commitLsn) }, 'committed');
    this.group = null;
    this.progressed = true;
    const stillReplaying = range && next < range.until ? range : null;
    this.stored.set(g.partition, { nextOffset: next, commitLsn: storedLsn, replay: stillReplaying });
    if (range && !stillReplaying) {
      this.writer!.replay = null;
      this.log.info({ replay: range.id, offset: String(next) }, 'replay done: the replayed range is applied again');
    }
    const m = this.deps.metrics;
    m.transactions.inc(g.txns);
    m.rows.inc(g.rows);
    m.setRows.inc(g.setRows);
    if (g.dropped) m.droppedLoopbacks.inc(g.dropped);
    for (const cf of g.conflicts) m.conflicts.inc({ kind: cf.kind, resolution: cf.resolution });
    const ts = g.heartbeatTs ?? g.lastCommitTs;
    if (ts !== null) m.appliedSourceTime(Number(ts) / 1e6);
    // Advisory only, so not awaited: the stored position above is what restarts use (INV-3).
    void this.consumer?.commit(g.partition, next).catch((err: unknown) => {
      this.log.warn({ err: errorMessage(err) }, 'Kafka offset commit failed (the stored position is authoritative)');
    });
  }

  private async rollbackGroup(): Promise<void> {
    // Loads in flight finish first: what they commit is skipped when the group is read again.
    await this.pool?.settle();
    const g = this.group;
    this.group = null;
    this.pending = [];
    this.truncates = [];
    this.pendingShape = '';
    this.pendingKeys.clear();
    if (g?.open && this.client) await this.client.query('ROLLBACK').catch(() => undefined);
  }

  /** A change the destination refused. Conflict stops and retriable errors propagate; the rest is poison. */
  private async rejected(m: ConsumedMessage, pos: Position, ev: ApplyEvent | SnapshotChunkEvent, err: unknown): Promise<bigint | null> {
    if (err instanceof ConflictStop) throw err;
    const cls = classifyPgError(err);
    if (cls.retriable) throw err;
    const start = this.group?.startOffset ?? pos.offset;
    await this.rollbackGroup();
    if (this.reshapedAt !== pos.offset && ev.kind === 'change') {
      // The destination's tables may have changed under the cached shapes (DDL on the forward
      // source, which this direction writes into): read them again and try once more.
      this.reshapedAt = pos.offset;
      this.writer!.invalidate();
      this.log.info(
        { offset: String(pos.offset), err: errorMessage(err) },
        'destination rejected a change; retrying its group once with table shapes read again',
      );
      return start;
    }
    const what =
      ev.kind === 'change' ? `${ev.op} on ${ev.schema}.${ev.table}` : ev.kind === 'chunk' ? `snapshot chunk of ${ev.schema}.${ev.table}` : ev.control;
    const reason = `destination ${this.deps.direction.to} rejected ${what}${cls.sqlstate ? ` (SQLSTATE ${cls.sqlstate})` : ''}: ${errorMessage(err)}`;
    await this.poison(m, pos, new PgBridgeError('DESTINATION_REJECTED', reason, { cause: err }));
    this.skip.add(`${pos.partition}:${pos.offset}`);
    return start;
  }

  /** Poison: to the dead-letter topic when configured, else stop with the exact position. */
  private async poison(m: ConsumedMessage, pos: Position, err: PgBridgeError): Promise<void> {
    const where = `${pos.topic}/${pos.partition}@${pos.offset}`;
    const dlq = this.deps.cfg.apply.deadLetterTopic;
    if (!dlq || !this.dlq) {
      throw new PgBridgeError(
        err.code === 'SCHEMA_UNKNOWN' ? 'SCHEMA_UNKNOWN' : 'POISON',
        `poison message at ${where}: ${err.message}. Configure apply.deadLetterTopic to set such messages aside, or fix the cause and restart.`,
        {
          details: { topic: pos.topic, partition: pos.partition, offset: String(pos.offset), reason: err.message },
        },
      );
    }
    await this.dlq.send(dlq, [
      {
        key: m.key,
        value: m.value ?? Buffer.alloc(0),
        headers: {
          ...m.headers,
          'pgbridge.dlq.reason': err.message,
          'pgbridge.dlq.topic': pos.topic,
          'pgbridge.dlq.partition': String(pos.partition),
          'pgbridge.dlq.offset': String(pos.offset),
          'pgbridge.dlq.direction': this.deps.direction.id,
        },
      },
    ]);
    this.deps.metrics.deadLettered.inc();
    this.log.error(
      { topic: pos.topic, partition: pos.partition, offset: String(pos.offset), reason: err.message, deadLetterTopic: dlq },
      'poison message sent to the dead-letter topic',
    );
  }
}
