/**
 * Name mapping (selection.tables.<t>.rename and renameColumns): a table and its columns may
 * have other names on one cluster. Topics, the selection, watermarks and the guards speak the
 * names of selection.tables' keys (the pipeline's names); capture turns a cluster's names into
 * them, apply turns them into the destination's, and initial sync, resync, verify and setup
 * translate where they read or write. Tables without a mapping keep their names everywhere.
 */
import type { PipelineConfig } from './config.js';

interface Mapped {
  /** The pipeline's name of the table (its selection.tables key). */
  readonly name: string;
  /** Its name on this cluster. */
  readonly physical: string;
  /** Pipeline column name → this cluster's, and back. */
  readonly toCluster: ReadonlyMap<string, string>;
  readonly fromCluster: ReadonlyMap<string, string>;
}

const split = (name: string): [string, string] => {
  const i = name.indexOf('.');
  return [name.slice(0, i), name.slice(i + 1)];
};

export class ClusterNaming {
  private readonly byName = new Map<string, Mapped>();
  private readonly byPhysical = new Map<string, Mapped>();

  constructor(
    cfg: PipelineConfig,
    readonly cluster: string,
  ) {
    for (const [name, s] of Object.entries(cfg.selection.tables)) {
      const physical = s.rename?.[cluster] ?? name;
      const cols = Object.entries(s.renameColumns?.[cluster] ?? {});
      if (physical === name && cols.length === 0) continue;
      const m: Mapped = { name, physical, toCluster: new Map(cols), fromCluster: new Map(cols.map(([a, b]) => [b, a])) };
      this.byName.set(name, m);
      this.byPhysical.set(physical, m);
    }
  }

  /** Whether any table is named differently on this cluster. */
  get any(): boolean {
    return this.byName.size > 0;
  }

  /** Schemas of tables renamed into a schema of their own on this cluster. */
  get physicalSchemas(): string[] {
    return [...new Set([...this.byPhysical.keys()].map((p) => split(p)[0]))];
  }

  /** This cluster's schema and table for a pipeline name. */
  physical(schema: string, table: string): [string, string] {
    const m = this.byName.get(`${schema}.${table}`);
    return m ? split(m.physical) : [schema, table];
  }

  /** The pipeline's name of one of this cluster's tables; null when that name is the pipeline name of a table renamed here (another table's name). */
  logical(schema: string, table: string): [string, string] | null {
    const full = `${schema}.${table}`;
    const m = this.byPhysical.get(full);
    if (m) return split(m.name);
    const shadowed = this.byName.get(full);
    return shadowed && shadowed.physical !== full ? null : [schema, table];
  }

  /** This cluster's name of a column of a table (pipeline names). */
  column(schema: string, table: string, col: string): string {
    return this.byName.get(`${schema}.${table}`)?.toCluster.get(col) ?? col;
  }

  /** The pipeline's name of a column of a table (pipeline table name, this cluster's column name). */
  logicalColumn(schema: string, table: string, col: string): string {
    return this.byName.get(`${schema}.${table}`)?.fromCluster.get(col) ?? col;
  }

  /** Whether a table (pipeline name) has renamed columns here. */
  hasColumns(schema: string, table: string): boolean {
    return (this.byName.get(`${schema}.${table}`)?.toCluster.size ?? 0) > 0;
  }

  /** A row keyed by pipeline column names → keyed by this cluster's (the same object when nothing is renamed). */
  rowToCluster<T>(schema: string, table: string, row: Record<string, T>): Record<string, T> {
    const m = this.byName.get(`${schema}.${table}`);
    if (!m || m.toCluster.size === 0) return row;
    const out: Record<string, T> = {};
    for (const [k, v] of Object.entries(row)) out[m.toCluster.get(k) ?? k] = v;
    return out;
  }
}
