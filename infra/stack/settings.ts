/**
 * Settings of the local stack: where it listens and where it keeps its files.
 * Pure functions only, so they are unit-tested without starting anything.
 */
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

export const KAFKA_VERSION = '4.1.1';
/** Apicurio 3.0.x is the newest line that runs on Java 17 (3.1+ is built for Java 21). */
export const APICURIO_VERSION = '3.0.9';
/** Kafka Connect (interop test only): the broker's version, the Debezium JDBC sink and Apicurio's Avro converter (the 3.0.x converter's parent POM is not on Maven Central). */
export const CONNECT_VERSION = KAFKA_VERSION;
export const DEBEZIUM_JDBC_VERSION = '3.3.1.Final';
export const APICURIO_CONVERTER_VERSION = '2.6.13.Final';

export type ClusterName = 'a' | 'b';

export interface PgEndpoint {
  readonly cluster: ClusterName;
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly database: string;
}

export interface StackSettings {
  readonly host: string;
  readonly pg: { readonly a: PgEndpoint; readonly b: PgEndpoint };
  readonly kafkaPort: number;
  readonly kafkaControllerPort: number;
  readonly registryPort: number;
  /** REST port of the Kafka Connect worker (infra/stack/connect.ts; not started by `up`). */
  readonly connectPort: number;
  readonly connectHeapMb: number;
  /** Data, logs and pid files of the running stack. */
  readonly stateDir: string;
  /** Downloads (Kafka and registry jars); survives `reset`. */
  readonly cacheDir: string;
  readonly kafkaHeapMb: number;
  readonly registryHeapMb: number;
  /**
   * The TLS variant (`stack up --secure`, PGBRIDGE_STACK_SECURE=1): PostgreSQL accepts only
   * TLS connections with a client certificate, Kafka listens with SASL_SSL (SCRAM and PLAIN)
   * and a client certificate, and keeps a PLAINTEXT listener on kafkaInternalPort for the
   * broker itself and the registry.
   * Certificates are made at `up` in `<stateDir>/tls`.
   */
  readonly secure: boolean;
  readonly kafkaInternalPort: number;
}

/** Files of the secure stack: the CA, the client certificate (CN postgres) and the Kafka SASL user. */
export interface SecureFiles {
  readonly dir: string;
  readonly caCert: string;
  readonly caKey: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
  /** PEM key and certificate of the broker (Kafka's PEM keystore). */
  readonly kafkaKeystore: string;
  /** The SASL user's password (SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN), made at the first `up`. */
  readonly kafkaPasswordFile: string;
  readonly kafkaUser: string;
}

export function secureFiles(s: StackSettings): SecureFiles {
  const dir = join(s.stateDir, 'tls');
  return {
    dir,
    caCert: join(dir, 'ca.crt'),
    caKey: join(dir, 'ca.key'),
    serverCert: join(dir, 'server.crt'),
    serverKey: join(dir, 'server.key'),
    clientCert: join(dir, 'client.crt'),
    clientKey: join(dir, 'client.key'),
    kafkaKeystore: join(dir, 'kafka-keystore.pem'),
    kafkaPasswordFile: join(dir, 'kafka-password'),
    kafkaUser: 'pgbridge',
  };
}

export interface StackEndpoints {
  readonly pg: { readonly a: PgEndpoint; readonly b: PgEndpoint };
  readonly kafkaBrokers: readonly string[];
  /** Base URL of the Confluent-compatible API (what @kafkajs/confluent-schema-registry takes as host). */
  readonly registryUrl: string;
}

export class StackSettingsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StackSettingsError';
  }
}

function port(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 65535) {
    throw new StackSettingsError(`${name}=${JSON.stringify(raw)} is not a TCP port (1-65535)`);
  }
  return n;
}

function positive(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 64) {
    throw new StackSettingsError(`${name}=${JSON.stringify(raw)} must be a whole number of MiB >= 64`);
  }
  return n;
}

/**
 * Reads the stack settings from the environment. Every value has a default; ports can be
 * moved with PGBRIDGE_PG_A_PORT, PGBRIDGE_PG_B_PORT, PGBRIDGE_KAFKA_PORT,
 * PGBRIDGE_KAFKA_CONTROLLER_PORT and PGBRIDGE_REGISTRY_PORT.
 */
export function stackSettings(env: NodeJS.ProcessEnv = process.env, cwd: string = process.cwd()): StackSettings {
  const host = '127.0.0.1';
  // Defaults sit below Linux's ephemeral range (32768-60999): a port in it can be taken for a
  // moment by any outgoing connection's local end, and the server would then fail to bind.
  // The secure stack has ports and a folder of its own: it runs beside the default one.
  const secure = env.PGBRIDGE_STACK_SECURE === '1';
  const shift = secure ? 100 : 0;
  const pgA = port(env, 'PGBRIDGE_PG_A_PORT', 15432 + shift);
  const pgB = port(env, 'PGBRIDGE_PG_B_PORT', 15433 + shift);
  const kafkaPort = port(env, 'PGBRIDGE_KAFKA_PORT', 19092 + shift);
  const kafkaControllerPort = port(env, 'PGBRIDGE_KAFKA_CONTROLLER_PORT', kafkaPort + 1);
  const registryPort = port(env, 'PGBRIDGE_REGISTRY_PORT', 18081 + shift);
  const connectPort = port(env, 'PGBRIDGE_CONNECT_PORT', 18083 + shift);
  const kafkaInternalPort = port(env, 'PGBRIDGE_KAFKA_INTERNAL_PORT', kafkaPort + 2);
  const all = {
    PGBRIDGE_PG_A_PORT: pgA,
    PGBRIDGE_PG_B_PORT: pgB,
    PGBRIDGE_KAFKA_PORT: kafkaPort,
    PGBRIDGE_KAFKA_CONTROLLER_PORT: kafkaControllerPort,
    PGBRIDGE_REGISTRY_PORT: registryPort,
    PGBRIDGE_CONNECT_PORT: connectPort,
    ...(secure ? { PGBRIDGE_KAFKA_INTERNAL_PORT: kafkaInternalPort } : {}),
  };
  const seen = new Map<number, string>();
  for (const [name, p] of Object.entries(all)) {
    const other = seen.get(p);
    if (other) throw new StackSettingsError(`${name} and ${other} are both ${p}: every service needs its own port`);
    seen.set(p, name);
  }
  const cacheBase = env.XDG_CACHE_HOME && env.XDG_CACHE_HOME !== '' ? env.XDG_CACHE_HOME : join(homedir(), '.cache');
  const endpoint = (cluster: ClusterName, p: number): PgEndpoint => Object.freeze({ cluster, host, port: p, user: 'postgres', database: 'postgres' });
  return Object.freeze({
    host,
    pg: Object.freeze({ a: endpoint('a', pgA), b: endpoint('b', pgB) }),
    kafkaPort,
    kafkaControllerPort,
    registryPort,
    connectPort,
    connectHeapMb: positive(env, 'PGBRIDGE_CONNECT_HEAP_MB', 384),
    stateDir: resolve(cwd, env.PGBRIDGE_STACK_DIR || (secure ? '.stack-secure' : '.stack')),
    cacheDir: resolve(env.PGBRIDGE_CACHE_DIR || join(cacheBase, 'pgbridge')),
    kafkaHeapMb: positive(env, 'PGBRIDGE_KAFKA_HEAP_MB', 512),
    registryHeapMb: positive(env, 'PGBRIDGE_REGISTRY_HEAP_MB', 320),
    secure,
    kafkaInternalPort,
  });
}

export function endpointsOf(s: StackSettings): StackEndpoints {
  return Object.freeze({
    pg: s.pg,
    kafkaBrokers: Object.freeze([`${s.host}:${s.kafkaPort}`]),
    registryUrl: `http://${s.host}:${s.registryPort}/apis/ccompat/v7`,
  });
}

/**
 * The `clusters`, `kafka` and `registry` keys of a pipeline config that points at this stack
 * (clusters named a and b), optionally in another database of the same clusters.
 */
export function stackConnections(ep: StackEndpoints, database?: string) {
  const cluster = (p: PgEndpoint) => ({ host: p.host, port: p.port, user: p.user, database: database ?? p.database });
  return {
    clusters: { a: cluster(ep.pg.a), b: cluster(ep.pg.b) },
    kafka: { brokers: [...ep.kafkaBrokers] },
    registry: { url: ep.registryUrl },
  };
}

/** Lines appended to postgresql.conf of each cluster (secure: TLS with the files setup copies into the data folder). */
export function postgresConf(ep: PgEndpoint, secure = false): string {
  const tls = secure
    ? ['ssl = on', "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'", "ssl_ca_file = 'root.crt'", "ssl_min_protocol_version = 'TLSv1.2'"]
    : [];
  return [
    ...tls,
    '# written by pgbridge infra/stack',
    `listen_addresses = '${ep.host}'`,
    `port = ${ep.port}`,
    "unix_socket_directories = ''",
    'wal_level = logical',
    'track_commit_timestamp = on',
    'max_replication_slots = 40',
    'max_wal_senders = 40',
    'max_worker_processes = 16',
    'max_logical_replication_workers = 8',
    'max_connections = 200',
    'shared_buffers = 128MB',
    "timezone = 'UTC'",
    "log_timezone = 'UTC'",
    'log_min_messages = warning',
    '',
  ].join('\n');
}

/**
 * pg_hba.conf of the secure clusters: TLS only, and the client certificate is the
 * authentication (its CN is the role; the certificates made at `up` are for postgres).
 */
export const SECURE_PG_HBA = [
  '# written by pgbridge infra/stack (secure): TLS with a client certificate, nothing else',
  'hostssl all all 127.0.0.1/32 cert',
  'hostssl replication all 127.0.0.1/32 cert',
  '',
].join('\n');

/** Lines of the secure broker: SASL_SSL for clients, PLAINTEXT on kafkaInternalPort for the broker itself. */
function kafkaSecureProperties(s: StackSettings, password: string): string[] {
  const f = secureFiles(s);
  const scram = 'org.apache.kafka.common.security.scram.ScramLoginModule required;';
  return [
    `listeners=SASL_SSL://${s.host}:${s.kafkaPort},INTERNAL://${s.host}:${s.kafkaInternalPort},CONTROLLER://${s.host}:${s.kafkaControllerPort}`,
    `advertised.listeners=SASL_SSL://${s.host}:${s.kafkaPort},INTERNAL://${s.host}:${s.kafkaInternalPort}`,
    'controller.listener.names=CONTROLLER',
    'inter.broker.listener.name=INTERNAL',
    'listener.security.protocol.map=SASL_SSL:SASL_SSL,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT',
    'sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN',
    `listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=${scram}`,
    `listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=${scram}`,
    `listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_${f.kafkaUser}="${password}";`,
    'ssl.keystore.type=PEM',
    `ssl.keystore.location=${f.kafkaKeystore}`,
    'ssl.truststore.type=PEM',
    `ssl.truststore.location=${f.caCert}`,
    // Clients also present a certificate signed by the stack's CA (mutual TLS), besides SASL.
    'listener.name.sasl_ssl.ssl.client.auth=required',
  ];
}

/** server.properties of the single-node KRaft broker (secure: with the SASL user's password). */
export function kafkaServerProperties(s: StackSettings, dataDir: string, password = ''): string {
  const listeners = s.secure
    ? kafkaSecureProperties(s, password)
    : [
        `listeners=PLAINTEXT://${s.host}:${s.kafkaPort},CONTROLLER://${s.host}:${s.kafkaControllerPort}`,
        `advertised.listeners=PLAINTEXT://${s.host}:${s.kafkaPort}`,
        'controller.listener.names=CONTROLLER',
        'inter.broker.listener.name=PLAINTEXT',
        'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
      ];
  return [
    '# written by pgbridge infra/stack',
    'process.roles=broker,controller',
    'node.id=1',
    `controller.quorum.voters=1@${s.host}:${s.kafkaControllerPort}`,
    ...listeners,
    `log.dirs=${dataDir}`,
    'num.partitions=1',
    'offsets.topic.replication.factor=1',
    'offsets.topic.num.partitions=4',
    'transaction.state.log.replication.factor=1',
    'transaction.state.log.min.isr=1',
    'transaction.state.log.num.partitions=4',
    'group.initial.rebalance.delay.ms=0',
    'auto.create.topics.enable=false',
    'log.retention.hours=-1',
    '',
  ].join('\n');
}
