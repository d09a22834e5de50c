/**
 * `pgbridge verify`: compares the selected tables of the two clusters row by row, the check
 * behind "nothing lost" (INV-8 in docs/invariants.md). Per table and cluster, in one REPEATABLE
 * READ READ ONLY transaction: per-bucket row counts and digests; then, only for buckets
 * that differ, the rows of those buckets from both sides, merged by key, to name the keys.
 *
 * What "equal" means (behaviour decisions):
 * - A row's canonical form is `to_jsonb(row)` (keys are column names, so column order and
 *   dropped columns do not matter), with every column whose jsonb form can hide a
 *   difference replaced by its text form: jsonb turns float -0 into 0 and re-parses json
 *   (whitespace, key order, duplicate keys). pgbridge carries values as exact text, so
 *   verify is exact too: float -0 vs 0 and json '{"a": 1}' vs '{"a":1}' DIFFER; jsonb
 *   values are compared as jsonb (its text form is canonical). Text forms come from the
 *   pinned session of shared/pg.ts (UTC, ISO dates, extra_float_digits=3, hex bytea).
 * - Generated columns are compared like the others (both sides compute them the same way).
 * - A table present on one cluster only, and a column missing or typed differently on one
 *   side, make the table differ. The helper schema `cdc` (positions, conflicts, barriers;
 *   different per cluster by design) is never compared, even when selected.
 */
import type pg from 'pg';
import type { PipelineConfig } from '../../shared/config.js';
import { PgBridgeError } from '../../shared/errors.js';
import { connect, qi, ql, qt } from '../../shared/pg.js';
import { selectedTables } from './setup.js';
import { ClusterNaming } from '../../shared/naming.js';
import { splitTableName } from '../../shared/selection.js';
import { publishedColumns, sharedRowFilter, tableSettings } from '../../shared/table-settings.js';

export interface VerifyOptions {
  /** Buckets per table (default 64). More buckets, smaller re-reads when few rows differ. */
  buckets?: number;
  /** Differing keys listed per table (default 100); `truncated` says when there were more. */
  maxKeys?: number;
  /** Only these tables (`schema.table`, as selected); default every selected table. */
  tables?: string[];
  /** Called after each table. */
  onProgress?: (p: { table: string; done: number; total: number }) => void;
}

export interface KeyDiff {
  /** Primary-key columns as text; for a table without primary key `{ row_md5 }` of the row's canonical form. */
  key: Record<string, string | null>;
  /** missing: the row is only on `onlyOn` (PK-less: it has more copies there); different: both hold the key, values differ. */
  kind: 'missing' | 'different';
  onlyOn?: string;
  /** PK-less tables: copies of the row on each cluster. */
  counts?: Record<string, number>;
}

export interface TableReport {
  /** schema.table */
  table: string;
  /** Rows on clusterNames[0] and clusterNames[1]. */
  rowsA: number;
  rowsB: number;
  equal: boolean;
  /** The cluster that lacks the table. */
  missingOn?: string;
  /** Schema difference that made the table differ (columns, key columns). */
  problem?: string;
  /** What was compared when selection.tables narrows it: the rows of a row filter, the columns of a column list. */
  scope?: string;
  differingKeys: KeyDiff[];
  truncated: boolean;
}

export interface VerifyReport {
  /** The two clusters, in the order of rowsA / rowsB. */
  clusters: readonly [string, string];
  equal: boolean;
  tables: TableReport[];
}

interface Side {
  readonly name: string;
  readonly client: pg.Client;
}
interface Column {
  /** The pipeline's name of the column. */
  name: string;
  /** Its name on the cluster it was read from. */
  physical: string;
  type: string;
  pk: number | null;
  exact: boolean;
}
interface Digest {
  b: string;
  n: string;
  s: string;
}
interface DiffRow {
  kh: string;
  k: string;
  h: string;
}

/** Types whose to_jsonb form is as exact as their text form; every other column is digested as text. */
const JSONB_EXACT = [
  'bool',
  'int2',
  'int4',
  'int8',
  'oid',
  'numeric',
  'text',
  'varchar',
  'bpchar',
  'name',
  'uuid',
  'bytea',
  'date',
  'time',
  'timetz',
  'timestamp',
  'timestamptz',
  'interval',
  'jsonb',
  'inet',
  'cidr',
  'macaddr',
];

/**
 * Compares every selected table (union of both clusters' selections) of cfg's two clusters.
 * Each table is read in one snapshot per cluster; run it after a drain barrier, when both
 * sides are quiet, or differences in flight are reported too. Throws on bad options, an
 * unknown table in opts.tables, connection or query errors; never skips a table silently.
 */
export async function verify(cfg: PipelineConfig, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const buckets = opts.buckets ?? 64;
  const maxKeys = opts.maxKeys ?? 100;
  if (!Number.isInteger(buckets) || buckets < 1 || buckets > 2 ** 31 - 1)
    throw new PgBridgeError('CONFIG_INVALID', `verify: buckets must be a positive integer, got ${buckets}`);
  if (!Number.isInteger(maxKeys) || maxKeys < 0) throw new PgBridgeError('CONFIG_INVALID', `verify: maxKeys must be a non-negative integer, got ${maxKeys}`);
  const clients: pg.Client[] = [];
  try {
    for (const name of cfg.clusterNames) clients.push(await connect(cfg.clusters[name]!, 'pgbridge-verify'));
    const sides = cfg.clusterNames.map((name, i) => ({ name, client: clients[i]! })) as [Side, Side];
    const lists = await Promise.all(sides.map((s) => selectedTables(s.client, cfg, s.name)));
    // Keyed by the pipeline's name; each cluster's own name and column names (rename, renameColumns) kept per side.
    const all = new Map<string, VerifiedTable>();
    lists.forEach((list, i) => {
      for (const t of list.filter((x) => x.schema !== 'cdc')) {
        const id = t.name ?? `${t.schema}.${t.table}`;
        const [schema, table] = splitTableName(id);
        const e = all.get(id) ?? {
          schema,
          table,
          on: [false, false],
          physical: [qt(schema, table), qt(schema, table)],
          naming: [new ClusterNaming(cfg, sides[0].name), new ClusterNaming(cfg, sides[1].name)],
        };
        e.on[i] = true;
        e.physical[i] = qt(t.schema, t.table);
        all.set(id, e);
      }
    });
    for (const id of opts.tables ?? []) {
      if (!all.has(id)) throw new PgBridgeError('CONFIG_INVALID', `verify: table ${id} is not selected on ${cfg.clusterNames.join(' or ')}`);
    }
    const wanted = opts.tables ? new Set(opts.tables) : undefined;
    const ids = [...all.keys()].filter((id) => !wanted || wanted.has(id)).sort();
    const tables: TableReport[] = [];
    for (const id of ids) {
      const e = all.get(id)!;
      const settings = tableSettings(cfg, e.schema, e.table);
      const scope = {
        where: sharedRowFilter(
          settings,
          cfg.directions.map((d) => d.id),
        ),
        columns: (names: readonly string[]) => publishedColumns(settings, names),
      };
      tables.push(await verifyTable(sides, e, buckets, maxKeys, scope));
      opts.onProgress?.({ table: id, done: tables.length, total: ids.length });
    }
    return { clusters: cfg.clusterNames, equal: tables.every((t) => t.equal), tables };
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  }
}

/** What of a table replicates (selection.tables): rows of its row filter(s), columns of its column list. */
interface Scope {
  readonly where: string | null;
  /** The listed columns among these names; null: all of them. */
  readonly columns: (names: readonly string[]) => string[] | null;
}

interface VerifiedTable {
  /** The pipeline's name. */
  readonly schema: string;
  readonly table: string;
  readonly on: [boolean, boolean];
  /** The table's quoted name on each cluster. */
  readonly physical: [string, string];
  readonly naming: [ClusterNaming, ClusterNaming];
}

async function verifyTable(sides: [Side, Side], t: VerifiedTable, buckets: number, maxKeys: number, scope: Scope): Promise<TableReport> {
  const renamedColumns = t.naming.some((n) => n.hasColumns(t.schema, t.table));
  // A row filter narrows what is compared to the rows it selects (on both clusters); it is
  // written in a cluster's column names, so with renamed columns it is not applied.
  const where = scope.where && !renamedColumns ? scope.where : null;
  const rels = t.physical.map((p) => `${p} r${where ? ` WHERE (${where})` : ''}`) as [string, string];
  const report: TableReport = { table: `${t.schema}.${t.table}`, rowsA: 0, rowsB: 0, equal: false, differingKeys: [], truncated: false };
  const [a, b] = sides;
  await Promise.all(sides.map((s) => s.client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY')));
  try {
    const counts = async (): Promise<void> => {
      const n = await Promise.all(
        sides.map(async (s, i) => (t.on[i] ? Number((await s.client.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${rels[i]}`)).rows[0]!.n) : 0)),
      );
      [report.rowsA, report.rowsB] = n as [number, number];
    };
    if (!t.on[0] || !t.on[1]) {
      report.missingOn = t.on[0] ? b.name : a.name;
      await counts();
      return report;
    }
    // Columns under the pipeline's names; `physical` keeps each cluster's.
    const all = (await Promise.all(
      sides.map(async (s, i) => (await columns(s.client, t.physical[i]!)).map((c) => ({ ...c, name: t.naming[i]!.logicalColumn(t.schema, t.table, c.name) }))),
    )) as [Column[], Column[]];
    // Columns a column list leaves out never travel: they are not compared.
    const listed = scope.columns([...new Set(all.flatMap((list) => list.map((c) => c.name)))]);
    const cols = all.map((list) => (listed ? list.filter((c) => listed.includes(c.name)) : list)) as [Column[], Column[]];
    const notes = [where ? `rows where ${where}` : '', listed ? `columns ${listed.join(', ')}` : ''].filter(Boolean);
    if (notes.length) report.scope = notes.join('; ');
    if (scope.where && !where)
      report.problem = `row filter ${scope.where} not applied: the table's columns are renamed on a cluster, so its rows are compared whole`;
    // The key is the first cluster's primary key (or none); it must exist on both sides.
    const keyCols = cols[0]
      .filter((c) => c.pk !== null)
      .sort((x, y) => x.pk! - y.pk!)
      .map((c) => c.name);
    const lacking = keyCols.filter((k) => !cols[1].some((c) => c.name === k));
    const problems = [lacking.length ? `key column(s) ${lacking.join(', ')} missing on ${b.name}` : '', columnDifferences(cols, a.name, b.name)].filter(
      Boolean,
    );
    if (problems.length) report.problem = problems.join('; ');
    if (lacking.length) {
      await counts();
      return report;
    }
    const explicit = renamedColumns || listed !== null;
    const base = cols.map((c, i) => baseSql(rels[i]!, c, keyCols, explicit));
    // ::bigint: abs() of the int4 minimum overflows. hashtext is the same on both sides as long
    // as both servers share a byte order; a mismatch only costs re-reads, never a wrong verdict.
    const bucketOf = `abs(hashtext(k)::bigint) % ${buckets}`;
    // Digest = count + sum of 60-bit slices of each row's md5, summed as numeric (no overflow).
    // A sum is order-independent with no sort, and unlike XOR it counts duplicate rows (a
    // PK-less table with one copy more differs); a false "equal" bucket needs a 2^-60 accident.
    const digests = (await Promise.all(
      sides.map(async (s, i) => {
        const r = await s.client.query<Digest>(
          `SELECT (${bucketOf})::text AS b, count(*)::text AS n, sum(('x' || left(md5(v), 15))::bit(60)::bigint)::text AS s FROM (${base[i]}) x GROUP BY 1`,
        );
        return new Map(r.rows.map((row) => [Number(row.b), row]));
      }),
    )) as [Map<number, Digest>, Map<number, Digest>];
    for (const row of digests[0].values()) report.rowsA += Number(row.n);
    for (const row of digests[1].values()) report.rowsB += Number(row.n);
    const differing = [...new Set([...digests[0].keys(), ...digests[1].keys()])].filter((bk) => {
      const x = digests[0].get(bk);
      const y = digests[1].get(bk);
      return x?.n !== y?.n || x?.s !== y?.s;
    });
    if (differing.length) {
      // One cursor per side over the differing buckets, ordered by md5 of the key (ASCII hex:
      // "C" order equals JavaScript's), merged here: memory stays one fetch per side.
      const list = `'{${differing.sort((x, y) => x - y).join(',')}}'::int[]`;
      await Promise.all(
        sides.map((s, i) =>
          s.client.query(
            `DECLARE pgbridge_verify NO SCROLL CURSOR FOR SELECT md5(k) AS kh, k, md5(v) AS h FROM (${base[i]}) x WHERE ${bucketOf} = ANY(${list}) ORDER BY md5(k) COLLATE "C"`,
          ),
        ),
      );
      await mergeDiff(report, new RowCursor(a.client), new RowCursor(b.client), keyCols, a.name, b.name, maxKeys);
    }
    report.equal = differing.length === 0 && report.problem === undefined;
    return report;
  } finally {
    // Read-only: COMMIT only ends the snapshot (and rolls back an aborted transaction).
    await Promise.all(sides.map((s) => s.client.query('COMMIT').catch(() => undefined)));
  }
}

async function columns(c: pg.Client, rel: string): Promise<Column[]> {
  // Values are cast to text in SQL so the result does not depend on the client's type parsers.
  const r = await c.query<{ name: string; type: string; pk: string | null; exact: string }>(
    `SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
            array_position(i.indkey::int2[], a.attnum)::text AS pk, (a.atttypid = ANY($2::regtype[]))::text AS exact
       FROM pg_attribute a LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
      WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
    [rel, JSONB_EXACT],
  );
  return r.rows.map((x) => ({ name: x.name, physical: x.name, type: x.type, pk: x.pk === null ? null : Number(x.pk), exact: x.exact === 'true' }));
}

function columnDifferences(cols: [Column[], Column[]], a: string, b: string): string {
  const byName = cols.map((list) => new Map(list.map((c) => [c.name, c.type]))) as [Map<string, string>, Map<string, string>];
  const out: string[] = [];
  for (const [name, type] of byName[0]) {
    const other = byName[1].get(name);
    if (other === undefined) out.push(`${name} only on ${a}`);
    else if (other !== type) out.push(`${name} is ${type} on ${a}, ${other} on ${b}`);
  }
  for (const name of byName[1].keys()) if (!byName[0].has(name)) out.push(`${name} only on ${b}`);
  return out.length ? `columns differ: ${out.join('; ')}` : '';
}

/**
 * `SELECT k, v` over `rel` (a table aliased r, with its row filter): k the key text (the row's
 * canonical text for PK-less tables), v the row's canonical text. Explicit: the row is built
 * from `cols` alone under their pipeline names (renamed or left-out columns); else from the whole row.
 */
function baseSql(rel: string, cols: Column[], keyCols: string[], explicit = false): string {
  const phys = (name: string): string => qi(cols.find((c) => c.name === name)?.physical ?? name);
  const parts = explicit ? [] : ['to_jsonb(r.*)'];
  const pairs = explicit
    ? cols.map((c) => `${ql(c.name)}, ${c.exact ? `r.${qi(c.physical)}` : `r.${qi(c.physical)}::text`}`)
    : cols.filter((c) => !c.exact).map((c) => `${ql(c.name)}, r.${qi(c.physical)}::text`);
  // jsonb_build_object takes at most 100 arguments: 50 columns per call.
  for (let i = 0; i < pairs.length; i += 50) parts.push(`jsonb_build_object(${pairs.slice(i, i + 50).join(', ')})`);
  if (parts.length === 0) parts.push(`'{}'::jsonb`);
  const row = `(${parts.join(' || ')})::text`;
  if (keyCols.length === 0) return `SELECT v AS k, v FROM (SELECT ${row} AS v FROM ${rel}) y`;
  return `SELECT jsonb_build_object(${keyCols.map((k) => `${ql(k)}, r.${phys(k)}::text`).join(', ')})::text AS k, ${row} AS v FROM ${rel}`;
}

/** Reads the open cursor in pages; `group` returns the next run of rows with one key hash. */
class RowCursor {
  private buf: DiffRow[] = [];
  private i = 0;
  private done = false;
  constructor(private readonly client: pg.Client) {}

  private async peek(): Promise<DiffRow | undefined> {
    if (this.i >= this.buf.length && !this.done) {
      this.buf = (await this.client.query<DiffRow>('FETCH 1000 FROM pgbridge_verify')).rows;
      this.i = 0;
      this.done = this.buf.length === 0;
    }
    return this.buf[this.i];
  }

  async group(): Promise<{ row: DiffRow; n: number } | undefined> {
    const row = await this.peek();
    if (!row) return undefined;
    let n = 0;
    while ((await this.peek())?.kh === row.kh) {
      this.i++;
      n++;
    }
    return { row, n };
  }
}

async function mergeDiff(report: TableReport, ca: RowCursor, cb: RowCursor, keyCols: string[], a: string, b: string, maxKeys: number): Promise<void> {
  // jsonb sorts object keys; report them in primary-key order.
  const keyOf = (k: string): Record<string, string | null> => {
    const o = JSON.parse(k) as Record<string, string | null>;
    return Object.fromEntries(keyCols.map((c) => [c, o[c] ?? null]));
  };
  let [ga, gb] = await Promise.all([ca.group(), cb.group()]);
  while (ga || gb) {
    const cmp = !ga ? 1 : !gb ? -1 : ga.row.kh < gb.row.kh ? -1 : ga.row.kh > gb.row.kh ? 1 : 0;
    let d: KeyDiff | undefined;
    if (keyCols.length) {
      const key = keyOf((cmp <= 0 ? ga : gb)!.row.k);
      if (cmp !== 0) d = { key, kind: 'missing', onlyOn: cmp < 0 ? a : b };
      else if (ga!.row.h !== gb!.row.h) d = { key, kind: 'different' };
    } else {
      const na = cmp <= 0 ? ga!.n : 0;
      const nb = cmp >= 0 ? gb!.n : 0;
      if (na !== nb) d = { key: { row_md5: (cmp <= 0 ? ga : gb)!.row.h }, kind: 'missing', onlyOn: na > nb ? a : b, counts: { [a]: na, [b]: nb } };
    }
    if (d) {
      if (report.differingKeys.length >= maxKeys) {
        report.truncated = true;
        return;
      }
      report.differingKeys.push(d);
    }
    [ga, gb] = await Promise.all([cmp <= 0 ? ca.group() : ga, cmp >= 0 ? cb.group() : gb]);
  }
}

/** A readable report for the CLI; the last line is `clusters equal` or `clusters differ: N table(s)`. */
export function formatVerifyReport(report: VerifyReport): string {
  const [a, b] = report.clusters;
  const w = Math.max(5, ...report.tables.map((t) => t.table.length));
  const lines = [`${'table'.padEnd(w)}  ${`rows ${a}`.padStart(12)}  ${`rows ${b}`.padStart(12)}  result`];
  for (const t of report.tables) {
    const result = t.missingOn
      ? `missing on ${t.missingOn}`
      : t.equal
        ? 'equal'
        : `differ: ${t.differingKeys.length}${t.truncated ? '+' : ''} key(s)${t.truncated ? ` (first ${t.differingKeys.length} listed)` : ''}`;
    lines.push(`${t.table.padEnd(w)}  ${String(t.rowsA).padStart(12)}  ${String(t.rowsB).padStart(12)}  ${result}`);
    if (t.scope) lines.push(`    compared: ${t.scope}`);
    if (t.problem) lines.push(`    ${t.problem}`);
    for (const d of t.differingKeys) {
      const what = d.kind === 'different' ? 'different ' : `only on ${d.onlyOn}`.padEnd(10);
      const counts = d.counts
        ? ` (${Object.entries(d.counts)
            .map(([c, n]) => `${c}: ${n}`)
            .join(', ')})`
        : '';
      lines.push(`    ${what}  ${JSON.stringify(d.key)}${counts}`);
    }
  }
  const differ = report.tables.filter((t) => !t.equal).length;
  lines.push(differ === 0 ? 'clusters equal' : `clusters differ: ${differ} table(s)`);
  return lines.join('\n');
}
