/**
 * DDL replication in the forward direction (DTS parity, docs/operations.md "Schema changes").
 *
 * On the forward source an event trigger (ddl_command_end and sql_drop) records every DDL
 * command on objects of the selected schemas as a control record of kind `ddl` in cdc.control,
 * inside the DDL's own transaction: capture publishes it at its place in commit order and
 * apply of the forward direction runs it on the destination as a sequence point. On the
 * reverse source the trigger only warns, or refuses the command (`ddl.reverse`).
 *
 * One function per pipeline and cluster. The recording one is SECURITY DEFINER (PUBLIC has no
 * privilege on cdc.control) and pins its search_path itself, after reading the caller's (which
 * a SET clause would hide); an event trigger function cannot be called directly, so a record
 * cannot be forged through it. Sessions in session_replication_role = replica (pgbridge's
 * apply) do not fire event triggers: DDL that apply runs is neither recorded nor refused.
 */
import type pg from 'pg';
import type { PipelineConfig } from './config.js';
import { PgBridgeError } from './errors.js';
import type { Logger } from './log.js';
import { qi, ql } from './pg.js';

/** What a `ddl` control record carries (JSON in its payload). */
export interface DdlRecord {
  readonly pipeline: string;
  /** Command tag: ALTER TABLE, CREATE INDEX, DROP TABLE ... */
  readonly tag: string;
  /** The statement text as the client sent it (current_query()). */
  readonly sql: string;
  /** search_path of the session that ran it; apply runs the text under the same one. */
  readonly searchPath: string;
  /** session_user and current_user of that session. */
  readonly role: string;
  readonly objects: readonly { readonly type: string; readonly schema: string; readonly identity: string }[];
}

/** Shape check of a ddl payload: every field apply reads. */
export function parseDdlRecord(text: string): DdlRecord | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  const d = v as Partial<DdlRecord> | null;
  if (
    !d ||
    typeof d !== 'object' ||
    typeof d.pipeline !== 'string' ||
    typeof d.tag !== 'string' ||
    typeof d.sql !== 'string' ||
    typeof d.searchPath !== 'string'
  )
    return null;
  if (!Array.isArray(d.objects) || !d.objects.every((o) => o && typeof o.schema === 'string' && typeof o.identity === 'string' && typeof o.type === 'string'))
    return null;
  return { pipeline: d.pipeline, tag: d.tag, sql: d.sql, searchPath: d.searchPath, role: typeof d.role === 'string' ? d.role : '', objects: d.objects };
}

/**
 * The table name in an object identity of a table or column (`s."My T".col` → `My T`):
 * PostgreSQL writes each part with quote_ident, the schema first.
 */
export function tableOfIdentity(schema: string, identity: string): string {
  const parts: string[] = [];
  let i = 0;
  while (i < identity.length) {
    let part = '';
    if (identity[i] === '"') {
      i++;
      while (i < identity.length) {
        if (identity[i] === '"' && identity[i + 1] === '"') {
          part += '"';
          i += 2;
        } else if (identity[i] === '"') {
          i++;
          break;
        } else part += identity[i++];
      }
    } else {
      while (i < identity.length && identity[i] !== '.') part += identity[i++];
    }
    parts.push(part);
    if (identity[i] === '.') i++;
  }
  return parts[0] === schema && parts.length > 1 ? parts[1]! : (parts[0] ?? '');
}

/** Whether `text` (lower case) has `word` as a whole identifier. */
function mentions(text: string, word: string): boolean {
  let i = text.indexOf(word);
  const part = (ch: string | undefined): boolean => ch !== undefined && /[a-z0-9_$]/.test(ch);
  while (i >= 0) {
    if (!part(text[i - 1]) && !part(text[i + word.length])) return true;
    i = text.indexOf(word, i + 1);
  }
  return false;
}

/**
 * Tables named differently on the two clusters (selection.tables.<t>.rename / renameColumns)
 * that a DDL record touches: its text names the source's tables and columns, which the
 * destination calls otherwise, so it cannot be run there as it is. Matched on the record's
 * table objects and, for the objects that do not name their table (an index, a constraint),
 * on the statement text.
 */
export function renamedTablesTouched(cfg: PipelineConfig, d: DdlRecord): string[] {
  const out = new Set<string>();
  const text = d.sql.toLowerCase();
  for (const [name, s] of Object.entries(cfg.selection.tables)) {
    const physical = [name, ...Object.values(s.rename ?? {})];
    const columns = Object.values(s.renameColumns ?? {}).some((m) => Object.keys(m).length > 0);
    if (physical.every((p) => p === name) && !columns) continue;
    const touched =
      d.objects.some((o) => (o.type === 'table' || o.type === 'table column') && physical.includes(`${o.schema}.${tableOfIdentity(o.schema, o.identity)}`)) ||
      physical.some((p) => mentions(text, p.slice(p.indexOf('.') + 1).toLowerCase()));
    if (touched) out.add(name);
  }
  return [...out];
}

/**
 * CREATE/DROP INDEX CONCURRENTLY and REINDEX CONCURRENTLY cannot run inside a transaction
 * block: apply runs them on their own, between two destination transactions.
 */
export function runsOutsideTransaction(d: DdlRecord): boolean {
  return /^(CREATE INDEX|DROP INDEX|REINDEX)$/.test(d.tag) && /\bconcurrently\b/i.test(d.sql);
}

/** What the trigger of a cluster does with DDL on the selected schemas. */
export type DdlTriggerMode = 'record' | 'warn' | 'reject';

export function ddlTriggerMode(cfg: PipelineConfig, cluster: string): DdlTriggerMode | null {
  const forward = cfg.directions.find((d) => d.forward)!;
  if (cluster === forward.from) return cfg.ddl.forward === 'replicate' ? 'record' : null;
  return cfg.ddl.reverse;
}

/** Names of a pipeline's trigger objects (event trigger names are per database, so they carry the pipeline). */
export function ddlObjectNames(pipeline: string): { fn: string; onEnd: string; onDrop: string } {
  return { fn: `ddl_trigger_${pipeline}`, onEnd: `cdc_${pipeline}_ddl`, onDrop: `cdc_${pipeline}_ddl_drop` };
}

/** An identifier as SQL writes it: double-quoted ("" inside), or plain (folded to lower case). */
const IDENT = '("(?:[^"]|"")+"|[[:alpha:]_][[:alnum:]_$]*)';
const PLAIN_IDENT = IDENT.replace('(', '(?:');
/** `RENAME [COLUMN] old TO new`: groups old, new. */
const RENAME_COLUMN_RE = `\\mRENAME\\s+(?:COLUMN\\s+)?${IDENT}\\s+TO\\s+${IDENT}`;
/** `ALTER TABLE [IF EXISTS] [ONLY] [schema.]old RENAME TO new`: groups old, new. */
const RENAME_TABLE_RE = `\\mALTER\\s+TABLE\\s+(?:IF\\s+EXISTS\\s+)?(?:ONLY\\s+)?(?:${PLAIN_IDENT}\\s*\\.\\s*)?${IDENT}\\s+RENAME\\s+TO\\s+${IDENT}`;

/** SQL that turns a matched identifier into the name the catalog holds. */
function ident(expr: string): string {
  return `(CASE WHEN left(${expr}, 1) = '"' THEN replace(substr(${expr}, 2, length(${expr}) - 2), '""', '"') ELSE lower(${expr}) END)`;
}

/** Transaction-local setting that remembers which statement texts were recorded already (one statement text can run several commands). */
const SEEN = 'pgbridge.ddl_seen';

function triggerSql(cfg: PipelineConfig, mode: DdlTriggerMode): string {
  const n = ddlObjectNames(cfg.pipeline);
  const schemas = `ARRAY[${cfg.selection.schemas.map(ql).join(', ')}]::text[]`;
  const objects = (alias: string) =>
    `jsonb_agg(jsonb_build_object('type', ${alias}.object_type, 'schema', ${alias}.schema_name, 'identity', ${alias}.object_identity))`;
  // The objects of the command in the selected schemas; null when it touches none.
  const collect = `
  IF ev = 'sql_drop' THEN
    SELECT ${objects('o')} INTO objs FROM pg_event_trigger_dropped_objects() o WHERE o.schema_name = ANY (${schemas}) AND o.original;
  ELSE
    SELECT ${objects('o')} INTO objs FROM pg_event_trigger_ddl_commands() o WHERE o.schema_name = ANY (${schemas}) AND NOT o.in_extension;
  END IF;`;
  if (mode === 'record') {
    // SECURITY DEFINER (only the owner writes cdc.control) without a SET clause, which would
    // hide the caller's search_path: the body reads it first, pins its own with calls that are
    // all schema-qualified, and puts the caller's back before it returns.
    return `
CREATE OR REPLACE FUNCTION cdc.${qi(n.fn)}() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER AS $pgbridge$
DECLARE
  caller_path text := pg_catalog.current_setting('search_path');
  ev text := TG_EVENT;
  objs jsonb;
  q text;
  key text;
  seen text;
  rid bigint;
  cmd record;
  m record;
  tbl text;
  col text;
BEGIN
  PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
  q := current_query();
  key := md5(coalesce(q, ''));
  seen := coalesce(current_setting(${ql(SEEN)}, true), '');
  ${collect}
  IF objs IS NOT NULL AND ev = 'ddl_command_end' AND TG_TAG = 'ALTER TABLE' AND q ~* '\\mRENAME\\M' THEN
    -- Renames, for apply of the reverse direction (cdc.ddl_renames): the new name from the
    -- catalog, the old one from the statement text (the catalog no longer has it).
    FOR cmd IN SELECT c.object_type, c.schema_name, c.objid, c.objsubid FROM pg_event_trigger_ddl_commands() c
              WHERE c.schema_name = ANY (${schemas}) AND c.object_type IN ('table', 'table column') LOOP
      SELECT r.relname, a.attname INTO tbl, col FROM pg_class r LEFT JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum = cmd.objsubid AND cmd.objsubid > 0
       WHERE r.oid = cmd.objid;
      FOR m IN SELECT regexp_matches(q, CASE WHEN cmd.object_type = 'table column' THEN ${ql(RENAME_COLUMN_RE)} ELSE ${ql(RENAME_TABLE_RE)} END, 'gi') AS g LOOP
        IF ${ident('m.g[2]')} = coalesce(col, tbl) THEN
          INSERT INTO cdc.ddl_renames (pipeline, kind, schema_name, table_name, old_name, new_name)
          VALUES (${ql(cfg.pipeline)}, CASE WHEN col IS NULL THEN 'table' ELSE 'column' END, cmd.schema_name, tbl, ${ident('m.g[1]')}, coalesce(col, tbl));
          EXIT;
        END IF;
      END LOOP;
    END LOOP;
  END IF;
  IF objs IS NOT NULL AND position(key IN seen) = 0 THEN
    PERFORM set_config(${ql(SEEN)}, seen || ' ' || key, true);
    INSERT INTO cdc.control (pipeline, kind, payload)
    VALUES (${ql(cfg.pipeline)}, 'ddl', jsonb_build_object('pipeline', ${ql(cfg.pipeline)}, 'tag', TG_TAG, 'sql', q, 'searchPath', caller_path,
            'role', session_user::text, 'objects', objs)::text)
    RETURNING id INTO rid;
    DELETE FROM cdc.control WHERE id = rid;
  END IF;
  PERFORM pg_catalog.set_config('search_path', caller_path, true);
END $pgbridge$;`;
  }
  const raise =
    mode === 'reject'
      ? `RAISE EXCEPTION 'pgbridge pipeline % refuses % on this cluster: it is the reverse source, and DDL is replicated from the forward source only (ddl.reverse: reject)', ${ql(cfg.pipeline)}, TG_TAG
        USING ERRCODE = 'insufficient_privilege', HINT = 'Run the DDL on the forward source; pgbridge replicates it here.';`
      : `RAISE WARNING 'pgbridge pipeline %: % on the reverse source is not replicated (DDL goes from the forward source only); run it on the forward source, or the clusters differ', ${ql(cfg.pipeline)}, TG_TAG;`;
  // Runs as the issuing role: only catalog functions, schema-qualified, and no table writes.
  return `
CREATE OR REPLACE FUNCTION cdc.${qi(n.fn)}() RETURNS event_trigger LANGUAGE plpgsql AS $pgbridge$
DECLARE
  objs jsonb;
  ev text := TG_EVENT;
BEGIN
  ${collect.replaceAll('pg_event_trigger_', 'pg_catalog.pg_event_trigger_').replaceAll('jsonb_', 'pg_catalog.jsonb_')}
  IF objs IS NULL THEN RETURN; END IF;
  ${raise}
END $pgbridge$;`;
}

/**
 * Creates (or replaces) the pipeline's DDL trigger on one cluster, as `ddl.forward` and
 * `ddl.reverse` say; drops it when the cluster needs none. Event triggers need a superuser:
 * without one, the warning trigger is left out (logged), recording or rejecting is an error.
 */
export async function installDdlTrigger(client: pg.Client, cfg: PipelineConfig, cluster: string, log: Logger): Promise<DdlTriggerMode | null> {
  const mode = ddlTriggerMode(cfg, cluster);
  if (mode === null) {
    await dropDdlTrigger(client, cfg.pipeline);
    return null;
  }
  const su = await client.query<{ su: boolean | string }>('SELECT rolsuper AS su FROM pg_roles WHERE rolname = current_user');
  const isSu = su.rows[0]?.su === true || su.rows[0]?.su === 't';
  const n = ddlObjectNames(cfg.pipeline);
  if (!isSu) {
    const exists = await client.query('SELECT 1 FROM pg_event_trigger WHERE evtname = $1', [n.onEnd]);
    if (exists.rowCount) {
      log.warn({ cluster }, 'DDL event trigger left as it is: replacing it needs a superuser (run setup as one after changing ddl.* or selection.schemas)');
      return mode;
    }
  }
  if (!isSu && mode === 'warn') {
    log.warn({ cluster }, 'no DDL warning trigger on the reverse source: creating an event trigger needs a superuser (DDL made there is still not replicated)');
    return null;
  }
  if (!isSu) {
    const key = mode === 'record' ? 'ddl.forward: off' : 'ddl.reverse';
    throw new PgBridgeError(
      'PRECHECK',
      `cluster ${cluster}: DDL ${mode === 'record' ? 'replication' : 'guard'} needs an event trigger, and only a superuser can create one; run pgbridge setup as a superuser (clusters.${cluster}.user)${mode === 'record' ? `, or set ${key}` : ''}`,
    );
  }
  await client.query(triggerSql(cfg, mode));
  await client.query(`DROP EVENT TRIGGER IF EXISTS ${qi(n.onEnd)}; DROP EVENT TRIGGER IF EXISTS ${qi(n.onDrop)}`);
  await client.query(`CREATE EVENT TRIGGER ${qi(n.onEnd)} ON ddl_command_end EXECUTE FUNCTION cdc.${qi(n.fn)}()`);
  await client.query(`CREATE EVENT TRIGGER ${qi(n.onDrop)} ON sql_drop EXECUTE FUNCTION cdc.${qi(n.fn)}()`);
  return mode;
}

/** Drops the pipeline's event triggers and their functions (release, or a mode that needs none). */
export async function dropDdlTrigger(client: pg.Client, pipeline: string): Promise<boolean> {
  const n = ddlObjectNames(pipeline);
  const r = await client.query('SELECT 1 FROM pg_event_trigger WHERE evtname = ANY($1::text[])', [[n.onEnd, n.onDrop]]);
  if (r.rowCount) {
    await client.query(`DROP EVENT TRIGGER IF EXISTS ${qi(n.onEnd)}; DROP EVENT TRIGGER IF EXISTS ${qi(n.onDrop)}`).catch((err: unknown) => {
      if ((err as { code?: string }).code !== '42501') throw err;
      throw new PgBridgeError(
        'PRECHECK',
        `event triggers ${n.onEnd} and ${n.onDrop} of pipeline ${pipeline} can only be dropped by a superuser (their owner): run this as one`,
        { cause: err },
      );
    });
  }
  const f = await client.query(
    `SELECT 1 FROM pg_proc p JOIN pg_namespace s ON s.oid = p.pronamespace WHERE s.nspname = 'cdc' AND p.proname = ANY($1::text[])`,
    [[n.fn]],
  );
  if (f.rowCount) await client.query(`DROP FUNCTION IF EXISTS cdc.${qi(n.fn)}()`);
  return (r.rowCount ?? 0) > 0;
}
