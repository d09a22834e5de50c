/**
 * `pgbridge setup --split-sequences [N]` and `pgbridge sync --split-sequences [N]`: the odd/even
 * (N-way) split that precheck suggests, applied. Every sequence behind a column of a selected
 * table (identity column or nextval() default) gets INCREMENT BY N on every cluster, and is
 * restarted above every value any cluster has handed out, at a value ≡ k (mod N) on the k-th
 * cluster (the forward source is 1, the other 2, … mod N): rows inserted on both sides then
 * never take the same key. A column whose sequences already cannot meet (precheck's test) is
 * left as it is, so running it again changes nothing.
 *
 * The sequences are altered in one transaction per cluster. ALTER SEQUENCE takes a lock that
 * nextval() waits for, so the values read after it are final until the restart commits:
 * inserts on those tables wait for the few milliseconds this takes.
 */
import type pg from 'pg';
import type { PipelineConfig } from '../../shared/config.js';
import { ddlObjectNames } from '../../shared/ddl.js';
import { PgBridgeError, errorMessage } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import { connect } from '../../shared/pg.js';
import { COLUMN_SEQUENCE_JOIN, sequencesOverlap } from './precheck/sequences.js';
import { selectedTables } from './setup.js';

export interface ColumnSequence {
  readonly table: string;
  readonly column: string;
  /** Quoted, schema-qualified sequence name. */
  readonly sequence: string;
  readonly increment: bigint;
  readonly min: bigint;
  readonly max: bigint;
  readonly cycle: boolean;
  /** What nextval() hands out next. */
  readonly next: bigint;
}

export interface SplitLine {
  readonly table: string;
  readonly column: string;
  /** What was done: split, already apart, or why not. */
  readonly action: 'split' | 'already apart' | 'skipped';
  readonly reason?: string;
  /** Per cluster: sequence, increment and next value before, and after (when split). */
  readonly clusters: readonly { cluster: string; sequence: string; before: { increment: bigint; next: bigint }; after?: { increment: bigint; next: bigint } }[];
}

export interface SplitReport {
  readonly ways: number;
  readonly lines: SplitLine[];
}

/** Sequences behind columns of the selected tables on one cluster (read in the caller's transaction). */
export async function columnSequences(c: pg.Client, cfg: PipelineConfig): Promise<ColumnSequence[]> {
  const selected = await selectedTables(c, cfg);
  if (selected.length === 0) return [];
  const r = await c.query<{ s: string; t: string; col: string; seq: string; inc: string; min: string; max: string; cycle: boolean | string }>(
    `SELECT n.nspname AS s, c.relname AS t, a.attname AS col, format('%I.%I', sn.nspname, sc.relname) AS seq,
            s.seqincrement::text AS inc, s.seqmin::text AS min, s.seqmax::text AS max, s.seqcycle AS cycle
       FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
       JOIN unnest($1::text[], $2::text[]) AS sel(s, t) ON n.nspname = sel.s AND c.relname = sel.t
       ${COLUMN_SEQUENCE_JOIN}
      WHERE a.attnum > 0 AND NOT a.attisdropped
      ORDER BY 1, 2, a.attnum`,
    [selected.map((t) => t.schema), selected.map((t) => t.table)],
  );
  const out: ColumnSequence[] = [];
  for (const x of r.rows) {
    const increment = BigInt(x.inc);
    out.push({
      table: `${x.s}.${x.t}`,
      column: x.col,
      sequence: x.seq,
      increment,
      min: BigInt(x.min),
      max: BigInt(x.max),
      cycle: x.cycle === true || x.cycle === 't',
      next: await nextValue(c, x.seq, increment),
    });
  }
  return out;
}

/** The value nextval() hands out next (after RESTART the next value is last_value itself). */
async function nextValue(c: pg.Client, seq: string, increment: bigint): Promise<bigint> {
  const cur = (await c.query<{ last_value: string; is_called: boolean | string }>(`SELECT last_value::text, is_called FROM ${seq}`)).rows[0]!;
  const called = cur.is_called === true || cur.is_called === 't';
  return called ? BigInt(cur.last_value) + increment : BigInt(cur.last_value);
}

const mod = (a: bigint, m: bigint): bigint => ((a % m) + m) % m;

/** Smallest value ≥ from that is ≡ residue (mod ways). */
export function nextInResidue(from: bigint, residue: bigint, ways: bigint): bigint {
  return from + mod(residue - from, ways);
}

/**
 * The split is made on each cluster for that cluster: in a session with
 * session_replication_role = replica, where event triggers do not fire, so DDL replication
 * (shared/ddl.ts) neither records the forward source's ALTER SEQUENCE (apply would run it on
 * the other cluster and give it the same residue) nor warns about or refuses the other's.
 * Without the privilege to set it, the split goes on only where no such trigger of the
 * pipeline exists.
 */
async function replicaSession(c: pg.Client, cfg: PipelineConfig, cluster: string): Promise<void> {
  try {
    await c.query('SET session_replication_role = replica');
  } catch (err) {
    const t = await c.query('SELECT 1 FROM pg_event_trigger WHERE evtname = $1 AND evtenabled <> $2', [ddlObjectNames(cfg.pipeline).onEnd, 'D']);
    if (t.rowCount) {
      throw new PgBridgeError(
        'PRECHECK',
        `cluster ${cluster}: role ${cfg.clusters[cluster]!.user} cannot SET session_replication_role (${errorMessage(err)}), and pipeline ${cfg.pipeline}'s DDL trigger would carry the split's ALTER SEQUENCE to the other cluster; run the split as a superuser, or GRANT SET ON PARAMETER session_replication_role TO ${cfg.clusters[cluster]!.user}`,
      );
    }
  }
}

/** Applies the N-way split (ways ≥ the number of clusters; default: that number). */
export async function splitSequences(cfg: PipelineConfig, log: Logger, opts: { ways?: number } = {}): Promise<SplitReport> {
  const order = [cfg.directions[0].from, ...cfg.clusterNames.filter((n) => n !== cfg.directions[0].from)];
  const ways = opts.ways ?? order.length;
  if (!Number.isInteger(ways) || ways < order.length)
    throw new PgBridgeError('CONFIG_INVALID', `--split-sequences ${ways}: needs a whole number of at least ${order.length} (one residue per cluster)`);
  const N = BigInt(ways);
  const clients: pg.Client[] = [];
  try {
    for (const name of order) {
      const c = await connect(cfg.clusters[name]!, 'pgbridge-sequence-split');
      clients.push(c);
      await replicaSession(c, cfg, name);
      await c.query('BEGIN');
    }
    const facts = await Promise.all(clients.map((c) => columnSequences(c, cfg)));
    const lines: SplitLine[] = [];
    for (const s0 of facts[0]!) {
      const sides = facts.map((f) => f.find((x) => x.table === s0.table && x.column === s0.column));
      const before = (i: number): SplitLine['clusters'][number] => ({
        cluster: order[i]!,
        sequence: sides[i]!.sequence,
        before: { increment: sides[i]!.increment, next: sides[i]!.next },
      });
      if (sides.some((x) => !x)) {
        lines.push({
          table: s0.table,
          column: s0.column,
          action: 'skipped',
          reason: `no sequence behind this column on ${order.filter((_, i) => !sides[i]).join(', ')}`,
          clusters: [],
        });
        continue;
      }
      const all = sides as ColumnSequence[];
      const collide = all.some((a, i) => all.some((b, j) => j > i && sequencesOverlap(a, b)));
      if (!collide) {
        lines.push({ table: s0.table, column: s0.column, action: 'already apart', clusters: all.map((_, i) => before(i)) });
        continue;
      }
      if (all.some((x) => x.increment <= 0n || x.cycle)) {
        lines.push({
          table: s0.table,
          column: s0.column,
          action: 'skipped',
          reason: 'descending or cycling sequence: give the clusters disjoint values yourself (separate ranges)',
          clusters: all.map((_, i) => before(i)),
        });
        continue;
      }
      // Lock first (ALTER SEQUENCE holds off nextval() until commit), then read what is final.
      for (const [i, c] of clients.entries()) await c.query(`ALTER SEQUENCE ${all[i]!.sequence} INCREMENT BY ${N}`);
      const nexts = await Promise.all(clients.map((c, i) => nextValue(c, all[i]!.sequence, all[i]!.increment)));
      const top = nexts.reduce((m, v) => (v > m ? v : m));
      const clusters: SplitLine['clusters'][number][] = [];
      for (const [i, c] of clients.entries()) {
        const restart = nextInResidue(top, BigInt(i + 1), N);
        if (restart > all[i]!.max)
          throw new PgBridgeError(
            'PRECHECK',
            `sequence ${all[i]!.sequence} on ${order[i]}: the split would restart it at ${restart}, above its maximum ${all[i]!.max}`,
          );
        await c.query(`ALTER SEQUENCE ${all[i]!.sequence} RESTART WITH ${restart}`);
        clusters.push({
          cluster: order[i]!,
          sequence: all[i]!.sequence,
          before: { increment: all[i]!.increment, next: nexts[i]! },
          after: { increment: N, next: restart },
        });
      }
      lines.push({ table: s0.table, column: s0.column, action: 'split', clusters });
    }
    for (const s of facts.slice(1).flat()) {
      if (!facts[0]!.some((x) => x.table === s.table && x.column === s.column))
        lines.push({ table: s.table, column: s.column, action: 'skipped', reason: `no sequence behind this column on ${order[0]}`, clusters: [] });
    }
    for (const c of clients) await c.query('COMMIT');
    log.info({ ways, split: lines.filter((l) => l.action === 'split').length }, 'sequences split');
    return { ways, lines };
  } catch (err) {
    for (const c of clients) await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    for (const c of clients) await c.end().catch(() => undefined);
  }
}

export function formatSplitReport(r: SplitReport): string {
  const out = [`sequence split, ${r.ways} ways (cluster k takes values ≡ k mod ${r.ways}):`];
  for (const l of r.lines) {
    out.push(`  ${l.table}.${l.column}: ${l.action}${l.reason ? ` (${l.reason})` : ''}`);
    for (const c of l.clusters) {
      out.push(
        `    ${c.cluster}: ${c.sequence} increment ${c.before.increment}, next ${c.before.next}${c.after ? ` → increment ${c.after.increment}, next ${c.after.next}` : ''}`,
      );
    }
  }
  if (r.lines.length === 0) out.push('  no column of the selected tables takes values from a sequence');
  return out.join('\n');
}
