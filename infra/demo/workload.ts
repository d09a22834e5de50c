/**
 * A mixed two-sided workload for the demo, the soak test and benchmarks: transfers between
 * accounts (the sum of balances never changes), order inserts/updates/deletes, and
 * deliberate conflicts (the same account updated on both clusters at the same moment).
 * Every write a client saw commit is counted (the ledger).
 */
import type pg from 'pg';
import type { PipelineConfig } from '../../shared/config.js';
import { connect, qi } from '../../shared/pg.js';

export const ACCOUNTS = 100;
export const INITIAL_BALANCE = 1000;

export function workloadSchemaSql(schema: string, sequenceStart: number, sequenceStep: number): string {
  const s = qi(schema);
  return `
DROP SCHEMA IF EXISTS ${s} CASCADE;
CREATE SCHEMA ${s};
CREATE TABLE ${s}.accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric(14,2) NOT NULL, version bigint NOT NULL DEFAULT 0, updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE SEQUENCE ${s}.orders_id_seq START ${sequenceStart} INCREMENT ${sequenceStep};
CREATE TABLE ${s}.orders (id bigint PRIMARY KEY DEFAULT nextval('${schema}.orders_id_seq'), account_id int NOT NULL, amount numeric(10,2) NOT NULL, status text NOT NULL, note jsonb, created_at timestamptz NOT NULL DEFAULT clock_timestamp());
INSERT INTO ${s}.accounts (id, owner, balance, updated_at) SELECT g, 'owner ' || g, ${INITIAL_BALANCE}, '2026-01-01 00:00:00+00' FROM generate_series(1, ${ACCOUNTS}) g;
`;
}

export interface Ledger {
  transfers: number;
  ordersInserted: number;
  ordersUpdated: number;
  ordersDeleted: number;
  conflictWrites: number;
  failed: number;
}

export function emptyLedger(): Ledger {
  return { transfers: 0, ordersInserted: 0, ordersUpdated: 0, ordersDeleted: 0, conflictWrites: 0, failed: 0 };
}

export function ledgerTotal(l: Ledger): number {
  return l.transfers + l.ordersInserted + l.ordersUpdated + l.ordersDeleted + l.conflictWrites;
}

function rnd(n: number): number {
  return 1 + Math.floor(Math.random() * n);
}

/** Accounts each side transfers between: disjoint halves, so two-way never conflicts by accident except on purpose. */
function accountRange(side: number): [number, number] {
  const half = ACCOUNTS / 2;
  return side === 0 ? [1, half - 5] : [half + 1, ACCOUNTS - 5];
}

async function oneOp(c: pg.Client, schema: string, side: number, l: Ledger): Promise<void> {
  const s = qi(schema);
  const [lo, hi] = accountRange(side);
  const roll = Math.random();
  if (roll < 0.45) {
    const from = lo + rnd(hi - lo) - 1;
    let to = lo + rnd(hi - lo) - 1;
    if (to === from) to = from === hi ? lo : from + 1;
    const amount = (rnd(5000) / 100).toFixed(2);
    // Lower id first: two writers moving money between the same accounts never deadlock.
    const steps: [string, number][] = [
      [`-${amount}`, from],
      [amount, to],
    ];
    steps.sort((x, y) => x[1] - y[1]);
    await c.query('BEGIN');
    for (const [delta, id] of steps) {
      await c.query(`UPDATE ${s}.accounts SET balance = balance + $1::numeric, version = version + 1, updated_at = clock_timestamp() WHERE id = $2`, [
        delta,
        id,
      ]);
    }
    await c.query('COMMIT');
    l.transfers++;
  } else if (roll < 0.8) {
    await c.query(`INSERT INTO ${s}.orders (account_id, amount, status, note) VALUES ($1, $2, 'new', $3)`, [
      lo + rnd(hi - lo) - 1,
      (rnd(100000) / 100).toFixed(2),
      JSON.stringify({ side, n: rnd(1e9) }),
    ]);
    l.ordersInserted++;
  } else if (roll < 0.93) {
    const r = await c.query(
      `UPDATE ${s}.orders SET status = 'paid' WHERE id = (SELECT id FROM ${s}.orders WHERE status = 'new' AND account_id BETWEEN $1 AND $2 ORDER BY random() LIMIT 1)`,
      [lo, hi],
    );
    if (r.rowCount) l.ordersUpdated++;
  } else {
    const r = await c.query(`DELETE FROM ${s}.orders WHERE id = (SELECT id FROM ${s}.orders WHERE account_id BETWEEN $1 AND $2 ORDER BY random() LIMIT 1)`, [
      lo,
      hi,
    ]);
    if (r.rowCount) l.ordersDeleted++;
  }
}

/**
 * Runs writers on both clusters until `until()` is false. Every `conflictEveryMs` both sides
 * set the owner of the same account at once (a true conflict, resolved by the policy).
 */
export async function runWorkload(
  cfg: PipelineConfig,
  schema: string,
  opts: { until: () => boolean; writersPerSide?: number; conflictEveryMs?: number; pauseMs?: number },
): Promise<Ledger[]> {
  const ledgers = cfg.clusterNames.map(() => emptyLedger());
  const writers: Promise<void>[] = [];
  const perSide = opts.writersPerSide ?? 2;
  for (const [side, name] of cfg.clusterNames.entries()) {
    for (let w = 0; w < perSide; w++) {
      writers.push(
        (async () => {
          const c = await connect(cfg.clusters[name]!, `pgbridge-workload-${name}`);
          try {
            while (opts.until()) {
              try {
                await oneOp(c, schema, side, ledgers[side]!);
              } catch {
                ledgers[side]!.failed++;
                await c.query('ROLLBACK').catch(() => undefined);
              }
              if (opts.pauseMs) await new Promise((r) => setTimeout(r, opts.pauseMs));
            }
          } finally {
            await c.end().catch(() => undefined);
          }
        })(),
      );
    }
  }
  if (opts.conflictEveryMs) {
    writers.push(
      (async () => {
        const clients = await Promise.all(cfg.clusterNames.map((n) => connect(cfg.clusters[n]!, 'pgbridge-workload-conflicts')));
        try {
          let k = 0;
          while (opts.until()) {
            const id = ACCOUNTS - (k++ % 5);
            await Promise.all(
              clients.map(async (c, side) => {
                await c.query(`UPDATE ${qi(schema)}.accounts SET owner = $1, version = version + 1, updated_at = clock_timestamp() WHERE id = $2`, [
                  `set on ${cfg.clusterNames[side]} #${k}`,
                  id,
                ]);
                ledgers[side]!.conflictWrites++;
              }),
            );
            await new Promise((r) => setTimeout(r, opts.conflictEveryMs));
          }
        } finally {
          await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
        }
      })(),
    );
  }
  await Promise.all(writers);
  return ledgers;
}
