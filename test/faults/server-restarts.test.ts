/**
 * The servers pgbridge talks to restarted for real while transfers run (RELIABILITY.md fault
 * catalogue: source immediate-mode crash, destination restart, walsender terminated
 * repeatedly, broker killed under load, slot dropped while capture was stopped).
 * It runs on a private pair of PostgreSQL clusters and a private Kafka broker (own ports and
 * folder; the shared registry), so the shared stack the other files use is never disturbed.
 * What a user checks afterwards: the services came back on their own, the destination equals
 * the source with no transfer lost, torn or applied twice, and a dropped slot is a clear stop.
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { endpointsOf, stackConnections, stackSettings, type StackSettings } from '../../infra/stack/settings.js';
import { down, startService, stopService, up, type ServiceName } from '../../infra/stack/stack.js';
import { slotName } from '../../shared/config.js';
import { waitUntil } from '../support/pipeline.js';
import { bankRows, bankTables, faultPipeline, startBankRun, waitConverged, type FaultPipeline } from './fault-support.js';

const PRIVATE: readonly ServiceName[] = ['pg-a', 'pg-b', 'kafka'];

describe('server restarts under load (private clusters and broker, real restarts)', () => {
  let dir = '';
  let s: StackSettings;
  let p: FaultPipeline | null = null;
  /** Pipeline connections to the private clusters and broker (the registry is the shared one: its port in `s` runs nothing). */
  const privateStack = () => {
    const { clusters, kafka } = stackConnections(endpointsOf(s));
    return { clusters, kafka };
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'pgbridge-restarts-'));
    chmodSync(dir, 0o755); // initdb runs as postgres when the tests run as root
    s = stackSettings({
      ...process.env,
      PGBRIDGE_STACK_DIR: join(dir, 'state'),
      PGBRIDGE_PG_A_PORT: '16632',
      PGBRIDGE_PG_B_PORT: '16633',
      PGBRIDGE_KAFKA_PORT: '29492',
      PGBRIDGE_KAFKA_CONTROLLER_PORT: '29493',
    });
    await up(s, () => undefined, PRIVATE);
  }, 180_000);

  afterAll(async () => {
    await p?.cleanup();
    if (s) await down(s, () => undefined, PRIVATE).catch(() => undefined);
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  it('source crash, destination restart, walsender and control session kills, a broker kill and a 35 s broker outage: services recover on their own, nothing lost, torn or doubled; a dropped slot stops capture with the fix', async () => {
    p = await faultPipeline('srv', bankTables, privateStack());
    const fp = p;
    const { cfg, schema } = fp;
    const { capture, apply, watch, load } = await startBankRun(fp);

    /** Transfers keep committing on the source and keep arriving on the destination. */
    const flowing = async (what: string): Promise<void> => {
      const before = load.committed();
      await waitUntil(`transfers committing after ${what}`, async () => load.committed() >= before + 20, 90_000, 100);
      const src = await waitUntil(
        `source readable after ${what}`,
        async () => {
          await fp.reconnect();
          return Number((await fp.a.query(`SELECT count(*) AS n FROM ${schema}.ledger`)).rows[0].n);
        },
        60_000,
        500,
      );
      await waitUntil(
        `destination catching up after ${what}`,
        async () => Number((await fp.b.query(`SELECT count(*) AS n FROM ${schema}.ledger`)).rows[0].n) >= src,
        120_000,
        200,
      ).catch((err: Error) => {
        throw new Error(`${err.message}\n${capture.tail(3000)}\n${apply.tail(3000)}`);
      });
    };
    const bounce = async (service: ServiceName, how: 'graceful' | 'crash', downMs: number): Promise<void> => {
      await stopService(s, service, how);
      await new Promise((r) => setTimeout(r, downMs));
      await startService(s, service);
    };

    await flowing('start');
    // 1. The source crashes (immediate mode: no checkpoint, WAL replayed at start).
    await bounce('pg-a', 'crash', 1000);
    await flowing('the source crashed');
    // 2. The destination restarts while apply is writing to it.
    await bounce('pg-b', 'graceful', 1000);
    await flowing('the destination restarted');
    // 3. The walsender of our slot is terminated three times.
    for (let i = 0; i < 3; i++) {
      const slot = slotName(cfg, fp.src);
      const pid = await waitUntil(
        'slot active',
        async () => (await fp.a.query<{ pid: number | null }>('SELECT active_pid AS pid FROM pg_replication_slots WHERE slot_name = $1', [slot])).rows[0]?.pid,
        60_000,
        100,
      );
      await fp.a.query('SELECT pg_terminate_backend($1)', [pid]);
      await flowing(`walsender kill ${i + 1}`);
    }
    // 3b. Capture's control session (heartbeat, slot lag) is terminated: not an uncaught error.
    const control = await fp.a.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [
      `pgbridge-capture-${fp.src}-control`,
    ]);
    expect(control.rowCount).toBe(1);
    await flowing('the control session was terminated');
    // 4. The broker is killed (SIGKILL) and comes back after a few seconds; then it stays away
    // for longer than the clients' own retries last (the Kafka client gives up after about 30 s).
    await bounce('kafka', 'crash', 3000);
    await flowing('the broker was killed');
    await bounce('kafka', 'graceful', 35_000);
    await flowing('the broker was away for 35 s');

    const transfers = await load.stop();
    const { polls, violations } = await watch.stop();
    await fp.reconnect();
    await waitConverged(fp, 120_000);
    expect(transfers).toBeGreaterThan(100);
    expect(polls).toBeGreaterThan(20);
    expect(violations).toEqual([]);
    // Every ledger row exactly once on the destination (a transfer applied twice would show copies > 1).
    const copies = JSON.parse(await bankRows(fp.b, schema)).ledger.filter((r: { note: string; copies: string }) => r.note === 'transfer' && r.copies !== '1');
    expect(copies).toEqual([]);
    // The services never gave up: both still run the processes they started with.
    expect([capture.running, apply.running, capture.starts, apply.starts]).toEqual([true, true, 1, 1]);

    // 5. A slot dropped while capture was stopped: capture refuses to start, names the slot and the fix.
    expect(await capture.stop()).toEqual({ code: 0, signal: null });
    const slot = slotName(cfg, fp.src);
    await fp.a.query('SELECT pg_drop_replication_slot($1)', [slot]);
    capture.start();
    const exit = await capture.waitExit(60_000);
    expect(exit.code).toBe(1);
    const last = capture.lastOutput();
    expect(last).toContain(`replication slot ${slot} does not exist on cluster ${fp.src}`);
    expect(last).toMatch(/SLOT_MISSING/);
  }, 600_000);

  it('WAL retention exceeded while capture was stopped: the next start stops with SLOT_INVALIDATED and says a resync is needed', async () => {
    const q = await faultPipeline('wal', bankTables, privateStack());
    const junk = `${q.schema}_junk`;
    try {
      const capture = (await q.capture()).start();
      await capture.waitReady();
      expect(await capture.stop()).toEqual({ code: 0, signal: null });
      const slot = slotName(q.cfg, q.src);
      // Keep at most one segment for slots, then write and checkpoint past it.
      await q.a.query(`ALTER SYSTEM SET max_slot_wal_keep_size = '16MB'`);
      await q.a.query('SELECT pg_reload_conf()');
      await q.a.query(`CREATE SCHEMA ${junk}; CREATE TABLE ${junk}.t (x text)`);
      const status = await waitUntil(
        'slot wal_status lost',
        async () => {
          await q.a.query(`INSERT INTO ${junk}.t SELECT repeat(md5(g::text), 64) FROM generate_series(1, 4000) g`);
          await q.a.query('SELECT pg_switch_wal()');
          await q.a.query('CHECKPOINT');
          const r = await q.a.query<{ wal_status: string }>('SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1', [slot]);
          return r.rows[0]?.wal_status === 'lost' ? r.rows[0].wal_status : null;
        },
        120_000,
        0,
      );
      expect(status).toBe('lost');
      capture.start();
      expect((await capture.waitExit(60_000)).code).toBe(1);
      const last = capture.lastOutput();
      expect(last).toMatch(/SLOT_INVALIDATED/);
      expect(last).toContain(`replication slot ${slot} on cluster ${q.src} has lost required WAL`);
      expect(last).toContain('resync is needed');
    } finally {
      await q.a.query('ALTER SYSTEM RESET max_slot_wal_keep_size').catch(() => undefined);
      await q.a.query('SELECT pg_reload_conf()').catch(() => undefined);
      await q.a.query(`DROP SCHEMA IF EXISTS ${junk} CASCADE`).catch(() => undefined);
      await q.cleanup();
    }
  }, 240_000);
});
