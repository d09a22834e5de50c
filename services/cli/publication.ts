/**
 * The publication cdc_<pipeline>_<cluster>: made by `setup` from the selection, and brought
 * back in line with it by every later `setup` (tables added and dropped, column lists, row
 * filters, the operations published, publish_via_partition_root). What changed is returned,
 * one line each, for setup to print. The change is one transaction: a selection that would
 * break writes on the cluster (a row filter or column list that the replica identity does not
 * cover) is refused with nothing changed.
 */
import type pg from 'pg';
import { PgBridgeError } from '../../shared/errors.js';
import { qi, qt, ql } from '../../shared/pg.js';
import type { PipelineConfig } from '../../shared/config.js';
import { OPERATIONS, missingColumns, operationsOf, publishedColumns, rowFilter, tableSettings, type Operation } from '../../shared/table-settings.js';
import { selectedTables } from './setup.js';
import { ClusterNaming } from '../../shared/naming.js';

/** Helper tables capture reads (heartbeat, control records); always published, with every column and row. */
export const PUBLISHED_HELPERS = ['cdc.heartbeat', 'cdc.control'];

interface PubTable {
  readonly name: string;
  /** Column list; null: every column. */
  readonly columns: readonly string[] | null;
  /** Row filter as written (desired) or as PostgreSQL prints it (current); null: every row. */
  readonly where: string | null;
}

interface PubState {
  readonly schemas: readonly string[];
  readonly tables: ReadonlyMap<string, PubTable>;
  readonly publish: readonly Operation[];
  readonly viaRoot: boolean;
  /** The tables capture receives (pg_publication_tables: schema members included, partitions as their root), with the columns and row filter of each; read from the catalog only. */
  readonly effective?: ReadonlyMap<string, { readonly columns: readonly string[]; readonly where: string | null }>;
}

/** The direction whose topic a cluster's publication feeds. */
function outgoingId(cfg: PipelineConfig, cluster: string): string {
  return cfg.directions.find((d) => d.from === cluster)!.id;
}

/** Columns of the selected tables on the cluster, in order, without generated ones (PostgreSQL never publishes those). */
async function columnsOf(client: pg.Client, names: readonly string[]): Promise<Map<string, string[]>> {
  if (names.length === 0) return new Map();
  const r = await client.query<{ t: string; cols: string }>(
    `SELECT n.nspname || '.' || c.relname AS t, json_agg(a.attname ORDER BY a.attnum)::text AS cols
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid
      WHERE n.nspname || '.' || c.relname = ANY($1::text[]) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
      GROUP BY 1`,
    [names],
  );
  return new Map(r.rows.map((x) => [x.t, JSON.parse(x.cols) as string[]]));
}

/** What the publication should hold for the current selection. */
async function desiredState(client: pg.Client, cfg: PipelineConfig, cluster: string, current: PubState | null): Promise<PubState> {
  const dir = outgoingId(cfg, cluster);
  const naming = new ClusterNaming(cfg, cluster);
  // Pipeline name → this cluster's name (they differ for a table renamed here).
  const selected = new Map((await selectedTables(client, cfg, cluster)).map((t) => [t.name ?? `${t.schema}.${t.table}`, `${t.schema}.${t.table}`]));
  const cols = await columnsOf(client, [...selected.values()]);
  const publish = new Set<Operation>(['insert', 'update']); // the helper tables need both (heartbeat upserts)
  const tables = new Map<string, PubTable>();
  const problems: string[] = [];
  let filtered = false;
  for (const [name, physical] of selected) {
    const [schema, table] = [name.slice(0, name.indexOf('.')), name.slice(name.indexOf('.') + 1)];
    const s = tableSettings(cfg, schema, table);
    for (const op of operationsOf(s, dir)) publish.add(op);
    // Column lists name the pipeline's columns; this cluster may call them otherwise.
    const have = cols.get(physical) ?? [];
    const pipelineNames = have.map((c) => naming.logicalColumn(schema, table, c));
    for (const m of missingColumns(s, pipelineNames))
      problems.push(
        `selection.tables.${name}.columns names column ${m}, which ${physical} does not have on cluster ${cluster} (or it is a generated column, never published)`,
      );
    const listed = publishedColumns(s, pipelineNames);
    const columns = listed ? listed.map((c) => naming.column(schema, table, c)) : null;
    const where = rowFilter(s, dir);
    if (columns || where || physical !== name) filtered = true;
    tables.set(physical, { name: physical, columns, where });
  }
  if (problems.length) throw new PgBridgeError('CONFIG_INVALID', problems.join('\n'));
  for (const s of Object.keys(cfg.selection.tables)) {
    if (!selected.has(s))
      problems.push(
        `selection.tables.${s}: no such table on cluster ${cluster}${naming.physical(...(s.split('.') as [string, string])).join('.') !== s ? ` (renamed there to ${naming.physical(...(s.split('.') as [string, string])).join('.')})` : ''}`,
      );
  }
  if (problems.length) throw new PgBridgeError('CONFIG_INVALID', problems.join('\n'));
  const { include, exclude, schemas } = cfg.selection;
  const schemaMode = include.length === 0 && exclude.length === 0 && !filtered;
  const helpers = new Set(PUBLISHED_HELPERS);
  // Helper tables another part of pgbridge added to the publication (schema cdc) stay.
  for (const t of current?.tables.keys() ?? []) if (t.startsWith('cdc.')) helpers.add(t);
  const out = new Map<string, PubTable>();
  if (!schemaMode) for (const [k, v] of tables) out.set(k, v);
  for (const h of helpers) out.set(h, { name: h, columns: null, where: null });
  return { schemas: schemaMode ? [...schemas].sort() : [], tables: out, publish: OPERATIONS.filter((o) => publish.has(o)), viaRoot: true };
}

/** The publication as the catalog has it; null when it does not exist. */
async function currentState(client: pg.Client, pub: string): Promise<PubState | null> {
  const p = await client.query<{ pubinsert: boolean; pubupdate: boolean; pubdelete: boolean; pubtruncate: boolean; pubviaroot: boolean }>(
    'SELECT pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot FROM pg_publication WHERE pubname = $1',
    [pub],
  );
  const row = p.rows[0];
  if (!row) return null;
  const ns = await client.query<{ nspname: string }>(
    'SELECT n.nspname FROM pg_publication_namespace pn JOIN pg_publication p ON p.oid = pn.pnpubid JOIN pg_namespace n ON n.oid = pn.pnnspid WHERE p.pubname = $1 ORDER BY 1',
    [pub],
  );
  const rel = await client.query<{ name: string; qual: string | null; cols: string | null }>(
    `SELECT n.nspname || '.' || c.relname AS name, pg_get_expr(pr.prqual, pr.prrelid) AS qual,
            (SELECT json_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = pr.prrelid AND a.attnum = ANY(pr.prattrs::int2[]))::text AS cols
       FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
       JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE p.pubname = $1`,
    [pub],
  );
  const eff = await client.query<{ name: string; cols: string; qual: string | null }>(
    `SELECT schemaname || '.' || tablename AS name, array_to_json(attnames)::text AS cols, rowfilter AS qual FROM pg_publication_tables WHERE pubname = $1`,
    [pub],
  );
  const t = (v: unknown): boolean => v === true || v === 't';
  const on: Record<Operation, boolean> = { insert: t(row.pubinsert), update: t(row.pubupdate), delete: t(row.pubdelete), truncate: t(row.pubtruncate) };
  return {
    schemas: ns.rows.map((r) => r.nspname),
    tables: new Map(rel.rows.map((r) => [r.name, { name: r.name, columns: r.cols ? (JSON.parse(r.cols) as string[]) : null, where: r.qual }])),
    publish: OPERATIONS.filter((o) => on[o]),
    viaRoot: t(row.pubviaroot),
    effective: new Map(eff.rows.map((r) => [r.name, { columns: JSON.parse(r.cols) as string[], where: r.qual }])),
  };
}

function objectsSql(s: PubState): string {
  const parts: string[] = [];
  if (s.schemas.length) parts.push(`TABLES IN SCHEMA ${s.schemas.map(qi).join(', ')}`);
  const tables = [...s.tables.values()].map((t) => {
    const [schema, table] = [t.name.slice(0, t.name.indexOf('.')), t.name.slice(t.name.indexOf('.') + 1)];
    return `${qt(schema, table)}${t.columns ? ` (${t.columns.map(qi).join(', ')})` : ''}${t.where ? ` WHERE (${t.where})` : ''}`;
  });
  if (tables.length) parts.push(`TABLE ${tables.join(', ')}`);
  return parts.join(', ');
}

function optionsSql(s: PubState): string {
  return `publish = ${ql(s.publish.join(', '))}, publish_via_partition_root = ${s.viaRoot}`;
}

/** What differs between two states of the publication as the catalog has them, one line each. */
function differences(before: PubState, after: PubState): string[] {
  const out: string[] = [];
  for (const s of after.schemas) if (!before.schemas.includes(s)) out.push(`schema ${s} added (its tables are published, now and when created)`);
  for (const s of before.schemas) if (!after.schemas.includes(s)) out.push(`schema ${s} removed (its tables are published only when listed)`);
  const was = before.effective!;
  const now = after.effective!;
  for (const [name, t] of now) {
    const w = was.get(name);
    if (!w) {
      out.push(
        `table ${name} added${name.startsWith('cdc.') ? '' : `: its changes replicate from now on; to copy the rows it already has, run pgbridge resync --table ${name}`}`,
      );
      continue;
    }
    if (w.columns.join(', ') !== t.columns.join(', ')) out.push(`table ${name}: columns ${w.columns.join(', ')} → ${t.columns.join(', ')}`);
    if ((w.where ?? 'none') !== (t.where ?? 'none')) out.push(`table ${name}: row filter ${w.where ?? 'none'} → ${t.where ?? 'none'}`);
  }
  for (const name of was.keys()) if (!now.has(name)) out.push(`table ${name} removed: its changes no longer replicate`);
  if (before.publish.join() !== after.publish.join()) out.push(`publish ${before.publish.join(', ')} → ${after.publish.join(', ')}`);
  if (before.viaRoot !== after.viaRoot)
    out.push(`publish_via_partition_root ${before.viaRoot} → ${after.viaRoot} (partitioned tables replicate as their root table)`);
  return out;
}

const list = (v: readonly string[] | null): string => (v ? v.join(', ') : 'all');

/** True when the members (schemas, tables, column lists) differ; row filters are compared by PostgreSQL's own text after the change. */
function membersDiffer(a: PubState, b: PubState): boolean {
  if (a.schemas.join() !== b.schemas.join() || a.tables.size !== b.tables.size) return true;
  for (const [name, t] of b.tables) {
    const x = a.tables.get(name);
    if (!x || list(x.columns) !== list(t.columns) || (x.where === null) !== (t.where === null)) return true;
  }
  return false;
}

/**
 * PostgreSQL refuses UPDATE and DELETE on a table whose publication has a row filter on
 * columns outside its replica identity, or a column list that leaves part of the replica
 * identity out. An EXPLAIN (no rows, no triggers) runs that check with the new publication in place.
 */
async function writesStillWork(client: pg.Client, s: PubState, cluster: string): Promise<string[]> {
  const problems: string[] = [];
  for (const t of s.tables.values()) {
    if (!t.columns && !t.where) continue;
    const [schema, table] = [t.name.slice(0, t.name.indexOf('.')), t.name.slice(t.name.indexOf('.') + 1)];
    const col = (
      await client.query<{ a: string }>(
        `SELECT attname AS a FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum LIMIT 1`,
        [qt(schema, table)],
      )
    ).rows[0]?.a;
    if (!col) continue;
    for (const [op, sql] of [
      ['update', `EXPLAIN UPDATE ${qt(schema, table)} SET ${qi(col)} = ${qi(col)} WHERE false`],
      ['delete', `EXPLAIN DELETE FROM ${qt(schema, table)} WHERE false`],
    ] as const) {
      if (!s.publish.includes(op)) continue;
      await client.query('SAVEPOINT pgbridge_probe');
      try {
        await client.query(sql);
        await client.query('RELEASE SAVEPOINT pgbridge_probe');
      } catch (err) {
        await client.query('ROLLBACK TO SAVEPOINT pgbridge_probe');
        const e = err as { message: string; detail?: string; code?: string };
        // Anything but the replica identity check is not this probe's to report.
        if (!/replica identity/i.test(`${e.message} ${e.detail ?? ''}`)) continue;
        problems.push(
          `${t.name} on cluster ${cluster}: ${e.message} (${e.detail ?? ''}). Fix: ${t.where ? "put the row filter's columns into the replica identity (ALTER TABLE … REPLICA IDENTITY USING INDEX, or FULL), " : ''}${t.columns ? 'keep the replica identity (key) columns in the column list, ' : ''}or replicate only inserts (operations) for this table`,
        );
        break;
      }
    }
  }
  return problems;
}

/**
 * Creates the publication, or brings it in line with the selection. Returns what changed
 * (empty when nothing did), one line per change.
 */
export async function reconcilePublication(client: pg.Client, cfg: PipelineConfig, cluster: string, pub: string): Promise<string[]> {
  const before = await currentState(client, pub);
  const want = await desiredState(client, cfg, cluster, before);
  await client.query('BEGIN');
  try {
    let changes: string[];
    if (!before) {
      await client.query(`CREATE PUBLICATION ${qi(pub)} FOR ${objectsSql(want)} WITH (${optionsSql(want)})`);
      changes = [
        `publication ${pub} created (${want.schemas.length ? `schemas ${want.schemas.join(', ')}, ` : ''}${want.tables.size} table(s); publish ${want.publish.join(', ')})`,
      ];
    } else {
      // Schema-wide publications need a superuser to alter: touch the members only when they differ.
      const hasFilters = [...want.tables.values(), ...before.tables.values()].some((t) => t.where);
      if (membersDiffer(before, want) || hasFilters) await client.query(`ALTER PUBLICATION ${qi(pub)} SET ${objectsSql(want)}`);
      if (before.publish.join() !== want.publish.join() || before.viaRoot !== want.viaRoot)
        await client.query(`ALTER PUBLICATION ${qi(pub)} SET (${optionsSql(want)})`);
      changes = differences(before, (await currentState(client, pub))!);
    }
    const problems = await writesStillWork(client, want, cluster);
    if (problems.length)
      throw new PgBridgeError(
        'PRECHECK',
        `the selection would make PostgreSQL refuse writes on cluster ${cluster}; publication ${pub} left as it was:\n${problems.join('\n')}`,
      );
    await client.query(changes.length ? 'COMMIT' : 'ROLLBACK');
    return changes;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}
