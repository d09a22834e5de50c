/**
 * `pgbridge throttle`: shows or changes the incremental throttle of each direction while apply
 * runs. The limit is stored in the destination's cdc.apply_throttle, which a running apply
 * reads again every THROTTLE_REFRESH_MS; `--clear` removes it, and the pipeline file's
 * `apply.throttle` applies again.
 */
import { directionById, type PipelineConfig } from '../../shared/config.js';
import { withClient } from '../../shared/pg.js';
import { configuredLimit, storeLimit, storedLimit, THROTTLE_REFRESH_MS, type ThrottleLimit } from '../apply/throttle.js';

export interface DirectionThrottle {
  readonly direction: string;
  /** The limit apply keeps to: the stored one, else the pipeline file's. */
  readonly inForce: ThrottleLimit;
  readonly configured: ThrottleLimit;
}

export async function throttles(cfg: PipelineConfig): Promise<DirectionThrottle[]> {
  const out: DirectionThrottle[] = [];
  for (const d of cfg.directions) {
    const stored = await withClient(cfg.clusters[d.to]!, 'pgbridge-throttle', (c) => storedLimit(c, cfg.pipeline, d.id));
    const configured = configuredLimit(cfg, d.id);
    out.push({ direction: d.id, inForce: stored ?? configured, configured });
  }
  return out;
}

/** Stores a direction's limit (rows/s and MB/s; 0 or absent: no limit of that kind), or removes it with null. */
export async function setThrottle(
  cfg: PipelineConfig,
  direction: string,
  limit: { rowsPerSecond?: number; megabytesPerSecond?: number } | null,
): Promise<void> {
  const d = directionById(cfg, direction);
  const value = limit === null ? null : { rowsPerSecond: limit.rowsPerSecond ?? 0, bytesPerSecond: Math.round((limit.megabytesPerSecond ?? 0) * 1024 * 1024) };
  await withClient(cfg.clusters[d.to]!, 'pgbridge-throttle', (c) => storeLimit(c, cfg.pipeline, d.id, value));
}

export function formatLimit(l: ThrottleLimit): string {
  const parts = [
    l.rowsPerSecond > 0 ? `${l.rowsPerSecond} rows/s` : null,
    l.bytesPerSecond > 0 ? `${(l.bytesPerSecond / 1024 / 1024).toFixed(2)} MB/s` : null,
  ].filter((x) => x !== null);
  return parts.length ? parts.join(', ') : 'no limit';
}

export function formatThrottles(rows: readonly DirectionThrottle[]): string {
  return (
    rows
      .map(
        (t) =>
          `${t.direction}: ${formatLimit(t.inForce)} (${t.inForce.source === 'config' ? 'pipeline file' : `set by pgbridge throttle; pipeline file: ${formatLimit(t.configured)}`})`,
      )
      .join('\n') + `\nA running apply picks up a change within ${THROTTLE_REFRESH_MS / 1000} s.`
  );
}
