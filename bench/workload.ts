/**
 * What the benchmarks write: the tables (same shape on both clusters), a backlog written by
 * a PL/pgSQL procedure that commits inside its loop (so single-row transactions cost one
 * round of the executor, not one client round trip), and a paced writer for latency runs.
 */
import type { Db } from './env.js';

function q(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

export function qname(schema: string, table: string): string {
  return `${q(schema)}.${q(table)}`;
}

/** Backlog shapes of scenarios 1 and 2. */
export type Shape = 'single-row' | '10-row' | 'one-transaction';

export function rowsPerTransaction(shape: Shape, n: number): number {
  return shape === 'single-row' ? 1 : shape === '10-row' ? 10 : n;
}

/**
 * Creates `schema` with one throughput table per name (id bigint primary key, a text, a
 * numeric and a timestamptz: a typical narrow business row) and a fill procedure for each.
 */
export async function createThroughputTables(c: Db, schema: string, tables: readonly string[]): Promise<void> {
  const parts = [`DROP SCHEMA IF EXISTS ${q(schema)} CASCADE`, `CREATE SCHEMA ${q(schema)}`];
  for (const t of tables) {
    const tn = qname(schema, t);
    parts.push(
      `CREATE TABLE ${tn} (id bigint PRIMARY KEY, payload text NOT NULL, amount numeric(12,2) NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`,
    );
    parts.push(`CREATE PROCEDURE ${qname(schema, `fill_${t}`)}(n bigint, per_txn int) LANGUAGE plpgsql AS $$
DECLARE i bigint := 1;
BEGIN
  WHILE i <= n LOOP
    INSERT INTO ${tn} (id, payload, amount)
      SELECT g, 'payload ' || g || ' ' || md5(g::text), (g % 100000) / 100.0
        FROM generate_series(i, least(i + per_txn - 1, n)) g;
    COMMIT;
    i := i + per_txn;
  END LOOP;
END $$`);
  }
  await c.query(parts.join(';\n'));
}

/**
 * Writes rows 1..n into schema.table in transactions of `perTxn` rows. Not timed, so the
 * session commits asynchronously; the rows are in WAL before the pipeline starts either way.
 */
export async function writeBacklog(c: Db, schema: string, table: string, n: number, perTxn: number): Promise<void> {
  await c.query('SET synchronous_commit = off');
  await c.query(`CALL ${qname(schema, `fill_${table}`)}($1, $2)`, [n, perTxn]);
  await c.query('RESET synchronous_commit');
}

/**
 * The latency table. On the destination (`stamp` true) an ENABLE ALWAYS trigger writes
 * clock_timestamp() into `arrived`: it fires in pgbridge's apply session
 * (session_replication_role = replica) and in native apply workers alike.
 */
export async function createLatencyTable(c: Db, schema: string, stamp: boolean): Promise<void> {
  const tn = qname(schema, 'lat');
  const parts = [
    `DROP SCHEMA IF EXISTS ${q(schema)} CASCADE`,
    `CREATE SCHEMA ${q(schema)}`,
    `CREATE TABLE ${tn} (id bigint PRIMARY KEY, payload text NOT NULL, arrived timestamptz)`,
  ];
  if (stamp) {
    parts.push(
      `CREATE FUNCTION ${qname(schema, 'stamp_arrival')}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.arrived := clock_timestamp(); RETURN NEW; END $$`,
    );
    parts.push(`CREATE TRIGGER stamp_arrival BEFORE INSERT OR UPDATE ON ${tn} FOR EACH ROW EXECUTE FUNCTION ${qname(schema, 'stamp_arrival')}()`);
    parts.push(`ALTER TABLE ${tn} ENABLE ALWAYS TRIGGER stamp_arrival`);
  } else {
    parts.push(`CREATE PROCEDURE ${qname(schema, 'paced')}(n bigint, rate float8) LANGUAGE plpgsql AS $$
DECLARE i bigint := 1; t0 timestamptz := clock_timestamp(); ahead float8;
BEGIN
  WHILE i <= n LOOP
    INSERT INTO ${tn} (id, payload) VALUES (i, 'payload ' || i || ' ' || md5(i::text));
    COMMIT;
    IF i % 5 = 0 THEN
      ahead := extract(epoch FROM (t0 + make_interval(secs => i / rate)) - clock_timestamp());
      IF ahead > 0 THEN PERFORM pg_sleep(ahead); END IF;
    END IF;
    i := i + 1;
  END LOOP;
END $$`);
  }
  await c.query(parts.join(';\n'));
}

/** A warm-up row (id 0): once it has arrived, the pipeline is known to be running. */
export async function writeWarmupRow(c: Db, schema: string): Promise<void> {
  await c.query(`INSERT INTO ${qname(schema, 'lat')} (id, payload) VALUES (0, 'warm-up')`);
}

/** Rows 1..n as single-row transactions at `rate` per second (synchronous commit: each is durable and sendable at once). */
export async function writePaced(c: Db, schema: string, n: number, rate: number): Promise<void> {
  await c.query(`CALL ${qname(schema, 'paced')}($1, $2)`, [n, rate]);
}

/** Per row: source commit time (pg_xact_commit_timestamp of the row's own transaction), in epoch ms. */
export async function sourceCommitTimes(c: Db, schema: string): Promise<Map<number, number>> {
  const r = await c.query<{ id: string; ms: number }>(
    `SELECT id::text AS id, extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 * 1000 AS ms FROM ${qname(schema, 'lat')} WHERE id > 0`,
  );
  return new Map(r.rows.map((x) => [Number(x.id), x.ms]));
}

/** Per row: arrival time stamped by the destination trigger, in epoch ms. */
export async function arrivalTimes(c: Db, schema: string): Promise<Map<number, number>> {
  const r = await c.query<{ id: string; ms: number | null }>(
    `SELECT id::text AS id, extract(epoch FROM arrived)::float8 * 1000 AS ms FROM ${qname(schema, 'lat')} WHERE id > 0`,
  );
  const m = new Map<number, number>();
  for (const x of r.rows) if (x.ms !== null) m.set(Number(x.id), x.ms);
  return m;
}

export async function dropSchema(c: Db, schema: string): Promise<void> {
  await c.query(`DROP SCHEMA IF EXISTS ${q(schema)} CASCADE`);
}
