import { describe, expect, it } from 'vitest';
import { endpointsOf, kafkaServerProperties, postgresConf, SECURE_PG_HBA, stackSettings, StackSettingsError } from '../../infra/stack/settings.js';
import { formatStatus } from '../../infra/stack/stack.js';

describe('stack settings', () => {
  it('defaults to loopback ports that do not collide with a system PostgreSQL on 5432', () => {
    const s = stackSettings({ HOME: '/home/u' }, '/proj');
    expect(s.host).toBe('127.0.0.1');
    expect([s.pg.a.port, s.pg.b.port, s.kafkaPort, s.kafkaControllerPort, s.registryPort]).toEqual([15432, 15433, 19092, 19093, 18081]);
    expect(s.stateDir).toBe('/proj/.stack');
    expect(s.cacheDir.endsWith('/.cache/pgbridge')).toBe(true);
    expect(Object.isFrozen(s)).toBe(true);
  });

  it('moves every port from the environment', () => {
    const s = stackSettings(
      {
        PGBRIDGE_PG_A_PORT: '6001',
        PGBRIDGE_PG_B_PORT: '6002',
        PGBRIDGE_KAFKA_PORT: '6003',
        PGBRIDGE_REGISTRY_PORT: '6005',
        PGBRIDGE_STACK_DIR: '/tmp/st',
        PGBRIDGE_CACHE_DIR: '/tmp/c',
      },
      '/proj',
    );
    expect(s.kafkaControllerPort).toBe(6004);
    expect(endpointsOf(s)).toEqual({
      pg: {
        a: { cluster: 'a', host: '127.0.0.1', port: 6001, user: 'postgres', database: 'postgres' },
        b: { cluster: 'b', host: '127.0.0.1', port: 6002, user: 'postgres', database: 'postgres' },
      },
      kafkaBrokers: ['127.0.0.1:6003'],
      registryUrl: 'http://127.0.0.1:6005/apis/ccompat/v7',
    });
    expect(s.stateDir).toBe('/tmp/st');
    expect(s.cacheDir).toBe('/tmp/c');
  });

  it('rejects a port that is not a port, naming the variable', () => {
    expect(() => stackSettings({ PGBRIDGE_KAFKA_PORT: 'abc' })).toThrow(/PGBRIDGE_KAFKA_PORT="abc" is not a TCP port/);
    expect(() => stackSettings({ PGBRIDGE_PG_A_PORT: '70000' })).toThrow(StackSettingsError);
  });

  it('rejects two services on one port', () => {
    expect(() => stackSettings({ PGBRIDGE_PG_A_PORT: '7000', PGBRIDGE_PG_B_PORT: '7000' })).toThrow(/PGBRIDGE_PG_B_PORT and PGBRIDGE_PG_A_PORT are both 7000/);
  });

  it('configures PostgreSQL for logical decoding and commit timestamps on loopback only', () => {
    const conf = postgresConf(stackSettings({}).pg.a);
    expect(conf).toMatch(/^wal_level = logical$/m);
    expect(conf).toMatch(/^track_commit_timestamp = on$/m);
    expect(conf).toMatch(/^listen_addresses = '127\.0\.0\.1'$/m);
    expect(conf).toMatch(/^port = 15432$/m);
  });

  it('configures a single-node KRaft broker whose transactions work with one replica', () => {
    const props = kafkaServerProperties(stackSettings({}), '/data');
    expect(props).toMatch(/^process\.roles=broker,controller$/m);
    expect(props).toMatch(/^transaction\.state\.log\.replication\.factor=1$/m);
    expect(props).toMatch(/^transaction\.state\.log\.min\.isr=1$/m);
    expect(props).toMatch(/^advertised\.listeners=PLAINTEXT:\/\/127\.0\.0\.1:19092$/m);
    expect(props).toMatch(/^log\.dirs=\/data$/m);
  });

  it('the secure stack has its own ports and folder, TLS-only PostgreSQL and a SASL_SSL broker; the default stack has neither', () => {
    const d = stackSettings({ HOME: '/home/u' }, '/proj');
    expect(d.secure).toBe(false);
    expect(postgresConf(d.pg.a)).not.toMatch(/ssl/);
    expect(kafkaServerProperties(d, '/data')).not.toMatch(/SASL|ssl\./);
    const s = stackSettings({ HOME: '/home/u', PGBRIDGE_STACK_SECURE: '1' }, '/proj');
    expect([s.pg.a.port, s.pg.b.port, s.kafkaPort, s.kafkaControllerPort, s.kafkaInternalPort, s.registryPort]).toEqual([
      15532, 15533, 19192, 19193, 19194, 18181,
    ]);
    expect(s.stateDir).toBe('/proj/.stack-secure');
    expect(postgresConf(s.pg.a, true)).toMatch(/^ssl = on$/m);
    expect(SECURE_PG_HBA).toMatch(/^hostssl all all 127\.0\.0\.1\/32 cert$/m);
    expect(SECURE_PG_HBA).not.toMatch(/^host\s/m);
    const props = kafkaServerProperties(s, '/data', 'pw');
    expect(props).toMatch(/^listeners=SASL_SSL:\/\/127\.0\.0\.1:19192,INTERNAL:\/\/127\.0\.0\.1:19194,CONTROLLER:\/\/127\.0\.0\.1:19193$/m);
    expect(props).toMatch(/^sasl\.enabled\.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN$/m);
    expect(props).toMatch(/^ssl\.keystore\.type=PEM$/m);
  });

  it('formats status as one aligned line per service', () => {
    const text = formatStatus([
      { service: 'pg-a', healthy: true, pid: 10, listen: '127.0.0.1:15432', detail: 'ok' },
      { service: 'registry', healthy: false, pid: null, listen: 'http://127.0.0.1:18081/x', detail: 'not answering' },
    ]);
    const lines = text.split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^pg-a\s+healthy\s+127\.0\.0\.1:15432\s+pid 10/);
    expect(lines[1]).toMatch(/^registry\s+DOWN\s+http:\/\/127\.0\.0\.1:18081\/x\s+pid -/);
  });
});
