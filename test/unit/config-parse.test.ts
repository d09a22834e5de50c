/**
 * Config parsing (shared/config.ts): the defaults docs/configuration.md promises, the names
 * derived from the config, and one error per mistake that names the key (and the file) it
 * is about.
 */
import { describe, expect, it } from 'vitest';
import {
  clusterByName,
  directionById,
  metricsPort,
  originCluster,
  originName,
  parseConfig,
  policyFor,
  serviceConnection,
  slotName,
} from '../../shared/config.js';
import { PgBridgeError } from '../../shared/errors.js';

const minimal = { pipeline: 'shop', clusters: { a: {}, b: {} }, kafka: { brokers: ['k:9092'] }, registry: { url: 'http://r:8081' } };

/** The CONFIG_INVALID message for a config, one problem per line. */
function problems(input: unknown, where?: string, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    parseConfig(input, where, env);
  } catch (err) {
    expect(err).toBeInstanceOf(PgBridgeError);
    expect((err as PgBridgeError).code).toBe('CONFIG_INVALID');
    return (err as Error).message.split('\n');
  }
  throw new Error('the config was accepted');
}

describe('config defaults (as docs/configuration.md lists them)', () => {
  const cfg = parseConfig(minimal);

  it('clusters: 127.0.0.1:5432, database and user postgres, TLS off, no password', () => {
    expect(cfg.clusters.a).toEqual({
      name: 'a',
      host: '127.0.0.1',
      port: 5432,
      database: 'postgres',
      user: 'postgres',
      password: undefined,
      sslMode: 'disable',
    });
  });

  it('kafka, registry and topics', () => {
    expect(cfg.kafka).toEqual({ brokers: ['k:9092'], clientId: 'pgbridge', connectionTimeoutMs: 3000, requestTimeoutMs: 30000, ssl: null, sasl: null });
    expect(cfg.registry).toEqual({ url: 'http://r:8081' });
    expect(cfg.topics).toEqual({ pattern: '{pipeline}.{from}.to.{to}', partitions: 1, replicationFactor: 1, maxMessageBytes: 68_157_440 });
  });

  it('selection, conflicts, origin, ddl, sync, retry and metrics', () => {
    expect(cfg.selection).toEqual({ schemas: ['public'], include: [], exclude: [], tables: {} });
    expect(cfg.conflicts).toEqual({ policy: 'last-writer-wins', tables: {} });
    expect(cfg.origin.method).toBe('auto');
    expect(cfg.ddl).toEqual({ forward: 'replicate', reverse: 'warn' });
    expect(cfg.sync).toEqual({ workers: 2, events: 'chunks' });
    expect(cfg.retry).toEqual({ connectionMinutes: 720, otherMinutes: 10 });
    expect(cfg.metrics).toEqual({ host: '127.0.0.1', basePort: 9101 });
  });

  it('capture and apply batches, heartbeat, foreign origins, compression, no throttle, no dead-letter topic', () => {
    expect(cfg.capture).toEqual({
      heartbeatSeconds: 5,
      foreignOrigins: 'skip',
      batch: { maxTransactions: 500, maxRows: 5000, lingerMs: 20 },
      statusIntervalSeconds: 10,
      compression: 'none',
    });
    expect(cfg.apply).toEqual({ batch: { maxTransactions: 500, maxRows: 5000, lingerMs: 20 }, snapshotLoaders: 0, throttle: { directions: {} } });
  });

  it('two directions from the first cluster to the second and back, with their topics; the result is frozen', () => {
    expect(cfg.clusterNames).toEqual(['a', 'b']);
    expect(cfg.directions).toEqual([
      { id: 'a-b', from: 'a', to: 'b', topic: 'shop.a.to.b', forward: true },
      { id: 'b-a', from: 'b', to: 'a', topic: 'shop.b.to.a', forward: false },
    ]);
    expect(Object.isFrozen(cfg)).toBe(true);
    expect(Object.isFrozen(cfg.clusters.a)).toBe(true);
    expect(() => {
      (cfg.conflicts as { policy: string }).policy = 'ignore';
    }).toThrow(TypeError);
  });
});

describe('config: derived names and lookups', () => {
  const cfg = parseConfig(
    {
      ...minimal,
      clusters: { east: { capture: { user: 'cap', passwordEnv: 'CAP_PW' } }, west: {} },
      forward: { from: 'west', to: 'east' },
      topics: { pattern: 'cdc-{from}-{to}' },
      conflicts: { policy: 'ignore', tables: { 'public.t': 'overwrite' } },
    },
    'x.yaml',
    { CAP_PW: 'pw' },
  );

  it('forward decides the order of clusters and directions', () => {
    expect(cfg.clusterNames).toEqual(['west', 'east']);
    expect(cfg.directions.map((d) => [d.id, d.topic, d.forward])).toEqual([
      ['west-east', 'cdc-west-east', true],
      ['east-west', 'cdc-east-west', false],
    ]);
  });

  it('slot, origin and metrics port names; an origin name of another pipeline is not ours', () => {
    expect(slotName(cfg, 'east')).toBe('cdc_shop_east');
    expect(originName(cfg, 'west')).toBe('cdc_shop_west');
    expect(originCluster(cfg, 'cdc_shop_west')).toBe('west');
    expect(originCluster(cfg, 'cdc_other_west')).toBeNull();
    expect([
      metricsPort(cfg, { capture: 'west' }),
      metricsPort(cfg, { capture: 'east' }),
      metricsPort(cfg, { apply: 'west-east' }),
      metricsPort(cfg, { apply: 'east-west' }),
    ]).toEqual([9101, 9102, 9103, 9104]);
    expect(metricsPort(parseConfig({ ...minimal, metrics: { basePort: 0 } }), { apply: 'a-b' })).toBe(0);
  });

  it('per-table conflict policy overrides the global one', () => {
    expect(policyFor(cfg, 'public', 't')).toBe('overwrite');
    expect(policyFor(cfg, 'public', 'u')).toBe('ignore');
  });

  it('a service role replaces user and password for that service only', () => {
    const east = clusterByName(cfg, 'east');
    expect(serviceConnection(east, 'capture')).toMatchObject({ user: 'cap', password: 'pw' });
    expect(serviceConnection(east, 'apply')).toMatchObject({ user: 'postgres', password: undefined });
  });

  it('an unknown direction or cluster is named, with the ones that exist', () => {
    expect(() => directionById(cfg, 'a-b')).toThrow('no direction "a-b"; this pipeline has west-east and east-west');
    expect(() => clusterByName(cfg, 'north')).toThrow('no cluster "north"; this pipeline has west and east');
  });
});

describe('config errors name the key', () => {
  it('an unknown key, at the top and nested, with its path and the file', () => {
    expect(problems({ ...minimal, extra: 1 }, 'p.yaml')).toEqual(['p.yaml: unknown key(s) "extra"']);
    expect(problems({ ...minimal, capture: { batch: { maxRow: 5 } } }, 'p.yaml')).toEqual(['p.yaml: capture.batch: unknown key(s) "maxRow"']);
  });

  it('a value of the wrong type or range names its key path', () => {
    expect(problems({ ...minimal, clusters: { a: { port: 70000 }, b: {} } })[0]).toMatch(/^config: clusters\.a\.port: /);
    expect(problems({ ...minimal, apply: { batch: { maxRows: 0 } } })[0]).toMatch(/^config: apply\.batch\.maxRows: /);
    expect(problems({ ...minimal, conflicts: { policy: 'newest' } })[0]).toMatch(/^config: conflicts\.policy: /);
    expect(problems({ ...minimal, registry: { url: 'not a url' } })[0]).toMatch(/^config: registry\.url: /);
  });

  it('every problem is reported, not only the first', () => {
    const list = problems({ ...minimal, kafka: { brokers: [] }, sync: { workers: 0 } });
    expect(list.some((l) => l.startsWith('config: kafka.brokers: '))).toBe(true);
    expect(list.some((l) => l.startsWith('config: sync.workers: '))).toBe(true);
  });

  it('pipeline and cluster names: lower-case identifiers; exactly two clusters', () => {
    expect(problems({ ...minimal, pipeline: 'Shop' })).toEqual([
      'config: pipeline: lower-case letters, digits and _, starting with a letter, at most 31 characters',
    ]);
    expect(problems({ ...minimal, clusters: { a: {} } })).toEqual(['config: clusters: exactly two clusters are needed']);
  });

  it('forward must name two different clusters of the pipeline', () => {
    expect(problems({ ...minimal, forward: { from: 'a', to: 'c' } })).toEqual(['config: forward.to: "c" is not one of the clusters (a, b)']);
    expect(problems({ ...minimal, forward: { from: 'a', to: 'a' } })).toEqual(['config: forward: from and to must differ']);
  });

  it('topics: the pattern needs {from} and {to}; only one partition', () => {
    expect(problems({ ...minimal, topics: { pattern: '{pipeline}.events' } })).toEqual(['config: topics.pattern: must contain {from} and {to}']);
    expect(problems({ ...minimal, topics: { partitions: 3 } })[0]).toMatch(/^config: topics\.partitions: only 1 is supported/);
  });

  it('a password variable that is not set is named with its key, never a value', () => {
    expect(problems({ ...minimal, clusters: { a: { passwordEnv: 'PG_A_PW' }, b: {} } }, 'config', {})).toEqual([
      'config: clusters.a.passwordEnv: environment variable PG_A_PW is not set',
    ]);
    expect(problems({ ...minimal, kafka: { brokers: ['k:1'], sasl: { mechanism: 'plain', username: 'u' } } }, 'config', {})).toEqual([
      'config: kafka.sasl: password or passwordEnv is needed',
    ]);
  });

  it('a per-table policy for a schema outside the selection; a name too long for a slot', () => {
    expect(problems({ ...minimal, conflicts: { tables: { 'other.t': 'ignore' } } })).toEqual([
      'config: conflicts.tables.other.t: schema is not in selection.schemas',
    ]);
    expect(problems({ ...minimal, pipeline: 'p'.repeat(31), clusters: { ['c'.repeat(31)]: {}, b: {} } })[0]).toMatch(
      /makes a slot name longer than PostgreSQL allows/,
    );
  });
});
