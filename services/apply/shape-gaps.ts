/**
 * Apply of the reverse direction while DDL is replicated forward (docs/operations.md, "Schema
 * changes"): the destination is the forward source, whose schema moves first. A change
 * written on the reverse source before a DDL reached it arrives in the old shape:
 * - a column or table renamed since: mapped to its new name, from cdc.ddl_renames (written by
 *   the forward source's DDL trigger in the rename's own transaction);
 * - a column or table dropped since: what no longer exists is left out, reported (counted,
 *   logged) — it is the data the DDL removed.
 */
import type pg from 'pg';
import type { ChangeEvent, Row } from './event-decoder.js';

/** Renames followed at most (a rename of a rename of …). */
const MAX_CHAIN = 16;

export type GapReport = (table: string, column: string | null, renamedTo: string | null) => void;

export class ShapeGaps {
  constructor(
    private readonly client: pg.Client,
    private readonly pipeline: string,
    private readonly report: GapReport,
  ) {}

  /** Renames of one kind, oldest first: [old, new]. */
  private async renames(kind: 'table' | 'column', schema: string, table: string | null): Promise<[string, string][]> {
    const r = await this.client
      .query<{
        old_name: string;
        new_name: string;
      }>(
        `SELECT old_name, new_name FROM cdc.ddl_renames WHERE pipeline = $1 AND kind = $2 AND schema_name = $3 AND ($4::text IS NULL OR table_name = $4) ORDER BY id`,
        [this.pipeline, kind, schema, table],
      )
      .catch(() => ({ rows: [] as { old_name: string; new_name: string }[] }));
    return r.rows.map((x) => [x.old_name, x.new_name]);
  }

  private static follow(name: string, renames: readonly [string, string][], exists: (n: string) => boolean): string | null {
    let cur = name;
    for (let i = 0; i < MAX_CHAIN; i++) {
      const next = renames.find(([from]) => from === cur)?.[1];
      if (next === undefined || next === cur) break;
      cur = next;
      if (exists(cur)) return cur;
    }
    return null;
  }

  /** The name a table the destination lacks was renamed to (and still has), or null: its changes are then skipped (reported). */
  async renamedTable(schema: string, table: string, exists: (table: string) => Promise<boolean>): Promise<string | null> {
    const renames = await this.renames('table', schema, null);
    const known = new Map<string, boolean>();
    for (const [, to] of renames) known.set(to, await exists(to));
    const to = ShapeGaps.follow(table, renames, (n) => known.get(n) === true);
    this.report(`${schema}.${table}`, null, to);
    return to;
  }

  /** The event with its unknown columns renamed where the destination renamed them, and left out where it dropped them. */
  async adapt(ev: ChangeEvent, has: (column: string) => boolean): Promise<ChangeEvent> {
    const name = `${ev.schema}.${ev.table}`;
    const unknown = [...new Set([ev.before, ev.after].flatMap((row) => Object.keys(row ?? {})).filter((c) => !has(c)))];
    if (!unknown.length) return ev;
    const renames = await this.renames('column', ev.schema, ev.table);
    const to = new Map<string, string | null>();
    for (const c of unknown) {
      const n = ShapeGaps.follow(c, renames, has);
      to.set(c, n);
      this.report(name, c, n);
    }
    const remap = (row: Row | null): Row | null => {
      if (!row) return row;
      const out: Row = {};
      for (const [c, v] of Object.entries(row)) {
        if (!to.has(c)) out[c] = v;
        else if (to.get(c) && !(to.get(c)! in row)) out[to.get(c)!] = v;
      }
      return out;
    };
    const unchanged = ev.unchanged.flatMap((c) => (!to.has(c) ? [c] : to.get(c) ? [to.get(c)!] : []));
    return { ...ev, before: remap(ev.before), after: remap(ev.after), unchanged };
  }
}
