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
    const cfg = load(
      `${BASE}# \${NOT_SET_IN_A_COMMENT}
clusters:
  a:
    port: \${PORT}
    host: "\${HOST}"
    user: u\${PORT}
  b:
    database: \${DB}
capture:
  heartbeatSeconds: \${HB}
`,
      { PORT: '6543', HOST: '10.0.0.1', DB: 'x: y # z', HB: '1.5' },
    );
    expect(cfg.clusters.a).toMatchObject({ port: 6543, host: '10.0.0.1', user: 'u6543' });
    expect(cfg.clusters.b!.database).toBe('x: y # z');
    expect(cfg.capture.heartbeatSeconds).toBe(1.5);
  });

  it('every unset variable is listed with the keys that use it', () => {
    expect(() => load(`${BASE}clusters:\n  a: { host: "\${H1}" }\n  b:\n    host: \${H1}\n    user: \${U2}\n`, {})).toThrow(
      /environment variable\(s\) not set: H1 \(clusters\.a\.host, clusters\.b\.host\), U2 \(clusters\.b\.user\)/,
    );
  });

  it('registry credentials in the URL move to username and password; the URL that is printed has none', () => {
    const cfg = parseConfig({
      pipeline: 'p',
      clusters: { a: {}, b: {} },
      kafka: { brokers: ['k:1'] },
      registry: { url: 'https://me:s%40cret@r.example:8081/apis/ccompat/v7/' },
    });
    expect(cfg.registry).toEqual({ url: 'https://r.example:8081/apis/ccompat/v7', username: 'me', password: 's@cret' });
    const env = parseConfig(
      { pipeline: 'p', clusters: { a: {}, b: {} }, kafka: { brokers: ['k:1'] }, registry: { url: 'https://r', username: 'u', passwordEnv: 'RP' } },
      'x',
      { RP: 'pw' },
    );
    expect(env.registry).toMatchObject({ username: 'u', password: 'pw' });
    expect(redactUrl('https://me:s3cret@r:1/x')).toBe('https://me:***@r:1/x');
  });

  it('TLS settings: a client certificate needs its key; files with sslMode disable are a mistake', () => {
    const base = { pipeline: 'p', kafka: { brokers: ['k:1'] }, registry: { url: 'http://r' } };
    expect(() => parseConfig({ ...base, clusters: { a: { sslMode: 'verify-full', sslCert: 'c.pem' }, b: {} } })).toThrow(
      /clusters\.a: sslCert and sslKey go together/,
    );
    expect(() => parseConfig({ ...base, clusters: { a: { sslRootCert: 'ca.pem' }, b: {} } })).toThrow(
      /clusters\.a: sslRootCert\/sslCert are set but sslMode is disable/,
    );
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
    const full = blocks.find((b) => b.startsWith('# pgbridge pipeline for the local stack'))!;
    for (const yaml of blocks) {
      // A fragment (`selection:` only) is checked inside the complete example, in place of its selection.
      const cfg = yaml.startsWith('selection:') ? load(full.replace(/^selection:\n(?: {2}.*\n)*/m, yaml), env) : load(yaml, env);
      expect(cfg.pipeline).toBe('shop');
      if (yaml.startsWith('selection:')) expect(Object.keys(cfg.selection.tables).length).toBeGreaterThan(0);
    }
    const secure = load(blocks.find((b) => b.includes('verify-full'))!, env);
    expect(secure.clusters.a).toMatchObject({
      sslMode: 'verify-full',
      sslRootCert: '/tls/ca.crt',
      roles: { capture: { user: 'pgbridge_shop_capture', password: 'c' } },
    });
    expect(secure.kafka).toMatchObject({ ssl: { caFile: '/tls/ca.crt' }, sasl: { mechanism: 'scram-sha-512', username: 'pgbridge', password: 'k' } });
    expect(secure.registry).toMatchObject({ url: 'https://registry.example.com/apis/ccompat/v7', username: 'pgbridge', password: 'r' });
  });
});

describe('config: selection.tables', () => {
  const base = { pipeline: 'p', clusters: { a: {}, b: {} }, kafka: { brokers: ['k:9092'] }, registry: { url: 'http://r:8081' } };
  it('refuses settings for a table outside the selection, unknown directions, empty lists and both include and exclude, naming each key', () => {
    let err: Error | null = null;
    try {
      parseConfig({
        ...base,
        selection: {
          schemas: ['app'],
          exclude: ['app.gone'],
          tables: {
            'app.gone': { operations: ['insert'] },
            'other.t': { where: 'true' },
            'app.t': { where: { 'a-c': 'x > 1' }, operations: { 'b-a': [] } },
          },
        },
      });
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).toContain('selection.tables.app.t.operations.b-a: at least one operation');
    parseConfig({ ...base, selection: { schemas: ['app'], tables: { 'app.t': { columns: { include: ['id'] } } } } });
    expect(() => parseConfig({ ...base, selection: { schemas: ['app'], tables: { 'app.t': { columns: { include: ['id'], exclude: ['x'] } } } } })).toThrow(
      /selection\.tables\.app\.t\.columns/,
    );
    let err2: Error | null = null;
    try {
      parseConfig({
        ...base,
        selection: {
          schemas: ['app'],
          exclude: ['app.gone'],
          tables: { 'app.gone': { operations: ['insert'] }, 'other.t': { where: 'true' }, 'app.t': { where: { 'a-c': 'x > 1' } } },
        },
      });
    } catch (e) {
      err2 = e as Error;
    }
    expect(err2?.message.split('\n')).toEqual([
      'config: selection.tables.app.gone: the table is not in the selection (schemas, include, exclude)',
      'config: selection.tables.other.t: the table is not in the selection (schemas, include, exclude)',
      'config: selection.tables.app.t.where.a-c: not a direction of this pipeline (a-b, b-a)',
    ]);
  });

  it('a list applies to both directions, a map only to the directions it names', async () => {
    const { operationsOf, rowFilter, tableSettings, publishedColumns } = await import('../../shared/table-settings.js');
    const cfg = parseConfig({
      ...base,
      selection: {
        schemas: ['app'],
        tables: {
          'app.t': { where: { 'a-b': "r = 'eu'" }, operations: { 'b-a': ['insert', 'update'] }, columns: { exclude: ['note'] } },
          'app.u': { operations: ['delete'] },
        },
      },
    });
    const t = tableSettings(cfg, 'app', 't');
    expect([rowFilter(t, 'a-b'), rowFilter(t, 'b-a')]).toEqual(["r = 'eu'", null]);
    expect([operationsOf(t, 'a-b'), operationsOf(t, 'b-a')]).toEqual([
      ['insert', 'update', 'delete', 'truncate'],
      ['insert', 'update'],
    ]);
    expect(operationsOf(tableSettings(cfg, 'app', 'u'), 'b-a')).toEqual(['delete']);
    expect(publishedColumns(t, ['id', 'note', 'r'])).toEqual(['id', 'r']);
    expect(publishedColumns(tableSettings(cfg, 'app', 'none'), ['id'])).toBeNull();
  });
});

describe('config: selection.tables rename and renameColumns', () => {
  const base = { pipeline: 'p', clusters: { a: {}, b: {} }, kafka: { brokers: ['k:9092'] }, registry: { url: 'http://r:8081' } };
  it('refuses unknown clusters, two tables under one name on a cluster and two columns under one name', () => {
    let err: Error | null = null;
    try {
      parseConfig({
        ...base,
        selection: {
          schemas: ['app'],
          tables: {
            'app.orders': { rename: { b: 'sales.orders', c: 'x.y' }, renameColumns: { b: { amount: 'total', price: 'total' } } },
            'app.other': { rename: { b: 'sales.orders' } },
          },
        },
      });
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message.split('\n')).toEqual([
      'config: selection.tables.app.orders.rename.c: not a cluster of this pipeline (a, b)',
      'config: selection.tables.app.orders.renameColumns.b: amount and price are both named total on cluster b',
      'config: selection.tables: app.orders and app.other are both sales.orders on cluster b',
    ]);
  });

  it('maps names both ways on the cluster that renames, and leaves the other cluster alone', async () => {
    const { ClusterNaming } = await import('../../shared/naming.js');
    const cfg = parseConfig({
      ...base,
      selection: { schemas: ['app'], tables: { 'app.orders': { rename: { b: 'sales.orders' }, renameColumns: { b: { amount: 'total' } } } } },
    });
    const b = new ClusterNaming(cfg, 'b');
    expect([b.physical('app', 'orders'), b.logical('sales', 'orders'), b.logical('app', 'orders'), b.logical('app', 'other')]).toEqual([
      ['sales', 'orders'],
      ['app', 'orders'],
      null,
      ['app', 'other'],
    ]);
    expect([b.column('app', 'orders', 'amount'), b.logicalColumn('app', 'orders', 'total'), b.rowToCluster('app', 'orders', { id: 1, amount: 2 })]).toEqual([
      'total',
      'amount',
      { id: 1, total: 2 },
    ]);
    expect(new ClusterNaming(cfg, 'a').any).toBe(false);
  });
});
