/**
 * What the fault tests share: a pipeline with its own name and schema and the real service
 * processes, a bank workload (transfers move amounts between accounts inside one source
 * transaction, so the total never changes), watchers that check the destination while faults
 * run, and the topic check that every source transaction is in Kafka whole.
 *
 * Every source transaction of a test inserts exactly one row into `ledger` with its xid and
 * the number of row changes it made: the source's ledger is the list of transactions that
 * must be in the topic, and the destination's ledger (no primary key) would show a
 * transaction applied twice as a duplicate row.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach } from 'vitest';
import type pg from 'pg';
import { setup } from '../../services/cli/setup.js';
import { originName, parseConfig, slotName, type PipelineConfig, type PipelineConfigInput } from '../../shared/config.js';
import { classifyPgError } from '../../shared/errors.js';
import { KafkaClient, followTopic } from '../../shared/kafka.js';
import { pgClient, testConfig, testLog, uniqueName, waitUntil } from '../support/pipeline.js';
import { ServiceProcess, configInput, writeConfigFile, type ConfigFile } from '../support/processes.js';
import { readTopic, type ReadRecord } from '../support/topic.js';

export const ACCOUNTS = 20;
export const OPENING_BALANCE = 1000;
export const BANK_TOTAL = String(ACCOUNTS * OPENING_BALANCE);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The server went away (restart, crash, terminated backend), as opposed to an error of the statement. */
const isConnectionLoss = (err: unknown): boolean => classifyPgError(err).connection;

/** Connects again and again (every 200 ms) until it works; null once `go()` turns false. */
async function reconnect(open: () => Promise<pg.Client>, go: () => boolean): Promise<pg.Client | null> {
  while (go()) {
    try {
      return await open();
    } catch (err) {
      if (!isConnectionLoss(err)) throw err;
      await sleep(200);
    }
  }
  return null;
}

export function bankTables(schema: string): string[] {
  return [
    `CREATE TABLE ${schema}.accounts (id int PRIMARY KEY, balance bigint NOT NULL, version bigint NOT NULL)`,
    // No key on purpose: a source transaction applied twice leaves two rows.
    `CREATE TABLE ${schema}.ledger (xid bigint NOT NULL DEFAULT (txid_current() % 4294967296), events int NOT NULL, note text)`,
    `ALTER TABLE ${schema}.ledger REPLICA IDENTITY FULL`,
  ];
}

export interface FaultPipeline {
  readonly cfg: PipelineConfig;
  readonly schema: string;
  /** Source and destination cluster names (unique per test, see faultPipeline). */
  readonly src: string;
  readonly dst: string;
  /** `<src>-<dst>` */
  readonly direction: string;
  readonly topic: string;
  readonly config: ConfigFile;
  /** Clients of the source and destination; after a server restart call reconnect(). */
  a: pg.Client;
  b: pg.Client;
  readonly processes: ServiceProcess[];
  /** New clients a and b (the old ones are closed): for after a PostgreSQL restart. */
  reconnect(): Promise<void>;
  capture(): Promise<ServiceProcess>;
  apply(): Promise<ServiceProcess>;
  /** Runs `fn` at cleanup (before the processes stop), so a failing test leaves no writer or watcher behind. */
  defer(fn: () => Promise<unknown>): void;
  /** Stops every process and drops what this pipeline created (see releaseFaultPipeline). */
  cleanup(): Promise<void>;
}

/**
 * For a describe block whose tests each make a pipeline: returns `track`, which hands back the
 * pipeline it is given and cleans it up after the test, passed or failed.
 */
export function cleanupAfterEach(): (p: FaultPipeline) => FaultPipeline {
  let current: FaultPipeline | null = null;
  afterEach(async () => {
    await current?.cleanup();
    current = null;
  });
  return (p) => (current = p);
}

/**
 * A new pipeline: unique pipeline name, schema and cluster names (on the stack's clusters a
 * and b), `pgbridge setup` done. The cluster names are unique too because replication
 * origins (cdc_<from>), cdc.apply_progress and cdc.barriers rows are keyed by cluster and
 * direction only: two pipelines applying "a-b" to the same PostgreSQL at once would share
 * one origin (the second apply cannot take it) and one stored position.
 */
export async function faultPipeline(prefix: string, tables: (schema: string) => string[], over: Partial<PipelineConfigInput> = {}): Promise<FaultPipeline> {
  const schema = uniqueName(prefix);
  const tag = randomBytes(3).toString('hex');
  const src = `a${tag}`;
  const dst = `b${tag}`;
  const base = configInput(testConfig(uniqueName(`p${prefix}`), schema, over));
  const cfg = parseConfig({ ...base, clusters: { [src]: base.clusters.a!, [dst]: base.clusters.b! } });
  const a = await pgClient(cfg, src);
  const b = await pgClient(cfg, dst);
  const config = writeConfigFile(cfg);
  const processes: ServiceProcess[] = [];
  const deferred: (() => Promise<unknown>)[] = [];
  const direction = cfg.directions[0];
  const p: FaultPipeline = {
    cfg,
    schema,
    src,
    dst,
    direction: direction.id,
    topic: direction.topic,
    config,
    a,
    b,
    processes,
    async capture() {
      const p = await ServiceProcess.capture(config, src);
      processes.push(p);
      return p;
    },
    async apply() {
      const p = await ServiceProcess.apply(config, direction.id);
      processes.push(p);
      return p;
    },
    defer(fn) {
      deferred.push(fn);
    },
    async reconnect() {
      await Promise.all([p.a.end().catch(() => undefined), p.b.end().catch(() => undefined)]);
      p.a = await pgClient(cfg, src);
      p.b = await pgClient(cfg, dst);
    },
    async cleanup() {
      for (const fn of deferred.reverse()) await fn().catch(() => undefined);
      await Promise.all(processes.map((p) => p.stop().catch(() => undefined)));
      // Kept for a look after a failure: every start of every service, in full.
      const logs = join(tmpdir(), 'pgbridge-faults', cfg.pipeline);
      mkdirSync(logs, { recursive: true });
      for (const x of processes) writeFileSync(join(logs, `${x.name}.log`), x.output());
      const { a, b } = p;
      await releaseFaultPipeline(cfg, { [src]: a, [dst]: b }).catch((err: unknown) => console.warn(`cleanup of ${cfg.pipeline}: ${String(err)}`));
      for (const c of [a, b]) {
        await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
        await c.end().catch(() => undefined);
      }
      config.remove();
    },
  };
  try {
    for (const c of [a, b]) {
      await c.query(`CREATE SCHEMA ${schema}`);
      for (const sql of tables(schema)) await c.query(sql);
    }
    await setup(cfg, testLog);
  } catch (err) {
    await p.cleanup();
    throw err;
  }
  return p;
}

/**
 * Drops only what this pipeline owns: slots, publications, its origins, its rows in the
 * shared cdc tables, its topics. Not `pgbridge release`: that drops the cdc schema and the
 * origins every other pipeline on these clusters uses, under the tests running beside us.
 */
async function releaseFaultPipeline(cfg: PipelineConfig, clients: Record<string, pg.Client>): Promise<void> {
  const retry = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
    await waitUntil(
      what,
      async () => {
        await fn();
        return true;
      },
      10_000,
      200,
    );
  };
  for (const name of cfg.clusterNames) {
    const c = clients[name]!;
    const slot = slotName(cfg, name);
    await retry(`drop slot ${slot}`, async () => {
      await c.query('SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL', [slot]);
      await c.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1', [slot]);
    });
    await c.query(`DROP PUBLICATION IF EXISTS "${slot}"`);
    const dirs = cfg.directions.filter((d) => d.to === name);
    for (const d of dirs) {
      await retry(`drop origin ${originName(cfg, d.from)}`, () =>
        c.query('SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = $1', [originName(cfg, d.from)]),
      );
      for (const t of ['apply_progress', 'barriers', 'conflicts']) await c.query(`DELETE FROM cdc.${t} WHERE direction = $1`, [d.id]);
    }
    await c.query('DELETE FROM cdc.heartbeat WHERE cluster = $1', [name]);
  }
  const admin = new KafkaClient({ brokers: cfg.kafka.brokers, clientId: 'test-cleanup' }).admin();
  try {
    const existing = new Set(await admin.listTopics());
    await admin.deleteTopics(cfg.directions.map((d) => d.topic).filter((t) => existing.has(t)));
  } finally {
    await admin.close();
  }
}

/** Opens the accounts in one source transaction. */
export async function seedAccounts(a: pg.Client, schema: string): Promise<void> {
  await a.query(`BEGIN;
    INSERT INTO ${schema}.accounts SELECT g, ${OPENING_BALANCE}, 1 FROM generate_series(1, ${ACCOUNTS}) g;
    INSERT INTO ${schema}.ledger (events, note) VALUES (${ACCOUNTS + 1}, 'open');
    COMMIT`);
}

/** A source transaction that marks the end of the workload; it is the last one in the topic. */
export async function writeSentinel(a: pg.Client, schema: string, note: string): Promise<void> {
  await a.query(`INSERT INTO ${schema}.ledger (events, note) VALUES (1, $1)`, [note]);
}

export interface Load {
  committed(): number;
  /** Stops the writers; rejects with the first unexpected error. */
  stop(): Promise<number>;
}

/**
 * Transfers on the source from `workers` connections: each moves an amount between two
 * accounts (updated in id order, so no deadlocks), bumps their versions and logs itself in
 * the ledger, all in one transaction of 3 row changes. Paced, not flooding.
 */
export async function startTransfers(cfg: PipelineConfig, schema: string, workers = 2, pauseMs = 4): Promise<Load> {
  let running = true;
  let committed = 0;
  let failure: unknown = null;
  const clients = await Promise.all(Array.from({ length: workers }, () => pgClient(cfg, cfg.clusterNames[0])));
  const loops = clients.map(async (_, w) => {
    while (running) {
      const x = 1 + Math.floor(Math.random() * ACCOUNTS);
      let y = 1 + Math.floor(Math.random() * (ACCOUNTS - 1));
      if (y >= x) y++;
      const amount = 1 + Math.floor(Math.random() * 100);
      const [lo, hi] = x < y ? [x, y] : [y, x];
      const delta = (id: number): number => (id === x ? -amount : amount);
      try {
        await clients[w]!.query(`BEGIN;
          UPDATE ${schema}.accounts SET balance = balance + (${delta(lo)}), version = version + 1 WHERE id = ${lo};
          UPDATE ${schema}.accounts SET balance = balance + (${delta(hi)}), version = version + 1 WHERE id = ${hi};
          INSERT INTO ${schema}.ledger (events, note) VALUES (3, 'transfer');
          COMMIT`);
        committed++;
      } catch (err) {
        if (isConnectionLoss(err)) {
          // The source restarted: the transfer committed whole or not at all; carry on with a new session.
          await clients[w]!.end().catch(() => undefined);
          const next = await reconnect(
            () => pgClient(cfg, cfg.clusterNames[0]),
            () => running,
          );
          if (!next) break;
          clients[w] = next;
          continue;
        }
        await clients[w]!.query('ROLLBACK').catch(() => undefined);
        if (!/^40/.test((err as { code?: string }).code ?? '')) {
          failure ??= err;
          running = false;
        }
      }
      await sleep(pauseMs);
    }
  });
  return {
    committed: () => committed,
    async stop() {
      running = false;
      await Promise.all(loops);
      await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
      if (failure) throw failure;
      return committed;
    },
  };
}

export interface BankWatch {
  /** Stops polling; returns how many snapshots were checked and every violation seen. */
  stop(): Promise<{ polls: number; violations: string[] }>;
}

/**
 * Polls the destination while faults run. In every snapshot (one statement) the bank total
 * must be the opening total (a torn transaction would change it) and no account's version
 * may be lower than one seen before (a stale replay would move it back).
 */
export async function watchBank(cfg: PipelineConfig, cluster: string, schema: string): Promise<BankWatch> {
  let c = await pgClient(cfg, cluster);
  let running = true;
  let polls = 0;
  const violations: string[] = [];
  const seen = new Map<number, number>();
  const loop = (async () => {
    while (running) {
      let r: pg.QueryResult<{ n: string; total: string | null; versions: string | null }>;
      try {
        r = await c.query(
          `SELECT count(*) AS n, sum(balance)::text AS total, json_agg(json_build_array(id, version) ORDER BY id)::text AS versions FROM ${schema}.accounts`,
        );
      } catch (err) {
        if (!isConnectionLoss(err)) throw err;
        // The destination restarted: watch on through a new session.
        await c.end().catch(() => undefined);
        const next = await reconnect(
          () => pgClient(cfg, cluster),
          () => running,
        );
        if (!next) break;
        c = next;
        continue;
      }
      const row = r.rows[0]!;
      if (row.n !== '0') {
        polls++;
        if (row.n !== String(ACCOUNTS)) violations.push(`poll ${polls}: ${row.n} accounts, expected ${ACCOUNTS}`);
        if (row.total !== BANK_TOTAL) violations.push(`poll ${polls}: total ${row.total}, expected ${BANK_TOTAL}`);
        for (const [id, v] of JSON.parse(row.versions ?? '[]') as [number, number][]) {
          const before = seen.get(id) ?? 0;
          if (v < before) violations.push(`poll ${polls}: account ${id} version went back from ${before} to ${v}`);
          seen.set(id, Math.max(before, v));
        }
      }
      await sleep(20);
    }
  })().catch((err: unknown) => {
    violations.push(`watching the destination failed: ${String(err)}`);
  });
  return {
    async stop() {
      running = false;
      await loop;
      await c.end().catch(() => undefined);
      return { polls, violations: violations.slice(0, 20) };
    },
  };
}

export interface BankRun {
  readonly capture: ServiceProcess;
  readonly apply: ServiceProcess;
  readonly watch: BankWatch;
  readonly load: Load;
}

/**
 * Capture and apply started and ready, the accounts opened and arrived on the destination,
 * the destination watched and transfers running (both stopped at cleanup at the latest).
 */
export async function startBankRun(p: FaultPipeline, workers = 2, pauseMs = 10): Promise<BankRun> {
  const capture = (await p.capture()).start();
  const apply = (await p.apply()).start();
  await Promise.all([capture.waitReady(), apply.waitReady()]);
  await seedAccounts(p.a, p.schema);
  await waitUntil(
    'accounts on the destination',
    async () => (await p.b.query(`SELECT count(*) AS n FROM ${p.schema}.accounts`)).rows[0].n === String(ACCOUNTS),
    60_000,
  );
  const watch = await watchBank(p.cfg, p.dst, p.schema);
  const load = await startTransfers(p.cfg, p.schema, workers, pauseMs);
  p.defer(() => Promise.all([load.stop(), watch.stop()]));
  return { capture, apply, watch, load };
}

/** The same rows on both clusters (accounts and the whole ledger, duplicates included). */
export async function bankRows(c: pg.Client, schema: string): Promise<string> {
  const acc = await c.query(`SELECT id, balance, version FROM ${schema}.accounts ORDER BY id`);
  const led = await c.query(`SELECT xid, events, note, count(*) AS copies FROM ${schema}.ledger GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`);
  return JSON.stringify({ accounts: acc.rows, ledger: led.rows });
}

/** Waits until the destination holds exactly the source's rows; the message lists the differences. */
export async function waitConverged(p: FaultPipeline, timeoutMs = 60_000): Promise<void> {
  const want = await bankRows(p.a, p.schema);
  let got = '';
  await waitUntil('destination equal to source', async () => (got = await bankRows(p.b, p.schema)) === want, timeoutMs, 200).catch((err: Error) => {
    throw new Error(`${err.message}\n${diffRows(want, got)}\n${p.processes.map((x) => x.tail(3000)).join('\n')}`);
  });
}

function diffRows(want: string, got: string): string {
  type Rows = { accounts: Record<string, string>[]; ledger: Record<string, string>[] };
  const w = JSON.parse(want) as Rows;
  const g = JSON.parse(got || '{"accounts":[],"ledger":[]}') as Rows;
  const out: string[] = [];
  for (const t of ['accounts', 'ledger'] as const) {
    const ws = new Set(w[t].map((r) => JSON.stringify(r)));
    const gs = new Set(g[t].map((r) => JSON.stringify(r)));
    const missing = [...ws].filter((r) => !gs.has(r));
    const extra = [...gs].filter((r) => !ws.has(r));
    if (missing.length || extra.length)
      out.push(
        `${t}: ${missing.length} source rows not on the destination ${missing.slice(0, 5).join(' ')}; ${extra.length} destination rows not on the source ${extra.slice(0, 5).join(' ')}`,
      );
  }
  return out.join('\n');
}

/** Reads the direction topic (read_committed) from the start up to the sentinel's record. */
export async function readUntilSentinel(cfg: PipelineConfig, note: string, timeoutMs = 60_000): Promise<ReadRecord[]> {
  return readTopic(
    cfg,
    cfg.directions[0].topic,
    (rs) => {
      const v = rs[rs.length - 1]?.value as { after?: { note?: unknown } | null } | undefined;
      return v?.after?.note === note;
    },
    timeoutMs,
  );
}

export interface TopicReport {
  transactions: number;
  events: number;
  /** Source transactions published more than once (as whole copies). */
  duplicated: number;
  problems: string[];
}

/**
 * INV-1/INV-2 as a reader of the topic sees them: every source transaction of the source's
 * ledger is in the topic, each copy of it whole (indexes 0..n-1 in a row, the last one
 * marked last, n = its row changes), one commit LSN per xid, and nothing that the source did
 * not commit. Copies beyond the first are allowed (a replay after a crash), partial ones not.
 */
export async function checkTopic(records: readonly ReadRecord[], a: pg.Client, schema: string): Promise<TopicReport> {
  const expected = new Map<string, number>();
  for (const r of (await a.query<{ xid: string; events: string }>(`SELECT xid::text, events::text FROM ${schema}.ledger`)).rows)
    expected.set(r.xid, Number(r.events));
  const problems: string[] = [];
  const copies = new Map<string, number[]>();
  let cur: { id: string; next: number; offset: string } | null = null;
  let events = 0;
  for (const r of records) {
    if (!r.recordName.endsWith('.Envelope')) continue;
    const v = r.value as { source: { schema: string }; txn: { id: string; index: bigint | number; last: boolean } };
    if (v.source.schema !== schema) continue;
    events++;
    const index = Number(v.txn.index);
    if (cur && (v.txn.id !== cur.id || index !== cur.next)) {
      problems.push(`transaction ${cur.id} (from offset ${cur.offset}) broken off at index ${cur.next}: offset ${r.offset} is ${v.txn.id}#${index}`);
      cur = null;
    }
    if (!cur) {
      if (index !== 0) {
        problems.push(`offset ${r.offset}: ${v.txn.id} starts at index ${index}, not 0`);
        continue;
      }
      cur = { id: v.txn.id, next: 0, offset: r.offset };
    }
    cur.next++;
    if (v.txn.last) {
      copies.set(cur.id, [...(copies.get(cur.id) ?? []), cur.next]);
      cur = null;
    }
  }
  if (cur) problems.push(`transaction ${cur.id} (from offset ${cur.offset}) has no last event (${cur.next} events)`);
  const idsByXid = new Map<string, string[]>();
  for (const id of copies.keys()) {
    const xid = id.split(':')[0]!;
    idsByXid.set(xid, [...(idsByXid.get(xid) ?? []), id]);
    if (!expected.has(xid)) problems.push(`transaction ${id} is in the topic but not in the source ledger`);
  }
  let duplicated = 0;
  for (const [xid, n] of expected) {
    const ids = idsByXid.get(xid) ?? [];
    if (ids.length === 0) problems.push(`source transaction xid ${xid} (${n} changes) is missing from the topic`);
    if (ids.length > 1) problems.push(`source transaction xid ${xid} appears under several commit LSNs: ${ids.join(', ')}`);
    for (const id of ids) {
      const lens = copies.get(id)!;
      if (lens.some((l) => l !== n)) problems.push(`transaction ${id}: copies of ${lens.join(', ')} events, the source made ${n} changes`);
      if (lens.length > 1) duplicated++;
    }
  }
  return { transactions: expected.size, events, duplicated, problems: problems.slice(0, 30) };
}

/**
 * Counts records of the topic as soon as the broker has them, committed or not
 * (read_uncommitted): shows that a Kafka transaction is being filled right now.
 */
export async function watchUncommitted(cfg: PipelineConfig, topic: string): Promise<{ count(): number; stop(): Promise<void> }> {
  let n = 0;
  const f = followTopic(
    new KafkaClient({ brokers: cfg.kafka.brokers, clientId: 'test-uncommitted' }),
    topic,
    { readCommitted: false, maxWaitMs: 50 },
    (messages) => {
      n += messages.length;
    },
  );
  await f.ready;
  return { count: () => n, stop: () => f.stop() };
}

/** A random pause: when a kill lands is meant to be arbitrary, correctness never waits on it. */
export function randomMoment(maxMs: number): Promise<void> {
  return sleep(Math.floor(Math.random() * maxMs));
}
