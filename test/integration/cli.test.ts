/**
 * The pgbridge command line as a user runs it (child processes): a bad config is refused
 * with the path of each problem, `status --json` describes both directions, and `run`
 * starts the four services and drains them on SIGINT.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { release, setup } from '../../services/cli/setup.js';
import type { PipelineConfig } from '../../shared/config.js';
import { withClient } from '../../shared/pg.js';
import { testConfig, testLog, uniqueName, waitUntil } from '../support/pipeline.js';

const CLI = 'dist/services/cli/main.js';

function cli(args: string[]): { code: number | null; out: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

/** Four consecutive free ports (metrics of the four services). */
async function freeBase(): Promise<number> {
  for (let base = 20000 + Math.floor(Math.random() * 8000); ; base += 4) {
    const ok = await Promise.all(
      [0, 1, 2, 3].map(
        (i) =>
          new Promise<boolean>((res) => {
            const s = createServer()
              .once('error', () => res(false))
              .listen(base + i, '127.0.0.1', () => s.close(() => res(true)));
          }),
      ),
    );
    if (ok.every(Boolean)) return base;
  }
}

describe('pgbridge CLI', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgbridge-cli-'));
  const schema = uniqueName('cli');
  let cfg: PipelineConfig;
  let file: string;

  beforeAll(async () => {
    const base = await freeBase();
    const c = testConfig(uniqueName('pcli'), schema);
    file = join(dir, 'pipeline.yaml');
    writeFileSync(
      file,
      stringify({
        pipeline: c.pipeline,
        clusters: Object.fromEntries(Object.entries(c.clusters).map(([k, v]) => [k, { host: v.host, port: v.port, user: v.user, database: v.database }])),
        kafka: { brokers: [...c.kafka.brokers] },
        registry: { url: c.registry.url },
        selection: { schemas: [schema] },
        metrics: { basePort: base },
      }),
    );
    cfg = { ...c, metrics: { host: '127.0.0.1', basePort: base } } as PipelineConfig;
    for (const cl of cfg.clusterNames)
      await withClient(cfg.clusters[cl]!, 'test', (x) => x.query(`CREATE SCHEMA ${schema}; CREATE TABLE ${schema}.t (id int PRIMARY KEY)`));
    await setup(cfg, testLog);
  });

  afterAll(async () => {
    await release(cfg, testLog, { topics: true }).catch(() => undefined);
    for (const cl of cfg.clusterNames) await withClient(cfg.clusters[cl]!, 'test', (x) => x.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));
  });

  it('refuses a bad config with every problem and its path, exit code 1', () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'pipeline: x\nclusters: {a: {}, b: {}}\nkafka: {brokers: []}\nregistry: {url: nope}\nbogus: 1\n');
    const r = cli(['check-config', '--config', bad]);
    expect(r.code).toBe(1);
    expect(r.out).toContain(`${bad}: kafka.brokers:`);
    expect(r.out).toContain(`${bad}: registry.url:`);
    expect(r.out).toContain('unknown key(s) "bogus"');
    expect(cli(['no-such-command']).code).toBe(2);
  });

  it('status --json describes both directions; run starts the services and drains them on SIGINT', async () => {
    const before = cli(['status', '--json', '--config', file]);
    expect(before.code, before.out).toBe(0);
    const rows = JSON.parse(before.out) as { direction: string; state: string; slot: { exists: boolean }; services: { capture: string } }[];
    expect(rows.map((r) => [r.direction, r.slot.exists, r.services.capture])).toEqual([
      ['a→b', true, 'not running'],
      ['b→a', true, 'not running'],
    ]);

    const run = spawn(process.execPath, [CLI, 'run', '--config', file], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, PGBRIDGE_LOG_LEVEL: 'warn' },
    });
    let out = '';
    run.stdout.on('data', (d: Buffer) => (out += d.toString()));
    run.stderr.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await waitUntil(
        'all four services running',
        async () => {
          const s = JSON.parse(cli(['status', '--json', '--config', file]).out) as { services: { capture: string; apply: string } }[];
          return s.every((r) => r.services.capture === 'running' && r.services.apply === 'running');
        },
        60_000,
        500,
      );
      await withClient(cfg.clusters.a!, 'test', (x) => x.query(`INSERT INTO ${schema}.t VALUES (1)`));
      await waitUntil(
        'row on b',
        async () => (await withClient(cfg.clusters.b!, 'test', (x) => x.query(`SELECT 1 FROM ${schema}.t WHERE id = 1`))).rowCount === 1,
        30_000,
      );
      const barrier = cli(['barrier', '--config', file, '--timeout', '60']);
      expect(barrier.out).toMatch(/^drained: barrier .* applied in a-b and b-a/m);
      // Caught up: no message left to read (the commit marker closing each Kafka transaction is not one).
      await waitUntil(
        'both directions idle with 0 messages of lag',
        async () => {
          const s = JSON.parse(cli(['status', '--json', '--config', file]).out) as { state: string; lagOffsets: number | null }[];
          return s.every((r) => r.state === 'idle' && r.lagOffsets === 0);
        },
        30_000,
        300,
      );
    } finally {
      run.kill('SIGINT');
    }
    const code = await new Promise<number | null>((r) => run.once('exit', (c) => r(c)));
    expect(code, out).toBe(0);
  }, 120_000);
});
