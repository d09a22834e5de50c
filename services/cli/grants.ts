/**
 * `pgbridge grants`: the least-privilege roles of a pipeline as a SQL script per cluster, to
 * run as an administrator after `pgbridge setup` (the helper tables must exist):
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
import { type ClusterConfig, type PipelineConfig } from '../../shared/config.js';
import { PgBridgeError } from '../../shared/errors.js';
import { qi, ql, qt, withClient } from '../../shared/pg.js';
import { selectedTables } from './setup.js';

/** Role names: clusters.<name>.capture/apply.user when set, else pgbridge_<pipeline>_capture / _apply. */
export function roleNames(cfg: PipelineConfig, cluster: string): { capture: string; apply: string } {
  const c = cfg.clusters[cluster]!;
  return {
    capture: c.roles?.capture?.user ?? `pgbridge_${cfg.pipeline}_capture`,
    apply: c.roles?.apply?.user ?? `pgbridge_${cfg.pipeline}_apply`,
  };
}

interface ClusterFacts {
  readonly versionNum: number;
  /** Quoted schema.table of every selected table. */
  readonly tables: readonly string[];
  readonly schemas: readonly string[];
}

async function facts(cfg: PipelineConfig, client: pg.Client): Promise<ClusterFacts> {
  const v = await client.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`);
  const tables = await selectedTables(client, cfg);
  return { versionNum: Number(v.rows[0]!.v), tables: tables.map((t) => qt(t.schema, t.table)), schemas: [...new Set(tables.map((t) => t.schema))] };
}

/** Creates a login role when it is missing (no password: set one with ALTER ROLE … PASSWORD). */
function createRole(name: string, replication: boolean): string {
  const attrs = `LOGIN${replication ? ' REPLICATION' : ''} NOSUPERUSER NOCREATEDB NOCREATEROLE`;
  return [
    `DO $$ BEGIN`,
    `  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = ${ql(name)}) THEN CREATE ROLE ${qi(name)} ${attrs}; END IF;`,
    `END $$;`,
    // Adds what the service needs to a role that already existed; takes nothing away.
    `ALTER ROLE ${qi(name)} LOGIN${replication ? ' REPLICATION' : ''};`,
  ].join('\n');
}

/** The script for one cluster (pure: facts come from the cluster). */
export function grantScript(cfg: PipelineConfig, cluster: string, f: ClusterFacts): string {
  const c: ClusterConfig = cfg.clusters[cluster]!;
  const { capture, apply } = roleNames(cfg, cluster);
  const cap = qi(capture);
  const app = qi(apply);
  const db = qi(c.database);
  const lines: string[] = [
    `-- pgbridge grants for pipeline ${cfg.pipeline}, cluster ${cluster} (${c.host}:${c.port}, database ${c.database})`,
    `-- Run as an administrator after \`pgbridge setup\`; run it again after adding tables to the selection.`,
    `-- Then give each role a password (ALTER ROLE … PASSWORD) and name it in clusters.${cluster}.capture / .apply.`,
    'BEGIN;',
    '',
    `-- capture of cluster ${cluster}: logical replication, and its own rows in cdc`,
    createRole(capture, true),
    `GRANT CONNECT ON DATABASE ${db} TO ${cap};`,
    `GRANT USAGE ON SCHEMA cdc TO ${cap};`,
    `GRANT SELECT, INSERT, UPDATE ON cdc.capture_state, cdc.heartbeat TO ${cap};`,
    '',
    `-- apply into cluster ${cluster}: the selected tables, apply's position and records in cdc`,
    createRole(apply, false),
    `GRANT CONNECT ON DATABASE ${db} TO ${app};`,
    `GRANT USAGE ON SCHEMA cdc TO ${app};`,
    `GRANT SELECT, INSERT, UPDATE ON cdc.apply_progress, cdc.table_watermarks TO ${app};`,
    `GRANT INSERT ON cdc.conflicts, cdc.barriers TO ${app};`,
    `GRANT USAGE ON SEQUENCE cdc.conflicts_id_seq TO ${app};`,
    `-- origin control records (origin.method message, or auto without origin privileges)`,
    `GRANT SELECT, INSERT, DELETE ON cdc.control TO ${app};`,
    `GRANT USAGE ON SEQUENCE cdc.control_id_seq TO ${app};`,
  ];
  if (f.schemas.length) lines.push(`GRANT USAGE ON SCHEMA ${f.schemas.map(qi).join(', ')} TO ${app};`);
  if (f.tables.length) lines.push(`GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ${f.tables.join(', ')} TO ${app};`);
  else lines.push(`-- no selected table exists on ${cluster} yet: run grants again once they do`);
  if (cfg.origin.method !== 'message') {
    lines.push(
      `-- replication origins (loop prevention with the source commit time; not needed with origin.method message)`,
      `GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text), pg_replication_origin_xact_setup(pg_lsn, timestamptz) TO ${app};`,
    );
  }
  if (f.versionNum >= 150000) {
    lines.push(`-- apply writes with session_replication_role = replica (no user triggers or FK actions fire twice)`, `GRANT SET ON PARAMETER session_replication_role TO ${app};`);
  } else {
    lines.push(`-- PostgreSQL before 15 cannot grant SET on session_replication_role: the apply role must be a superuser there`);
  }
  lines.push('', 'COMMIT;', '');
  return lines.join('\n');
}

/** The grant scripts of the pipeline's clusters (all, or the one named), read from the clusters themselves. */
export async function grants(cfg: PipelineConfig, only?: string): Promise<{ cluster: string; script: string }[]> {
  if (only !== undefined && !cfg.clusterNames.includes(only)) throw new PgBridgeError('CONFIG_INVALID', `no cluster "${only}"; this pipeline has ${cfg.clusterNames.join(' and ')}`);
  const names = only ? [only] : [...cfg.clusterNames];
  for (const name of names) {
    const roles = roleNames(cfg, name);
    const admin = cfg.clusters[name]!.user;
    if (roles.capture === admin || roles.apply === admin) throw new PgBridgeError('CONFIG_INVALID', `clusters.${name}: the capture and apply roles must differ from user (${admin}), which setup and the CLI use`);
  }
  const out: { cluster: string; script: string }[] = [];
  for (const name of names) {
    const f = await withClient(cfg.clusters[name]!, 'pgbridge-grants', (client) => facts(cfg, client));
    out.push({ cluster: name, script: grantScript(cfg, name, f) });
  }
  return out;
}
