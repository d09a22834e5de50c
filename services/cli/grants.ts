/**
 * Least-privilege roles of a pipeline: what capture of a cluster and apply into it need, as
 * one list (serviceGrants) that `pgbridge grants` prints as SQL and precheck checks against
 * the roles the config names (missingGrants). Run the script as an administrator after
 * `pgbridge setup` (the helper tables must exist):
 *
 * - capture of a cluster: LOGIN REPLICATION, and in `cdc` only its own state (capture_state,
 *   heartbeat). Logical decoding reads the WAL, not the tables: no privilege on the data.
 * - apply into a cluster: LOGIN, the selected tables (read and write, TRUNCATE), its position
 *   and records in `cdc` (apply_progress, conflicts, barriers, table_watermarks), origin
 *   control records (cdc.control, the `message` origin method), the replication origin
 *   functions (unless origin.method is message), and SET session_replication_role (PG 15+).
 *   The apply role of the other direction also reads this cluster's WAL position (EventGuard).
 *
 * setup, sync, release and the CLI (barrier, resync, status, verify) keep running as the
 * config's `user`, which owns the `cdc` schema that setup made.
 */
import type pg from 'pg';
import { type PipelineConfig } from '../../shared/config.js';
import { PgBridgeError } from '../../shared/errors.js';
import { qi, ql, qt, withClient } from '../../shared/pg.js';
import { selectedTables } from './setup.js';

export type Service = 'capture' | 'apply';

/** Role names: clusters.<name>.capture/apply.user when set, else pgbridge_<pipeline>_capture / _apply. */
export function roleNames(cfg: PipelineConfig, cluster: string): Record<Service, string> {
  const c = cfg.clusters[cluster]!;
  return {
    capture: c.roles?.capture?.user ?? `pgbridge_${cfg.pipeline}_capture`,
    apply: c.roles?.apply?.user ?? `pgbridge_${cfg.pipeline}_apply`,
  };
}

export interface GrantFacts {
  readonly versionNum: number;
  /** Quoted schema.table of every selected table that exists. */
  readonly tables: readonly string[];
  readonly schemas: readonly string[];
}

export async function grantFacts(cfg: PipelineConfig, client: pg.Client, cluster?: string): Promise<GrantFacts> {
  const v = await client.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`);
  const tables = await selectedTables(client, cfg, cluster);
  return { versionNum: Number(v.rows[0]!.v), tables: tables.map((t) => qt(t.schema, t.table)), schemas: [...new Set(tables.map((t) => t.schema))] };
}

type ObjectKind = 'DATABASE' | 'SCHEMA' | 'TABLE' | 'SEQUENCE' | 'FUNCTION' | 'PARAMETER';

/**
 * One GRANT: privileges on objects of one kind, and why. Databases and schemas are plain
 * names (quoted when rendered); tables, sequences and functions are written as SQL names
 * (schema-qualified, quoted where needed), which is also what has_*_privilege reads.
 */
export interface Grant {
  readonly why: string;
  readonly kind: ObjectKind;
  readonly objects: readonly string[];
  readonly privileges: readonly string[];
}

/** Role attributes a service needs. */
export function roleAttributes(service: Service): readonly ('LOGIN' | 'REPLICATION')[] {
  return service === 'capture' ? ['LOGIN', 'REPLICATION'] : ['LOGIN'];
}

const ORIGIN_FUNCTIONS = ['pg_replication_origin_session_setup(text)', 'pg_replication_origin_xact_setup(pg_lsn, timestamptz)'];

/** What one service's role needs on a cluster, in script order. */
export function serviceGrants(cfg: PipelineConfig, cluster: string, service: Service, f: GrantFacts): Grant[] {
  const db = cfg.clusters[cluster]!.database;
  const base: Grant[] = [
    { why: 'connect', kind: 'DATABASE', objects: [db], privileges: ['CONNECT'] },
    { why: 'the helper schema', kind: 'SCHEMA', objects: ['cdc'], privileges: ['USAGE'] },
  ];
  if (service === 'capture') {
    return [
      ...base,
      {
        why: 'its system identity, last published record and heartbeat',
        kind: 'TABLE',
        objects: ['cdc.capture_state', 'cdc.heartbeat'],
        privileges: ['SELECT', 'INSERT', 'UPDATE'],
      },
    ];
  }
  const grants: Grant[] = [
    ...base,
    {
      why: "apply's position and table watermarks",
      kind: 'TABLE',
      objects: ['cdc.apply_progress', 'cdc.table_watermarks'],
      privileges: ['SELECT', 'INSERT', 'UPDATE'],
    },
    {
      why: 'snapshot chunk loads (tables empty at the start, chunks loaded side by side)',
      kind: 'TABLE',
      objects: ['cdc.snapshot_loads', 'cdc.chunk_loads'],
      privileges: ['SELECT', 'INSERT', 'DELETE'],
    },
    { why: 'recorded conflicts and barriers', kind: 'TABLE', objects: ['cdc.conflicts', 'cdc.barriers'], privileges: ['INSERT'] },
    { why: 'conflict ids', kind: 'SEQUENCE', objects: ['cdc.conflicts_id_seq'], privileges: ['USAGE'] },
    {
      why: 'origin control records (origin.method message, or auto without origin privileges)',
      kind: 'TABLE',
      objects: ['cdc.control'],
      privileges: ['SELECT', 'INSERT', 'DELETE'],
    },
    { why: 'control record ids', kind: 'SEQUENCE', objects: ['cdc.control_id_seq'], privileges: ['USAGE'] },
    { why: 'the throttle set by pgbridge throttle', kind: 'TABLE', objects: ['cdc.apply_throttle'], privileges: ['SELECT'] },
    { why: 'renames made by replicated DDL (changes written under an old name)', kind: 'TABLE', objects: ['cdc.ddl_renames'], privileges: ['SELECT'] },
  ];
  if (f.schemas.length) grants.push({ why: 'the selected schemas', kind: 'SCHEMA', objects: f.schemas, privileges: ['USAGE'] });
  if (f.tables.length)
    grants.push({ why: 'the selected tables', kind: 'TABLE', objects: f.tables, privileges: ['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE'] });
  if (cfg.origin.method !== 'message') {
    grants.push({
      why: 'replication origins (loop prevention with the source commit time; not needed with origin.method message)',
      kind: 'FUNCTION',
      objects: ORIGIN_FUNCTIONS,
      privileges: ['EXECUTE'],
    });
  }
  if (f.versionNum >= 150000) {
    grants.push({
      why: 'session_replication_role = replica (no user trigger or FK action fires twice)',
      kind: 'PARAMETER',
      objects: ['session_replication_role'],
      privileges: ['SET'],
    });
  }
  return grants;
}

/** Creates a login role when it is missing (no password: set one with ALTER ROLE … PASSWORD). */
function createRole(name: string, service: Service): string {
  const attrs = roleAttributes(service).join(' ');
  return [
    `DO $$ BEGIN`,
    `  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = ${ql(name)}) THEN CREATE ROLE ${qi(name)} ${attrs} NOSUPERUSER NOCREATEDB NOCREATEROLE; END IF;`,
    `END $$;`,
    // Adds what the service needs to a role that already existed; takes nothing away.
    `ALTER ROLE ${qi(name)} ${attrs};`,
  ].join('\n');
}

/** The script for one cluster (pure: facts come from the cluster). */
export function grantScript(cfg: PipelineConfig, cluster: string, f: GrantFacts): string {
  const c = cfg.clusters[cluster]!;
  const names = roleNames(cfg, cluster);
  const lines: string[] = [
    `-- pgbridge grants for pipeline ${cfg.pipeline}, cluster ${cluster} (${c.host}:${c.port}, database ${c.database})`,
    `-- Run as an administrator after \`pgbridge setup\`; run it again after adding tables to the selection.`,
    `-- Then give each role a password (ALTER ROLE … PASSWORD) and name it in clusters.${cluster}.capture / .apply.`,
    'BEGIN;',
  ];
  for (const service of ['capture', 'apply'] as const) {
    lines.push('', service === 'capture' ? `-- capture of cluster ${cluster}` : `-- apply into cluster ${cluster}`, createRole(names[service], service));
    for (const g of serviceGrants(cfg, cluster, service, f)) {
      const objects = g.kind === 'DATABASE' || g.kind === 'SCHEMA' ? g.objects.map(qi) : g.objects;
      lines.push(`-- ${g.why}`, `GRANT ${g.privileges.join(', ')} ON ${g.kind} ${objects.join(', ')} TO ${qi(names[service])};`);
    }
    if (service === 'apply' && f.tables.length === 0) lines.push(`-- no selected table exists on ${cluster} yet: run grants again once they do`);
    if (service === 'apply' && f.versionNum < 150000)
      lines.push('-- PostgreSQL before 15 cannot grant SET on session_replication_role: the apply role must be a superuser there');
  }
  lines.push('', 'COMMIT;', '');
  return lines.join('\n');
}

const CHECK: Record<ObjectKind, string> = {
  DATABASE: 'has_database_privilege',
  SCHEMA: 'has_schema_privilege',
  TABLE: 'has_table_privilege',
  SEQUENCE: 'has_sequence_privilege',
  FUNCTION: 'has_function_privilege',
  PARAMETER: 'has_parameter_privilege',
};

/**
 * What a role lacks of serviceGrants and roleAttributes, as `PRIVILEGE on object` lines
 * (empty: it has everything; a superuser has everything). Checked from any session through
 * has_*_privilege, so no password of the role is needed.
 */
export async function missingGrants(client: pg.Client, cfg: PipelineConfig, cluster: string, service: Service, role: string, f: GrantFacts): Promise<string[]> {
  const r = await client.query<{ login: boolean; replication: boolean; superuser: boolean }>(
    'SELECT rolcanlogin AS login, rolreplication AS replication, rolsuper AS superuser FROM pg_roles WHERE rolname = $1',
    [role],
  );
  const attrs = r.rows[0];
  if (!attrs) return [`role ${role} does not exist`];
  const t = (v: unknown): boolean => v === true || v === 't';
  if (t(attrs.superuser)) return [];
  const missing: string[] = [];
  if (!t(attrs.login)) missing.push('LOGIN attribute');
  if (roleAttributes(service).includes('REPLICATION') && !t(attrs.replication)) missing.push('REPLICATION attribute');
  for (const g of serviceGrants(cfg, cluster, service, f)) {
    for (const object of g.objects) {
      for (const privilege of g.privileges) {
        // An object that does not exist yet (cdc before setup) counts as missing.
        const ok = await client.query<{ ok: boolean }>(`SELECT ${CHECK[g.kind]}($1, $2, $3) AS ok`, [role, object, privilege]).then(
          (x) => t(x.rows[0]!.ok),
          () => false,
        );
        if (!ok) missing.push(`${privilege} on ${g.kind.toLowerCase()} ${object}`);
      }
    }
  }
  return missing;
}

/** The grant scripts of the pipeline's clusters (all, or the one named), read from the clusters themselves. */
export async function grants(cfg: PipelineConfig, only?: string): Promise<{ cluster: string; script: string }[]> {
  if (only !== undefined && !cfg.clusterNames.includes(only))
    throw new PgBridgeError('CONFIG_INVALID', `no cluster "${only}"; this pipeline has ${cfg.clusterNames.join(' and ')}`);
  const names = only ? [only] : [...cfg.clusterNames];
  for (const name of names) {
    const roles = roleNames(cfg, name);
    const admin = cfg.clusters[name]!.user;
    if (roles.capture === admin || roles.apply === admin)
      throw new PgBridgeError('CONFIG_INVALID', `clusters.${name}: the capture and apply roles must differ from user (${admin}), which setup and the CLI use`);
  }
  const out: { cluster: string; script: string }[] = [];
  for (const name of names) {
    const f = await withClient(cfg.clusters[name]!, 'pgbridge-grants', (client) => grantFacts(cfg, client, name));
    out.push({ cluster: name, script: grantScript(cfg, name, f) });
  }
  return out;
}
