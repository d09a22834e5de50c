/**
 * Precheck, stage one: reads everything the rules need, concurrently and read-only. Never
 * throws for an unreachable system: that becomes a fact the rules report.
 */
import type pg from 'pg';
import { slotName, type ClusterConfig, type PipelineConfig } from '../../../shared/config.js';
import { ddlObjectNames } from '../../../shared/ddl.js';
import { errorMessage } from '../../../shared/errors.js';
import { createLogger } from '../../../shared/log.js';
import { ClusterNaming } from '../../../shared/naming.js';
import { qt, withClient } from '../../../shared/pg.js';
import { splitTableName } from '../../../shared/selection.js';
import { grantFacts, missingGrants, type Service } from '../grants.js';
import { selectedTables } from '../setup.js';
import { gatherExtensions } from './extensions.js';
import type { ClusterFacts, PrecheckFacts, SequenceFacts, TableFacts } from './facts.js';
import type { PrecheckOptions } from './findings.js';
import { gatherKafka, gatherRegistry } from './gather-services.js';
import { gatherTableSettings } from './table-settings.js';
import { COLUMN_SEQUENCE_JOIN } from './sequences.js';

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
        (versionNum >= 150000 && bool((await client.query<Row>(`SELECT has_parameter_privilege('session_replication_role', 'SET') AS ok`)).rows[0]!.ok));
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
         ${COLUMN_SEQUENCE_JOIN}
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
