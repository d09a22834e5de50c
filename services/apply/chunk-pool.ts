/**
 * Snapshot chunks loaded side by side on several destination connections (apply.snapshotLoaders).
 *
 * One COPY keeps one PostgreSQL backend busy; the initial sync's chunks of a table that was
 * empty when the sync began are independent of each other, so N loaders take them in turn.
 * What keeps the apply contract (docs/decisions.md, "Parallel snapshot loads"):
 *
 * - **Once per record.** A loader's transaction holds the chunk's rows and a row of
 *   cdc.chunk_loads naming the Kafka record (partition, offset). Apply's own position moves
 *   past a chunk only once the loader committed it, in record order; a replay from an older
 *   position skips every record in cdc.chunk_loads. The rows there below the stored position
 *   are deleted with the progress row that passes them.
 * - **Order where it matters.** Only consecutive chunk records go to loaders. Any other record
 *   (a change, a control record, a chunk that must be merged) is a sequence point: apply waits
 *   for every load in flight first. Two chunks of the same range of a table (one range read
 *   again by a resumed sync) never load at the same time, the later after the earlier.
 * - **Loop prevention.** Each loader holds a replication origin of its own
 *   (`cdc_<pipeline>_<from>~load<n>`, made by setup), so capture on the destination drops
 *   what it loads, and conflict detection reads it as written by the source cluster (apply
 *   maps every `~load<n>` origin to it). The commit carries the oldest time there is (1970):
 *   the set-based no-conflict condition, which compares apply's own origin and the commit
 *   time, then lets a change made on the source after the snapshot through at once, whatever
 *   the clocks (instead of sending it to the row-by-row path, which would reach the same end).
 * - **Failures.** A chunk a loader cannot load (a key already there, a value the destination
 *   rejects) is rolled back and handed back to apply, which loads it on its own connection,
 *   after the loads in flight, with the merge, dead-letter and stop rules of any chunk.
 */
import type pg from 'pg';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { from as copyFrom } from 'pg-copy-streams';
import { clusterByName, loaderOriginName, serviceConnection, type Direction, type PipelineConfig } from '../../shared/config.js';
import { errorMessage } from '../../shared/errors.js';
import { formatLsn } from '../../shared/lsn.js';
import type { Logger } from '../../shared/log.js';
import { connect, qi, qt } from '../../shared/pg.js';
import type { ConsumedMessage } from '../../shared/kafka.js';
import type { SnapshotChunkEvent } from './chunk-loader.js';
import type { Position } from './event-decoder.js';

/** A chunk record handed to a loader, in record order. */
export interface Dispatched {
  readonly m: ConsumedMessage;
  readonly pos: Position;
  readonly ev: SnapshotChunkEvent;
  /** Rows loaded, or the error that sends the chunk back to apply. */
  readonly result: Promise<{ rows: number } | { error: unknown }>;
  settled: boolean;
}

interface Loader {
  readonly client: pg.Client;
  readonly origin: string;
  busy: Promise<unknown> | null;
}

export class ChunkPool {
  /** Records loaded by a loader and committed (cdc.chunk_loads), by "partition:offset". */
  private readonly loaded = new Set<string>();
  /** In record order: what apply has not yet passed. */
  private readonly queue: Dispatched[] = [];
  /** "schema.table#range" → the load of that range in flight. */
  private readonly ranges = new Map<string, Promise<unknown>>();
  /** Per partition: the last record handed to a loader and not yet passed by apply. */
  private readonly highest = new Map<number, bigint>();
  /** Partitions with cdc.chunk_loads rows that apply's position may have passed. */
  private readonly marked = new Set<number>();

  private constructor(
    private readonly cfg: PipelineConfig,
    private readonly direction: Direction,
    private readonly loaders: Loader[],
  ) {}

  /**
   * Connects the loaders and takes their origins. Null (apply then loads chunks on its own
   * connection) when apply.snapshotLoaders is 0 or an origin is missing or held: logged, never fatal.
   */
  static async open(cfg: PipelineConfig, direction: Direction, log: Logger): Promise<ChunkPool | null> {
    const n = cfg.apply.snapshotLoaders;
    if (n === 0) return null;
    const loaders: Loader[] = [];
    try {
      for (let i = 1; i <= n; i++) {
        const dest = serviceConnection(clusterByName(cfg, direction.to), 'apply');
        const client = await connect(dest, `pgbridge-apply-${direction.id}-loader-${i}`);
        client.on('error', () => undefined); // a broken loader fails its load, which goes back to apply
        const origin = loaderOriginName(cfg, direction.from, i);
        loaders.push({ client, origin, busy: null });
        await client.query('SET session_replication_role = replica');
        await client.query('SELECT pg_replication_origin_session_setup($1)', [origin]);
      }
    } catch (err) {
      for (const l of loaders) await l.client.end().catch(() => undefined);
      log.warn(
        { err: errorMessage(err), loaders: n },
        "snapshot chunks load on apply's own connection: the loaders' replication origins are missing (run pgbridge setup) or held",
      );
      return null;
    }
    return new ChunkPool(cfg, direction, loaders);
  }

  /** Records at or after `from` (per partition) that loaders committed before a restart. */
  async readLoaded(client: pg.Client): Promise<void> {
    const r = await client.query<{ p: string; o: string }>(
      'SELECT kafka_partition::text AS p, kafka_offset::text AS o FROM cdc.chunk_loads WHERE pipeline = $1 AND direction = $2',
      [this.cfg.pipeline, this.direction.id],
    );
    for (const row of r.rows) this.loaded.add(`${row.p}:${row.o}`);
  }

  /** A loader committed this record already (before a restart or a rolled-back group). */
  isLoaded(pos: Position): boolean {
    return this.loaded.size > 0 && this.loaded.has(`${pos.partition}:${pos.offset}`);
  }

  get inFlight(): boolean {
    return this.queue.length > 0;
  }

  /** The record was handed to a loader and apply has not passed it yet (a record read twice is not loaded twice). */
  holds(partition: number, offset: bigint): boolean {
    return this.queue.length > 0 && offset <= (this.highest.get(partition) ?? -1n);
  }

  /**
   * Apply's position moves to `next` on this partition: true when cdc.chunk_loads may have rows
   * below it (to delete in the same transaction). The in-memory ones go now.
   */
  passedLoads(partition: number, next: bigint): boolean {
    if (!this.marked.has(partition)) return false;
    for (const k of this.loaded) {
      const [p, o] = k.split(':');
      if (Number(p) === partition && BigInt(o!) < next) this.loaded.delete(k);
    }
    if (!this.queue.length) this.marked.delete(partition);
    return true;
  }

  /** Hands a chunk to the next free loader (waiting for one, and for an earlier load of the same range). */
  async dispatch(m: ConsumedMessage, pos: Position, ev: SnapshotChunkEvent): Promise<void> {
    const target = qt(ev.schema, ev.table);
    const key = `${ev.schema}.${ev.table}#${ev.range}`;
    const before = this.ranges.get(key);
    if (before) await before.catch(() => undefined);
    let loader = this.loaders.find((l) => l.busy === null);
    while (!loader) {
      await Promise.race(this.loaders.map((l) => l.busy));
      loader = this.loaders.find((l) => l.busy === null);
    }
    const l = loader;
    const d: Dispatched = { m, pos, ev, settled: false, result: this.load(l, pos, ev, target) };
    const busy = d.result.finally(() => {
      d.settled = true;
      l.busy = null;
      if (this.ranges.get(key) === busy) this.ranges.delete(key);
    });
    l.busy = busy;
    this.ranges.set(key, busy);
    this.queue.push(d);
    this.highest.set(pos.partition, pos.offset);
    this.marked.add(pos.partition);
  }

  /** The loads at the head of the record order that have finished (apply passes them), without waiting. */
  takeSettled(): Dispatched[] {
    const out: Dispatched[] = [];
    while (this.queue.length && this.queue[0]!.settled) out.push(this.queue.shift()!);
    return out;
  }

  /** Resolves when the loads in flight now have finished (without taking them). */
  async whenSettled(): Promise<void> {
    await Promise.all(this.queue.map((d) => d.result));
  }

  /** Waits for every load in flight; all of them, in record order. */
  async settle(): Promise<Dispatched[]> {
    await Promise.all(this.queue.map((d) => d.result));
    this.highest.clear();
    return this.queue.splice(0);
  }

  async close(): Promise<void> {
    await this.settle().catch(() => undefined);
    for (const l of this.loaders) await l.client.end().catch(() => undefined);
  }

  private async load(l: Loader, pos: Position, ev: SnapshotChunkEvent, target: string): Promise<{ rows: number } | { error: unknown }> {
    const c = l.client;
    try {
      await c.query('BEGIN');
      // As on apply's connection: a crash that loses the commit loses the cdc.chunk_loads row with it.
      await c.query('SET LOCAL synchronous_commit = off');
      const stream = c.query(copyFrom(`COPY ${target} (${ev.columns.map((x) => qi(x.name)).join(', ')}) FROM STDIN`));
      await pipeline(Readable.from([ev.data]), stream);
      await c.query('INSERT INTO cdc.chunk_loads (pipeline, direction, kafka_partition, kafka_offset) VALUES ($1, $2, $3, $4)', [
        this.cfg.pipeline,
        this.direction.id,
        pos.partition,
        pos.offset.toString(),
      ]);
      // The oldest commit time there is: any change made on the source after the snapshot is
      // newer than the rows of the snapshot, whatever the clocks (conflict detection compares it).
      await c.query(`SELECT pg_replication_origin_xact_setup($1::pg_lsn, 'epoch'::timestamptz + interval '1 microsecond')`, [formatLsn(ev.commitLsn)]);
      await c.query('COMMIT');
      this.loaded.add(`${pos.partition}:${pos.offset}`);
      return { rows: stream.rowCount };
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      return { error: err };
    }
  }
}
