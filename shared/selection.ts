/**
 * The selection as an allow-list: which tables a pipeline may read and write. Capture obeys
 * resync chunks only for these tables, and apply writes only these (docs/operations.md, "Trust boundary"): a topic or a
 * control record naming any other table, or one of PostgreSQL's or pgbridge's own schemas, is
 * refused. One definition for setup's publication, capture and apply.
 */
import type { PipelineConfig } from './config.js';

/** Schemas no pipeline ever writes, whatever the selection says. */
const NEVER = new Set(['cdc', 'pg_catalog', 'information_schema', 'pg_toast']);

export function isSystemSchema(schema: string): boolean {
  return NEVER.has(schema) || schema.startsWith('pg_temp') || schema.startsWith('pg_toast_temp');
}

/** True when `schema.table` is part of the pipeline's selection. */
export function isSelected(cfg: PipelineConfig, schema: string, table: string): boolean {
  if (isSystemSchema(schema) || !cfg.selection.schemas.includes(schema)) return false;
  const name = `${schema}.${table}`;
  if (cfg.selection.include.length > 0 && !cfg.selection.include.includes(name)) return false;
  return !cfg.selection.exclude.includes(name);
}

/** "schema.table" → [schema, table], split at the first dot ("" schema when there is none). */
export function splitTableName(name: string): [string, string] {
  const i = name.indexOf('.');
  return i < 0 ? ['', name] : [name.slice(0, i), name.slice(i + 1)];
}
