/**
 * Incremental throttling (DTS: rows per second and MB per second, changeable while the task
 * runs). Apply holds back what it reads from Kafka, never the slot: capture keeps publishing
 * and the source's WAL is released as before; the backlog waits in the topic.
 *
 * The limit in force is the pipeline file's (`apply.throttle`, per-direction overrides), or
 * the one `pgbridge throttle` stored in the destination's `cdc.apply_throttle`, which wins
 * and is read again every few seconds while apply runs.
 */
import type pg from 'pg';
import type { PipelineConfig } from '../../shared/config.js';

export interface ThrottleLimit {
  /** 0: no limit. */
  readonly rowsPerSecond: number;
  /** 0: no limit. */
  readonly bytesPerSecond: number;
  /** Where the limit comes from: `config` or `cdc.apply_throttle`. */
  readonly source: 'config' | 'cdc.apply_throttle';
}

/** The pipeline file's limit for a direction (its override, else the global one). */
export function configuredLimit(cfg: PipelineConfig, direction: string): ThrottleLimit {
  const t = cfg.apply.throttle;
  const o = t.directions[direction] ?? {};
  const rows = o.rowsPerSecond ?? t.rowsPerSecond ?? 0;
  const mb = o.megabytesPerSecond ?? t.megabytesPerSecond ?? 0;
  return { rowsPerSecond: rows, bytesPerSecond: Math.round(mb * 1024 * 1024), source: 'config' };
}

/** The stored limit of a direction, if `pgbridge throttle` set one. */
export async function storedLimit(client: pg.ClientBase, pipeline: string, direction: string): Promise<ThrottleLimit | null> {
  const r = await client.query<{ rows: string; bytes: string }>(
    'SELECT rows_per_second::text AS rows, bytes_per_second::text AS bytes FROM cdc.apply_throttle WHERE pipeline = $1 AND direction = $2',
    [pipeline, direction],
  );
  const row = r.rows[0];
  return row ? { rowsPerSecond: Number(row.rows), bytesPerSecond: Number(row.bytes), source: 'cdc.apply_throttle' } : null;
}

/** Stores (or, with null, removes) the limit of a direction; apply picks it up within THROTTLE_REFRESH_MS. */
export async function storeLimit(
  client: pg.ClientBase,
  pipeline: string,
  direction: string,
  limit: { rowsPerSecond: number; bytesPerSecond: number } | null,
): Promise<void> {
  if (limit === null) {
    await client.query('DELETE FROM cdc.apply_throttle WHERE pipeline = $1 AND direction = $2', [pipeline, direction]);
    return;
  }
  await client.query(
    `INSERT INTO cdc.apply_throttle (pipeline, direction, rows_per_second, bytes_per_second) VALUES ($1, $2, $3, $4)
     ON CONFLICT (pipeline, direction) DO UPDATE SET rows_per_second = EXCLUDED.rows_per_second, bytes_per_second = EXCLUDED.bytes_per_second, updated_at = clock_timestamp()`,
    [pipeline, direction, limit.rowsPerSecond, limit.bytesPerSecond],
  );
}

/** How often a running apply reads cdc.apply_throttle again. */
export const THROTTLE_REFRESH_MS = 2000;

/**
 * Token buckets for rows and bytes, each holding at most one second of its rate: a burst of
 * one second's worth goes at once, then the rate holds. `take` returns how long to wait
 * before going on (0 when within the limit).
 */
export class Throttle {
  private limit: ThrottleLimit = { rowsPerSecond: 0, bytesPerSecond: 0, source: 'config' };
  private rows = 0;
  private bytes = 0;
  private at = 0;

  get current(): ThrottleLimit {
    return this.limit;
  }

  get active(): boolean {
    return this.limit.rowsPerSecond > 0 || this.limit.bytesPerSecond > 0;
  }

  set(limit: ThrottleLimit): void {
    if (limit.rowsPerSecond === this.limit.rowsPerSecond && limit.bytesPerSecond === this.limit.bytesPerSecond) {
      this.limit = limit;
      return;
    }
    this.limit = limit;
    // A new limit starts with a full bucket.
    this.rows = limit.rowsPerSecond;
    this.bytes = limit.bytesPerSecond;
    this.at = performance.now();
  }

  /** Spends `rows` and `bytes`; returns the milliseconds to wait so the rates hold. */
  take(rows: number, bytes: number, now = performance.now()): number {
    if (!this.active) return 0;
    const dt = (now - this.at) / 1000;
    this.at = now;
    const { rowsPerSecond: r, bytesPerSecond: b } = this.limit;
    let wait = 0;
    if (r > 0) {
      this.rows = Math.min(r, this.rows + dt * r) - rows;
      if (this.rows < 0) wait = Math.max(wait, (-this.rows / r) * 1000);
    }
    if (b > 0) {
      this.bytes = Math.min(b, this.bytes + dt * b) - bytes;
      if (this.bytes < 0) wait = Math.max(wait, (-this.bytes / b) * 1000);
    }
    return wait;
  }
}
