/**
 * Per-table settings of the selection (`selection.tables.<schema.table>`): which columns travel,
 * which rows (row filter) and which operations, per direction where the key allows it. One
 * definition for setup's publication, apply's operation filter and precheck.
 * docs/configuration.md (selection.tables) describes every key.
 */
import { z } from 'zod';

export const OPERATIONS = ['insert', 'update', 'delete', 'truncate'] as const;
export type Operation = (typeof OPERATIONS)[number];

const directionId = z.string().regex(/^[a-z][a-z0-9_]*-[a-z][a-z0-9_]*$/, 'a direction id such as a-b');
const column = z.string().min(1);
const operationList = z.array(z.enum(OPERATIONS)).min(1, 'at least one operation; leave the table out of the selection to replicate none');

const clusterName = z.string().regex(/^[a-z][a-z0-9_]{0,30}$/, 'a cluster name');
const qualified = z.string().regex(/^[^.]+\.[^.]+$/, 'schema.table');

export const tableSettingsSchema = z
  .object({
    /** The table's name on a cluster where it differs from its key (schema.table), by cluster name. */
    rename: z.record(clusterName, qualified).optional(),
    /** Column names on a cluster that differ: cluster → { name in the key's naming: name on that cluster }. */
    renameColumns: z.record(clusterName, z.record(column, column)).optional(),
    /** Columns that travel (include) or do not (exclude); both directions. */
    columns: z.union([z.object({ include: z.array(column).min(1) }).strict(), z.object({ exclude: z.array(column).min(1) }).strict()]).optional(),
    /** Row filter (a PostgreSQL boolean expression on the table's columns): one for both directions, or per direction id. */
    where: z.union([z.string().min(1), z.record(directionId, z.string().min(1))]).optional(),
    /** Operations that replicate: one list for both directions, or per direction id (a direction left out replicates all). */
    operations: z.union([operationList, z.record(directionId, operationList)]).optional(),
  })
  .strict();

export type TableSettings = z.output<typeof tableSettingsSchema>;

/** The settings part of a config (structural, so that config.ts and this file do not import each other). */
interface WithTables {
  readonly selection: { readonly tables: Readonly<Record<string, TableSettings>> };
}

export function tableSettings(cfg: WithTables, schema: string, table: string): TableSettings | undefined {
  return cfg.selection.tables[`${schema}.${table}`];
}

/** The row filter of a table in a direction (null: every row). */
export function rowFilter(s: TableSettings | undefined, direction: string): string | null {
  if (!s?.where) return null;
  return typeof s.where === 'string' ? s.where : (s.where[direction] ?? null);
}

/** The operations a table replicates in a direction. */
export function operationsOf(s: TableSettings | undefined, direction: string): readonly Operation[] {
  if (!s?.operations) return OPERATIONS;
  if (Array.isArray(s.operations)) return s.operations;
  return (s.operations as Record<string, Operation[]>)[direction] ?? OPERATIONS;
}

/** The operation a change event's op stands for; null for rows of the initial sync or a resync (op r), which always pass. */
export function operationOfOp(op: string): Operation | null {
  switch (op) {
    case 'c':
      return 'insert';
    case 'u':
      return 'update';
    case 'd':
      return 'delete';
    case 't':
      return 'truncate';
    default:
      return null;
  }
}

/**
 * The columns a publication lists for a table, given its columns on the cluster in order
 * (null: no column list, every column). Names the config lists that the table lacks are
 * reported by precheck and refused by setup (see missingColumns).
 */
export function publishedColumns(s: TableSettings | undefined, tableColumns: readonly string[]): string[] | null {
  const c = s?.columns;
  if (!c) return null;
  if ('include' in c) return tableColumns.filter((n) => c.include.includes(n));
  return tableColumns.filter((n) => !c.exclude.includes(n));
}

/** Column names the settings name that the table does not have. */
export function missingColumns(s: TableSettings | undefined, tableColumns: readonly string[]): string[] {
  const c = s?.columns;
  if (!c) return [];
  return ('include' in c ? c.include : c.exclude).filter((n) => !tableColumns.includes(n));
}

/** Problems of the settings that need no database: direction ids and cluster names that are not this pipeline's. */
export function settingsProblems(name: string, s: TableSettings, directions: readonly string[], clusters: readonly string[] = []): string[] {
  const out: string[] = [];
  for (const key of ['rename', 'renameColumns'] as const) {
    for (const c of Object.keys(s[key] ?? {})) {
      if (clusters.length && !clusters.includes(c)) out.push(`selection.tables.${name}.${key}.${c}: not a cluster of this pipeline (${clusters.join(', ')})`);
    }
  }
  for (const [c, cols] of Object.entries(s.renameColumns ?? {})) {
    const seen = new Map<string, string>();
    for (const [from, to] of Object.entries(cols)) {
      if (seen.has(to)) out.push(`selection.tables.${name}.renameColumns.${c}: ${seen.get(to)} and ${from} are both named ${to} on cluster ${c}`);
      seen.set(to, from);
    }
  }
  for (const key of ['where', 'operations'] as const) {
    const v = s[key];
    if (!v || typeof v === 'string' || Array.isArray(v)) continue;
    for (const d of Object.keys(v)) {
      if (!directions.includes(d)) out.push(`selection.tables.${name}.${key}.${d}: not a direction of this pipeline (${directions.join(', ')})`);
    }
  }
  return out;
}

/**
 * The rows both clusters should hold alike when each direction has its own row filter: those
 * every filter selects (a row on either cluster that all of them select has been sent to the
 * other). Null: every row.
 */
export function sharedRowFilter(s: TableSettings | undefined, directions: readonly string[]): string | null {
  const filters = [...new Set(directions.map((d) => rowFilter(s, d)).filter((f): f is string => f !== null))];
  if (filters.length <= 1) return filters[0] ?? null;
  return filters.map((f) => `(${f})`).join(' AND ');
}
