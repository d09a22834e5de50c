/**
 * Precheck rules on roles: the privileges setup, capture and apply need of the role the
 * pipeline logs in as, and those of the service roles (clusters.<name>.capture / .apply).
 */
import { originName, slotName, type PipelineConfig } from '../../../shared/config.js';
import { ddlObjectNames, ddlTriggerMode } from '../../../shared/ddl.js';
import { qi, qt } from '../../../shared/pg.js';
import type { ReachableClusterFacts } from './facts.js';
import { at, list, type AddFinding, type Finding } from './findings.js';

/** privileges: what setup, capture and apply need of the role the pipeline logs in as (user), every missing one reported. */
export function checkPrivileges(cfg: PipelineConfig, c: ReachableClusterFacts, add: AddFinding): void {
  const where = `cluster ${at(c)}`;
  const name = c.name;
  const slot = slotName(cfg, name);
  const r = c.role;
  const user = qi(c.user);
  const role = `${where}: role ${c.user}`;
  let privilegeProblems = 0;
  const priv = (f: Omit<Finding, 'check' | 'cluster'>): void => {
    if (f.level !== 'ok') privilegeProblems++;
    add({ check: 'privileges', cluster: name, ...f });
  };
  if (!r.superuser && !r.replication) {
    priv({
      level: 'error',
      object: c.user,
      message: `${role} has neither REPLICATION nor superuser; capture cannot create or read the replication slot ${slot}`,
      fix: `ALTER ROLE ${user} WITH REPLICATION;`,
    });
  }
  // With clusters.<name>.apply set, apply logs in as that role (checked under service_roles), not as user.
  const applyRole = !!cfg.clusters[name]?.roles?.apply;
  if (!applyRole && cfg.origin.method !== 'message' && !r.superuser && !(r.originSessionSetup && r.originXactSetup)) {
    const fix = `GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text), pg_replication_origin_xact_setup(pg_lsn, timestamptz), pg_replication_origin_create(text) TO ${user};`;
    const origin = cfg.directions
      .filter((d) => d.to === name)
      .map((d) => originName(cfg, d.from))
      .join(', ');
    if (cfg.origin.method === 'replication-origin') {
      priv({
        level: 'error',
        object: c.user,
        message: `${role} cannot use replication origins (${origin}) and origin.method is replication-origin: apply into ${name} cannot tag its writes (loop prevention, commit timestamps for last-writer-wins)`,
        fix,
      });
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
      fix:
        c.serverVersionNum >= 150000 ? `GRANT SET ON PARAMETER session_replication_role TO ${user};` : `apply needs a superuser role on PostgreSQL before 15`,
    });
  }
  if (!r.createOnDatabase && !(c.cdcSchemaExists && c.publicationExists)) {
    const needs = [c.cdcSchemaExists ? '' : 'schema cdc', c.publicationExists ? '' : `publication ${slot}`].filter(Boolean).join(' and ');
    priv({
      level: 'error',
      object: c.database,
      message: `${role} has no CREATE on database ${c.database}; setup cannot create ${needs}`,
      fix: `GRANT CREATE ON DATABASE ${qi(c.database)} TO ${user};`,
    });
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
      message:
        ddl === 'record'
          ? `${role} is not superuser; setup cannot create the event trigger that records DDL on ${name} for replication (ddl.forward: replicate)`
          : `${role} is not superuser; setup cannot create the event trigger that refuses DDL on ${name} (ddl.reverse: reject)`,
      fix:
        ddl === 'record'
          ? 'run setup once as a superuser, or set ddl.forward: off (then make schema changes on both clusters yourself)'
          : 'run setup once as a superuser, or set ddl.reverse: warn',
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
    add({
      level: 'ok',
      check: 'privileges',
      cluster: name,
      object: c.user,
      message: `${role} has the privileges capture and apply need${r.superuser ? ' (superuser)' : ''}`,
    });
  }
}

/** service_roles: the roles of clusters.<name>.capture / .apply have what their service needs. */
export function checkServiceRoles(_cfg: PipelineConfig, c: ReachableClusterFacts, add: AddFinding): void {
  const where = `cluster ${at(c)}`;
  const name = c.name;
  for (const sr of c.serviceRoles ?? []) {
    const what = `${where}: role ${sr.role} (${sr.service === 'capture' ? `capture of ${name}` : `apply into ${name}`})`;
    if (sr.missing.length === 0) add({ level: 'ok', check: 'service_roles', cluster: name, object: sr.role, message: `${what} has what ${sr.service} needs` });
    else
      add({
        level: 'error',
        check: 'service_roles',
        cluster: name,
        object: sr.role,
        message: `${what} lacks ${list(sr.missing)}`,
        fix: `pgbridge grants --cluster ${name}, run on ${name} as an administrator`,
      });
  }
}
