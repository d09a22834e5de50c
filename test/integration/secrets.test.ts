/**
 * Secrets never printed (issue 11): a config whose passwords come from the environment, run
 * through every command that fails or reports on it (a YAML or schema error, unreachable
 * PostgreSQL, Kafka and registry, a service that gives up), never shows a password in its
 * output; and row values stay out of error messages.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { loadConfig } from '../../shared/config.js';
import { errorMessage } from '../../shared/errors.js';
import { uniqueName } from '../support/pipeline.js';
import { freePort } from '../support/processes.js';

const CLI = 'dist/services/cli/main.js';
/** Characters that broke the old raw-text substitution (`: `, ` #`, quotes, a new line). */
const PG_SECRET = `pg-Secr3t: #not-a-comment "quoted" 'single'\nsecond line`;
const REGISTRY_SECRET = 'regSecr3tValue42';
const SASL_SECRET = 'saslSecr3tValue77';
const SECRETS = [PG_SECRET, PG_SECRET.split('\n')[0]!, 'pg-Secr3t', REGISTRY_SECRET, SASL_SECRET];

function run(args: string[], env: NodeJS.ProcessEnv): string {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 90_000, env: { ...process.env, PGBRIDGE_LOG_LEVEL: 'debug', ...env } });
  return `exit ${r.status}\n${r.stdout}${r.stderr}`;
}

function expectNoSecret(what: string, out: string): void {
  for (const s of SECRETS) expect(out.includes(s), `${what} printed a secret:\n${out}`).toBe(false);
}

describe('secrets never printed', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgbridge-secrets-'));
  const env = { PGB_TEST_PG_PASSWORD: PG_SECRET, PGB_TEST_REGISTRY_PASSWORD: REGISTRY_SECRET, PGB_TEST_SASL_PASSWORD: SASL_SECRET };

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** A pipeline whose clusters, broker and registry are all unreachable (closed ports). */
  async function unreachableConfig(extra = ''): Promise<string> {
    const [pgPort, kafkaPort, registryPort] = [await freePort(), await freePort(), await freePort()];
    const file = join(dir, `${uniqueName('cfg')}.yaml`);
    writeFileSync(
      file,
      [
        `pipeline: ${uniqueName('psec')}`,
        'clusters:',
        '  a:',
        `    port: ${pgPort}`,
        '    password: ${PGB_TEST_PG_PASSWORD}',
        `  b: { port: ${pgPort}, passwordEnv: PGB_TEST_PG_PASSWORD }`,
        'kafka:',
        `  brokers: ["127.0.0.1:${kafkaPort}"]`,
        '  connectionTimeoutMs: 500',
        '  sasl: { mechanism: scram-sha-256, username: pgbridge, passwordEnv: PGB_TEST_SASL_PASSWORD }',
        'registry:',
        `  url: "http://pgbridge:\${PGB_TEST_REGISTRY_PASSWORD}@127.0.0.1:${registryPort}/apis/ccompat/v7"`,
        'retry: { connectionMinutes: 0, otherMinutes: 0 }',
        extra,
      ].join('\n'),
    );
    return file;
  }

  it('a value with ": ", " #", quotes and a new line is substituted as a value, and check-config shows none of the secrets', async () => {
    const file = await unreachableConfig();
    const cfg = loadConfig(file, { ...process.env, ...env });
    expect(cfg.clusters.a!.password).toBe(PG_SECRET);
    expect(cfg.clusters.b!.password).toBe(PG_SECRET);
    expect(cfg.registry.password).toBe(REGISTRY_SECRET);
    expect(cfg.registry.url).not.toContain(REGISTRY_SECRET);
    expect(cfg.kafka.sasl?.password).toBe(SASL_SECRET);
    const out = run(['check-config', '--config', file], env);
    expect(out).toMatch(/^exit 0/);
    expect(out).toContain('[redacted]');
    expectNoSecret('check-config', out);
  });

  it('precheck, status, setup, barrier and a capture that gives up print no secret', async () => {
    const file = await unreachableConfig();
    const outputs: Record<string, string> = {
      precheck: run(['precheck', '--config', file], env),
      status: run(['status', '--config', file], env),
      setup: run(['setup', '--config', file], env),
      barrier: run(['barrier', '--config', file, '--timeout', '2'], env),
      capture: run(['capture', '--config', file, '--cluster', 'a', '--metrics-port', String(await freePort())], env),
    };
    for (const [what, out] of Object.entries(outputs)) {
      expect(out, what).toMatch(/^exit [12]/);
      expectNoSecret(what, out);
    }
    // The failures are there, with where they happened.
    expect(outputs.precheck).toMatch(/registry/);
    expect(outputs.precheck).toMatch(/schema registry: GET http:\/\/127\.0\.0\.1:\d+\/apis\/ccompat\/v7\/subjects failed/);
    expect(outputs.capture).toMatch(/capture-a stopped/);
  });

  it('a config error (bad YAML, a wrong type, an unknown key, an unset variable) names keys and variables, never a value', async () => {
    const cases = {
      // A secret where a number belongs: the schema error names the key only.
      wrongType: await unreachableConfig('metrics:\n  basePort: ${PGB_TEST_PG_PASSWORD}'),
      unknownKey: await unreachableConfig('capture:\n  secretKey: ${PGB_TEST_PG_PASSWORD}'),
      unset: await unreachableConfig('apply:\n  deadLetterTopic: ${PGB_TEST_NOT_SET_ANYWHERE}'),
      badYaml: await unreachableConfig('selection: [${PGB_TEST_PG_PASSWORD}'),
    };
    for (const [what, file] of Object.entries(cases)) {
      const out = run(['check-config', '--config', file], env);
      expect(out, what).toMatch(/^exit 1/);
      expectNoSecret(what, out);
    }
    expect(run(['check-config', '--config', cases.unset], env)).toContain('PGB_TEST_NOT_SET_ANYWHERE (apply.deadLetterTopic)');
    expect(run(['check-config', '--config', cases.wrongType], env)).toContain('metrics.basePort');
  });

  it('a PostgreSQL error loses its detail and the value it quotes (row values)', async () => {
    const ep = inject('endpoints');
    const { withClient } = await import('../../shared/pg.js');
    const c = {
      name: 'a',
      host: ep.pg.a.host,
      port: ep.pg.a.port,
      user: ep.pg.a.user,
      database: ep.pg.a.database,
      password: undefined,
      sslMode: 'disable' as const,
    };
    const dup = await withClient(c, 'test', async (cl) => {
      await cl.query('CREATE TEMP TABLE t (id text PRIMARY KEY)');
      await cl.query(`INSERT INTO t VALUES ('row-value-7')`);
      return cl.query(`INSERT INTO t VALUES ('row-value-7')`).catch((e: unknown) => e);
    });
    expect((dup as { detail?: string }).detail).toContain('row-value-7');
    expect(errorMessage(dup)).not.toContain('row-value-7');
    const cast = await withClient(c, 'test', (cl) => cl.query(`SELECT 'row-value-7'::int`).catch((e: unknown) => e));
    expect(errorMessage(cast)).toMatch(/^invalid input syntax for type integer/);
    expect(errorMessage(cast)).not.toContain('row-value-7');
  });
});
