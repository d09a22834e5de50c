/**
 * What the schema step of the initial sync needs besides `pg_dump -n <schema>`:
 *
 * - the relations left out of the dump: tables the selection leaves out, with their
 *   partitions, the sequences they own, and the views and materialized views that read any of
 *   them (a view over a left-out table cannot be created on the destination);
 * - the extensions the selected objects use (column types, including arrays and domains over
 *   them, defaults, constraints, indexes, views, triggers, functions), with the extensions those
 *   require. `pg_dump -n` dumps none of them, so a column of an extension type would fail on
 *   the destination. Extensions missing there are dumped too (`pg_dump -e`), and so created by
 *   the restore; extensions that cannot be created there are reported, with the fix.
 *
 * Shared by `sync` (which refuses to start the restore when an extension is missing) and
 * `precheck` (which reports the same problems as findings).
 */
import type pg from 'pg';
import type { PipelineConfig } from '../../shared/config.js';
import { qi, qt } from '../../shared/pg.js';

export interface NeededExtension {
  readonly name: string;
  /** Schema of the extension on the source: the destination must have it in the same one (column types name it). */
  readonly schema: string;
  readonly version: string;
  /** Used by a selected object itself, rather than only required by another extension. */
  readonly direct: boolean;
}

export interface SchemaPlan {
  /** Quoted names for `pg_dump -T`: relations of the selected schemas that are not dumped. */
  readonly exclude: string[];
  /** Views and materialized views left out because they read a left-out table (schema.name). */
  readonly leftOutViews: string[];
  readonly extensions: NeededExtension[];
}

/** The destination's side of one extension. */
export interface DestinationExtension {
  readonly name: string;
  /** Installed: its schema and version; null when not installed. */
  readonly installed: { readonly schema: string; readonly version: string } | null;
  /** Default version of the extension's files on the destination server; null when it has none. */
  readonly available: string | null;
  /** Trusted (PostgreSQL 13+): a role with CREATE on the database may create it without superuser. */
  readonly trusted: boolean;
}

export interface ExtensionProblem {
  readonly extension: string;
  readonly message: string;
  readonly fix: string;
}

/** Relations to leave out, and extensions needed, for the selected tables of a cluster. */
export async function planSchema(c: pg.Client, cfg: PipelineConfig, selected: readonly { schema: string; table: string }[]): Promise<SchemaPlan> {
  const wanted = new Set(selected.map((t) => `${t.schema}.${t.table}`));
  const roots = await c.query<{ oid: string; s: string; t: string }>(
    `SELECT c.oid::text AS oid, n.nspname AS s, c.relname AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname = ANY($1::text[])`,
    [cfg.selection.schemas],
  );
  const leftOutRoots = roots.rows.filter((r) => !wanted.has(`${r.s}.${r.t}`)).map((r) => r.oid);
  // Everything that goes with a left-out table: partitions (at any depth), owned sequences
  // (serial and identity), and views over it or over such a view.
  const out = await c.query<{ oid: string; s: string; t: string; kind: string }>(
    `WITH RECURSIVE gone(oid) AS (
       SELECT unnest($1::oid[])
       UNION
       SELECT x.oid FROM gone g, LATERAL (
         SELECT i.inhrelid AS oid FROM pg_inherits i WHERE i.inhparent = g.oid
         UNION ALL
         SELECT d.objid FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
          WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = g.oid AND d.deptype IN ('a', 'i')
         UNION ALL
         SELECT r.ev_class FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
          WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = g.oid AND r.ev_class <> g.oid
       ) x)
     SELECT c.oid::text AS oid, n.nspname AS s, c.relname AS t, c.relkind::text AS kind FROM gone JOIN pg_class c ON c.oid = gone.oid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = ANY($2::text[]) ORDER BY 1, 2`,
    [leftOutRoots, cfg.selection.schemas],
  );
  const exclude = out.rows.map((r) => qt(r.s, r.t));
  const leftOutViews = out.rows.filter((r) => r.kind === 'v' || r.kind === 'm').map((r) => `${r.s}.${r.t}`);
  const extensions = await neededExtensions(
    c,
    cfg.selection.schemas,
    out.rows.map((r) => r.oid),
  );
  return { exclude, leftOutViews, extensions };
}

/**
 * Extensions that objects of the selected schemas (less the left-out relations, and less the
 * members of extensions themselves) depend on, and the extensions those require.
 */
async function neededExtensions(c: pg.Client, schemas: readonly string[], leftOutOids: readonly string[]): Promise<NeededExtension[]> {
  const r = await c.query<{ name: string; schema: string; version: string; direct: boolean | string }>(
    `WITH RECURSIVE ns AS (SELECT oid FROM pg_namespace WHERE nspname = ANY($1::text[])),
     rels AS (SELECT c.oid FROM pg_class c WHERE c.relnamespace IN (SELECT oid FROM ns)
               AND c.oid <> ALL ($2::oid[])),
     mine AS (
       SELECT 'pg_class'::regclass AS classid, oid AS objid FROM rels
       UNION ALL SELECT 'pg_type'::regclass, oid FROM pg_type WHERE typnamespace IN (SELECT oid FROM ns)
       UNION ALL SELECT 'pg_proc'::regclass, oid FROM pg_proc WHERE pronamespace IN (SELECT oid FROM ns)
       UNION ALL SELECT 'pg_attrdef'::regclass, oid FROM pg_attrdef WHERE adrelid IN (SELECT oid FROM rels)
       UNION ALL SELECT 'pg_constraint'::regclass, oid FROM pg_constraint WHERE conrelid IN (SELECT oid FROM rels) OR contypid IN (SELECT oid FROM pg_type WHERE typnamespace IN (SELECT oid FROM ns))
       UNION ALL SELECT 'pg_rewrite'::regclass, oid FROM pg_rewrite WHERE ev_class IN (SELECT oid FROM rels)
       UNION ALL SELECT 'pg_trigger'::regclass, oid FROM pg_trigger WHERE tgrelid IN (SELECT oid FROM rels)),
     own AS (
       SELECT m.classid, m.objid FROM mine m
        WHERE NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = m.classid AND e.objid = m.objid AND e.deptype = 'e')),
     used AS (
       SELECT d.refclassid AS classid, d.refobjid AS objid FROM own o JOIN pg_depend d ON d.classid = o.classid AND d.objid = o.objid
       UNION
       -- An array of an extension type (hstore[]) is not itself a member of the extension.
       SELECT 'pg_type'::regclass, t.typelem FROM own o JOIN pg_depend d ON d.classid = o.classid AND d.objid = o.objid
         JOIN pg_type t ON d.refclassid = 'pg_type'::regclass AND t.oid = d.refobjid AND t.typelem <> 0),
     direct AS (
       SELECT DISTINCT e.refobjid AS ext FROM used u JOIN pg_depend e ON e.classid = u.classid AND e.objid = u.objid
        WHERE e.deptype = 'e' AND e.refclassid = 'pg_extension'::regclass),
     needed(ext) AS (
       SELECT ext FROM direct
       UNION
       SELECT d.refobjid FROM needed x JOIN pg_depend d ON d.classid = 'pg_extension'::regclass AND d.objid = x.ext AND d.refclassid = 'pg_extension'::regclass)
     SELECT e.extname AS name, n.nspname AS schema, e.extversion AS version, e.oid IN (SELECT ext FROM direct) AS direct
       FROM needed JOIN pg_extension e ON e.oid = needed.ext JOIN pg_namespace n ON n.oid = e.extnamespace
      WHERE e.extname <> 'plpgsql'
      ORDER BY 1`,
    [schemas, leftOutOids],
  );
  return r.rows.map((x) => ({ name: x.name, schema: x.schema, version: x.version, direct: x.direct === true || x.direct === 't' }));
}

/** The role's power to create extensions on a cluster. */
export async function extensionRole(c: pg.Client): Promise<{ name: string; superuser: boolean; createOnDatabase: boolean }> {
  const r = await c.query<{ name: string; su: boolean | string; cr: boolean | string }>(
    `SELECT current_user AS name, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS su, has_database_privilege(current_database(), 'CREATE') AS cr`,
  );
  const t = (v: boolean | string): boolean => v === true || v === 't';
  return { name: r.rows[0]!.name, superuser: t(r.rows[0]!.su), createOnDatabase: t(r.rows[0]!.cr) };
}

/** The destination's state of the named extensions. */
export async function destinationExtensions(c: pg.Client, names: readonly string[]): Promise<DestinationExtension[]> {
  if (names.length === 0) return [];
  const r = await c.query<{ name: string; schema: string | null; version: string | null; available: string | null; trusted: boolean | string | null }>(
    `SELECT x.name, n.nspname AS schema, e.extversion AS version, a.default_version AS available,
            COALESCE((SELECT bool_or(v.trusted) FROM pg_available_extension_versions v WHERE v.name = x.name), false) AS trusted
       FROM unnest($1::text[]) AS x(name)
       LEFT JOIN pg_extension e ON e.extname = x.name
       LEFT JOIN pg_namespace n ON n.oid = e.extnamespace
       LEFT JOIN pg_available_extensions a ON a.name = x.name`,
    [names],
  );
  return r.rows.map((x) => ({
    name: x.name,
    installed: x.schema === null ? null : { schema: x.schema, version: x.version ?? '' },
    available: x.available,
    trusted: x.trusted === true || x.trusted === 't',
  }));
}

/**
 * Pure: which needed extensions the restore creates on the destination, and which cannot be
 * had there (not available, in another schema, or not creatable by the role), with the fix.
 */
export function classifyExtensions(
  needed: readonly NeededExtension[],
  there: readonly DestinationExtension[],
  role: { readonly name: string; readonly superuser: boolean; readonly createOnDatabase: boolean },
  cluster: string,
): { create: NeededExtension[]; present: NeededExtension[]; problems: ExtensionProblem[] } {
  const create: NeededExtension[] = [];
  const present: NeededExtension[] = [];
  const problems: ExtensionProblem[] = [];
  for (const e of needed) {
    const d = there.find((x) => x.name === e.name);
    const createSql = `CREATE EXTENSION IF NOT EXISTS ${qi(e.name)} WITH SCHEMA ${qi(e.schema)};`;
    if (d?.installed) {
      if (d.installed.schema === e.schema) {
        present.push(e);
      } else {
        problems.push({
          extension: e.name,
          message: `extension ${e.name} is in schema ${e.schema} on the source but in ${d.installed.schema} on ${cluster}; the dumped tables name its types as ${e.schema}.<type>`,
          fix: `on ${cluster}: ALTER EXTENSION ${qi(e.name)} SET SCHEMA ${qi(e.schema)}; (create the schema first if needed)`,
        });
      }
      continue;
    }
    if (!d?.available) {
      problems.push({
        extension: e.name,
        message: `extension ${e.name} (version ${e.version} on the source, schema ${e.schema}) is needed by the selected objects but is not available on ${cluster}: its files are not installed on that server`,
        fix: `install the package that provides ${e.name} on ${cluster}'s server (for contrib modules: the contrib package of its PostgreSQL version), then run sync again; or exclude the tables that use it`,
      });
      continue;
    }
    if (!role.superuser && !(d.trusted && role.createOnDatabase)) {
      problems.push({
        extension: e.name,
        message: `extension ${e.name} is not installed on ${cluster}, and role ${role.name} cannot create it (${d.trusted ? 'no CREATE privilege on the database' : 'not a trusted extension: it needs a superuser'})`,
        fix: `as a superuser on ${cluster}: ${createSql}`,
      });
      continue;
    }
    create.push(e);
  }
  return { create, present, problems };
}
