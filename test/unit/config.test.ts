/**
 * Config loading: `${VAR}` is substituted into parsed values (never the raw text), registry
 * credentials leave the URL, and TLS settings are checked where they are read.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig, parseConfig } from '../../shared/config.js';
import { redactUrl } from '../../shared/log.js';

const dir = mkdtempSync(join(tmpdir(), 'pgbridge-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
function load(yaml: string, env: Record<string, string>) {
  const file = join(dir, `c${n++}.yaml`);
  writeFileSync(file, yaml);
  return loadConfig(file, env);
}

const BASE = `pipeline: p
kafka:
  brokers: ["k:9092"]
registry:
  url: http://r:8081
`;

describe('config: ${VAR} substitution into values', () => {
  it('an unquoted placeholder alone takes the type of its text; quoted or mixed stays a string; comments are not read', () => {
    const cfg = load(`${BASE}# \${NOT_SET_IN_A_COMMENT}
clusters:
  a:
    port: \${PORT}
    host: "\${HOST}"
    user: u\${PORT}
  b:
    database: \${DB}
capture:
  heartbeatSeconds: \${HB}
`, { PORT: '6543', HOST: '10.0.0.1', DB: 'x: y # z', HB: '1.5' });
    expect(cfg.clusters.a).toMatchObject({ port: 6543, host: '10.0.0.1', user: 'u6543' });
    expect(cfg.clusters.b!.database).toBe('x: y # z');
    expect(cfg.capture.heartbeatSeconds).toBe(1.5);
  });

  it('every unset variable is listed with the keys that use it', () => {
    expect(() => load(`${BASE}clusters:\n  a: { host: "\${H1}" }\n  b:\n    host: \${H1}\n    user: \${U2}\n`, {})).toThrow(/environment variable\(s\) not set: H1 \(clusters\.a\.host, clusters\.b\.host\), U2 \(clusters\.b\.user\)/);
  });

  it('registry credentials in the URL move to username and password; the URL that is printed has none', () => {
    const cfg = parseConfig({ pipeline: 'p', clusters: { a: {}, b: {} }, kafka: { brokers: ['k:1'] }, registry: { url: 'https://me:s%40cret@r.example:8081/apis/ccompat/v7/' } });
    expect(cfg.registry).toEqual({ url: 'https://r.example:8081/apis/ccompat/v7', username: 'me', password: 's@cret' });
    const env = parseConfig({ pipeline: 'p', clusters: { a: {}, b: {} }, kafka: { brokers: ['k:1'] }, registry: { url: 'https://r', username: 'u', passwordEnv: 'RP' } }, 'x', { RP: 'pw' });
    expect(env.registry).toMatchObject({ username: 'u', password: 'pw' });
    expect(redactUrl('https://me:s3cret@r:1/x')).toBe('https://me:***@r:1/x');
  });

  it('TLS settings: a client certificate needs its key; files with sslMode disable are a mistake', () => {
    const base = { pipeline: 'p', kafka: { brokers: ['k:1'] }, registry: { url: 'http://r' } };
    expect(() => parseConfig({ ...base, clusters: { a: { sslMode: 'verify-full', sslCert: 'c.pem' }, b: {} } })).toThrow(/clusters\.a: sslCert and sslKey go together/);
    expect(() => parseConfig({ ...base, clusters: { a: { sslRootCert: 'ca.pem' }, b: {} } })).toThrow(/clusters\.a: sslRootCert\/sslCert are set but sslMode is disable/);
    expect(() => parseConfig({ ...base, clusters: { a: { sslMode: 'prefer' }, b: {} } })).toThrow(/clusters\.a\.sslMode/);
    const ok = parseConfig({ ...base, clusters: { a: { sslMode: 'verify-ca', sslRootCert: 'ca.pem' }, b: {} } });
    expect(ok.clusters.a).toMatchObject({ sslMode: 'verify-ca', sslRootCert: 'ca.pem' });
    expect(ok.clusters.b!.sslMode).toBe('disable');
  });
});

describe('config: the examples in docs/configuration.md', () => {
  it('every YAML example parses', () => {
    const doc = readFileSync(new URL('../../docs/configuration.md', import.meta.url), 'utf8');
    const blocks = [...doc.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]!);
    expect(blocks.length).toBeGreaterThanOrEqual(3);
    const env = { PGBRIDGE_TLS: '/tls', KAFKA_PASSWORD: 'k', REGISTRY_PASSWORD: 'r', CAPTURE_A_PASSWORD: 'c', APPLY_A_PASSWORD: 'a' };
    for (const yaml of blocks) {
      const cfg = load(yaml, env);
      expect(cfg.pipeline).toBe('shop');
    }
    const secure = load(blocks.find((b) => b.includes('verify-full'))!, env);
    expect(secure.clusters.a).toMatchObject({ sslMode: 'verify-full', sslRootCert: '/tls/ca.crt', roles: { capture: { user: 'pgbridge_shop_capture', password: 'c' } } });
    expect(secure.kafka).toMatchObject({ ssl: { caFile: '/tls/ca.crt' }, sasl: { mechanism: 'scram-sha-512', username: 'pgbridge', password: 'k' } });
    expect(secure.registry).toMatchObject({ url: 'https://registry.example.com/apis/ccompat/v7', username: 'pgbridge', password: 'r' });
  });
});
