/**
 * The baseline: PostgreSQL's own logical replication between the same two clusters. Each
 * subscription is created disabled but with its slot (so a backlog written afterwards is
 * kept for it), and enabled when the clock starts.
 */
import { conninfo, db, sleep, type Side } from './env.js';
import { qname } from './workload.js';

export interface NativeLink {
  readonly from: Side;
  readonly to: Side;
  /** Publication, subscription and slot name. */
  readonly name: string;
}

function other(s: Side): Side {
  return s === 'a' ? 'b' : 'a';
}

/** Publication of `tables` on `from`, disabled subscription with its slot on the other side (copy_data off). */
export async function createLink(id: string, from: Side, schema: string, tables: readonly string[]): Promise<NativeLink> {
  const link: NativeLink = { from, to: other(from), name: `bench_${id}_${from}` };
  const src = await db(from);
  try {
    await src.query(`CREATE PUBLICATION "${link.name}" FOR TABLE ${tables.map((t) => qname(schema, t)).join(', ')}`);
  } finally {
    await src.end();
  }
  const dst = await db(link.to);
  try {
    await dst.query(
      `CREATE SUBSCRIPTION "${link.name}" CONNECTION '${conninfo(from)}' PUBLICATION "${link.name}" WITH (enabled = false, copy_data = false, create_slot = true)`,
    );
  } finally {
    await dst.end();
  }
  return link;
}

/** performance.now() of the last ENABLE per subscriber cluster. */
const lastEnabled: Record<Side, number> = { a: -Infinity, b: -Infinity };

/**
 * The logical replication launcher starts workers at most once per
 * wal_retrieve_retry_interval (5 s by default): enabling a subscription sooner after the
 * previous one would put that wait on the baseline's clock. Call before starting the clock.
 */
export async function awaitLauncher(links: readonly NativeLink[]): Promise<void> {
  let waitMs = 0;
  for (const l of links) {
    const c = await db(l.to);
    try {
      const r = await c.query<{ ms: string }>("SELECT setting AS ms FROM pg_settings WHERE name = 'wal_retrieve_retry_interval'");
      const interval = Number(r.rows[0]?.ms ?? 5000);
      waitMs = Math.max(waitMs, lastEnabled[l.to] + interval + 300 - performance.now());
    } finally {
      await c.end();
    }
  }
  if (waitMs > 0) await sleep(waitMs);
}

export async function enableLinks(links: readonly NativeLink[]): Promise<void> {
  await Promise.all(
    links.map(async (l) => {
      const c = await db(l.to);
      try {
        await c.query(`ALTER SUBSCRIPTION "${l.name}" ENABLE`);
        lastEnabled[l.to] = performance.now();
      } finally {
        await c.end();
      }
    }),
  );
}

/** Drops subscription (and with it the slot on the publisher) and publication. Safe to repeat. */
export async function dropLink(l: NativeLink): Promise<void> {
  const dst = await db(l.to);
  try {
    const exists = await dst.query('SELECT 1 FROM pg_subscription WHERE subname = $1', [l.name]);
    if (exists.rowCount) {
      try {
        await dst.query(`DROP SUBSCRIPTION "${l.name}"`);
      } catch {
        // The publisher could not be reached to drop the slot: detach, drop, and drop the slot below.
        await dst.query(`ALTER SUBSCRIPTION "${l.name}" DISABLE`).catch(() => undefined);
        await dst.query(`ALTER SUBSCRIPTION "${l.name}" SET (slot_name = NONE)`).catch(() => undefined);
        await dst.query(`DROP SUBSCRIPTION IF EXISTS "${l.name}"`);
      }
    }
  } finally {
    await dst.end();
  }
  const src = await db(l.from);
  try {
    for (let i = 0; i < 50; i++) {
      const r = await src.query<{ active: boolean }>('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [l.name]);
      if (!r.rows[0]) break;
      if (!r.rows[0].active) {
        await src.query('SELECT pg_drop_replication_slot($1)', [l.name]).catch(() => undefined);
      } else {
        await sleep(100);
      }
    }
    await src.query(`DROP PUBLICATION IF EXISTS "${l.name}"`);
  } finally {
    await src.end();
  }
}
