/**
 * `pgbridge replay --from earliest --rebuild`: builds an empty destination from its direction
 * topic alone. The topic holds the initial sync's records (snapshot chunks or op=r rows) and
 * every change streamed after them, so applying it from the log start rebuilds every table.
 *
 * Steps: refuse while the direction's apply runs; refuse a destination whose selected tables
 * hold rows; copy the schema from the direction's source when the destination has none of the
 * selected tables (the forward sync's schema step); create the helper schema and the
 * replication origin there (no slot, no publication: it only receives); store the position at
 * the log start with a replay range in `rebuild` mode up to the topic's end. The next apply
 * start of the direction does the rest through the normal path, and then keeps following.
 *
 * A third cluster (a new standby, an analytics copy) is rebuilt with a pipeline file of its own
 * that names it as the destination, under another pipeline name, with topics.pattern naming
 * the original pipeline's topics (docs/operations.md, "Replay and rebuild").
 */
import { clusterByName, directionById, type PipelineConfig } from '../../shared/config.js';
import { PgBridgeError } from '../../shared/errors.js';
import { kafkaClient } from '../../shared/kafka.js';
import type { Logger } from '../../shared/log.js';
import { connect, qt } from '../../shared/pg.js';
import { SchemaStore } from '../../shared/registry.js';
import { syncSchema } from '../snapshot/initial-sync.js';
import type { ReplayRange } from '../apply/replay-range.js';
import { refuseWhileRunning, summarize, type ReplaySummary } from './replay.js';
import { selectedTables, setupReceiver } from './setup.js';

export interface RebuildPlan {
  readonly id: string;
  readonly direction: string;
  readonly topic: string;
  readonly partition: number;
  readonly from: bigint;
  readonly until: bigint;
  /** Tables whose schema was copied from the source (empty: the destination had them). */
  readonly schemaCopied: readonly string[];
  readonly dryRun: boolean;
  readonly summary: ReplaySummary | null;
}

export async function rebuild(cfg: PipelineConfig, directionId: string, opts: { dryRun?: boolean }, log: Logger): Promise<RebuildPlan> {
  const d = directionById(cfg, directionId);
  const kafka = kafkaClient(cfg, `rebuild-${d.id}`, log);
  const admin = kafka.admin();
  const dest = await connect(clusterByName(cfg, d.to), `pgbridge-replay-${d.id}`);
  try {
    if (!opts.dryRun) await refuseWhileRunning(dest, cfg, d, admin);
    const there = await selectedTables(dest, cfg, d.to);
    const full: string[] = [];
    for (const t of there) {
      const r = await dest.query(`SELECT 1 FROM ${qt(t.schema, t.table)} LIMIT 1`);
      if (r.rowCount) full.push(`${t.schema}.${t.table}`);
    }
    if (full.length) {
      throw new PgBridgeError(
        'PRECHECK',
        `--rebuild needs an empty destination, and ${d.to} has rows in ${full.slice(0, 10).join(', ')}${full.length > 10 ? ', …' : ''}. To re-apply the topic over data ${d.to} holds, run replay without --rebuild; to rebuild, empty (or drop) those tables first.`,
      );
    }
    const offsets = (await admin.topicOffsets(d.topic)).find((o) => o.partition === 0);
    if (!offsets) throw new PgBridgeError('PRECHECK', `topic ${d.topic} has no partition 0`);
    const id = `rebuild-${new Date().toISOString()}`;
    const plan = { id, direction: d.id, topic: d.topic, partition: 0, from: offsets.low, until: offsets.high, dryRun: !!opts.dryRun };
    if (offsets.low > 0n)
      log.warn({ topic: d.topic, logStart: String(offsets.low) }, 'the topic no longer starts at offset 0: a rebuild from it lacks what retention deleted');
    if (opts.dryRun) {
      const reader = kafka.reader();
      try {
        const range: ReplayRange = { id, mode: 'rebuild', until: offsets.high, lsn: null, tables: null, sinceUs: null };
        const summary = await summarize(reader, new SchemaStore(cfg.registry), d, 0, offsets.low, offsets.high, range, new Set());
        return { ...plan, schemaCopied: [], summary };
      } finally {
        await reader.close();
      }
    }
    let schemaCopied: string[] = [];
    if (there.length === 0) schemaCopied = (await syncSchema(cfg, 'error', log, d)).created;
    await setupReceiver(dest, cfg, d.to, log);
    await dest.query('BEGIN');
    // What an earlier attempt left for this direction would skip changes (watermarks) or take
    // empty tables for full ones (snapshot loads): the rebuild starts clean.
    await dest.query('DELETE FROM cdc.table_watermarks WHERE pipeline = $1 AND direction = $2', [cfg.pipeline, d.id]);
    await dest.query('DELETE FROM cdc.snapshot_loads WHERE pipeline = $1 AND direction = $2', [cfg.pipeline, d.id]);
    await dest.query(
      `INSERT INTO cdc.apply_progress AS p (pipeline, direction, partition, next_offset, commit_lsn, replay_until, replay_id, replay_mode, updated_at)
       VALUES ($1, $2, 0, $3, '0/0', $4, $5, 'rebuild', clock_timestamp())
       ON CONFLICT (pipeline, direction, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, commit_lsn = EXCLUDED.commit_lsn, commit_ts = NULL, heartbeat_ts = NULL,
         replay_until = EXCLUDED.replay_until, replay_id = EXCLUDED.replay_id, replay_lsn = NULL, replay_tables = NULL, replay_since = NULL, replay_mode = 'rebuild', updated_at = EXCLUDED.updated_at`,
      [cfg.pipeline, d.id, offsets.low.toString(), offsets.high.toString(), id],
    );
    await dest.query('COMMIT');
    log.info(
      { direction: d.id, from: String(offsets.low), until: String(offsets.high), id },
      'rebuild stored: the next apply start applies the topic from its log start',
    );
    return { ...plan, schemaCopied, summary: null };
  } finally {
    await dest.end().catch(() => undefined);
    await admin.close();
  }
}

export function formatRebuildPlan(p: RebuildPlan): string {
  const lines = [
    `${p.dryRun ? 'would rebuild' : 'rebuild'} ${p.direction} from ${p.topic}/${p.partition}: offsets ${p.from} to ${p.until - 1n} (${p.until - p.from} offset(s)), then on with the stream`,
  ];
  if (p.summary) {
    lines.push(
      `  ${p.summary.transactions} transaction(s) and snapshot chunk(s) in ${p.summary.records} record(s), source commits ${p.summary.firstCommit ?? '-'} to ${p.summary.lastCommit ?? '-'}`,
    );
    for (const n of Object.keys(p.summary.rows).sort()) lines.push(`  ${n}: ${p.summary.rows[n]} row(s)`);
    lines.push('  dry run: nothing was changed');
  } else {
    lines.push(
      `  schema: ${p.schemaCopied.length ? `${p.schemaCopied.length} table(s) copied from the source (${p.schemaCopied.slice(0, 5).join(', ')}${p.schemaCopied.length > 5 ? ', …' : ''})` : 'the destination had the tables'}`,
    );
    lines.push(`  stored: start apply of ${p.direction} (pgbridge apply or pgbridge run) to build the tables (rebuild id ${p.id})`);
  }
  return lines.join('\n');
}
