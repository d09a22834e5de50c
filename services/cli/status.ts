/**
 * `pgbridge status`: per direction, what an operator checks first: is it moving, how far
 * behind, how much WAL the source keeps for it, conflicts and loop-backs.
 */
import { metricsPort, slotName, type PipelineConfig } from '../../shared/config.js';
import { errorMessage } from '../../shared/errors.js';
import { kafkaClient, recordsBehind } from '../../shared/kafka.js';
import { withClient } from '../../shared/pg.js';
import { readiness, scrapeMetrics } from './probe.js';
import { configuredLimit, storedLimit, type ThrottleLimit } from '../apply/throttle.js';
import { formatLimit } from './throttle.js';

export interface DirectionStatus {
  direction: string;
  topic: string;
  state: 'streaming' | 'idle' | 'stopped' | 'unknown';
  slot: { name: string; exists: boolean; active: boolean; walRetainedBytes: number | null; lagBytes: number | null; walStatus: string | null };
  applied: { commitLsn: string | null; commitTs: string | null; nextOffset: string | null; updatedAt: string | null };
  /** A pgbridge replay under way: its id and the offset where it ends (null: none). */
  replay: { id: string; until: string } | null;
  lagSeconds: number | null;
  lagOffsets: number | null;
  conflicts: number | null;
  droppedLoopbacks: number | null;
  /** Incremental throttle in force for this direction's apply (pgbridge throttle, else the pipeline file). */
  throttle: ThrottleLimit;
  services: { capture: string; apply: string };
  errors: string[];
}

export async function status(cfg: PipelineConfig): Promise<DirectionStatus[]> {
  const admin = kafkaClient(cfg, 'status', undefined, { connectTimeoutMs: 2000 }).admin({ retries: 1 });
  let ends: Map<string, bigint> | null = null;
  try {
    ends = new Map();
    for (const d of cfg.directions) {
      const o = await admin.topicOffsets(d.topic).catch(() => []);
      for (const p of o) ends.set(`${d.topic}:${p.partition}`, p.high);
    }
  } catch {
    ends = null;
  } finally {
    await admin.close();
  }
  const out: DirectionStatus[] = [];
  for (const d of cfg.directions) {
    const errors: string[] = [];
    const s: DirectionStatus = {
      direction: `${d.from}→${d.to}`,
      topic: d.topic,
      state: 'unknown',
      slot: { name: slotName(cfg, d.from), exists: false, active: false, walRetainedBytes: null, lagBytes: null, walStatus: null },
      applied: { commitLsn: null, commitTs: null, nextOffset: null, updatedAt: null },
      replay: null,
      lagSeconds: null,
      lagOffsets: null,
      conflicts: null,
      droppedLoopbacks: null,
      throttle: configuredLimit(cfg, d.id),
      services: { capture: 'unknown', apply: 'unknown' },
      errors,
    };
    await withClient(cfg.clusters[d.from]!, 'pgbridge-status', async (c) => {
      const r = await c.query<{ active: boolean; retained: string | null; lag: string | null; wal_status: string | null }>(
        `SELECT active, (pg_current_wal_lsn() - restart_lsn)::text AS retained, (pg_current_wal_lsn() - confirmed_flush_lsn)::text AS lag, wal_status
           FROM pg_replication_slots WHERE slot_name = $1`,
        [s.slot.name],
      );
      const row = r.rows[0];
      if (row)
        s.slot = {
          name: s.slot.name,
          exists: true,
          active: row.active,
          walRetainedBytes: row.retained === null ? null : Number(row.retained),
          lagBytes: row.lag === null ? null : Number(row.lag),
          walStatus: row.wal_status,
        };
      else errors.push(`slot ${s.slot.name} missing on ${d.from}`);
    }).catch((err: unknown) => errors.push(`${d.from}: ${errorMessage(err)}`));
    await withClient(cfg.clusters[d.to]!, 'pgbridge-status', async (c) => {
      const p = await c.query<{
        commit_lsn: string;
        commit_ts: string | null;
        next_offset: string;
        updated_at: string;
        lag: string | null;
        replay_until: string | null;
        replay_id: string | null;
      }>(
        `SELECT commit_lsn::text, commit_ts::text, next_offset::text, updated_at::text,
                EXTRACT(EPOCH FROM clock_timestamp() - GREATEST(commit_ts, heartbeat_ts))::text AS lag,
                to_jsonb(p)->>'replay_until' AS replay_until, to_jsonb(p)->>'replay_id' AS replay_id
           FROM cdc.apply_progress p WHERE pipeline = $1 AND direction = $2 ORDER BY partition LIMIT 1`,
        [cfg.pipeline, d.id],
      );
      const row = p.rows[0];
      if (row) {
        s.applied = { commitLsn: row.commit_lsn, commitTs: row.commit_ts, nextOffset: row.next_offset, updatedAt: row.updated_at };
        s.replay = row.replay_until ? { id: row.replay_id ?? 'replay', until: row.replay_until } : null;
        s.lagSeconds = row.lag === null ? null : Math.round(Number(row.lag) * 10) / 10;
        const end = ends?.get(`${d.topic}:0`);
        if (end !== undefined) s.lagOffsets = recordsBehind(end, BigInt(row.next_offset));
      }
      s.throttle = (await storedLimit(c, cfg.pipeline, d.id).catch(() => null)) ?? s.throttle;
      const k = await c.query<{ n: string }>('SELECT count(*)::text AS n FROM cdc.conflicts WHERE pipeline = $1 AND direction = $2', [cfg.pipeline, d.id]);
      s.conflicts = Number(k.rows[0]?.n ?? 0);
    }).catch((err: unknown) => errors.push(`${d.to}: ${errorMessage(err)}`));
    const host = cfg.metrics.host;
    s.services.capture = await readiness(host, metricsPort(cfg, { capture: d.from }));
    s.services.apply = await readiness(host, metricsPort(cfg, { apply: d.id }));
    const m = await scrapeMetrics(host, metricsPort(cfg, { apply: d.id }));
    if (m) s.droppedLoopbacks = m.get('pgbridge_apply_dropped_loopback_events_total') ?? 0;
    if (ends === null) errors.push('Kafka unreachable');
    s.state = errors.length ? 'unknown' : s.slot.active && s.services.apply === 'running' ? 'streaming' : s.slot.exists ? 'stopped' : 'unknown';
    if (s.state === 'streaming' && s.lagOffsets === 0) s.state = 'idle';
    out.push(s);
  }
  return out;
}

function bytes(n: number | null): string {
  if (n === null) return '-';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

export function formatStatus(rows: DirectionStatus[]): string {
  const lines: string[] = [];
  for (const s of rows) {
    lines.push(`${s.direction}  ${s.state}   topic ${s.topic}`);
    lines.push(`  capture ${s.services.capture}; apply ${s.services.apply}`);
    lines.push(
      `  slot ${s.slot.name}: ${s.slot.exists ? (s.slot.active ? 'active' : 'inactive') : 'MISSING'}, WAL retained ${bytes(s.slot.walRetainedBytes)}, unacked ${bytes(s.slot.lagBytes)}${s.slot.walStatus && s.slot.walStatus !== 'reserved' ? `, wal_status ${s.slot.walStatus}` : ''}`,
    );
    lines.push(
      `  applied up to source commit ${s.applied.commitLsn ?? '-'} (${s.applied.commitTs ?? 'nothing yet'}), lag ${s.lagSeconds ?? '-'} s, ${s.lagOffsets ?? '-'} message(s)`,
    );
    if (s.replay) lines.push(`  replaying (${s.replay.id}): at offset ${s.applied.nextOffset ?? '-'}, the replayed range ends at ${s.replay.until}`);
    lines.push(`  conflicts ${s.conflicts ?? '-'}, dropped loop-backs ${s.droppedLoopbacks ?? '-'}, throttle ${formatLimit(s.throttle)}`);
    for (const e of s.errors) lines.push(`  error: ${e}`);
  }
  return lines.join('\n');
}
