/**
 * Clocks and statistics: when rows become visible on a destination, percentiles.
 */
import { scalar, since, sleep, type Db } from './env.js';
import { qname } from './workload.js';

export interface Arrival {
  /** Seconds from the start until row 1 was visible (start-up: connect, slot, group join). */
  readonly firstSec: number;
  /** Seconds from the start until row n was visible. */
  readonly lastSec: number;
}

export interface Expectation {
  readonly dest: Db;
  readonly schema: string;
  readonly table: string;
  readonly n: number;
  /** Rows the table must hold at the end, when not n (rows other than 1..n, such as a warm-up row). */
  readonly count?: number;
}

/**
 * Polls until row 1 and row n of every expectation are visible. Both pgbridge and native
 * apply commit in source commit order and rows are written in id order, so row n visible
 * means rows 1..n are (count(*) confirms it afterwards, outside the clock). An index probe
 * every 20 ms costs the destination next to nothing.
 */
export async function waitForRows(t0: number, exp: readonly Expectation[], timeoutSec: number, check: () => void = () => undefined): Promise<Arrival> {
  let first: number | null = null;
  const done = new Set<number>();
  for (;;) {
    check();
    for (const [i, e] of exp.entries()) {
      if (done.has(i)) continue;
      const r = await e.dest.query<{ f: boolean; l: boolean }>(
        `SELECT EXISTS (SELECT 1 FROM ${qname(e.schema, e.table)} WHERE id = 1) AS f, EXISTS (SELECT 1 FROM ${qname(e.schema, e.table)} WHERE id = $1) AS l`,
        [e.n],
      );
      const row = r.rows[0]!;
      if (row.f && first === null) first = since(t0);
      if (row.l) done.add(i);
    }
    if (done.size === exp.length) break;
    if (since(t0) > timeoutSec) throw new Error(`timed out after ${timeoutSec} s: ${exp.length - done.size} destination table(s) still missing rows`);
    await sleep(20);
  }
  const last = since(t0);
  for (const e of exp) {
    const count = Number(await scalar<string>(e.dest, `SELECT count(*) FROM ${qname(e.schema, e.table)}`));
    if (count !== (e.count ?? e.n)) throw new Error(`${e.schema}.${e.table}: ${count} rows on the destination, ${e.count ?? e.n} expected`);
  }
  return { firstSec: first ?? last, lastSec: last };
}

/** Nearest-rank percentile of sorted values. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export function ratio(x: number, base: number): number {
  return base > 0 && Number.isFinite(x) ? x / base : NaN;
}
