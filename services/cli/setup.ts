/**
 * `pgbridge setup` and `pgbridge release`: the objects a pipeline owns on each cluster
 * (helper schema cdc, publication and slot cdc_<pipeline>_<cluster>, replication origins
 * cdc_<from>) and its Kafka topics. Both are idempotent.
 */
import type pg from 'pg';
import { loaderOriginName, originName, slotName, type PipelineConfig } from '../../shared/config.js';
import { ensureTopics, kafkaClient } from '../../shared/kafka.js';
import { PgBridgeError } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import { qi, ql, qt, withClient } from '../../shared/pg.js';
import { CONTROL_TABLE_SQL } from '../../shared/control-records.js';
import { isSelected } from '../../shared/selection.js';
import { ClusterNaming } from '../../shared/naming.js';
import { reconcilePublication } from './publication.js';
import { REPLAY_COLUMNS_SQL } from '../apply/replay-range.js';
import { dropDdlTrigger, installDdlTrigger } from '../../shared/ddl.js';

/**
 * The comment that marks a `cdc` schema as made by pgbridge setup: release drops only a
 * schema that carries it (and that the pipeline's role owns), never a `cdc` schema of
 * someone else's.
 */
export const HELPER_SCHEMA_MARK = 'pgbridge helper schema: created by pgbridge setup, dropped by pgbridge release with the last pipeline';

/** The helper schema's state on a cluster: missing, ours (marked), or someone else's. */
async function helperSchemaState(c: pg.Client): Promise<{ exists: boolean; marked: boolean; ownedByUs: boolean; owner: string; ourTables: boolean }> {
  const r = await c.query<{ marked: boolean; owned: boolean; owner: string; ours: boolean }>(
    `SELECT obj_description(n.oid, 'pg_namespace') = $1 AS marked,
            n.nspowner = (SELECT oid FROM pg_roles WHERE rolname = current_user) AS owned,
            pg_get_userbyid(n.nspowner) AS owner,
            to_regclass('cdc.apply_progress') IS NOT NULL AS ours
       FROM pg_namespace n WHERE n.nspname = 'cdc'`,
    [HELPER_SCHEMA_MARK],
  );
  const row = r.rows[0];
  const t = (v: unknown): boolean => v === true || v === 't';
  return row
    ? { exists: true, marked: t(row.marked), ownedByUs: t(row.owned), owner: row.owner, ourTables: t(row.ours) }
    : { exists: false, marked: false, ownedByUs: false, owner: '', ourTables: false };
}

export const HELPER_SCHEMA_SQL = `
CREATE TABLE IF NOT EXISTS cdc.heartbeat (
  pipeline text NOT NULL,
  cluster text NOT NULL,
  ts timestamptz NOT NULL,
  seq bigint NOT NULL,
  PRIMARY KEY (pipeline, cluster)
);
CREATE TABLE IF NOT EXISTS cdc.apply_progress (
  pipeline text NOT NULL,
  direction text NOT NULL,
  partition int NOT NULL,
  next_offset bigint NOT NULL,
  commit_lsn pg_lsn NOT NULL,
  commit_ts timestamptz,
  heartbeat_ts timestamptz,
  updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (pipeline, direction, partition)
);
CREATE TABLE IF NOT EXISTS cdc.conflicts (
  id bigserial PRIMARY KEY,
  detected_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  pipeline text NOT NULL,
  direction text NOT NULL,
  table_name text NOT NULL,
  key jsonb,
  kind text NOT NULL,
  incoming jsonb,
  existing jsonb,
  resolution text NOT NULL,
  policy text NOT NULL,
  source_cluster text NOT NULL,
  source_commit_lsn pg_lsn NOT NULL,
  source_commit_ts timestamptz,
  topic text NOT NULL,
  kafka_partition int NOT NULL,
  kafka_offset bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS cdc.snapshot_progress (
  pipeline text NOT NULL,
  table_name text NOT NULL,
  last_key jsonb,
  rows_done bigint NOT NULL DEFAULT 0,
  bytes_done bigint NOT NULL DEFAULT 0,
  rows_estimate bigint NOT NULL DEFAULT 0,
  done boolean NOT NULL DEFAULT false,
  consistent_lsn pg_lsn,
  started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (pipeline, table_name)
);
-- Key (or block) ranges of the initial sync: planned once, each marked done after Kafka has it.
CREATE TABLE IF NOT EXISTS cdc.snapshot_ranges (
  pipeline text NOT NULL,
  table_name text NOT NULL,
  range_no int NOT NULL,
  lower_bound jsonb,
  upper_bound jsonb,
  rows_done bigint NOT NULL DEFAULT 0,
  bytes_done bigint NOT NULL DEFAULT 0,
  done boolean NOT NULL DEFAULT false,
  updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (pipeline, table_name, range_no)
);
-- Destination tables that were empty when apply loaded the first snapshot chunk of a sync.
CREATE TABLE IF NOT EXISTS cdc.snapshot_loads (
  pipeline text NOT NULL,
  direction text NOT NULL,
  table_name text NOT NULL,
  snapshot text NOT NULL,
  was_empty boolean NOT NULL,
  PRIMARY KEY (pipeline, direction, table_name, snapshot)
);
-- Snapshot chunks loaded by apply's parallel loaders, by record: a replay skips them. Rows
-- below the stored apply position are deleted with the progress row that passes them.
CREATE TABLE IF NOT EXISTS cdc.chunk_loads (
  pipeline text NOT NULL,
  direction text NOT NULL,
  kafka_partition int NOT NULL,
  kafka_offset bigint NOT NULL,
  PRIMARY KEY (pipeline, direction, kafka_partition, kafka_offset)
);
CREATE TABLE IF NOT EXISTS cdc.barriers (
  pipeline text NOT NULL,
  direction text NOT NULL,
  id text NOT NULL,
  source_commit_lsn pg_lsn NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (pipeline, direction, id)
);
CREATE TABLE IF NOT EXISTS cdc.capture_state (
  pipeline text NOT NULL,
  cluster text NOT NULL,
  system_identifier numeric NOT NULL,
  timeline int NOT NULL,
  first_seen timestamptz NOT NULL DEFAULT clock_timestamp(),
  checked_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  -- Last record capture committed to its topic, with the slot position then: the check that
  -- the topic still holds what the slot has released (SLOT_AHEAD).
  published_offset bigint,
  published_lsn pg_lsn,
  published_at timestamptz,
  PRIMARY KEY (pipeline, cluster)
);
CREATE TABLE IF NOT EXISTS cdc.table_watermarks (
  pipeline text NOT NULL,
  direction text NOT NULL,
  table_name text NOT NULL,
  lsn pg_lsn NOT NULL,
  PRIMARY KEY (pipeline, direction, table_name)
);
-- Renames of columns and tables on the forward source (its DDL trigger writes them): apply of
-- the reverse direction maps changes written under an old name while the rename travelled.
CREATE TABLE IF NOT EXISTS cdc.ddl_renames (
  id bigserial PRIMARY KEY,
  pipeline text NOT NULL,
  kind text NOT NULL,
  schema_name text NOT NULL,
  table_name text NOT NULL,
  old_name text NOT NULL,
  new_name text NOT NULL,
  renamed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
REVOKE ALL ON cdc.ddl_renames FROM PUBLIC;
CREATE INDEX IF NOT EXISTS conflicts_pipeline ON cdc.conflicts (pipeline, direction, detected_at);
${CONTROL_TABLE_SQL}CREATE TABLE IF NOT EXISTS cdc.apply_throttle (
  pipeline text NOT NULL,
  direction text NOT NULL,
  rows_per_second double precision NOT NULL DEFAULT 0,
  bytes_per_second double precision NOT NULL DEFAULT 0,
  updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (pipeline, direction)
);
${REPLAY_COLUMNS_SQL}`;

export interface SelectedTable {
  /** The table's schema and name on the cluster it was read from. */
  readonly schema: string;
  readonly table: string;
  /** Its pipeline name (selection.tables key) when the cluster names it differently (rename). */
  readonly name?: string;
  readonly hasPrimaryKey: boolean;
  readonly replicaIdentity: 'default' | 'nothing' | 'full' | 'index';
}

/**
 * Tables of the selection that exist on a cluster (ordinary and partitioned tables). Given the
 * cluster, a table renamed there (selection.tables.<t>.rename) is found under its name there.
 */
export async function selectedTables(client: pg.Client, cfg: PipelineConfig, cluster?: string): Promise<SelectedTable[]> {
  const naming = cluster ? new ClusterNaming(cfg, cluster) : null;
  const r = await client.query<{ schema: string; table: string; has_pk: boolean; ri: string }>(
    `SELECT n.nspname AS schema, c.relname AS table,
            EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p') AS has_pk,
            c.relreplident AS ri
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname = ANY($1::text[])
      ORDER BY 1, 2`,
    [[...cfg.selection.schemas, ...(naming?.physicalSchemas ?? [])]],
  );
  const ri = { d: 'default', n: 'nothing', f: 'full', i: 'index' } as const;
  const out: SelectedTable[] = [];
  for (const t of r.rows) {
    const l: [string, string] | null = naming ? naming.logical(t.schema, t.table) : [t.schema, t.table];
    if (!l || !isSelected(cfg, l[0], l[1])) continue;
    const renamed = l[0] !== t.schema || l[1] !== t.table;
    out.push({
      schema: t.schema,
      table: t.table,
      ...(renamed ? { name: `${l[0]}.${l[1]}` } : {}),
      hasPrimaryKey: t.has_pk,
      replicaIdentity: ri[t.ri as keyof typeof ri] ?? 'default',
    });
  }
  return out;
}

/**
 * Setup and release of any pipeline on one cluster take this session lock: the helper schema is shared,
 * and a release that decides to drop it must not interleave with a setup that is creating it
 * (seen as `schema "cdc" does not exist` when two pipelines were set up and released at once).
 */
const HELPER_LOCK = [0x70676272, 0x63646300] as const; // 'pgbr', 'cdc\0'

async function withHelperLock<T>(client: pg.Client, fn: () => Promise<T>): Promise<T> {
  await client.query('SELECT pg_advisory_lock($1, $2)', [...HELPER_LOCK]);
  try {
    return await fn();
  } finally {
    await client.query('SELECT pg_advisory_unlock($1, $2)', [...HELPER_LOCK]).catch(() => undefined);
  }
}

/** Sets a cluster up; returns what changed in its publication (one line each, empty when nothing did). */
export function setupCluster(client: pg.Client, cfg: PipelineConfig, cluster: string, log: Logger): Promise<string[]> {
  return withHelperLock(client, () => setupClusterLocked(client, cfg, cluster, log));
}

/**
 * What a cluster that only receives needs (pgbridge replay --rebuild): the helper schema and the
 * replication origins of the directions into it; no publication, no slot.
 */
export function setupReceiver(client: pg.Client, cfg: PipelineConfig, cluster: string, log: Logger): Promise<void> {
  return withHelperLock(client, async () => {
    await ensureHelperSchema(client, cluster, log);
    await ensureOrigins(client, cfg, cluster);
  });
}

async function setupClusterLocked(client: pg.Client, cfg: PipelineConfig, cluster: string, log: Logger): Promise<string[]> {
  const changes: string[] = [];
  await ensureHelperSchema(client, cluster, log);
  const slot = slotName(cfg, cluster);
  for (const change of await reconcilePublication(client, cfg, cluster, slot)) {
    log.info({ cluster, publication: slot }, change);
    changes.push(`cluster ${cluster}: ${change}`);
  }
  const s = await client.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [slot]);
  if (s.rowCount === 0) {
    await client.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
    log.info({ cluster, slot }, 'replication slot created');
  }
  await ensureOrigins(client, cfg, cluster);
  // DDL: recorded on the forward source, warned about or refused on the reverse one (ddl.*).
  const ddl = await installDdlTrigger(client, cfg, cluster, log);
  if (ddl) log.info({ cluster, ddl }, 'DDL event trigger in place');
  return changes;
}

/** The helper schema cdc and its tables: created, adopted from an older setup, or refused when someone else's. */
async function ensureHelperSchema(client: pg.Client, cluster: string, log: Logger): Promise<void> {
  const helper = await helperSchemaState(client);
  if (!helper.exists) {
    await client.query('CREATE SCHEMA cdc');
    await client.query(`COMMENT ON SCHEMA cdc IS ${ql(HELPER_SCHEMA_MARK)}`);
    log.info({ cluster }, 'helper schema cdc created');
  } else if (!helper.marked) {
    // Made by a setup from before the mark (it holds our tables): adopt it. Anything else
    // named cdc belongs to someone else, and pgbridge neither writes into it nor drops it.
    if (!helper.ourTables) {
      throw new PgBridgeError(
        'PRECHECK',
        `cluster ${cluster} already has a schema "cdc" (owner ${helper.owner}) that pgbridge setup did not create; pgbridge keeps its helper tables there: rename that schema, or use a database without it`,
      );
    }
    if (helper.ownedByUs) await client.query(`COMMENT ON SCHEMA cdc IS ${ql(HELPER_SCHEMA_MARK)}`);
  }
  await client.query(HELPER_SCHEMA_SQL);
}

/** The replication origins of the directions into `cluster`. */
async function ensureOrigins(client: pg.Client, cfg: PipelineConfig, cluster: string): Promise<void> {
  for (const d of cfg.directions.filter((x) => x.to === cluster)) {
    for (const origin of [originName(cfg, d.from), ...loaderOrigins(cfg, d.from)]) {
      await client.query(`SELECT pg_replication_origin_create($1) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)`, [origin]);
    }
  }
}

/**
 * Creates everything a pipeline needs on both clusters and the Kafka topics, and brings an
 * existing publication in line with the selection. Idempotent. Returns what changed in the
 * publications (one line each; empty when they already matched).
 */
export async function setup(cfg: PipelineConfig, log: Logger): Promise<string[]> {
  const changes: string[] = [];
  for (const name of cfg.clusterNames) {
    changes.push(...(await withClient(cfg.clusters[name]!, 'pgbridge-setup', (c) => setupCluster(c, cfg, name, log))));
  }
  const admin = kafkaClient(cfg, 'setup', log).admin();
  try {
    const created = await ensureTopics(admin, cfg, cfg.apply.deadLetterTopic ? [cfg.apply.deadLetterTopic] : []);
    for (const t of created) log.info({ topic: t }, 'topic created');
  } finally {
    await admin.close();
  }
  return changes;
}

export interface ReleaseReport {
  readonly cluster: string;
  readonly dropped: string[];
}

/** Drops slot, publication, origins and the helper schema on every cluster; topics too when asked. Safe to run twice. */
export async function release(cfg: PipelineConfig, log: Logger, opts: { topics: boolean }): Promise<ReleaseReport[]> {
  const reports: ReleaseReport[] = [];
  for (const name of cfg.clusterNames) {
    const dropped: string[] = [];
    await withClient(cfg.clusters[name]!, 'pgbridge-release', (c) =>
      withHelperLock(c, async () => {
        const slot = slotName(cfg, name);
        const s = await c.query<{ active_pid: number | null }>('SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1', [slot]);
        if (s.rows[0]) {
          if (s.rows[0].active_pid) await c.query('SELECT pg_terminate_backend($1)', [s.rows[0].active_pid]);
          await dropSlot(c, slot);
          dropped.push(`slot ${slot}`);
        }
        if (await dropDdlTrigger(c, cfg.pipeline)) dropped.push('DDL event triggers');
        const p = await c.query('SELECT 1 FROM pg_publication WHERE pubname = $1', [slot]);
        if (p.rowCount) {
          await c.query(`DROP PUBLICATION ${qi(slot)}`);
          dropped.push(`publication ${slot}`);
        }
        for (const d of cfg.directions.filter((x) => x.to === name)) {
          // Loaders of a larger apply.snapshotLoaders set earlier go too.
          const o = await c.query<{ roname: string }>(`SELECT roname FROM pg_replication_origin WHERE roname = $1 OR roname LIKE $2 ORDER BY roname`, [
            originName(cfg, d.from),
            `${originName(cfg, d.from).replace(/_/g, '\\_')}~load%`,
          ]);
          for (const { roname } of o.rows) {
            await c.query('SELECT pg_replication_origin_drop($1)', [roname]);
            dropped.push(`origin ${roname}`);
          }
        }
        const h = await helperSchemaState(c);
        if (h.exists) {
          // The helper schema is shared by every pipeline on the cluster: it goes only with the
          // last one, and only when pgbridge made it (marked) and this role owns it.
          const others = await c.query(`SELECT pubname FROM pg_publication WHERE pubname LIKE 'cdc\\_%' AND pubname <> $1`, [slot]);
          if (others.rowCount === 0 && h.marked && h.ownedByUs) {
            await c.query('DROP SCHEMA cdc CASCADE');
            dropped.push('schema cdc');
          } else if (!h.ourTables) {
            log.warn({ cluster: name, owner: h.owner }, 'schema cdc was not created by pgbridge setup: left as it is');
          } else {
            for (const t of [
              'heartbeat',
              'apply_progress',
              'conflicts',
              'snapshot_progress',
              'snapshot_ranges',
              'snapshot_loads',
              'chunk_loads',
              'barriers',
              'table_watermarks',
              'capture_state',
              'control',
              'apply_throttle',
              'ddl_renames',
            ]) {
              await c.query(`DELETE FROM cdc.${t} WHERE pipeline = $1`, [cfg.pipeline]);
            }
            const why = others.rowCount
              ? `kept for ${others.rows.map((r: { pubname: string }) => r.pubname).join(', ')}`
              : `kept: ${h.marked ? `owned by ${h.owner}, not by ${cfg.clusters[name]!.user}` : 'pgbridge setup did not create it (no pgbridge comment)'}`;
            dropped.push(`rows of pipeline ${cfg.pipeline} in schema cdc (${why})`);
          }
        }
      }),
    );
    log.info({ cluster: name, dropped }, 'released');
    reports.push({ cluster: name, dropped });
  }
  if (opts.topics) {
    const admin = kafkaClient(cfg, 'release', log).admin();
    try {
      const existing = new Set(await admin.listTopics());
      const topics = cfg.directions.map((d) => d.topic).filter((t) => existing.has(t));
      if (topics.length) await admin.deleteTopics(topics);
      reports.push({ cluster: 'kafka', dropped: topics.map((t) => `topic ${t}`) });
    } finally {
      await admin.close();
    }
  }
  return reports;
}

/** A slot can stay "active" for a moment after its walsender was terminated: retry briefly. */
async function dropSlot(c: pg.Client, slot: string): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      await c.query(`SELECT pg_drop_replication_slot(${ql(slot)})`);
      return;
    } catch (err) {
      if (i >= 50 || (err as { code?: string }).code !== '55006') throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** The replication origins of the direction's snapshot loaders (apply.snapshotLoaders). */
function loaderOrigins(cfg: PipelineConfig, from: string): string[] {
  return Array.from({ length: cfg.apply.snapshotLoaders }, (_, i) => loaderOriginName(cfg, from, i + 1));
}
