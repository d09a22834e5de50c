/**
 * Precheck rules on the selected tables: a key on each cluster (replica identity), the
 * selection's names, and the comparison of the two clusters (tables on the destination,
 * their columns, the sequences behind them). One function per rule.
 */
import { policyFor, type PipelineConfig } from '../../../shared/config.js';
import { qi, qt } from '../../../shared/pg.js';
import type { ReachableClusterFacts, SequenceFacts, TableFacts } from './facts.js';
import { at, list, type AddFinding } from './findings.js';
import { mod, sequencesOverlap } from './sequences.js';
import { unpublishedColumns } from './table-settings.js';

/** schema.table, how findings and both clusters' tables are matched. */
const key = (t: TableFacts): string => `${t.schema}.${t.table}`;

/** replica_identity: every selected table has a primary key or a replica identity that carries its key. */
export function checkReplicaIdentity(_cfg: PipelineConfig, c: ReachableClusterFacts, add: AddFinding): void {
  const where = `cluster ${at(c)}`;
  const name = c.name;
  if (c.tablesError) {
    add({
      level: 'error',
      check: 'replica_identity',
      cluster: name,
      message: `${where}: cannot read the selected tables: ${c.tablesError}; replica identity, table and sequence checks skipped for ${name}`,
    });
    return;
  }
  let identityProblems = 0;
  for (const t of c.tables) {
    const table = qt(t.schema, t.table);
    const object = `${t.schema}.${t.table}`;
    const full = `ALTER TABLE ${table} REPLICA IDENTITY FULL;`;
    const problem = (level: 'error' | 'warning', message: string, fix: string): void => {
      identityProblems++;
      add({ level, check: 'replica_identity', cluster: name, object, message: `${where}: table ${table} ${message}`, fix });
    };
    if (t.replicaIdentity === 'nothing') {
      problem(
        'error',
        'has REPLICA IDENTITY NOTHING: once published, its UPDATE and DELETE fail and no key reaches the other cluster',
        t.hasPrimaryKey ? `ALTER TABLE ${table} REPLICA IDENTITY DEFAULT;` : full,
      );
    } else if (t.replicaIdentity === 'index' && !t.replicaIdentityIndexOk) {
      problem(
        'error',
        'has REPLICA IDENTITY USING INDEX but the index is gone (behaves as NOTHING)',
        t.hasPrimaryKey ? `ALTER TABLE ${table} REPLICA IDENTITY DEFAULT;` : full,
      );
    } else if (t.replicaIdentity === 'default' && !t.hasPrimaryKey) {
      problem(
        'error',
        'has no primary key and no replica identity: once published, its UPDATE and DELETE fail and rows cannot be matched on the other cluster',
        `${full} (or add a primary key)`,
      );
    } else if (t.replicaIdentity === 'full' && !t.hasPrimaryKey) {
      problem(
        'warning',
        'has no primary key (REPLICA IDENTITY FULL): apply matches rows on all columns, and where rows are duplicates each event touches one of them',
        `add a primary key: ALTER TABLE ${table} ADD PRIMARY KEY (…);`,
      );
    }
  }
  if (identityProblems === 0) {
    add({
      level: 'ok',
      check: 'replica_identity',
      cluster: name,
      message: `${where}: all ${c.tables.length} selected table(s) have a primary key or replica identity`,
    });
  }
}

/** selection: every table selection.include names exists on some cluster. */
export function checkSelection(cfg: PipelineConfig, clusters: readonly ReachableClusterFacts[], add: AddFinding): void {
  if (clusters.length === 0 || clusters.some((c) => c.tablesError)) return;
  for (const entry of cfg.selection.include) {
    const [s, t] = entry.split('.') as [string, string];
    if (!clusters.some((c) => c.tables.some((x) => x.schema === s && x.table === t))) {
      add({
        level: 'warning',
        check: 'selection',
        object: entry,
        message: `selection.include names ${qt(s, t)}, which exists on no reachable cluster (${clusters.map(at).join(', ')}); nothing of it will be synchronized`,
        fix: `fix the name in selection.include or create the table`,
      });
    }
  }
}

/**
 * destination_tables: every selected table of the forward source exists on the destination
 * without rows (or `existingTables: ignore` keeps them), and none is only on the destination.
 */
export function checkDestinationTables(
  cfg: PipelineConfig,
  from: ReachableClusterFacts,
  to: ReachableClusterFacts,
  existingTables: 'error' | 'ignore',
  add: AddFinding,
): void {
  const fwd = cfg.directions[0];
  const onTo = new Map(to.tables.map((t) => [key(t), t]));
  const onFrom = new Map(from.tables.map((t) => [key(t), t]));
  let destProblems = 0;
  for (const t of from.tables) {
    const table = qt(t.schema, t.table);
    const d = onTo.get(key(t));
    if (!d) {
      destProblems++;
      add({
        level: 'error',
        check: 'destination_tables',
        cluster: to.name,
        object: key(t),
        message: `table ${table} exists on ${at(from)} but not on ${at(to)}; two-way sync needs it on both clusters (the reverse direction ${cfg.directions[1].id} captures from ${to.name})`,
        fix: `run the initial schema sync ${fwd.id} (it creates the table on ${to.name}), or create it on ${to.name}, or exclude it (selection.exclude)`,
      });
    } else if (d.hasRows === true) {
      destProblems++;
      add({
        level: existingTables === 'error' ? 'error' : 'warning',
        check: 'destination_tables',
        cluster: to.name,
        object: key(t),
        message:
          existingTables === 'error'
            ? `table ${table} already exists on the destination ${at(to)} and holds rows; the initial data sync ${fwd.id} would collide with them`
            : `table ${table} already exists on the destination ${at(to)} and holds rows; they are kept and the initial data sync ${fwd.id} resolves collisions by the conflict policy (${policyFor(cfg, t.schema, t.table)})`,
        fix: existingTables === 'error' ? `empty it on ${to.name} (TRUNCATE ${table};), exclude it, or run precheck with existing tables = ignore` : undefined,
      });
    } else if (d.hasRows === null) {
      destProblems++;
      add({
        level: 'warning',
        check: 'destination_tables',
        cluster: to.name,
        object: key(t),
        message: `table ${table} exists on the destination ${at(to)} but role ${to.user} cannot read it, so whether it holds rows is unknown`,
        fix: `GRANT SELECT ON TABLE ${table} TO ${qi(to.user)};`,
      });
    }
  }
  for (const t of to.tables) {
    if (onFrom.has(key(t))) continue;
    destProblems++;
    add({
      level: 'error',
      check: 'destination_tables',
      cluster: from.name,
      object: key(t),
      message: `table ${qt(t.schema, t.table)} exists on ${at(to)} but not on ${at(from)}; the reverse direction ${cfg.directions[1].id} would capture changes it cannot apply, and the forward schema sync does not create it`,
      fix: `create it on ${from.name}, or exclude it (selection.exclude)`,
    });
  }
  if (destProblems === 0) {
    add({
      level: 'ok',
      check: 'destination_tables',
      cluster: to.name,
      message: `all ${from.tables.length} selected table(s) of ${at(from)} exist on ${at(to)} without rows, and none is only on ${to.name}`,
    });
  }
}

/** table_structure: a table on both clusters has the same columns and types (columns a column list leaves out may differ). */
export function checkTableStructure(cfg: PipelineConfig, from: ReachableClusterFacts, to: ReachableClusterFacts, add: AddFinding): void {
  const onTo = new Map(to.tables.map((t) => [key(t), t]));
  let structureProblems = 0;
  for (const a of from.tables) {
    const b = onTo.get(key(a));
    if (!b) continue;
    // Columns a column list leaves out never travel: they may differ.
    const skip = unpublishedColumns(
      cfg,
      a.schema,
      a.table,
      [...a.columns, ...b.columns].map((x) => x.name),
    );
    const ca = new Map(a.columns.filter((x) => !skip.has(x.name)).map((x) => [x.name, x.type]));
    const cb = new Map(b.columns.filter((x) => !skip.has(x.name)).map((x) => [x.name, x.type]));
    const diffs: string[] = [];
    for (const [n, ty] of ca) {
      const other = cb.get(n);
      if (other === undefined) diffs.push(`${qi(n)} only on ${from.name}`);
      else if (other !== ty) diffs.push(`${qi(n)} is ${ty} on ${from.name} but ${other} on ${to.name}`);
    }
    for (const n of cb.keys()) if (!ca.has(n)) diffs.push(`${qi(n)} only on ${to.name}`);
    if (diffs.length) {
      structureProblems++;
      add({
        level: 'error',
        check: 'table_structure',
        cluster: to.name,
        object: key(a),
        message: `table ${qt(a.schema, a.table)} differs between ${at(from)} and ${at(to)}: ${list(diffs)}`,
        fix: `make the columns identical on both clusters (ALTER TABLE … on one of them), leave the differing columns out of replication (selection.tables.${key(a)}.columns), or exclude the table`,
      });
    }
  }
  if (structureProblems === 0)
    add({
      level: 'ok',
      check: 'table_structure',
      cluster: to.name,
      message: `tables present on both ${at(from)} and ${at(to)} have the same columns and types`,
    });
}

/** sequences: no column takes values from sequences on both clusters that would hand out the same values. */
export function checkSequences(cfg: PipelineConfig, from: ReachableClusterFacts, to: ReachableClusterFacts, add: AddFinding): void {
  const onTo = new Map(to.tables.map((t) => [key(t), t]));
  let sequenceProblems = 0;
  for (const a of from.tables) {
    const b = onTo.get(key(a));
    if (!b) continue;
    for (const sa of a.sequences) {
      const sb = b.sequences.find((x) => x.column === sa.column);
      if (!sb || !sequencesOverlap(sa, sb)) continue;
      sequenceProblems++;
      const alter = (s: SequenceFacts, t: TableFacts, restart: bigint): string =>
        s.identity
          ? `ALTER TABLE ${qt(t.schema, t.table)} ALTER COLUMN ${qi(s.column)} SET INCREMENT BY 2 RESTART WITH ${restart};`
          : `ALTER SEQUENCE ${s.sequence} INCREMENT BY 2 RESTART WITH ${restart};`;
      // Start above every value either side has handed out, odd on the forward source, even on the other.
      const top = sa.next > sb.next ? sa.next : sb.next;
      const odd = mod(top, 2n) === 1n ? top : top + 1n;
      const ascending = sa.increment > 0n && sb.increment > 0n;
      // DDL replication would carry the forward source's ALTER SEQUENCE over (and reject refuses the other's).
      const byHand =
        cfg.ddl.forward === 'replicate' || cfg.ddl.reverse === 'reject'
          ? `; by hand, run each ALTER after SET session_replication_role = replica, or DDL replication carries ${from.name}'s to ${to.name}${cfg.ddl.reverse === 'reject' ? ` and refuses ${to.name}'s` : ''}`
          : '';
      add({
        level: 'warning',
        check: 'sequences',
        cluster: to.name,
        object: `${key(a)}.${sa.column}`,
        message: `column ${qi(sa.column)} of ${qt(a.schema, a.table)} takes values from ${sa.sequence} on ${at(from)} (next ${sa.next}, increment ${sa.increment}) and ${sb.sequence} on ${at(to)} (next ${sb.next}, increment ${sb.increment}); both would hand out the same values, so rows inserted on both sides collide (insert_exists); \`pgbridge setup --split-sequences\` gives every such column odd values on ${from.name} and even ones on ${to.name}${byHand}`,
        fix: ascending
          ? `on ${from.name}: ${alter(sa, a, odd)}  on ${to.name}: ${alter(sb, b, odd + 1n)}`
          : `give the two clusters disjoint values (odd/even increments or separate ranges)`,
      });
    }
  }
  if (sequenceProblems === 0)
    add({ level: 'ok', check: 'sequences', cluster: to.name, message: `no column takes overlapping sequence values on ${at(from)} and ${at(to)}` });
}
