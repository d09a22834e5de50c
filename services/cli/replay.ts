/**
 * `pgbridge replay`: moves a stopped direction's apply position back (to the log start, an
 * offset, or the first record Kafka timestamped at or after a time), so that the next apply
 * start re-applies the range through the normal path. The range is stored with the position
 * (replay-range.ts); nothing is written to the tables here. `--dry-run` reads the range and
 * says what would be re-applied, and changes nothing.
 */
import type pg from 'pg';
import { clusterByName, directionById, originName, type Direction, type PipelineConfig } from '../../shared/config.js';
import { PgBridgeError, errorMessage } from '../../shared/errors.js';
import { kafkaClient, type ConsumedMessage, type KafkaAdmin, type KafkaClient } from '../../shared/kafka.js';
import type { Logger } from '../../shared/log.js';
import { formatLsn, type Lsn } from '../../shared/lsn.js';
import { connect } from '../../shared/pg.js';
import { SchemaStore } from '../../shared/registry.js';
import { isSelected, splitTableName } from '../../shared/selection.js';
import { applyGroupId } from '../apply/apply.js';
import { decodeRecord } from '../apply/event-decoder.js';
import { REPLAY_COLUMNS_SQL, filteredOut, type ReplayRange } from '../apply/replay-range.js';

export type ReplayFrom =
  | { readonly kind: 'earliest' }
  | { readonly kind: 'offset'; readonly offset: bigint }
  | { readonly kind: 'time'; readonly ms: number; readonly text: string };

/** `earliest`, an offset, or an ISO 8601 time with its zone (Z or ±hh:mm). */
export function parseReplayFrom(raw: string): ReplayFrom {
  const v = raw.trim();
  if (v === 'earliest') return { kind: 'earliest' };
  if (/^\d+$/.test(v)) return { kind: 'offset', offset: BigInt(v) };
  if (/^\d{4}-\d{2}-\d{2}/.test(v)) {
    if (!/(Z|[+-]\d{2}:?\d{2})$/i.test(v))
      throw new PgBridgeError('CONFIG_INVALID', `--from ${raw}: give the time zone (end with Z for UTC, or an offset such as +02:00)`);
    const ms = Date.parse(v);
    if (Number.isNaN(ms)) throw new PgBridgeError('CONFIG_INVALID', `--from ${raw}: not a valid ISO 8601 time`);
    return { kind: 'time', ms, text: new Date(ms).toISOString() };
  }
  throw new PgBridgeError('CONFIG_INVALID', `--from ${raw}: expected earliest, an offset (a whole number) or an ISO 8601 time such as 2026-11-30T07:00:00Z`);
}

export interface ReplayOptions {
  readonly from: ReplayFrom;
  /** Only these tables (schema.table) are written; the rest of the range moves the position only. */
  readonly tables?: readonly string[];
  readonly dryRun?: boolean;
}

export interface ReplaySummary {
  /** Records read in the range (commit markers not counted). */
  readonly records: number;
  /** Source transactions (and snapshot chunks) that would be applied again. */
  readonly transactions: number;
  /** Rows per table that would be written again. */
  readonly rows: Readonly<Record<string, number>>;
  /** Row events the filters (--tables, the time) pass over. */
  readonly passedOver: number;
  /** Source commit times of the first and last change in the range (ISO). */
  readonly firstCommit: string | null;
  readonly lastCommit: string | null;
}

export interface ReplayPlan {
  readonly id: string;
  readonly direction: string;
  readonly topic: string;
  readonly partition: number;
  /** First offset re-applied (the start of the transaction the asked position falls in). */
  readonly from: bigint;
  /** Offsets below this one are re-applied (where apply had got to). */
  readonly until: bigint;
  readonly logStart: bigint;
  /** Highest commit LSN before `from`: the duplicate skip starts from it. */
  readonly baseLsn: string;
  readonly since: string | null;
  readonly tables: readonly string[] | null;
  readonly dryRun: boolean;
  readonly summary: ReplaySummary | null;
}

/** Records read back before the start to find its transaction's first record and the LSN before it. */
const LOOK_BACK = 2000n;

export async function replay(cfg: PipelineConfig, directionId: string, opts: ReplayOptions, log: Logger): Promise<ReplayPlan> {
  const d = directionById(cfg, directionId);
  const tables = opts.tables?.length ? [...new Set(opts.tables)] : null;
  for (const t of tables ?? []) {
    const [schema, table] = splitTableName(t);
    if (!isSelected(cfg, schema, table)) throw new PgBridgeError('CONFIG_INVALID', `--tables: ${t} is not a table of pipeline ${cfg.pipeline}'s selection`);
  }
  const kafka = kafkaClient(cfg, `replay-${d.id}`, log);
  const admin = kafka.admin();
  const dest = await connect(clusterByName(cfg, d.to), `pgbridge-replay-${d.id}`);
  try {
    // A dry run changes nothing: it may look while apply runs (the range then ends where apply is now).
    if (!opts.dryRun) await refuseWhileRunning(dest, cfg, d, admin);
    const p = await dest
      .query<{ partition: string; next_offset: string; commit_lsn: string; replay_until: string | null; replay_lsn: string | null }>(
        `SELECT partition::text, next_offset::text, commit_lsn::text, to_jsonb(p)->>'replay_until' AS replay_until, to_jsonb(p)->>'replay_lsn' AS replay_lsn
         FROM cdc.apply_progress p WHERE pipeline = $1 AND direction = $2 ORDER BY partition`,
        [cfg.pipeline, d.id],
      )
      .catch((err: unknown) => {
        throw new PgBridgeError('PRECHECK', `cdc.apply_progress is not readable on ${d.to} (run pgbridge setup): ${errorMessage(err)}`, { cause: err });
      });
    const stored = p.rows[0];
    if (!stored)
      throw new PgBridgeError(
        'PRECHECK',
        `apply of ${d.id} has applied nothing on ${d.to} yet: there is nothing to replay (start apply; to build an empty destination from the topic use --rebuild)`,
      );
    const partition = Number(stored.partition);
    const next = BigInt(stored.next_offset);
    // A replay asked while another is still under way re-applies up to where the first one ends.
    const until = stored.replay_until !== null && BigInt(stored.replay_until) > next ? BigInt(stored.replay_until) : next;
    const offsets = (await admin.topicOffsets(d.topic)).find((o) => o.partition === partition);
    if (!offsets) throw new PgBridgeError('PRECHECK', `topic ${d.topic} has no partition ${partition}`);
    const asked = await startOffset(admin, d, partition, opts.from, offsets.low);
    if (asked < offsets.low) {
      throw new PgBridgeError(
        'OFFSET_BELOW_LOG_START',
        `offset ${asked} of ${d.topic}/${partition} is before the log start ${offsets.low}: older records were deleted (retention.ms of the topic). The position cannot go back further: replay --from earliest re-applies from ${offsets.low}; for what is older, pgbridge resync --table re-reads tables from the source, or a fresh pgbridge sync rebuilds the destination.`,
      );
    }
    if (asked >= until) {
      throw new PgBridgeError(
        'PRECHECK',
        `nothing to replay: ${opts.from.kind === 'time' ? `the first record at or after ${opts.from.text} is offset ${asked}` : `offset ${asked}`}, and apply of ${d.id} has applied up to offset ${until} (${d.topic}/${partition}); apply reaches it by itself`,
      );
    }
    const store = new SchemaStore(cfg.registry);
    const reader = kafka.reader();
    const { from, baseLsn } = await transactionStart(reader, store, d, partition, asked, offsets.low);
    const since = opts.from.kind === 'time' ? opts.from.text : null;
    const id = `replay-${new Date().toISOString()}`;
    const range: ReplayRange = {
      id,
      mode: 'replay',
      until,
      lsn: null,
      tables: tables ? new Set(tables) : null,
      sinceUs: opts.from.kind === 'time' ? BigInt(opts.from.ms) * 1000n : null,
    };
    const summary = opts.dryRun ? await summarize(reader, store, d, partition, from, until, range, await keylessTables(dest, cfg)) : null;
    await reader.close();
    const plan: ReplayPlan = {
      id,
      direction: d.id,
      topic: d.topic,
      partition,
      from,
      until,
      logStart: offsets.low,
      baseLsn: formatLsn(baseLsn),
      since,
      tables,
      dryRun: !!opts.dryRun,
      summary,
    };
    if (opts.dryRun) return plan;
    await dest.query(REPLAY_COLUMNS_SQL);
    await dest.query(
      `UPDATE cdc.apply_progress SET next_offset = $4, commit_lsn = $5::pg_lsn, replay_until = $6, replay_lsn = COALESCE(replay_lsn, commit_lsn),
              replay_id = $7, replay_tables = $8::text[], replay_since = $9::timestamptz, replay_mode = 'replay', updated_at = clock_timestamp()
        WHERE pipeline = $1 AND direction = $2 AND partition = $3`,
      [cfg.pipeline, d.id, partition, from.toString(), plan.baseLsn, until.toString(), id, tables, since],
    );
    log.info({ direction: d.id, from: String(from), until: String(until), id }, 'apply position moved back for a replay');
    return plan;
  } finally {
    await dest.end().catch(() => undefined);
    await admin.close();
  }
}

/** The offset the user asked for (before it is moved to its transaction's start). */
async function startOffset(admin: KafkaAdmin, d: Direction, partition: number, from: ReplayFrom, low: bigint): Promise<bigint> {
  if (from.kind === 'earliest') return low;
  if (from.kind === 'offset') return from.offset;
  const at = (await admin.offsetsForTime(d.topic, BigInt(from.ms))).get(partition);
  if (at === undefined) throw new PgBridgeError('PRECHECK', `topic ${d.topic} has no partition ${partition}`);
  return at;
}

/**
 * The first offset of the transaction `asked` falls in (apply works in whole transactions), and
 * the highest source commit LSN before it. Both come from the records just before `asked`.
 */
async function transactionStart(
  reader: ReturnType<KafkaClient['reader']>,
  store: SchemaStore,
  d: Direction,
  partition: number,
  asked: bigint,
  low: bigint,
): Promise<{ from: bigint; baseLsn: Lsn }> {
  if (asked <= low) return { from: low, baseLsn: 0n as Lsn };
  const windowStart = asked - LOOK_BACK > low ? asked - LOOK_BACK : low;
  const before = await readRange(reader, d.topic, partition, windowStart, asked);
  // The record `asked` may itself be a commit marker or gone: the boundary is the last record
  // before it that ends a transaction.
  let boundary = -1;
  for (let i = before.length - 1; i >= 0; i--) {
    if (before[i]!.headers['pgbridge.txn_last']?.toString() !== '0') {
      boundary = i;
      break;
    }
  }
  if (boundary < 0 && windowStart > low && before.length) {
    throw new PgBridgeError(
      'PRECHECK',
      `offset ${asked} of ${d.topic}/${partition} lies in a transaction that starts more than ${LOOK_BACK} records earlier: pass the offset of its first record (or an earlier one)`,
    );
  }
  const from = boundary >= 0 ? before[boundary]!.offset + 1n : windowStart;
  let baseLsn = 0n as Lsn;
  for (const m of before.slice(0, boundary + 1)) {
    const ev = await decodeRecord(store, m.value, { topic: d.topic, partition, offset: m.offset }).catch(() => null);
    // Snapshot rows carry the slot's consistent point, not a streamed position.
    if (!ev || ev.kind === 'chunk' || (ev.kind === 'change' && ev.snapshot) || (ev.kind === 'control' && ev.control === 'watermark')) continue;
    if (ev.commitLsn > baseLsn) baseLsn = ev.commitLsn;
  }
  return { from, baseLsn };
}

/** The records (commit markers and aborted transactions left out) of [from, until). */
export async function readRange(
  reader: ReturnType<KafkaClient['reader']>,
  topic: string,
  partition: number,
  from: bigint,
  until: bigint,
  each?: (m: ConsumedMessage) => Promise<void>,
): Promise<ConsumedMessage[]> {
  const out: ConsumedMessage[] = [];
  let pos = from;
  while (pos < until) {
    const f = (await reader.fetch(topic, new Map([[partition, pos]]))).get(partition);
    if (!f || f.next <= pos) break;
    for (const m of f.messages) {
      if (m.offset >= until) break;
      if (each) await each(m);
      else out.push(m);
    }
    pos = f.next;
  }
  return out;
}

/** What the range holds: what --dry-run prints. */
export async function summarize(
  reader: ReturnType<KafkaClient['reader']>,
  store: SchemaStore,
  d: Direction,
  partition: number,
  from: bigint,
  until: bigint,
  range: ReplayRange,
  keyless: ReadonlySet<string>,
): Promise<ReplaySummary> {
  let records = 0;
  let transactions = 0;
  let passedOver = 0;
  let first: bigint | null = null;
  let last: bigint | null = null;
  let wrote = false;
  const rows: Record<string, number> = {};
  await readRange(reader, d.topic, partition, from, until, async (m) => {
    records++;
    const ev = await decodeRecord(store, m.value, { topic: d.topic, partition, offset: m.offset });
    if (ev.kind === 'control') {
      if (ev.last && wrote) transactions++;
      if (ev.last) wrote = false;
      return;
    }
    const name = `${ev.schema}.${ev.table}`;
    const snapshot = ev.kind === 'chunk' || ev.snapshot;
    if (ev.origin === d.to || keyless.has(name) || filteredOut(range, ev.schema, ev.table, ev.commitTs, snapshot)) {
      passedOver += ev.kind === 'chunk' ? ev.rows : 1;
    } else {
      rows[name] = (rows[name] ?? 0) + (ev.kind === 'chunk' ? ev.rows : 1);
      wrote = true;
      if (!snapshot) {
        if (first === null || ev.commitTs < first) first = ev.commitTs;
        if (last === null || ev.commitTs > last) last = ev.commitTs;
      }
    }
    if ((ev.kind === 'chunk' || ev.last) && wrote) transactions++;
    if (ev.kind === 'chunk' || ev.last) wrote = false;
  });
  const iso = (us: bigint | null): string | null => (us === null ? null : new Date(Number(us / 1000n)).toISOString());
  return { records, transactions, rows, passedOver, firstCommit: iso(first), lastCommit: iso(last) };
}

/** Selected tables of the destination without a primary key (a replay passes over them). */
async function keylessTables(dest: pg.Client, cfg: PipelineConfig): Promise<Set<string>> {
  const r = await dest.query<{ name: string }>(
    `SELECT n.nspname || '.' || c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY($1::text[]) AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p')`,
    [cfg.selection.schemas],
  );
  return new Set(r.rows.map((x) => x.name));
}

/**
 * Ends a replay that is under way (e.g. one that stopped on a conflict under policy fail):
 * the position goes back to where apply was before the replay. Refused while apply runs.
 */
export async function cancelReplay(cfg: PipelineConfig, directionId: string, log: Logger): Promise<{ id: string; next: bigint } | null> {
  const d = directionById(cfg, directionId);
  const kafka = kafkaClient(cfg, `replay-${d.id}`, log);
  const admin = kafka.admin();
  const dest = await connect(clusterByName(cfg, d.to), `pgbridge-replay-${d.id}`);
  try {
    await refuseWhileRunning(dest, cfg, d, admin);
    await dest.query(REPLAY_COLUMNS_SQL);
    const r = await dest.query<{ id: string | null; next: string }>(
      `UPDATE cdc.apply_progress p SET next_offset = GREATEST(next_offset, replay_until), commit_lsn = GREATEST(commit_lsn, COALESCE(replay_lsn, commit_lsn)),
              replay_until = NULL, replay_id = NULL, replay_lsn = NULL, replay_tables = NULL, replay_since = NULL, replay_mode = NULL, updated_at = clock_timestamp()
        WHERE pipeline = $1 AND direction = $2 AND replay_until IS NOT NULL
        RETURNING (SELECT q.replay_id FROM cdc.apply_progress q WHERE q.pipeline = p.pipeline AND q.direction = p.direction AND q.partition = p.partition) AS id, next_offset::text AS next`,
      [cfg.pipeline, d.id],
    );
    const row = r.rows[0];
    return row ? { id: row.id ?? 'replay', next: BigInt(row.next) } : null;
  } finally {
    await dest.end().catch(() => undefined);
    await admin.close();
  }
}

/**
 * Refuses while the direction's apply runs. With replication origins, the running apply holds
 * its origin (one session at a time): this session takes it, so no apply can start until the
 * replay is stored. Without them (origin.method message), an apply is seen by its session
 * name on the destination or as a member of its consumer group.
 */
export async function refuseWhileRunning(dest: pg.Client, cfg: PipelineConfig, d: Direction, admin: KafkaAdmin | null): Promise<void> {
  const origin = originName(cfg, d.from);
  let held = false;
  let checked = false;
  if (cfg.origin.method !== 'message') {
    try {
      await dest.query('SELECT pg_replication_origin_session_setup($1)', [origin]);
      checked = true;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === '55006') held = true;
      else if (code !== '42704' && code !== '42501') throw err;
    }
  }
  const groupId = applyGroupId(cfg, d.id);
  const sessions = await dest.query<{ pid: string; addr: string | null; since: string; app: string }>(
    `SELECT pid::text, client_addr::text AS addr, backend_start::text AS since, application_name AS app FROM pg_stat_activity
      WHERE application_name = $1 AND datname = current_database() AND pid <> pg_backend_pid() ORDER BY backend_start`,
    [`pgbridge-apply-${d.id}`],
  );
  // (No admin: a rebuild into another database, whose apply has a group of its own.)
  const members = (checked && !held) || !admin ? [] : await admin.groupMembers(groupId).catch(() => []);
  if (!held && (checked || (sessions.rows.length === 0 && members.length === 0))) return;
  const who = [
    ...sessions.rows.map((s) => `session pid ${s.pid} on ${d.to}${s.addr ? ` from ${s.addr}` : ''} (application ${s.app}, connected ${s.since})`),
    ...members.map((m) => `consumer group ${groupId} member ${m.instanceId ?? m.memberId} (client ${m.clientId} at ${m.host})`),
  ];
  throw new PgBridgeError(
    'APPLY_RUNNING',
    `apply of ${d.id} is running${held ? ` (it holds replication origin ${origin} on ${d.to})` : ''}: ${who.join('; ') || 'instance not identified'}. Stop it (and any standby of it) first, then run pgbridge replay again; the next apply start re-applies the range.`,
    {
      details: { direction: d.id, origin, sessions: sessions.rows.map((s) => s.pid) },
    },
  );
}

export function formatReplayPlan(p: ReplayPlan): string {
  const lines: string[] = [];
  const count = p.until - p.from;
  const filters = [p.tables ? `tables ${p.tables.join(', ')}` : null, p.since ? `changes committed at or after ${p.since}` : null].filter((x) => x !== null);
  lines.push(
    `${p.dryRun ? 'would replay' : 'replay'} ${p.direction}: ${p.topic}/${p.partition} offsets ${p.from} to ${p.until - 1n} (${count} offset(s)); log starts at ${p.logStart}${filters.length ? `; only ${filters.join(' and ')}` : ''}`,
  );
  const s = p.summary;
  if (s) {
    lines.push(
      `  ${s.transactions} transaction(s) in ${s.records} record(s), source commits ${s.firstCommit ?? '-'} to ${s.lastCommit ?? '-'}${s.passedOver ? `; ${s.passedOver} row(s) passed over by the filters` : ''}`,
    );
    const names = Object.keys(s.rows).sort();
    if (!names.length) lines.push('  no rows would be written');
    for (const n of names) lines.push(`  ${n}: ${s.rows[n]} row(s)`);
    lines.push('  dry run: nothing was changed');
  } else {
    lines.push(
      `  stored: apply of ${p.direction} starts at offset ${p.from} when it next starts (replay id ${p.id}; its conflicts carry it in cdc.conflicts.replay_id)`,
    );
  }
  return lines.join('\n');
}
