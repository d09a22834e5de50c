/**
 * Precheck rules for selection.tables (column lists, row filters, operations): a table with
 * settings missing on a cluster, a column named that the table lacks, a column list without
 * the replica identity's columns, a row filter on columns outside it. PostgreSQL refuses
 * every UPDATE and DELETE on a table whose publication breaks one of the last two rules, so
 * these are errors with their fix. `setup` checks the same with PostgreSQL itself.
 */
import type pg from 'pg';
import type { PipelineConfig } from '../../../shared/config.js';
import { withClient, qt } from '../../../shared/pg.js';
import { splitTableName } from '../../../shared/selection.js';
import { ClusterNaming } from '../../../shared/naming.js';
import { missingColumns, operationsOf, publishedColumns, rowFilter, tableSettings } from '../../../shared/table-settings.js';
import type { Finding } from './findings.js';

export interface SettingsTableFacts {
  readonly exists: boolean;
  /** Its name on the cluster (differs with selection.tables.<t>.rename). */
  readonly physical?: string;
  /** Columns in order, generated ones included. */
  readonly columns: readonly string[];
  readonly generated: readonly string[];
  /** What the old row of UPDATE and DELETE carries: every column, none, or these. */
  readonly identity: 'full' | 'nothing' | readonly string[];
}

/** Per cluster: facts of each table named in selection.tables; null when the cluster could not be read. */
export type TableSettingsFacts = Readonly<Record<string, Readonly<Record<string, SettingsTableFacts>> | null>>;

async function gatherOne(client: pg.Client, names: readonly string[]): Promise<Record<string, SettingsTableFacts>> {
  const r = await client.query<{ t: string; ri: string; cols: string; gen: string; idx: string | null }>(
    `SELECT n.nspname || '.' || c.relname AS t, c.relreplident AS ri,
            (SELECT json_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)::text AS cols,
            (SELECT COALESCE(json_agg(a.attname), '[]') FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> '')::text AS gen,
            (SELECT json_agg(a.attname ORDER BY k.o)
               FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(n, o) JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.n
              WHERE i.indrelid = c.oid AND CASE c.relreplident WHEN 'i' THEN i.indisreplident ELSE i.indisprimary END)::text AS idx
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname || '.' || c.relname = ANY($1::text[]) AND c.relkind IN ('r', 'p')`,
    [names],
  );
  const out: Record<string, SettingsTableFacts> = {};
  for (const name of names) {
    const row = r.rows.find((x) => x.t === name);
    if (!row) {
      out[name] = { exists: false, columns: [], generated: [], identity: 'nothing' };
      continue;
    }
    const idx = row.idx ? (JSON.parse(row.idx) as string[]) : null;
    const identity = row.ri === 'f' ? 'full' : row.ri === 'n' || !idx ? 'nothing' : idx;
    out[name] = { exists: true, columns: JSON.parse(row.cols) as string[], generated: JSON.parse(row.gen) as string[], identity };
  }
  return out;
}

/** Reads the tables selection.tables names on each cluster; a cluster that cannot be read gives null (the connection check reports it). */
export async function gatherTableSettings(cfg: PipelineConfig): Promise<TableSettingsFacts> {
  const names = Object.keys(cfg.selection.tables);
  const out: Record<string, Record<string, SettingsTableFacts> | null> = {};
  for (const cluster of cfg.clusterNames) {
    // Read under each cluster's names (rename, renameColumns), kept under the pipeline's.
    const naming = new ClusterNaming(cfg, cluster);
    const physical = names.map((n) => naming.physical(...splitTableName(n)).join('.'));
    const facts = names.length === 0 ? {} : await withClient(cfg.clusters[cluster]!, 'pgbridge-precheck', (c) => gatherOne(c, physical)).catch(() => null);
    if (!facts) {
      out[cluster] = null;
      continue;
    }
    out[cluster] = Object.fromEntries(
      names.map((n, i) => {
        const f = facts[physical[i]!]!;
        const [schema, table] = splitTableName(n);
        const col = (c: string): string => naming.logicalColumn(schema, table, c);
        return [
          n,
          {
            ...f,
            physical: physical[i]!,
            columns: f.columns.map(col),
            generated: f.generated.map(col),
            identity: typeof f.identity === 'string' ? f.identity : f.identity.map(col),
          },
        ];
      }),
    );
  }
  return out;
}

/** Column names a row filter reads: its identifiers (outside string literals) that are columns of the table. */
export function filterColumns(where: string, columns: readonly string[]): string[] {
  const text = where.replace(/'(?:[^']|'')*'/g, "''");
  const used = new Set<string>();
  for (const m of text.matchAll(/"((?:[^"]|"")+)"|\b([A-Za-z_][A-Za-z0-9_$]*)\b/g)) {
    const name = m[1] !== undefined ? m[1].replaceAll('""', '"') : m[2]!.toLowerCase();
    if (columns.includes(name)) used.add(name);
  }
  return columns.filter((c) => used.has(c));
}

/** Columns a table's column list leaves out (the structure check does not compare them). */
export function unpublishedColumns(cfg: PipelineConfig, schema: string, table: string, columns: readonly string[]): Set<string> {
  const listed = publishedColumns(tableSettings(cfg, schema, table), columns);
  return new Set(listed ? columns.filter((c) => !listed.includes(c)) : []);
}

export function evaluateTableSettings(cfg: PipelineConfig, facts: TableSettingsFacts, add: (f: Finding) => void): void {
  const names = Object.keys(cfg.selection.tables);
  if (names.length === 0) return;
  let problems = 0;
  const error = (cluster: string, object: string, message: string, fix: string): void => {
    problems++;
    add({ level: 'error', check: 'table_settings', cluster, object, message, fix });
  };
  for (const cluster of cfg.clusterNames) {
    const tables = facts[cluster];
    if (!tables) continue;
    const dir = cfg.directions.find((d) => d.from === cluster)!.id;
    for (const name of names) {
      const t = tables[name]!;
      const [schema, table] = splitTableName(name);
      const s = tableSettings(cfg, schema, table);
      const key = `selection.tables.${name}`;
      if (!t.exists) {
        const there = t.physical && t.physical !== name ? ` (named ${t.physical} there: ${key}.rename.${cluster})` : '';
        error(
          cluster,
          name,
          `${key}: table ${t.physical ?? name} does not exist on cluster ${cluster}${there}`,
          `create it on ${cluster}, or correct or remove ${key}`,
        );
        continue;
      }
      const missing = missingColumns(s, t.columns);
      if (missing.length)
        error(
          cluster,
          name,
          `${key}.columns names ${missing.join(', ')}, which ${name} does not have on cluster ${cluster}`,
          `correct the names in ${key}.columns`,
        );
      const listedGenerated = s?.columns && 'include' in s.columns ? s.columns.include.filter((c) => t.generated.includes(c)) : [];
      if (listedGenerated.length)
        error(
          cluster,
          name,
          `${key}.columns names generated column(s) ${listedGenerated.join(', ')}: PostgreSQL never publishes those (each cluster computes its own)`,
          `leave them out of ${key}.columns`,
        );
      const ops = operationsOf(s, dir);
      if (!ops.includes('update') && !ops.includes('delete')) continue;
      // The old row of UPDATE and DELETE carries the replica identity only: a list or filter needs its columns.
      const identity = t.identity === 'full' ? t.columns.filter((c) => !t.generated.includes(c)) : t.identity === 'nothing' ? [] : t.identity;
      const listed = publishedColumns(
        s,
        t.columns.filter((c) => !t.generated.includes(c)),
      );
      const dropped = listed ? identity.filter((c) => !listed.includes(c)) : [];
      if (dropped.length) {
        error(
          cluster,
          name,
          `${key}.columns leaves out ${dropped.join(', ')} of the replica identity of ${name} on cluster ${cluster}: PostgreSQL would refuse every UPDATE and DELETE on the table`,
          t.identity === 'full'
            ? `give ${name} a primary key (or REPLICA IDENTITY USING INDEX) without the excluded columns, or replicate only inserts (${key}.operations)`
            : `keep ${dropped.join(', ')} in ${key}.columns, or replicate only inserts (${key}.operations)`,
        );
      }
      const where = rowFilter(s, dir);
      const outside = where ? filterColumns(where, t.columns).filter((c) => !identity.includes(c)) : [];
      if (outside.length) {
        error(
          cluster,
          name,
          `${key}.where (${dir}) reads ${outside.join(', ')}, outside the replica identity of ${name} on cluster ${cluster}: PostgreSQL would refuse every UPDATE and DELETE on the table`,
          listed
            ? `on ${cluster}: CREATE UNIQUE INDEX ON ${qt(schema, table)} (<key columns>, ${outside.join(', ')}); ALTER TABLE ${qt(schema, table)} REPLICA IDENTITY USING INDEX <that index>;`
            : `on ${cluster}: ALTER TABLE ${qt(schema, table)} REPLICA IDENTITY FULL; (or USING INDEX of a unique index with ${outside.join(', ')})`,
        );
      }
    }
  }
  if (problems === 0)
    add({
      level: 'ok',
      check: 'table_settings',
      message: `selection.tables: ${names.length} table(s) with settings exist on both clusters; column lists and row filters fit their replica identity`,
    });
}
