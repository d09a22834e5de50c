/**
 * `pgbridge precheck`: what DTS checks before a task starts, for both clusters, Kafka and the
 * registry. Two stages: gatherFacts (read-only queries, never throws: an unreachable system
 * becomes a fact) → evaluateFacts (pure, unit-tested over hand-made facts). Every finding is
 * reported, never only the first; the caller decides what an error means (the CLI exits 1).
 */
import { connect as tcpConnect } from 'node:net';
import type pg from 'pg';
import { originName, policyFor, slotName, type ClusterConfig, type PipelineConfig, type RegistryConfig } from '../../shared/config.js';
import { ddlObjectNames, ddlTriggerMode } from '../../shared/ddl.js';
import { errorMessage } from '../../shared/errors.js';
import { kafkaClient, topicMaxMessageBytes } from '../../shared/kafka.js';
import { createLogger, type Logger } from '../../shared/log.js';
import { qi, qt, withClient } from '../../shared/pg.js';
import { registryGet } from '../../shared/registry.js';
import { grantFacts, missingGrants, type Service } from './grants.js';
import { evaluateExtensions, gatherExtensions, type ExtensionFacts } from './precheck-extensions.js';
import { selectedTables } from './setup.js';
import { ClusterNaming } from '../../shared/naming.js';
import { splitTableName } from '../../shared/selection.js';
import { evaluateTableSettings, gatherTableSettings, unpublishedColumns, type TableSettingsFacts } from './precheck-tables.js';

export type FindingLevel = 'error' | 'warning' | 'ok';

export interface Finding {
  readonly level: FindingLevel;
  readonly check: string;
  /** Cluster name, or `kafka` / `registry`. */
  readonly cluster?: string;
  /** The object concerned: setting, role, schema, table, sequence, topic, URL. */
  readonly object?: string;
  readonly message: string;
  /** What to run or change; printed on its own line. */
  readonly fix?: string;
}

export interface PrecheckOptions {
  /** DTS "Processing Mode of Conflicting Tables": error = "precheck and report errors" (default), ignore = warn and proceed. */
  readonly existingTables?: 'error' | 'ignore';
  /** The Kafka client's log lines go here; default: errors only (failures become findings anyway). */
  readonly log?: Logger;
  /** Time allowed for Kafka and the registry to answer; default 10 s. */
  readonly timeoutMs?: number;
}

/** Checks in report order (formatFindings groups by these). */
export const CHECKS = [
  'connection',
  'schemas',
  'selection',
  'table_settings',
  'wal_level',
  'wal_sender_timeout',
  'replication_slots',
  'wal_senders',
  'privileges',
  'service_roles',
  'replica_identity',
  'track_commit_timestamp',
  'destination_tables',
  'table_structure',
  'extensions',
  'sequences',
  'kafka',
  'kafka_transactions',
  'kafka_topics',
  'registry',
  'encryption',
] as const;
export type CheckName = (typeof CHECKS)[number];

// ───────────────────────────── facts ─────────────────────────────

export interface SequenceFacts {
  readonly column: string;
  /** Quoted, schema-qualified sequence name. */
  readonly sequence: string;
  /** Identity column (fix with ALTER TABLE … ALTER COLUMN) rather than a nextval() default. */
  readonly identity: boolean;
  readonly increment: bigint;
  readonly min: bigint;
  readonly max: bigint;
  readonly cycle: boolean;
  /** The value nextval() hands out next (start when never called or not readable). */
  readonly next: bigint;
}

export interface TableFacts {
  readonly schema: string;
  readonly table: string;
  readonly hasPrimaryKey: boolean;
  readonly replicaIdentity: 'default' | 'nothing' | 'full' | 'index';
  /** False when REPLICA IDENTITY USING INDEX names an index that no longer exists (behaves as NOTHING). */
  readonly replicaIdentityIndexOk: boolean;
  /** The configured user owns it (or is a member of the owner): needed to add it to a publication. */
  readonly owned: boolean;
  readonly privileges: { readonly select: boolean; readonly insert: boolean; readonly update: boolean; readonly delete: boolean; readonly truncate: boolean };
  readonly columns: readonly { readonly name: string; readonly type: string }[];
  /** Whether it holds a row; null when not looked at (not the forward destination) or not readable. */
  readonly hasRows: boolean | null;
  readonly sequences: readonly SequenceFacts[];
}

export interface ReachableClusterFacts {
  readonly reachable: true;
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly database: string;
  readonly user: string;
  readonly serverVersion: string;
  readonly serverVersionNum: number;
  /** TLS protocol of this session (pg_stat_ssl), null when not encrypted; undefined when not known. */
  readonly tls?: string | null;
  readonly walLevel: string;
  readonly trackCommitTimestamp: boolean;
  readonly maxReplicationSlots: number;
  readonly maxWalSenders: number;
  /** 0 = disabled. */
  readonly walSenderTimeoutMs: number;
  readonly slotsInUse: number;
  readonly sendersInUse: number;
  /** Our slot cdc_<pipeline>_<cluster>; null when it does not exist yet. */
  readonly ownSlot: { readonly active: boolean } | null;
  readonly role: {
    readonly superuser: boolean;
    readonly replication: boolean;
    readonly originSessionSetup: boolean;
    readonly originXactSetup: boolean;
    readonly setSessionReplicationRole: boolean;
    readonly createOnDatabase: boolean;
  };
  readonly cdcSchemaExists: boolean;
  readonly publicationExists: boolean;
  /** The pipeline's DDL event trigger (ddl.*) is in place. */
  readonly ddlTriggerExists?: boolean;
  /** Selected schemas that exist, and whether the user has USAGE on each. */
  readonly schemas: readonly { readonly name: string; readonly usage: boolean }[];
  readonly tables: readonly TableFacts[];
  /** The roles clusters.<name>.capture/.apply name, and what each lacks of what `pgbridge grants` gives. */
  readonly serviceRoles?: readonly { readonly service: Service; readonly role: string; readonly missing: readonly string[] }[];
  /** Set when the table catalog could not be read (tables is then empty). */
  readonly tablesError?: string;
}

export interface UnreachableClusterFacts {
  readonly reachable: false;
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly database: string;
  readonly user: string;
  readonly reason: string;
}

export type ClusterFacts = ReachableClusterFacts | UnreachableClusterFacts;

export type TopicFacts =
  | { readonly name: string; readonly exists: false }
  | {
      readonly name: string;
      readonly exists: true;
      readonly partitions: number;
      readonly replicationFactor: number;
      readonly cleanupPolicy: string;
      /** -1 = keep forever */
      readonly retentionMs: number;
      readonly retentionBytes: number;
      /** The topic's max.message.bytes (unknown when the broker did not say). */
      readonly maxMessageBytes?: number;
    };

export type KafkaFacts =
  | { readonly reachable: false; readonly brokers: string; readonly reason: string }
  | {
      readonly reachable: true;
      readonly brokers: string;
      readonly brokerCount: number;
      /** Broker defaults for the transaction log; undefined when the broker did not say. */
      readonly transactionStateLogReplicationFactor?: number;
      readonly transactionStateLogMinIsr?: number;
      readonly topics: readonly TopicFacts[];
      readonly topicsError?: string;
    };

export interface RegistryFacts {
  readonly url: string;
  /** HTTP status of GET <url>/subjects, when an answer came. */
  readonly status?: number;
  readonly reason?: string;
}

export interface PrecheckFacts {
  readonly clusters: Readonly<Record<string, ClusterFacts>>;
  readonly kafka: KafkaFacts;
  readonly registry: RegistryFacts;
  /** The tables selection.tables names, per cluster (precheck-tables.ts). */
  readonly tableSettings?: TableSettingsFacts;
  /** Extensions of the forward source the selected objects use, against the destination (precheck-extensions.ts). */
  readonly extensions?: ExtensionFacts;
}

/** Runs every check and returns every finding (errors, warnings and ok lines). Never throws for an unreachable system. */
export async function precheck(cfg: PipelineConfig, opts: PrecheckOptions = {}): Promise<Finding[]> {
  return evaluateFacts(cfg, await gatherFacts(cfg, opts), opts);
}

/** Reads everything the checks need, concurrently. Read-only; never throws for an unreachable system. */
export async function gatherFacts(cfg: PipelineConfig, opts: PrecheckOptions = {}): Promise<PrecheckFacts> {
  const log = opts.log ?? createLogger('cli-precheck', 'error');
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const forwardTo = cfg.directions[0].to;
  const [clusters, kafka, registry, tableSettings, extensions] = await Promise.all([
    Promise.all(cfg.clusterNames.map((name) => gatherCluster(cfg, cfg.clusters[name]!, name === forwardTo))),
    gatherKafka(cfg, log, timeoutMs),
    gatherRegistry(cfg.registry, timeoutMs),
    gatherTableSettings(cfg),
    gatherExtensions(cfg),
  ]);
  return { clusters: Object.fromEntries(clusters.map((c) => [c.name, c])), kafka, registry, tableSettings, extensions };
}

type Row = Record<string, string | null>;
const bool = (v: string | boolean | null | undefined): boolean => v === true || v === 't' || v === 'true' || v === 'on';
const num = (v: string | null | undefined): number => Number(v ?? 0);

async function gatherCluster(cfg: PipelineConfig, c: ClusterConfig, countRows: boolean): Promise<ClusterFacts> {
  const base = { name: c.name, host: c.host, port: c.port, database: c.database, user: c.user };
  try {
    return await withClient(c, 'pgbridge-precheck', async (client) => {
      const s = (
        await client.query<Row>(
          `SELECT current_setting('server_version') AS version,
                  current_setting('server_version_num') AS version_num,
                  current_setting('wal_level') AS wal_level,
                  current_setting('track_commit_timestamp') AS tct,
                  current_setting('max_replication_slots') AS max_slots,
                  current_setting('max_wal_senders') AS max_senders,
                  (SELECT setting FROM pg_settings WHERE name = 'wal_sender_timeout') AS wst_ms,
                  (SELECT count(*) FROM pg_replication_slots) AS slots,
                  (SELECT count(*) FROM pg_stat_replication) AS senders,
                  (SELECT active::text FROM pg_replication_slots WHERE slot_name = $1) AS own_slot_active,
                  r.rolsuper AS superuser, r.rolreplication AS replication,
                  (SELECT CASE WHEN ssl THEN version END FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS tls,
                  has_database_privilege(current_database(), 'CREATE') AS can_create,
                  EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'cdc') AS cdc_schema,
                  EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1) AS publication,
                  EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = $2) AS ddl_trigger,
                  (SELECT bool_or(has_function_privilege(p.oid, 'EXECUTE')) FROM pg_proc p
                    WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname = 'pg_replication_origin_session_setup') AS origin_session,
                  (SELECT bool_or(has_function_privilege(p.oid, 'EXECUTE')) FROM pg_proc p
                    WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname = 'pg_replication_origin_xact_setup') AS origin_xact
             FROM pg_roles r WHERE r.rolname = current_user`,
          [slotName(cfg, c.name), ddlObjectNames(cfg.pipeline).onEnd],
        )
      ).rows[0]!;
      const versionNum = num(s.version_num);
      const superuser = bool(s.superuser);
      // SET privilege on a superuser-only parameter exists from PostgreSQL 15 (GRANT SET ON PARAMETER).
      const srr =
        superuser ||
        (versionNum >= 150000 &&
          bool((await client.query<Row>(`SELECT has_parameter_privilege('session_replication_role', 'SET') AS ok`)).rows[0]!.ok));
      const schemas = (
        await client.query<Row>(
          `SELECT nspname AS name, has_schema_privilege(oid, 'USAGE') AS usage FROM pg_namespace WHERE nspname = ANY($1::text[]) ORDER BY 1`,
          [cfg.selection.schemas],
        )
      ).rows.map((r) => ({ name: r.name!, usage: bool(r.usage) }));
      let tables: TableFacts[] = [];
      let tablesError: string | undefined;
      try {
        tables = await gatherTables(client, cfg, countRows, c.name);
      } catch (err) {
        tablesError = errorMessage(err);
      }
      const serviceRoles: { service: Service; role: string; missing: string[] }[] = [];
      const roles = cfg.clusters[c.name]!.roles;
      if (roles?.capture || roles?.apply) {
        const gf = await grantFacts(cfg, client, c.name);
        for (const service of ['capture', 'apply'] as const) {
          const role = roles[service]?.user;
          if (role) serviceRoles.push({ service, role, missing: await missingGrants(client, cfg, c.name, service, role, gf) });
        }
      }
      return {
        reachable: true as const,
        ...base,
        ...(serviceRoles.length ? { serviceRoles } : {}),
        serverVersion: s.version ?? '',
        serverVersionNum: versionNum,
        tls: s.tls ?? null,
        walLevel: s.wal_level ?? '',
        trackCommitTimestamp: bool(s.tct),
        maxReplicationSlots: num(s.max_slots),
        maxWalSenders: num(s.max_senders),
        walSenderTimeoutMs: num(s.wst_ms),
        slotsInUse: num(s.slots),
        sendersInUse: num(s.senders),
        ownSlot: s.own_slot_active === null || s.own_slot_active === undefined ? null : { active: bool(s.own_slot_active) },
        role: {
          superuser,
          replication: bool(s.replication),
          originSessionSetup: bool(s.origin_session),
          originXactSetup: bool(s.origin_xact),
          setSessionReplicationRole: srr,
          createOnDatabase: bool(s.can_create),
        },
        cdcSchemaExists: bool(s.cdc_schema),
        publicationExists: bool(s.publication),
        ddlTriggerExists: bool(s.ddl_trigger),
        schemas,
        tables,
        ...(tablesError === undefined ? {} : { tablesError }),
      };
    });
  } catch (err) {
    const code = (err as { code?: string }).code;
    const msg = errorMessage(err);
    return { reachable: false, ...base, reason: code && !msg.includes(code) ? `${msg} (${code})` : msg };
  }
}

/** Facts of the selected tables of a cluster, under the pipeline's table and column names (a table renamed there is read under its own). */
async function gatherTables(client: pg.Client, cfg: PipelineConfig, countRows: boolean, cluster: string): Promise<TableFacts[]> {
  const selected = await selectedTables(client, cfg, cluster);
  const naming = new ClusterNaming(cfg, cluster);
  if (selected.length === 0) return [];
  const params = [selected.map((t) => t.schema), selected.map((t) => t.table)];
  const sel = `JOIN unnest($1::text[], $2::text[]) AS sel(s, t) ON n.nspname = sel.s AND c.relname = sel.t`;
  const key = (s: string | null | undefined, t: string | null | undefined): string => `${s}\u0000${t}`;
  const details = new Map<string, Row>();
  for (const r of (
    await client.query<Row>(
      `SELECT n.nspname AS schema, c.relname AS table,
              pg_has_role(c.relowner, 'USAGE') AS owned,
              has_table_privilege(c.oid, 'SELECT') AS p_select, has_table_privilege(c.oid, 'INSERT') AS p_insert,
              has_table_privilege(c.oid, 'UPDATE') AS p_update, has_table_privilege(c.oid, 'DELETE') AS p_delete,
              has_table_privilege(c.oid, 'TRUNCATE') AS p_truncate,
              (c.relreplident <> 'i' OR EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)) AS ri_ok
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace ${sel}`,
      params,
    )
  ).rows) {
    details.set(key(r.schema, r.table), r);
  }
  const columns = new Map<string, { name: string; type: string }[]>();
  for (const r of (
    await client.query<Row>(
      `SELECT n.nspname AS schema, c.relname AS table, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace ${sel}
        WHERE a.attnum > 0 AND NOT a.attisdropped
        ORDER BY 1, 2, a.attnum`,
      params,
    )
  ).rows) {
    const k = key(r.schema, r.table);
    columns.set(k, [...(columns.get(k) ?? []), { name: r.name!, type: r.type! }]);
  }
  // Sequences behind a column: identity columns (internal dependency) and nextval() defaults
  // (the default expression depends on the sequence, owned or not).
  const sequences = new Map<string, SequenceFacts[]>();
  for (const r of (
    await client.query<Row>(
      `SELECT n.nspname AS schema, c.relname AS table, a.attname AS column, (a.attidentity <> '') AS identity,
              sn.nspname AS seq_schema, sc.relname AS seq_name,
              s.seqstart AS start, s.seqincrement AS increment, s.seqmin AS min, s.seqmax AS max, s.seqcycle AS cycle,
              has_sequence_privilege(sc.oid, 'SELECT') AS readable
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace ${sel}
         JOIN LATERAL (
               SELECT d.objid AS seqoid FROM pg_depend d
                WHERE a.attidentity <> '' AND d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                  AND d.refobjid = c.oid AND d.refobjsubid = a.attnum AND d.deptype = 'i'
               UNION
               SELECT d.refobjid FROM pg_attrdef ad
                 JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
                WHERE ad.adrelid = c.oid AND ad.adnum = a.attnum AND pg_get_expr(ad.adbin, ad.adrelid) LIKE '%nextval(%'
              ) q ON true
         JOIN pg_class sc ON sc.oid = q.seqoid AND sc.relkind = 'S'
         JOIN pg_namespace sn ON sn.oid = sc.relnamespace
         JOIN pg_sequence s ON s.seqrelid = sc.oid
        WHERE a.attnum > 0 AND NOT a.attisdropped
        ORDER BY 1, 2, a.attnum`,
      params,
    )
  ).rows) {
    const seq = qt(r.seq_schema!, r.seq_name!);
    const increment = BigInt(r.increment!);
    let next = BigInt(r.start!);
    if (bool(r.readable)) {
      // pg_sequences hides is_called; after ALTER SEQUENCE … RESTART the next value is last_value itself.
      const cur = (await client.query<Row>(`SELECT last_value, is_called FROM ${seq}`)).rows[0]!;
      next = bool(cur.is_called) ? BigInt(cur.last_value!) + increment : BigInt(cur.last_value!);
    }
    const k = key(r.schema, r.table);
    sequences.set(k, [
      ...(sequences.get(k) ?? []),
      { column: r.column!, sequence: seq, identity: bool(r.identity), increment, min: BigInt(r.min!), max: BigInt(r.max!), cycle: bool(r.cycle), next },
    ]);
  }
  const out: TableFacts[] = [];
  for (const t of selected) {
    const k = key(t.schema, t.table);
    const d = details.get(k) ?? {};
    const privileges = { select: bool(d.p_select), insert: bool(d.p_insert), update: bool(d.p_update), delete: bool(d.p_delete), truncate: bool(d.p_truncate) };
    let hasRows: boolean | null = null;
    if (countRows && privileges.select) {
      hasRows = bool((await client.query<Row>(`SELECT EXISTS (SELECT 1 FROM ${qt(t.schema, t.table)}) AS x`)).rows[0]!.x);
    }
    const [schema, table] = t.name ? splitTableName(t.name) : [t.schema, t.table];
    out.push({
      schema,
      table,
      // selectedTables reads has_pk through RAW_TYPES, which hands booleans back as 't'/'f' text.
      hasPrimaryKey: (t.hasPrimaryKey as unknown) === true || (t.hasPrimaryKey as unknown) === 't',
      replicaIdentity: t.replicaIdentity,
      replicaIdentityIndexOk: bool(d.ri_ok ?? 't'),
      owned: bool(d.owned),
      privileges,
      columns: (columns.get(k) ?? []).map((c) => ({ ...c, name: naming.logicalColumn(schema, table, c.name) })),
      hasRows,
      sequences: sequences.get(k) ?? [],
    });
  }
  return out;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** Resolves null when host:port accepts a TCP connection, else the reason. */
function probeTcp(hostPort: string, timeoutMs: number): Promise<string | null> {
  const i = hostPort.lastIndexOf(':');
  const host = hostPort.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(hostPort.slice(i + 1));
  return new Promise((resolve) => {
    const sock = tcpConnect({ host, port });
    const done = (reason: string | null): void => {
      sock.destroy();
      resolve(reason);
    };
    sock.setTimeout(timeoutMs, () => done(`no TCP connection within ${timeoutMs} ms`));
    sock.once('connect', () => done(null));
    sock.once('error', (err) => done(errorMessage(err)));
  });
}

async function gatherKafka(cfg: PipelineConfig, log: Logger, timeoutMs: number): Promise<KafkaFacts> {
  const brokers = cfg.kafka.brokers.join(',');
  // A plain TCP probe first: it names the socket error (the client would only time out here)
  // and spares its reconnect attempts when no broker listens at all.
  const probes = await Promise.all(cfg.kafka.brokers.map((b) => probeTcp(b, timeoutMs)));
  if (probes.every((p) => p !== null)) return { reachable: false, brokers, reason: probes.map((p, i) => `${cfg.kafka.brokers[i]}: ${p}`).join('; ') };
  const admin = kafkaClient(cfg, 'precheck', log).admin({ retries: 0 });
  try {
    let brokerIds: number[];
    try {
      brokerIds = await withTimeout(admin.brokers(), timeoutMs, 'metadata');
    } catch (err) {
      return { reachable: false, brokers, reason: errorMessage(err) };
    }
    let txRf: number | undefined;
    let txMinIsr: number | undefined;
    const first = brokerIds[0];
    if (first !== undefined) {
      try {
        const r = await withTimeout(admin.describeConfigs('broker', [String(first)], ['transaction.state.log.replication.factor', 'transaction.state.log.min.isr']), timeoutMs, 'describeConfigs');
        const c = r.get(String(first));
        const rf = c?.get('transaction.state.log.replication.factor');
        const isr = c?.get('transaction.state.log.min.isr');
        if (rf != null) txRf = Number(rf);
        if (isr != null) txMinIsr = Number(isr);
      } catch {
        // Not every broker lets a client read its config (ACLs); the check then says nothing.
      }
    }
    const names = cfg.directions.map((d) => d.topic);
    let topics: TopicFacts[] = [];
    let topicsError: string | undefined;
    try {
      const existing = new Set(await withTimeout(admin.listTopics(), timeoutMs, 'listTopics'));
      const present = names.filter((t) => existing.has(t));
      const meta = new Map<string, { partition: number; replicas: number }[]>();
      for (const t of present) meta.set(t, await withTimeout(admin.topicPartitions(t), timeoutMs, 'metadata'));
      const conf = present.length ? await withTimeout(admin.describeConfigs('topic', present, ['cleanup.policy', 'retention.ms', 'retention.bytes', 'max.message.bytes']), timeoutMs, 'describeConfigs') : new Map<string, Map<string, string | null>>();
      topics = names.map((name): TopicFacts => {
        if (!existing.has(name)) return { name, exists: false };
        const m = meta.get(name) ?? [];
        const entries = conf.get(name) ?? new Map<string, string | null>();
        return {
          name,
          exists: true,
          partitions: m.length,
          replicationFactor: m[0]?.replicas ?? 0,
          cleanupPolicy: entries.get('cleanup.policy') ?? 'delete',
          retentionMs: Number(entries.get('retention.ms') ?? '604800000'),
          retentionBytes: Number(entries.get('retention.bytes') ?? '-1'),
          ...(entries.get('max.message.bytes') ? { maxMessageBytes: Number(entries.get('max.message.bytes')) } : {}),
        };
      });
    } catch (err) {
      topicsError = errorMessage(err);
    }
    return {
      reachable: true,
      brokers,
      brokerCount: brokerIds.length,
      ...(txRf === undefined ? {} : { transactionStateLogReplicationFactor: txRf }),
      ...(txMinIsr === undefined ? {} : { transactionStateLogMinIsr: txMinIsr }),
      topics,
      ...(topicsError === undefined ? {} : { topicsError }),
    };
  } finally {
    await admin.close();
  }
}

async function gatherRegistry(registry: RegistryConfig, timeoutMs: number): Promise<RegistryFacts> {
  // registry.url never holds credentials (config moves them to username/password).
  const subjects = `${registry.url}/subjects`;
  try {
    return { url: subjects, status: await registryGet(registry, '/subjects', timeoutMs) };
  } catch (err) {
    return { url: subjects, reason: errorMessage(err) };
  }
}

// ───────────────────────────── evaluation ─────────────────────────────

/** A sequence's future values: anchor + k·step (k ≥ 0) inside [lo, hi]; step > 0. */
interface FutureValues {
  readonly anchor: bigint;
  readonly step: bigint;
  readonly lo: bigint;
  readonly hi: bigint;
  /** A cycling sequence wraps around: every value in [lo, hi] may come. */
  readonly wraps: boolean;
}

function futureValues(s: Pick<SequenceFacts, 'increment' | 'min' | 'max' | 'cycle' | 'next'>): FutureValues | null {
  const step = s.increment < 0n ? -s.increment : s.increment;
  if (step === 0n) return null;
  if (s.cycle) return { anchor: s.next, step, lo: s.min, hi: s.max, wraps: true };
  const [lo, hi] = s.increment > 0n ? [s.next, s.max] : [s.min, s.next];
  if (lo > hi) return null; // exhausted: hands out nothing more
  return { anchor: s.next, step, lo, hi, wraps: false };
}

const mod = (a: bigint, m: bigint): bigint => ((a % m) + m) % m;

function egcd(a: bigint, b: bigint): [bigint, bigint, bigint] {
  if (b === 0n) return [a, 1n, 0n];
  const [g, x, y] = egcd(b, a % b);
  return [g, y, x - (a / b) * y];
}

/**
 * Whether two sequences can hand out the same value in future: both value progressions meet
 * inside the overlap of their ranges (CRT). Cycling sequences are compared by range only.
 */
export function sequencesOverlap(a: Pick<SequenceFacts, 'increment' | 'min' | 'max' | 'cycle' | 'next'>, b: Pick<SequenceFacts, 'increment' | 'min' | 'max' | 'cycle' | 'next'>): boolean {
  const fa = futureValues(a);
  const fb = futureValues(b);
  if (!fa || !fb) return false;
  const lo = fa.lo > fb.lo ? fa.lo : fb.lo;
  const hi = fa.hi < fb.hi ? fa.hi : fb.hi;
  if (lo > hi) return false;
  if (fa.wraps || fb.wraps) return true;
  // x ≡ fa.anchor (mod fa.step), x ≡ fb.anchor (mod fb.step)
  const [g, p] = egcd(fa.step, fb.step);
  const diff = fb.anchor - fa.anchor;
  if (mod(diff, g) !== 0n) return false;
  const m2 = fb.step / g;
  const k = mod((diff / g) * p, m2);
  const lcm = fa.step * m2;
  const x0 = fa.anchor + fa.step * k;
  // Smallest common value ≥ lo.
  const x = lo + mod(x0 - lo, lcm);
  return x <= hi;
}

function at(c: { name: string; host: string; port: number }): string {
  return `${c.name} (${c.host}:${c.port})`;
}

function list(items: readonly string[], max = 10): string {
  return items.length <= max ? items.join(', ') : `${items.slice(0, max).join(', ')} and ${items.length - max} more`;
}

const CLUSTER_CHECKS_SKIPPED = 'wal_level, wal_sender_timeout, replication slots, wal senders, privileges, schemas, replica identity, track_commit_timestamp, and the table, structure and sequence comparisons with the other cluster';

/** Pure: turns gathered facts into findings, every one of them, in CHECKS order per system. */
export function evaluateFacts(cfg: PipelineConfig, facts: PrecheckFacts, opts: Pick<PrecheckOptions, 'existingTables'> = {}): Finding[] {
  const out: Finding[] = [];
  const add = (f: Finding): void => {
    out.push(f);
  };
  const reachable: ReachableClusterFacts[] = [];
  for (const name of cfg.clusterNames) {
    const c = facts.clusters[name];
    if (!c) continue;
    if (!c.reachable) {
      add({
        level: 'error',
        check: 'connection',
        cluster: name,
        object: `${c.host}:${c.port}`,
        message: `cluster ${at(c)}: cannot connect to database ${c.database} as ${c.user}: ${c.reason}; skipped for this cluster: ${CLUSTER_CHECKS_SKIPPED}`,
        fix: `check clusters.${name} (host, port, database, user, password) and that PostgreSQL accepts connections from here (listen_addresses, pg_hba.conf)`,
      });
      continue;
    }
    reachable.push(c);
    add({ level: 'ok', check: 'connection', cluster: name, object: `${c.host}:${c.port}`, message: `cluster ${at(c)}: connected to ${c.database} as ${c.user} (PostgreSQL ${c.serverVersion})` });
  }
  for (const c of reachable) evaluateCluster(cfg, c, add);
  evaluateSelection(cfg, reachable, add);
  if (facts.tableSettings) evaluateTableSettings(cfg, facts.tableSettings, add);
  evaluateTrackCommitTimestamp(cfg, reachable, add);
  const from = facts.clusters[cfg.directions[0].from];
  const to = facts.clusters[cfg.directions[0].to];
  if (from?.reachable && to?.reachable && !from.tablesError && !to.tablesError) {
    evaluatePair(cfg, from, to, opts.existingTables ?? 'error', add);
    if (facts.extensions) evaluateExtensions(cfg, facts.extensions, add);
  }
  evaluateKafka(cfg, facts.kafka, add);
  evaluateRegistry(facts.registry, add);
  evaluateEncryption(cfg, facts, add);
  return out;
}

const isLoopback = (host: string): boolean => host === 'localhost' || host === '::1' || /^127\./.test(host);

/**
 * Whether each connection is encrypted: PostgreSQL as the server reports the session
 * (pg_stat_ssl), Kafka and the registry as configured (they were reached with those
 * settings). Plain text to a host other than loopback is a warning.
 */
function evaluateEncryption(cfg: PipelineConfig, facts: PrecheckFacts, add: (f: Finding) => void): void {
  const report = (cluster: string, object: string, encrypted: boolean, message: string, fix: string): void => {
    const host = object.replace(/^\w+:\/\//, '').replace(/[:/].*$/, '');
    if (encrypted || isLoopback(host)) add({ level: 'ok', check: 'encryption', cluster, object, message });
    else add({ level: 'warning', check: 'encryption', cluster, object, message, fix });
  };
  for (const name of cfg.clusterNames) {
    const c = facts.clusters[name];
    if (!c?.reachable || c.tls === undefined) continue;
    const mode = cfg.clusters[name]!.sslMode;
    const message = c.tls
      ? `cluster ${at(c)}: encrypted (${c.tls}, sslMode ${mode}${mode === 'require' ? ': the server certificate is not checked' : ''})`
      : `cluster ${at(c)}: not encrypted (sslMode ${mode})`;
    report(name, `${c.host}:${c.port}`, !!c.tls, message, `set clusters.${name}.sslMode: verify-full and sslRootCert (docs/configuration.md)`);
  }
  if (facts.kafka.reachable) {
    const { ssl, sasl } = cfg.kafka;
    const protocol = `${sasl ? 'SASL_' : ''}${ssl ? 'SSL' : 'PLAINTEXT'}`;
    const message = `Kafka at ${facts.kafka.brokers}: ${protocol}${sasl ? ` (${sasl.mechanism.toUpperCase()} as ${sasl.username})` : ''}${ssl ? '' : ', not encrypted'}`;
    report('kafka', cfg.kafka.brokers[0]!, !!ssl, message, 'set kafka.ssl (and kafka.sasl) (docs/configuration.md)');
  }
  if (facts.registry.status !== undefined) {
    const r = cfg.registry;
    const tls = r.url.startsWith('https:');
    const message = `schema registry at ${r.url}: ${tls ? 'HTTPS' : 'HTTP, not encrypted'}${r.username !== undefined ? `, basic auth as ${r.username}` : ''}`;
    report('registry', r.url, tls, message, 'use an https:// registry.url (and registry.caFile) (docs/configuration.md)');
  }
}

function evaluateCluster(cfg: PipelineConfig, c: ReachableClusterFacts, add: (f: Finding) => void): void {
  const where = `cluster ${at(c)}`;
  const name = c.name;
  const restart = 'then restart PostgreSQL (the setting takes effect only at server start)';

  // Schemas
  for (const s of cfg.selection.schemas) {
    const found = c.schemas.find((x) => x.name === s);
    if (!found) {
      const dest = cfg.directions[0].to === name;
      add({
        level: 'error',
        check: 'schemas',
        cluster: name,
        object: s,
        message: `${where}: selected schema ${qi(s)} does not exist in database ${c.database}; two-way sync needs it on both clusters`,
        fix: dest ? `CREATE SCHEMA ${qi(s)}; on ${name} (the initial schema sync ${cfg.directions[0].id} creates its tables), or remove it from selection.schemas` : `CREATE SCHEMA ${qi(s)}; on ${name} with its tables, or remove it from selection.schemas`,
      });
    }
  }
  if (cfg.selection.schemas.every((s) => c.schemas.some((x) => x.name === s))) {
    add({ level: 'ok', check: 'schemas', cluster: name, message: `${where}: selected schema(s) ${cfg.selection.schemas.map(qi).join(', ')} exist` });
  }

  // wal_level
  if (c.walLevel !== 'logical') {
    add({
      level: 'error',
      check: 'wal_level',
      cluster: name,
      object: 'wal_level',
      message: `${where}: wal_level is ${c.walLevel}; logical decoding (capture) needs logical`,
      fix: `ALTER SYSTEM SET wal_level = logical; ${restart}`,
    });
  } else add({ level: 'ok', check: 'wal_level', cluster: name, object: 'wal_level', message: `${where}: wal_level = logical` });

  // wal_sender_timeout vs capture's status interval
  const statusMs = cfg.capture.statusIntervalSeconds * 1000;
  if (c.walSenderTimeoutMs > 0 && statusMs >= c.walSenderTimeoutMs) {
    add({
      level: 'error',
      check: 'wal_sender_timeout',
      cluster: name,
      object: 'wal_sender_timeout',
      message: `${where}: wal_sender_timeout is ${c.walSenderTimeoutMs} ms but capture.statusIntervalSeconds is ${cfg.capture.statusIntervalSeconds} s; the server would drop the replication connection between two status updates`,
      fix: `set capture.statusIntervalSeconds below ${c.walSenderTimeoutMs / 1000}, or ALTER SYSTEM SET wal_sender_timeout = '${Math.ceil((statusMs * 3) / 1000)}s'; SELECT pg_reload_conf();`,
    });
  } else add({ level: 'ok', check: 'wal_sender_timeout', cluster: name, object: 'wal_sender_timeout', message: `${where}: wal_sender_timeout (${c.walSenderTimeoutMs === 0 ? 'disabled' : `${c.walSenderTimeoutMs} ms`}) is above capture.statusIntervalSeconds` });

  // Replication slots and wal senders
  const slot = slotName(cfg, name);
  if (c.ownSlot) {
    add({ level: 'ok', check: 'replication_slots', cluster: name, object: slot, message: `${where}: replication slot ${slot} already exists` });
  } else if (c.maxReplicationSlots - c.slotsInUse < 1) {
    add({
      level: 'error',
      check: 'replication_slots',
      cluster: name,
      object: 'max_replication_slots',
      message: `${where}: max_replication_slots is ${c.maxReplicationSlots} and ${c.slotsInUse} slot(s) exist; none is free for slot ${slot}`,
      fix: `ALTER SYSTEM SET max_replication_slots = ${c.slotsInUse + 1}; ${restart} (or drop unused slots: SELECT slot_name, active FROM pg_replication_slots;)`,
    });
  } else add({ level: 'ok', check: 'replication_slots', cluster: name, object: 'max_replication_slots', message: `${where}: ${c.maxReplicationSlots - c.slotsInUse} of ${c.maxReplicationSlots} replication slot(s) free for ${slot}` });
  // An active own slot already holds its wal sender; otherwise capture needs a free one.
  const sendersNeeded = c.ownSlot?.active ? 0 : 1;
  if (c.maxWalSenders - c.sendersInUse < sendersNeeded) {
    add({
      level: 'error',
      check: 'wal_senders',
      cluster: name,
      object: 'max_wal_senders',
      message: `${where}: max_wal_senders is ${c.maxWalSenders} and ${c.sendersInUse} wal sender(s) are in use; none is free for capture's replication connection`,
      fix: `ALTER SYSTEM SET max_wal_senders = ${c.sendersInUse + 1}; ${restart}`,
    });
  } else add({ level: 'ok', check: 'wal_senders', cluster: name, object: 'max_wal_senders', message: `${where}: ${c.maxWalSenders - c.sendersInUse} of ${c.maxWalSenders} wal sender(s) free` });

  // Privileges
  const r = c.role;
  const user = qi(c.user);
  const role = `${where}: role ${c.user}`;
  let privilegeProblems = 0;
  const priv = (f: Omit<Finding, 'check' | 'cluster'>): void => {
    if (f.level !== 'ok') privilegeProblems++;
    add({ check: 'privileges', cluster: name, ...f });
  };
  if (!r.superuser && !r.replication) {
    priv({ level: 'error', object: c.user, message: `${role} has neither REPLICATION nor superuser; capture cannot create or read the replication slot ${slot}`, fix: `ALTER ROLE ${user} WITH REPLICATION;` });
  }
  // With clusters.<name>.apply set, apply logs in as that role (checked under service_roles), not as user.
  const applyRole = !!cfg.clusters[name]?.roles?.apply;
  if (!applyRole && cfg.origin.method !== 'message' && !r.superuser && !(r.originSessionSetup && r.originXactSetup)) {
    const fix = `GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text), pg_replication_origin_xact_setup(pg_lsn, timestamptz), pg_replication_origin_create(text) TO ${user};`;
    const origin = cfg.directions.filter((d) => d.to === name).map((d) => originName(cfg, d.from)).join(', ');
    if (cfg.origin.method === 'replication-origin') {
      priv({ level: 'error', object: c.user, message: `${role} cannot use replication origins (${origin}) and origin.method is replication-origin: apply into ${name} cannot tag its writes (loop prevention, commit timestamps for last-writer-wins)`, fix });
    } else {
      priv({
        level: 'warning',
        object: c.user,
        message: `${role} cannot use replication origins (${origin}); with origin.method auto, apply into ${name} falls back to origin marker rows in cdc.control (loop prevention keeps working; destination commit timestamps are apply's own, not the source's)`,
        fix,
      });
    }
  }
  if (!applyRole && !r.setSessionReplicationRole) {
    priv({
      level: 'error',
      object: c.user,
      message: `${role} cannot SET session_replication_role = replica, which apply uses so that triggers and FK cascades do not fire twice`,
      fix: c.serverVersionNum >= 150000 ? `GRANT SET ON PARAMETER session_replication_role TO ${user};` : `apply needs a superuser role on PostgreSQL before 15`,
    });
  }
  if (!r.createOnDatabase && !(c.cdcSchemaExists && c.publicationExists)) {
    const needs = [c.cdcSchemaExists ? '' : 'schema cdc', c.publicationExists ? '' : `publication ${slot}`].filter(Boolean).join(' and ');
    priv({ level: 'error', object: c.database, message: `${role} has no CREATE on database ${c.database}; setup cannot create ${needs}`, fix: `GRANT CREATE ON DATABASE ${qi(c.database)} TO ${user};` });
  }
  if (!c.publicationExists && !r.superuser) {
    const wholeSchemas = cfg.selection.include.length === 0 && cfg.selection.exclude.length === 0;
    if (wholeSchemas) {
      priv({
        level: 'error',
        object: `publication ${slot}`,
        message: `${role} is not superuser; setup's CREATE PUBLICATION ${slot} FOR TABLES IN SCHEMA ${cfg.selection.schemas.join(', ')} needs superuser`,
        fix: `run setup once as a superuser, or list the tables in selection.include (then the role must own them)`,
      });
    } else {
      const notOwned = c.tables.filter((t) => !t.owned).map((t) => qt(t.schema, t.table));
      if (notOwned.length) {
        priv({
          level: 'error',
          object: `publication ${slot}`,
          message: `${role} does not own ${list(notOwned)}; CREATE PUBLICATION ${slot} FOR TABLE … needs ownership of every table`,
          fix: `ALTER TABLE … OWNER TO ${user}; for each, or run setup once as a superuser`,
        });
      }
    }
  }
  const ddl = ddlTriggerMode(cfg, name);
  if ((ddl === 'record' || ddl === 'reject') && !r.superuser && !c.ddlTriggerExists) {
    priv({
      level: 'error',
      object: `event trigger ${ddlObjectNames(cfg.pipeline).onEnd}`,
      message: ddl === 'record'
        ? `${role} is not superuser; setup cannot create the event trigger that records DDL on ${name} for replication (ddl.forward: replicate)`
        : `${role} is not superuser; setup cannot create the event trigger that refuses DDL on ${name} (ddl.reverse: reject)`,
      fix: ddl === 'record' ? 'run setup once as a superuser, or set ddl.forward: off (then make schema changes on both clusters yourself)' : 'run setup once as a superuser, or set ddl.reverse: warn',
    });
  }
  for (const s of c.schemas.filter((x) => !x.usage)) {
    priv({ level: 'error', object: s.name, message: `${role} has no USAGE on schema ${qi(s.name)}`, fix: `GRANT USAGE ON SCHEMA ${qi(s.name)} TO ${user};` });
  }
  for (const t of c.tables) {
    const missing = (['select', 'insert', 'update', 'delete', 'truncate'] as const).filter((p) => !t.privileges[p]).map((p) => p.toUpperCase());
    if (missing.length) {
      const table = qt(t.schema, t.table);
      priv({
        level: 'error',
        object: `${t.schema}.${t.table}`,
        message: `${role} lacks ${missing.join(', ')} on ${table} (initial sync reads it, apply writes it)`,
        fix: `GRANT ${missing.join(', ')} ON TABLE ${table} TO ${user};`,
      });
    }
  }
  if (privilegeProblems === 0) {
    add({ level: 'ok', check: 'privileges', cluster: name, object: c.user, message: `${role} has the privileges capture and apply need${r.superuser ? ' (superuser)' : ''}` });
  }

  // Roles of the services (clusters.<name>.capture / .apply)
  for (const sr of c.serviceRoles ?? []) {
    const what = `${where}: role ${sr.role} (${sr.service === 'capture' ? `capture of ${name}` : `apply into ${name}`})`;
    if (sr.missing.length === 0) add({ level: 'ok', check: 'service_roles', cluster: name, object: sr.role, message: `${what} has what ${sr.service} needs` });
    else add({ level: 'error', check: 'service_roles', cluster: name, object: sr.role, message: `${what} lacks ${list(sr.missing)}`, fix: `pgbridge grants --cluster ${name}, run on ${name} as an administrator` });
  }

  // Replica identity
  if (c.tablesError) {
    add({
      level: 'error',
      check: 'replica_identity',
      cluster: name,
      message: `${where}: cannot read the selected tables: ${c.tablesError}; replica identity, table and sequence checks skipped for ${name}`,
    });
    return;
  }
  let identityProblems = 0;
  for (const t of c.tables) {
    const table = qt(t.schema, t.table);
    const object = `${t.schema}.${t.table}`;
    const full = `ALTER TABLE ${table} REPLICA IDENTITY FULL;`;
    const problem = (level: 'error' | 'warning', message: string, fix: string): void => {
      identityProblems++;
      add({ level, check: 'replica_identity', cluster: name, object, message: `${where}: table ${table} ${message}`, fix });
    };
    if (t.replicaIdentity === 'nothing') {
      problem('error', 'has REPLICA IDENTITY NOTHING: once published, its UPDATE and DELETE fail and no key reaches the other cluster', t.hasPrimaryKey ? `ALTER TABLE ${table} REPLICA IDENTITY DEFAULT;` : full);
    } else if (t.replicaIdentity === 'index' && !t.replicaIdentityIndexOk) {
      problem('error', 'has REPLICA IDENTITY USING INDEX but the index is gone (behaves as NOTHING)', t.hasPrimaryKey ? `ALTER TABLE ${table} REPLICA IDENTITY DEFAULT;` : full);
    } else if (t.replicaIdentity === 'default' && !t.hasPrimaryKey) {
      problem('error', 'has no primary key and no replica identity: once published, its UPDATE and DELETE fail and rows cannot be matched on the other cluster', `${full} (or add a primary key)`);
    } else if (t.replicaIdentity === 'full' && !t.hasPrimaryKey) {
      problem('warning', 'has no primary key (REPLICA IDENTITY FULL): apply matches rows on all columns, and where rows are duplicates each event touches one of them', `add a primary key: ALTER TABLE ${table} ADD PRIMARY KEY (…);`);
    }
  }
  if (identityProblems === 0) {
    add({ level: 'ok', check: 'replica_identity', cluster: name, message: `${where}: all ${c.tables.length} selected table(s) have a primary key or replica identity` });
  }
}

function evaluateSelection(cfg: PipelineConfig, clusters: readonly ReachableClusterFacts[], add: (f: Finding) => void): void {
  if (clusters.length === 0 || clusters.some((c) => c.tablesError)) return;
  for (const entry of cfg.selection.include) {
    const [s, t] = entry.split('.') as [string, string];
    if (!clusters.some((c) => c.tables.some((x) => x.schema === s && x.table === t))) {
      add({
        level: 'warning',
        check: 'selection',
        object: entry,
        message: `selection.include names ${qt(s, t)}, which exists on no reachable cluster (${clusters.map(at).join(', ')}); nothing of it will be synchronized`,
        fix: `fix the name in selection.include or create the table`,
      });
    }
  }
}

function evaluateTrackCommitTimestamp(cfg: PipelineConfig, clusters: readonly ReachableClusterFacts[], add: (f: Finding) => void): void {
  const lwwTables = Object.entries(cfg.conflicts.tables)
    .filter(([, p]) => p === 'last-writer-wins')
    .map(([t]) => t);
  const global = cfg.conflicts.policy === 'last-writer-wins';
  for (const c of clusters) {
    const where = `cluster ${at(c)}`;
    if (!global && lwwTables.length === 0) {
      add({ level: 'ok', check: 'track_commit_timestamp', cluster: c.name, object: 'track_commit_timestamp', message: `${where}: no last-writer-wins policy, track_commit_timestamp not needed` });
    } else if (!c.trackCommitTimestamp) {
      const why = global ? 'the global conflict policy is last-writer-wins' : `tables ${list(lwwTables)} use last-writer-wins`;
      add({
        level: 'error',
        check: 'track_commit_timestamp',
        cluster: c.name,
        object: 'track_commit_timestamp',
        message: `${where}: track_commit_timestamp is off but ${why}: apply cannot read the destination row's commit time`,
        fix: 'ALTER SYSTEM SET track_commit_timestamp = on; then restart PostgreSQL',
      });
    } else add({ level: 'ok', check: 'track_commit_timestamp', cluster: c.name, object: 'track_commit_timestamp', message: `${where}: track_commit_timestamp = on (last-writer-wins)` });
  }
}

function evaluatePair(cfg: PipelineConfig, from: ReachableClusterFacts, to: ReachableClusterFacts, existingTables: 'error' | 'ignore', add: (f: Finding) => void): void {
  const fwd = cfg.directions[0];
  const key = (t: TableFacts): string => `${t.schema}.${t.table}`;
  const onTo = new Map(to.tables.map((t) => [key(t), t]));
  const onFrom = new Map(from.tables.map((t) => [key(t), t]));
  let destProblems = 0;
  for (const t of from.tables) {
    const table = qt(t.schema, t.table);
    const d = onTo.get(key(t));
    if (!d) {
      destProblems++;
      add({
        level: 'error',
        check: 'destination_tables',
        cluster: to.name,
        object: key(t),
        message: `table ${table} exists on ${at(from)} but not on ${at(to)}; two-way sync needs it on both clusters (the reverse direction ${cfg.directions[1].id} captures from ${to.name})`,
        fix: `run the initial schema sync ${fwd.id} (it creates the table on ${to.name}), or create it on ${to.name}, or exclude it (selection.exclude)`,
      });
    } else if (d.hasRows === true) {
      destProblems++;
      add({
        level: existingTables === 'error' ? 'error' : 'warning',
        check: 'destination_tables',
        cluster: to.name,
        object: key(t),
        message:
          existingTables === 'error'
            ? `table ${table} already exists on the destination ${at(to)} and holds rows; the initial data sync ${fwd.id} would collide with them`
            : `table ${table} already exists on the destination ${at(to)} and holds rows; they are kept and the initial data sync ${fwd.id} resolves collisions by the conflict policy (${policyFor(cfg, t.schema, t.table)})`,
        fix: existingTables === 'error' ? `empty it on ${to.name} (TRUNCATE ${table};), exclude it, or run precheck with existing tables = ignore` : undefined,
      });
    } else if (d.hasRows === null) {
      destProblems++;
      add({
        level: 'warning',
        check: 'destination_tables',
        cluster: to.name,
        object: key(t),
        message: `table ${table} exists on the destination ${at(to)} but role ${to.user} cannot read it, so whether it holds rows is unknown`,
        fix: `GRANT SELECT ON TABLE ${table} TO ${qi(to.user)};`,
      });
    }
  }
  for (const t of to.tables) {
    if (onFrom.has(key(t))) continue;
    destProblems++;
    add({
      level: 'error',
      check: 'destination_tables',
      cluster: from.name,
      object: key(t),
      message: `table ${qt(t.schema, t.table)} exists on ${at(to)} but not on ${at(from)}; the reverse direction ${cfg.directions[1].id} would capture changes it cannot apply, and the forward schema sync does not create it`,
      fix: `create it on ${from.name}, or exclude it (selection.exclude)`,
    });
  }
  if (destProblems === 0) {
    add({ level: 'ok', check: 'destination_tables', cluster: to.name, message: `all ${from.tables.length} selected table(s) of ${at(from)} exist on ${at(to)} without rows, and none is only on ${to.name}` });
  }

  // Structure of tables on both sides
  let structureProblems = 0;
  for (const a of from.tables) {
    const b = onTo.get(key(a));
    if (!b) continue;
    // Columns a column list leaves out never travel: they may differ.
    const skip = unpublishedColumns(cfg, a.schema, a.table, [...a.columns, ...b.columns].map((x) => x.name));
    const ca = new Map(a.columns.filter((x) => !skip.has(x.name)).map((x) => [x.name, x.type]));
    const cb = new Map(b.columns.filter((x) => !skip.has(x.name)).map((x) => [x.name, x.type]));
    const diffs: string[] = [];
    for (const [n, ty] of ca) {
      const other = cb.get(n);
      if (other === undefined) diffs.push(`${qi(n)} only on ${from.name}`);
      else if (other !== ty) diffs.push(`${qi(n)} is ${ty} on ${from.name} but ${other} on ${to.name}`);
    }
    for (const n of cb.keys()) if (!ca.has(n)) diffs.push(`${qi(n)} only on ${to.name}`);
    if (diffs.length) {
      structureProblems++;
      add({
        level: 'error',
        check: 'table_structure',
        cluster: to.name,
        object: key(a),
        message: `table ${qt(a.schema, a.table)} differs between ${at(from)} and ${at(to)}: ${list(diffs)}`,
        fix: `make the columns identical on both clusters (ALTER TABLE … on one of them), leave the differing columns out of replication (selection.tables.${key(a)}.columns), or exclude the table`,
      });
    }
  }
  if (structureProblems === 0) add({ level: 'ok', check: 'table_structure', cluster: to.name, message: `tables present on both ${at(from)} and ${at(to)} have the same columns and types` });

  // Sequences behind columns on both sides
  let sequenceProblems = 0;
  for (const a of from.tables) {
    const b = onTo.get(key(a));
    if (!b) continue;
    for (const sa of a.sequences) {
      const sb = b.sequences.find((x) => x.column === sa.column);
      if (!sb || !sequencesOverlap(sa, sb)) continue;
      sequenceProblems++;
      const alter = (s: SequenceFacts, t: TableFacts, restart: bigint): string =>
        s.identity ? `ALTER TABLE ${qt(t.schema, t.table)} ALTER COLUMN ${qi(s.column)} SET INCREMENT BY 2 RESTART WITH ${restart};` : `ALTER SEQUENCE ${s.sequence} INCREMENT BY 2 RESTART WITH ${restart};`;
      // Start above every value either side has handed out, odd on the forward source, even on the other.
      const top = sa.next > sb.next ? sa.next : sb.next;
      const odd = mod(top, 2n) === 1n ? top : top + 1n;
      const ascending = sa.increment > 0n && sb.increment > 0n;
      // DDL replication would carry the forward source's ALTER SEQUENCE over (and reject refuses the other's).
      const byHand = cfg.ddl.forward === 'replicate' || cfg.ddl.reverse === 'reject'
        ? `; by hand, run each ALTER after SET session_replication_role = replica, or DDL replication carries ${from.name}'s to ${to.name}${cfg.ddl.reverse === 'reject' ? ` and refuses ${to.name}'s` : ''}`
        : '';
      add({
        level: 'warning',
        check: 'sequences',
        cluster: to.name,
        object: `${key(a)}.${sa.column}`,
        message: `column ${qi(sa.column)} of ${qt(a.schema, a.table)} takes values from ${sa.sequence} on ${at(from)} (next ${sa.next}, increment ${sa.increment}) and ${sb.sequence} on ${at(to)} (next ${sb.next}, increment ${sb.increment}); both would hand out the same values, so rows inserted on both sides collide (insert_exists); \`pgbridge setup --split-sequences\` gives every such column odd values on ${from.name} and even ones on ${to.name}${byHand}`,
        fix: ascending
          ? `on ${from.name}: ${alter(sa, a, odd)}  on ${to.name}: ${alter(sb, b, odd + 1n)}`
          : `give the two clusters disjoint values (odd/even increments or separate ranges)`,
      });
    }
  }
  if (sequenceProblems === 0) add({ level: 'ok', check: 'sequences', cluster: to.name, message: `no column takes overlapping sequence values on ${at(from)} and ${at(to)}` });
}

function evaluateKafka(cfg: PipelineConfig, k: KafkaFacts, add: (f: Finding) => void): void {
  if (!k.reachable) {
    add({
      level: 'error',
      check: 'kafka',
      cluster: 'kafka',
      object: k.brokers,
      message: `Kafka at ${k.brokers} is unreachable: ${k.reason}; skipped: transaction support and topic settings`,
      fix: 'check kafka.brokers and that the brokers advertise addresses reachable from here',
    });
    return;
  }
  add({ level: 'ok', check: 'kafka', cluster: 'kafka', object: k.brokers, message: `Kafka at ${k.brokers} answers (${k.brokerCount} broker(s))` });
  const rf = k.transactionStateLogReplicationFactor;
  const isr = k.transactionStateLogMinIsr;
  if (rf !== undefined && rf > k.brokerCount) {
    add({
      level: 'error',
      check: 'kafka_transactions',
      cluster: 'kafka',
      object: 'transaction.state.log.replication.factor',
      message: `Kafka at ${k.brokers}: transaction.state.log.replication.factor is ${rf} but the cluster has ${k.brokerCount} broker(s); transactional producers (capture) cannot start`,
      fix: `set transaction.state.log.replication.factor (and transaction.state.log.min.isr) to at most ${k.brokerCount} in the broker config`,
    });
  } else if (isr !== undefined && isr > k.brokerCount) {
    add({
      level: 'error',
      check: 'kafka_transactions',
      cluster: 'kafka',
      object: 'transaction.state.log.min.isr',
      message: `Kafka at ${k.brokers}: transaction.state.log.min.isr is ${isr} but the cluster has ${k.brokerCount} broker(s); transactions cannot commit`,
      fix: `set transaction.state.log.min.isr to at most ${k.brokerCount} in the broker config`,
    });
  } else {
    add({ level: 'ok', check: 'kafka_transactions', cluster: 'kafka', message: `Kafka at ${k.brokers}: brokers support transactions (Kafka ≥ 0.11)${rf === undefined ? '' : `, transaction log replication factor ${rf}`}` });
  }
  if (k.topicsError) {
    add({ level: 'error', check: 'kafka_topics', cluster: 'kafka', message: `Kafka at ${k.brokers}: cannot read topics: ${k.topicsError}`, fix: 'grant the client Describe and DescribeConfigs on the topics' });
    return;
  }
  for (const t of k.topics) {
    const where = `topic ${t.name} on Kafka at ${k.brokers}`;
    if (!t.exists) {
      add({ level: 'ok', check: 'kafka_topics', cluster: 'kafka', object: t.name, message: `${where} does not exist yet; setup creates it with ${cfg.topics.partitions} partition(s) and retention.ms=-1` });
      continue;
    }
    let problems = 0;
    const warn = (level: 'error' | 'warning', object: string, message: string, fix: string): void => {
      problems++;
      add({ level, check: 'kafka_topics', cluster: 'kafka', object: t.name, message: `${where}: ${message}`, fix: `${fix} (${object})` });
    };
    if (t.partitions !== cfg.topics.partitions) {
      // One partition is what keeps source commit order across tables (§2); more breaks it.
      const level = cfg.topics.partitions === 1 && t.partitions > 1 ? 'error' : 'warning';
      warn(level, 'partitions', `has ${t.partitions} partition(s) but topics.partitions is ${cfg.topics.partitions}${level === 'error' ? '; transactions would no longer be applied in source commit order' : ''}`, `recreate the topic with ${cfg.topics.partitions} partition(s), or set topics.partitions: ${t.partitions}`);
    }
    if (t.replicationFactor < cfg.topics.replicationFactor) {
      warn('warning', 'replication factor', `has replication factor ${t.replicationFactor}, below topics.replicationFactor ${cfg.topics.replicationFactor}`, 'reassign partitions to more replicas (kafka-reassign-partitions)');
    }
    const policies = t.cleanupPolicy.split(',').map((p) => p.trim());
    if (policies.includes('compact')) {
      warn('warning', 'cleanup.policy', `cleanup.policy is ${t.cleanupPolicy}: compaction keeps only the last event per row, so replaying the topic loses transaction boundaries and intermediate changes`, `kafka-configs --alter --entity-type topics --entity-name ${t.name} --add-config cleanup.policy=delete`);
    }
    if (policies.includes('delete') && t.retentionMs !== -1) {
      warn('warning', 'retention.ms', `retention.ms is ${t.retentionMs} (${(t.retentionMs / 3_600_000).toFixed(1)} h): events older than that are deleted, and replay or rebuild of a destination from the topic needs all of them`, `kafka-configs --alter --entity-type topics --entity-name ${t.name} --add-config retention.ms=-1`);
    }
    if (policies.includes('delete') && t.retentionBytes !== -1) {
      warn('warning', 'retention.bytes', `retention.bytes is ${t.retentionBytes}: old events are deleted past that size, and replay needs all of them`, `kafka-configs --alter --entity-type topics --entity-name ${t.name} --add-config retention.bytes=-1`);
    }
    const needBytes = topicMaxMessageBytes(cfg);
    if (t.maxMessageBytes !== undefined && t.maxMessageBytes < needBytes) {
      warn('error', 'max.message.bytes', `max.message.bytes is ${t.maxMessageBytes}, below the ${needBytes} that topics.maxMessageBytes (${cfg.topics.maxMessageBytes}) needs: a row change larger than about ${t.maxMessageBytes} bytes would be refused by Kafka`, `run pgbridge setup (it raises the topic's limit), or kafka-configs --alter --entity-type topics --entity-name ${t.name} --add-config max.message.bytes=${needBytes}`);
    }
    if (problems === 0) add({ level: 'ok', check: 'kafka_topics', cluster: 'kafka', object: t.name, message: `${where}: ${t.partitions} partition(s), cleanup.policy=${t.cleanupPolicy}, retention.ms=${t.retentionMs}${t.maxMessageBytes === undefined ? '' : `, max.message.bytes=${t.maxMessageBytes}`}` });
  }
}

function evaluateRegistry(r: RegistryFacts, add: (f: Finding) => void): void {
  if (r.status === 200) {
    add({ level: 'ok', check: 'registry', cluster: 'registry', object: r.url, message: `schema registry: GET ${r.url} answered 200` });
    return;
  }
  add({
    level: 'error',
    check: 'registry',
    cluster: 'registry',
    object: r.url,
    message: r.status === undefined ? `schema registry: GET ${r.url} failed: ${r.reason ?? 'no answer'}` : `schema registry: GET ${r.url} answered HTTP ${r.status}, not 200`,
    fix: 'check registry.url: the base URL of a Confluent-compatible API (for Apicurio …/apis/ccompat/v7) reachable from here',
  });
}

// ───────────────────────────── report ─────────────────────────────

const TITLES: Record<CheckName, string> = {
  connection: 'Connections',
  schemas: 'Selected schemas',
  selection: 'Selection',
  table_settings: 'Table settings (column lists, row filters, operations)',
  wal_level: 'wal_level',
  wal_sender_timeout: 'wal_sender_timeout',
  replication_slots: 'Replication slots',
  wal_senders: 'WAL senders',
  privileges: 'Privileges',
  service_roles: 'Service roles',
  replica_identity: 'Primary key / replica identity',
  track_commit_timestamp: 'track_commit_timestamp (last-writer-wins)',
  destination_tables: 'Destination tables',
  table_structure: 'Table structure',
  extensions: 'Extensions',
  sequences: 'Sequences',
  kafka: 'Kafka',
  kafka_transactions: 'Kafka transactions',
  kafka_topics: 'Kafka topics',
  registry: 'Schema registry',
  encryption: 'Encryption',
};

const TAG: Record<FindingLevel, string> = { error: 'ERROR', warning: 'WARN ', ok: 'ok   ' };

/** One line per finding, grouped by check (errors first in each), each fix on the next indented line, then the summary line. */
export function formatFindings(findings: readonly Finding[]): string {
  const rank: Record<FindingLevel, number> = { error: 0, warning: 1, ok: 2 };
  const groups = new Map<string, Finding[]>();
  for (const c of CHECKS) groups.set(c, []);
  for (const f of findings) groups.set(f.check, [...(groups.get(f.check) ?? []), f]);
  const lines: string[] = [];
  for (const [check, fs] of groups) {
    if (fs.length === 0) continue;
    lines.push(`${TITLES[check as CheckName] ?? check}:`);
    for (const f of [...fs].sort((a, b) => rank[a.level] - rank[b.level])) {
      lines.push(`  ${TAG[f.level]} ${f.message}`);
      if (f.fix) lines.push(`         fix: ${f.fix}`);
    }
  }
  const errors = findings.filter((f) => f.level === 'error').length;
  const warnings = findings.filter((f) => f.level === 'warning').length;
  lines.push(`precheck: ${errors} error(s), ${warnings} warning(s)`);
  return lines.join('\n');
}
