/**
 * Reading a selected table of the source: its columns as pgoutput describes them, and its
 * rows in primary-key order, chunk by chunk (resync reads so between its watermarks).
 */
import type pg from 'pg';
import type { TableDef } from '../../shared/avro.js';
import { qi, qt } from '../../shared/pg.js';
import type { SelectedTable } from '../cli/setup.js';
import type { PipelineConfig } from '../../shared/config.js';
import { publishedColumns, rowFilter, tableSettings } from '../../shared/table-settings.js';
import type { ClusterNaming } from '../../shared/naming.js';

/**
 * What a direction sends of a table (selection.tables): the columns of its column list (the
 * key is always among them: setup and precheck see to it) and the rows of its row filter,
 * as the publication does for the stream. Initial sync and resync read only these.
 */
export function scoped(cfg: PipelineConfig, direction: string, def: TableDef, naming?: ClusterNaming): { def: TableDef; where: string | null } {
  // def is in the source's names; settings are keyed and listed in the pipeline's.
  const [schema, table] = naming?.logical(def.schema, def.table) ?? [def.schema, def.table];
  const s = tableSettings(cfg, schema, table);
  const pipelineName = (c: string): string => naming?.logicalColumn(schema, table, c) ?? c;
  const listed = publishedColumns(
    s,
    def.columns.map((c) => pipelineName(c.name)),
  );
  return { def: listed ? { ...def, columns: def.columns.filter((c) => listed.includes(pipelineName(c.name))) } : def, where: rowFilter(s, direction) };
}

/** A source table's def under the pipeline's names (`name`: its pipeline name), same column order. */
export function pipelineDef(def: TableDef, name: string, naming: ClusterNaming): TableDef {
  const i = name.indexOf('.');
  const [schema, table] = [name.slice(0, i), name.slice(i + 1)];
  return { ...def, schema, table, columns: def.columns.map((c) => ({ ...c, name: naming.logicalColumn(schema, table, c.name) })) };
}

export interface ColumnInfo {
  name: string;
  typeOid: number;
  typeMod: number;
  typeName: string;
  key: boolean;
}

/** Columns as pgoutput would describe them (no generated columns; key = replica identity). */
export async function tableDef(c: pg.Client, t: SelectedTable): Promise<{ def: TableDef; pk: ColumnInfo[] }> {
  const r = await c.query<{ name: string; oid: string; mod: string; type: string; pk: boolean; ident: boolean }>(
    `SELECT a.attname AS name, a.atttypid::text AS oid, a.atttypmod::text AS mod, format_type(a.atttypid, a.atttypmod) AS type,
            COALESCE(a.attnum = ANY(pk.indkey), false) AS pk,
            CASE c.relreplident WHEN 'f' THEN true WHEN 'i' THEN COALESCE(a.attnum = ANY(ri.indkey), false) ELSE COALESCE(a.attnum = ANY(pk.indkey), false) END AS ident
       FROM pg_attribute a
       JOIN pg_class c ON c.oid = a.attrelid
       LEFT JOIN pg_index pk ON pk.indrelid = a.attrelid AND pk.indisprimary
       LEFT JOIN pg_index ri ON ri.indrelid = a.attrelid AND ri.indisreplident
      WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
      ORDER BY a.attnum`,
    [qt(t.schema, t.table)],
  );
  const cols: ColumnInfo[] = r.rows.map((x) => ({ name: x.name, typeOid: Number(x.oid), typeMod: Number(x.mod), typeName: x.type, key: x.ident }));
  const def: TableDef = { schema: t.schema, table: t.table, replicaIdentity: t.replicaIdentity, columns: cols.map((x) => ({ ...x })) };
  return { def, pk: r.rows.filter((x) => x.pk).map((x) => cols.find((cc) => cc.name === x.name)!) };
}

export interface Chunk {
  /** Rows as PostgreSQL text, in column order (resync ships them so; initial sync types them with typedRow). */
  readonly rows: (string | null)[][];
  /** Length of the row text. */
  readonly bytes: number;
  /** Primary key of the last row, as text (null for tables without one). */
  readonly lastKey: string[] | null;
}

/**
 * Reads a table in primary-key order, chunk by chunk, after `startAfter`; tables without a
 * primary key are read with a cursor. Values come as PostgreSQL text.
 */
export async function* tableChunks(
  reader: pg.Client,
  t: SelectedTable,
  def: TableDef,
  pk: ColumnInfo[],
  chunkRows: number,
  startAfter: string[] | null,
  filter?: string,
): AsyncGenerator<Chunk> {
  const cols = def.columns;
  // Qualified with the table alias: a bare name in ORDER BY would pick the ::text output column.
  const selectX = cols.map((c) => `x.${qi(c.name)}::text`).join(', ');
  const cursor = 'pgb_snapshot';
  const rowFilter = filter ? `(${filter})` : 'true';
  if (pk.length === 0) await reader.query(`DECLARE ${cursor} NO SCROLL CURSOR FOR SELECT ${selectX} FROM ${qt(t.schema, t.table)} x WHERE ${rowFilter}`);
  let lastKey = startAfter;
  try {
    for (;;) {
      // Arrays, not objects: column names like "1" would be reordered as object keys.
      let rows: (string | null)[][];
      if (pk.length) {
        const order = pk.map((k) => `x.${qi(k.name)}`).join(', ');
        const where = `WHERE ${rowFilter}${lastKey ? ` AND (${order}) > (${pk.map((k, i) => `$${i + 1}::${k.typeName}`).join(', ')})` : ''}`;
        const keySel = pk.map((k) => `x.${qi(k.name)}::text`).join(', ');
        // Extended protocol always: a `filter` (resync --where) can hold one expression, never a second statement.
        rows = (
          await reader.query({
            text: `SELECT ${selectX}, ${keySel} FROM ${qt(t.schema, t.table)} x ${where} ORDER BY ${order} LIMIT ${chunkRows}`,
            values: lastKey ?? [],
            rowMode: 'array',
            queryMode: 'extended',
          } as pg.QueryConfig)
        ).rows;
      } else {
        rows = (await reader.query({ text: `FETCH ${chunkRows} FROM ${cursor}`, rowMode: 'array' })).rows;
      }
      if (rows.length === 0) return;
      if (pk.length) lastKey = pk.map((_, i) => rows[rows.length - 1]![cols.length + i] as string);
      // The key columns appended for paging are not part of the row.
      const out = pk.length ? rows.map((r) => r.slice(0, cols.length)) : rows;
      let bytes = 0;
      for (const r of out) for (const v of r) bytes += v?.length ?? 0;
      yield { rows: out, bytes, lastKey };
      if (rows.length < chunkRows) return;
    }
  } finally {
    if (pk.length === 0) await reader.query(`CLOSE ${cursor}`).catch(() => undefined);
  }
}
