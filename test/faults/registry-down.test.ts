/**
 * Registry down when a new schema must be registered: capture waits and retries without
 * acknowledging the slot, publishes nothing in part, and resumes with nothing lost once the
 * registry answers again. The registry is the real one, reached through a TCP relay the test
 * can cut (the relay only forwards bytes).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { CaptureRun, captureMetrics } from '../../services/capture/capture.js';
import { release, setup } from '../../services/cli/setup.js';
import type { PipelineConfig } from '../../shared/config.js';
import { metricsRegistry } from '../../shared/http.js';
import { kafkaClient } from '../../shared/kafka.js';
import { withClient } from '../../shared/pg.js';
import { parseLsn } from '../../shared/lsn.js';
import { testConfig, testLog, uniqueName, waitUntil } from '../support/pipeline.js';
import { changes, readTopic } from '../support/topic.js';

class Relay {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  constructor(
    readonly port: number,
    private readonly target: { host: string; port: number },
  ) {}
  async open(): Promise<void> {
    if (this.server) return;
    this.server = createServer((client) => {
      const upstream = createConnection(this.target);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('error', () => undefined);
        s.on('close', () => this.sockets.delete(s));
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(this.port, '127.0.0.1', () => resolve());
    });
  }
  async cut(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    this.server = null;
  }
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('registry down while a new schema must be registered', () => {
  const schema = uniqueName('rd');
  let cfg: PipelineConfig;
  let relay: Relay;
  let run: CaptureRun;

  beforeAll(async () => {
    const base = testConfig('x', schema);
    const real = new URL(base.registry.url);
    relay = new Relay(await freePort(), { host: real.hostname, port: Number(real.port) });
    await relay.open();
    cfg = testConfig(uniqueName('prd'), schema, { registry: { url: `http://127.0.0.1:${relay.port}${real.pathname}` }, capture: { heartbeatSeconds: 0 } });
    for (const c of cfg.clusterNames)
      await withClient(cfg.clusters[c]!, 'test', (cl) => cl.query(`CREATE SCHEMA ${schema}; CREATE TABLE ${schema}.t (id int PRIMARY KEY, v text)`));
    await setup(cfg, testLog);
    run = new CaptureRun({ cfg, cluster: 'a', kafka: kafkaClient(cfg, 'test-rd', testLog), log: testLog, metrics: captureMetrics(metricsRegistry({})) });
    void run.run().catch((err: unknown) => console.error('capture run failed', err));
    await waitUntil('capture ready', async () => run.ready);
  });

  afterAll(async () => {
    await relay?.open().catch(() => undefined);
    await run?.stop();
    await relay.cut();
    await release(cfg, testLog, { topics: true }).catch(() => undefined);
    for (const c of cfg.clusterNames) await withClient(cfg.clusters[c]!, 'test', (cl) => cl.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));
  });

  it('holds the slot and retries, then publishes every transaction whole when the registry is back', async () => {
    const slot = `cdc_${cfg.pipeline}_a`;
    const confirmed = (): Promise<string> =>
      withClient(cfg.clusters.a!, 'test', (cl) =>
        cl.query<{ l: string }>('SELECT confirmed_flush_lsn::text AS l FROM pg_replication_slots WHERE slot_name = $1', [slot]),
      ).then((r) => r.rows[0]!.l);
    await relay.cut();
    // A table capture has not seen yet: its schema must be registered first.
    await withClient(cfg.clusters.a!, 'test', async (cl) => {
      for (let i = 1; i <= 20; i++) await cl.query(`INSERT INTO ${schema}.t VALUES ($1::int, 'row ' || $1::int)`, [i]);
    });
    await new Promise((r) => setTimeout(r, 4000));
    expect(run.ready).toBe(true); // still running, retrying
    const during = parseLsn(await confirmed());
    await relay.open();
    await waitUntil('slot moves on', async () => parseLsn(await confirmed()) > during, 60_000);
    const evs = changes(await readTopic(cfg, cfg.directions[0].topic, (r) => changes(r).length >= 20, 60_000));
    expect(evs.map((e) => e.after.id)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(evs.every((e) => e.txn.last)).toBe(true);
    // INV-1: while the first of them could not be published, the slot was not acknowledged
    // past its commit (other transactions on the cluster may have moved it up to there).
    expect(during).toBeLessThanOrEqual(evs[0]!.source.commitLsn as bigint);
  }, 120_000);
});
