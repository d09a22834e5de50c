/**
 * Transport security end to end (issue 11): a pipeline whose every connection is encrypted
 * and authenticated, on a private secure stack (`stack up --secure`: PostgreSQL that accepts
 * only TLS with a client certificate, Kafka with SASL_SSL and SCRAM users) and the shared
 * registry behind HTTPS with basic auth. `sync` (pg_dump and psql through libpq's TLS
 * settings), capture and apply run through it with sslMode verify-full, SCRAM-SHA-512 and
 * registry credentials, all secrets from environment variables; precheck says every
 * connection is encrypted; wrong credentials are refused and printed nowhere.
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { secureFiles, stackSettings, type StackSettings } from '../../infra/stack/settings.js';
import { down, secureKafkaPassword, up, type ServiceName } from '../../infra/stack/stack.js';
import { loadConfig, type PipelineConfig } from '../../shared/config.js';
import { KafkaClient, kafkaConnection } from '../../shared/kafka.js';
import { withClient } from '../../shared/pg.js';
import { registryGet } from '../../shared/registry.js';
import { uniqueName, waitUntil } from '../support/pipeline.js';
import { ServiceProcess, freePorts, type ConfigFile } from '../support/processes.js';
import { startRegistryProxy, type RegistryProxy } from '../support/registry-proxy.js';

const CLI = 'dist/services/cli/main.js';
const PRIVATE: readonly ServiceName[] = ['pg-a', 'pg-b', 'kafka'];
const REGISTRY_USER = 'pgbridge-registry';
const REGISTRY_PASSWORD = `reg-${uniqueName('pw')}`;

describe('transport security: PostgreSQL verify-full with client certificates, Kafka SASL_SSL SCRAM, registry HTTPS with basic auth', () => {
  let dir = '';
  let s: StackSettings;
  let proxy: RegistryProxy;
  let cfg: PipelineConfig;
  let file: ConfigFile;
  let env: NodeJS.ProcessEnv;
  const schema = uniqueName('tls');
  const processes: ServiceProcess[] = [];

  /** The CLI as a child; asynchronous, because the registry proxy answers from this process. */
  const cli = (args: string[], extraEnv: NodeJS.ProcessEnv = {}) =>
    new Promise<{ code: number | null; out: string }>((resolve) => {
      const child = spawn(process.execPath, [CLI, ...args, '--config', file.path], {
        env: { ...process.env, ...env, ...extraEnv },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (b: Buffer) => (out += b.toString()));
      child.stderr.on('data', (b: Buffer) => (out += b.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
      child.once('exit', (code) => {
        clearTimeout(timer);
        resolve({ code, out });
      });
    });
  const sql = (cluster: string, text: string) => withClient(cfg.clusters[cluster]!, 'test', (c) => c.query(text));

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'pgbridge-tls-'));
    chmodSync(dir, 0o755); // initdb runs as postgres when the tests run as root
    // Five free ports in a row, below the ephemeral range: two test runs on one machine never collide.
    const base = await freePorts(5);
    s = stackSettings({
      ...process.env,
      PGBRIDGE_STACK_SECURE: '1',
      PGBRIDGE_STACK_DIR: join(dir, 'state'),
      PGBRIDGE_PG_A_PORT: String(base),
      PGBRIDGE_PG_B_PORT: String(base + 1),
      PGBRIDGE_KAFKA_PORT: String(base + 2),
      PGBRIDGE_KAFKA_CONTROLLER_PORT: String(base + 3),
      PGBRIDGE_KAFKA_INTERNAL_PORT: String(base + 4),
      PGBRIDGE_KAFKA_HEAP_MB: '384',
    });
    await up(s, () => undefined, PRIVATE);
    const f = secureFiles(s);
    proxy = await startRegistryProxy(inject('endpoints').registryUrl, { cert: f.serverCert, key: f.serverKey, ca: f.caCert }, REGISTRY_USER, REGISTRY_PASSWORD);
    env = { PGB_TLS_KAFKA_PASSWORD: secureKafkaPassword(s), PGB_TLS_REGISTRY_PASSWORD: REGISTRY_PASSWORD, PGB_TLS_CA: f.caCert };
    const cluster = (port: number) => [
      '    host: 127.0.0.1',
      `    port: ${port}`,
      '    sslMode: verify-full',
      '    sslRootCert: ${PGB_TLS_CA}',
      `    sslCert: ${f.clientCert}`,
      `    sslKey: ${f.clientKey}`,
    ];
    const path = join(dir, 'pipeline.yaml');
    writeFileSync(
      path,
      [
        `pipeline: ${uniqueName('ptls')}`,
        'clusters:',
        '  a:',
        ...cluster(s.pg.a.port),
        '  b:',
        ...cluster(s.pg.b.port),
        'kafka:',
        `  brokers: ["127.0.0.1:${s.kafkaPort}"]`,
        '  ssl:',
        '    caFile: ${PGB_TLS_CA}',
        `    certFile: ${f.clientCert}`,
        `    keyFile: ${f.clientKey}`,
        `  sasl: { mechanism: scram-sha-512, username: ${f.kafkaUser}, passwordEnv: PGB_TLS_KAFKA_PASSWORD }`,
        'registry:',
        `  url: ${proxy.url}`,
        `  username: ${REGISTRY_USER}`,
        '  passwordEnv: PGB_TLS_REGISTRY_PASSWORD',
        '  caFile: ${PGB_TLS_CA}',
        `  certFile: ${f.clientCert}`,
        `  keyFile: ${f.clientKey}`,
        `selection: { schemas: [${schema}] }`,
        'metrics: { basePort: 0 }',
        'capture: { heartbeatSeconds: 1, batch: { lingerMs: 5 } }',
        'retry: { connectionMinutes: 1, otherMinutes: 1 }',
        '',
      ].join('\n'),
    );
    file = { path, remove: () => undefined };
    cfg = loadConfig(path, { ...process.env, ...env });
    await sql(
      'a',
      `CREATE SCHEMA ${schema}; CREATE TABLE ${schema}.accounts (id int PRIMARY KEY, owner text NOT NULL);
      INSERT INTO ${schema}.accounts SELECT g, 'o' || g FROM generate_series(1, 500) g`,
    );
  }, 240_000);

  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop().catch(() => undefined)));
    await proxy?.close();
    if (s) await down(s, () => undefined, PRIVATE).catch(() => undefined);
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  it('the secure stack refuses plain text: PostgreSQL without TLS or client certificate, Kafka without SASL', async () => {
    const plain = { ...cfg.clusters.a!, sslMode: 'disable' as const, sslRootCert: undefined, sslCert: undefined, sslKey: undefined };
    await expect(withClient(plain, 'test', (c) => c.query('SELECT 1'))).rejects.toThrow(/no pg_hba.conf entry .* no encryption/);
    const noCert = { ...cfg.clusters.a!, sslCert: undefined, sslKey: undefined };
    await expect(withClient(noCert, 'test', (c) => c.query('SELECT 1'))).rejects.toThrow(/requires a valid client certificate/);
    // The other mechanisms the broker offers work with the same user; a wrong password does not.
    for (const mechanism of ['SCRAM-SHA-256', 'PLAIN'] as const) {
      const admin = new KafkaClient({
        ...kafkaConnection(cfg, 'test'),
        sasl: { mechanism, username: cfg.kafka.sasl!.username, password: cfg.kafka.sasl!.password },
      }).admin({ retries: 0 });
      try {
        expect((await admin.brokers()).length, mechanism).toBe(1);
      } finally {
        await admin.close();
      }
    }
    const wrong = new KafkaClient({
      ...kafkaConnection(cfg, 'test'),
      sasl: { mechanism: 'SCRAM-SHA-512', username: cfg.kafka.sasl!.username, password: 'wrong' },
    }).admin({ retries: 0 });
    await expect(wrong.brokers().finally(() => wrong.close())).rejects.toThrow();
    // The registry also wants the client certificate (mutual TLS), as does the broker (a client
    // without one is not tried here: @platformatic/kafka 2.12.1 then throws outside the call,
    // `Cannot find a suitable SASL mechanism`, as an unhandled error).
    const noCertRegistry = { ...cfg.registry, certFile: undefined, keyFile: undefined };
    await expect(registryGet(noCertRegistry, '/subjects', 5000)).rejects.toThrow();
    expect(await registryGet(cfg.registry, '/subjects', 5000)).toBe(200);
  });

  it('sync, capture and apply run the pipeline through them; every session is encrypted and precheck says so', async () => {
    const sync = await cli(['sync', '--chunk-rows', '100']);
    expect(sync.code, sync.out).toBe(0);
    expect(sync.out).toContain('initial sync done: 500 rows');
    processes.push((await ServiceProcess.capture(file, 'a', env)).start(), (await ServiceProcess.apply(file, 'a-b', env)).start());
    await Promise.all(processes.map((p) => p.waitReady(90_000)));
    await sql('a', `INSERT INTO ${schema}.accounts VALUES (501, 'streamed'); UPDATE ${schema}.accounts SET owner = 'changed' WHERE id = 1`);
    await waitUntil(
      'snapshot and streamed rows on b',
      async () => {
        const r = await sql(
          'b',
          `SELECT count(*)::int AS n, max(owner) FILTER (WHERE id = 1) AS first, max(owner) FILTER (WHERE id = 501) AS last FROM ${schema}.accounts`,
        );
        return r.rows[0].n === '501' && r.rows[0].first === 'changed' && r.rows[0].last === 'streamed';
      },
      60_000,
      200,
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n${processes.map((p) => p.tail(3000)).join('\n')}`);
    });

    // The server's view: capture's walsender and control session, apply's session, all TLS.
    const sessions = await sql(
      'a',
      `SELECT a.application_name AS app, s.ssl, s.client_dn FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name LIKE 'pgbridge-capture-%'`,
    );
    expect(sessions.rows.length).toBeGreaterThanOrEqual(2);
    for (const row of sessions.rows) expect([row.app, row.ssl, row.client_dn]).toEqual([row.app, true, '/CN=postgres']);
    expect(proxy.counts.passed).toBeGreaterThan(0);
    expect(proxy.counts.refused).toBe(0);

    const pre = await cli(['precheck']);
    expect(pre.out).toMatch(new RegExp(`cluster a \\(127\\.0\\.0\\.1:${s.pg.a.port}\\): encrypted \\(TLSv1\\.[23], sslMode verify-full\\)`));
    expect(pre.out).toMatch(new RegExp(`cluster b \\(127\\.0\\.0\\.1:${s.pg.b.port}\\): encrypted \\(TLSv1\\.[23], sslMode verify-full\\)`));
    expect(pre.out).toContain(`Kafka at 127.0.0.1:${s.kafkaPort}: SASL_SSL (SCRAM-SHA-512 as pgbridge)`);
    expect(pre.out).toContain(`schema registry at ${proxy.url}: HTTPS, basic auth as ${REGISTRY_USER}`);
    expect(pre.out).not.toContain('not encrypted');
  });

  it('wrong Kafka and registry passwords are refused, and neither password is printed', async () => {
    const bad = { PGB_TLS_KAFKA_PASSWORD: 'wrong-kafka-secret-1', PGB_TLS_REGISTRY_PASSWORD: 'wrong-registry-secret-2' };
    const pre = await cli(['precheck'], bad);
    expect(pre.code).toBe(1);
    expect(pre.out).toMatch(/schema registry: GET https:\/\/127\.0\.0\.1:\d+\/apis\/ccompat\/v7\/subjects answered HTTP 401/);
    expect(pre.out).toMatch(new RegExp(`Kafka at 127\\.0\\.0\\.1:${s.kafkaPort} is unreachable: .*SASL authentication failed`));
    for (const secret of [...Object.values(bad), env.PGB_TLS_KAFKA_PASSWORD!, REGISTRY_PASSWORD]) expect(pre.out).not.toContain(secret);
    expect(proxy.counts.refused).toBeGreaterThan(0);
  });
});
