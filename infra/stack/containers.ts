/**
 * The same four services as the local stack (stack.ts), started as throwaway containers with
 * testcontainers: for hosts that have a Docker engine but not PostgreSQL, Java and Maven.
 * Selected by PGBRIDGE_STACK=containers in the test harness.
 *
 * The endpoints point at 127.0.0.1, so this needs a Docker engine on the local machine
 * (not a remote DOCKER_HOST): Kafka must advertise an address the host can reach.
 */
import { createServer } from 'node:net';
import pg from 'pg';
import { GenericContainer, Network, Wait, type StartedNetwork, type StartedTestContainer } from 'testcontainers';
import { APICURIO_VERSION, KAFKA_VERSION, type ClusterName, type PgEndpoint, type StackEndpoints } from './settings.js';

const HOST = '127.0.0.1';
const PG_IMAGE = 'postgres:15';
const KAFKA_IMAGE = `apache/kafka:${KAFKA_VERSION}`;
const REGISTRY_IMAGE = `apicurio/apicurio-registry:${APICURIO_VERSION}`;

/** Broker name on the shared network, and its listener for other containers (the registry). */
const KAFKA_ALIAS = 'kafka';
const KAFKA_INTERNAL_PORT = 29092;
/** In-container port of the listener advertised to the host. */
const KAFKA_EXTERNAL_PORT = 9092;
const KAFKA_CONTROLLER_PORT = 9093;
const REGISTRY_PORT = 8080;
const CCOMPAT_PATH = '/apis/ccompat/v7';

/** The server settings of postgresConf() in settings.ts, as command-line flags. */
const PG_COMMAND = [
  'postgres',
  '-c',
  'wal_level=logical',
  '-c',
  'track_commit_timestamp=on',
  '-c',
  'max_replication_slots=40',
  '-c',
  'max_wal_senders=40',
  '-c',
  'max_worker_processes=16',
  '-c',
  'max_connections=200',
  '-c',
  'timezone=UTC',
];

export interface StartedContainers {
  readonly endpoints: StackEndpoints;
  /** Stops every container and removes the network. Safe to call more than once. */
  stop(): Promise<void>;
}

/** A TCP port nothing listens on right now (the kernel's pick), for the broker's fixed mapping. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    // No host: bind every interface, as Docker's port mapping will.
    srv.listen(0, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error('could not pick a free TCP port'))));
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Retries `check` until it returns true; the error names the service and the last failure. */
async function waitFromHost(service: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    await sleep(250);
  }
  throw new Error(`${service}: not reachable from the host after ${Math.round(timeoutMs / 1000)} s (${last})`);
}

function postgres(cluster: ClusterName): GenericContainer {
  return (
    new GenericContainer(PG_IMAGE)
      .withEnvironment({ POSTGRES_HOST_AUTH_METHOD: 'trust', POSTGRES_USER: 'postgres', POSTGRES_DB: 'postgres' })
      .withCommand(PG_COMMAND)
      .withExposedPorts(5432)
      .withLabels({ 'pgbridge.service': `pg-${cluster}` })
      // The image's init phase runs a temporary server on the Unix socket only, so a TCP
      // answer on 127.0.0.1 means the final server is up.
      .withWaitStrategy(Wait.forSuccessfulCommand('pg_isready -h 127.0.0.1 -p 5432 -U postgres -d postgres'))
      .withStartupTimeout(60_000)
  );
}

async function pgFromHost(ep: PgEndpoint): Promise<boolean> {
  const client = new pg.Client({ host: ep.host, port: ep.port, user: ep.user, database: ep.database, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    const r = await client.query<{ wal_level: string }>('SHOW wal_level');
    return r.rows[0]?.wal_level === 'logical';
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Single-node KRaft broker; the same settings as kafkaServerProperties() in settings.ts. */
function kafka(network: StartedNetwork, hostPort: number): GenericContainer {
  return (
    new GenericContainer(KAFKA_IMAGE)
      .withNetwork(network)
      .withNetworkAliases(KAFKA_ALIAS)
      .withEnvironment({
        CLUSTER_ID: 'cGdicmlkZ2UtdGVzdC0wMQ',
        KAFKA_NODE_ID: '1',
        KAFKA_PROCESS_ROLES: 'broker,controller',
        KAFKA_CONTROLLER_QUORUM_VOTERS: `1@localhost:${KAFKA_CONTROLLER_PORT}`,
        KAFKA_LISTENERS: `INTERNAL://0.0.0.0:${KAFKA_INTERNAL_PORT},EXTERNAL://0.0.0.0:${KAFKA_EXTERNAL_PORT},CONTROLLER://0.0.0.0:${KAFKA_CONTROLLER_PORT}`,
        // Containers reach the broker by its alias, the host through the fixed mapping below.
        KAFKA_ADVERTISED_LISTENERS: `INTERNAL://${KAFKA_ALIAS}:${KAFKA_INTERNAL_PORT},EXTERNAL://${HOST}:${hostPort}`,
        KAFKA_LISTENER_SECURITY_PROTOCOL_MAP: 'INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT',
        KAFKA_CONTROLLER_LISTENER_NAMES: 'CONTROLLER',
        KAFKA_INTER_BROKER_LISTENER_NAME: 'INTERNAL',
        KAFKA_LOG_DIRS: '/var/lib/kafka/data',
        KAFKA_NUM_PARTITIONS: '1',
        KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR: '1',
        KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS: '4',
        KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR: '1',
        KAFKA_TRANSACTION_STATE_LOG_MIN_ISR: '1',
        KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS: '4',
        KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS: '0',
        KAFKA_AUTO_CREATE_TOPICS_ENABLE: 'false',
        KAFKA_LOG_RETENTION_HOURS: '-1',
      })
      // Fixed mapping: the advertised address must be known before the broker starts.
      .withExposedPorts({ container: KAFKA_EXTERNAL_PORT, host: hostPort })
      .withLabels({ 'pgbridge.service': 'kafka' })
      .withWaitStrategy(Wait.forLogMessage(/Kafka Server started/))
      .withStartupTimeout(120_000)
  );
}

async function kafkaFromHost(brokers: readonly string[]): Promise<boolean> {
  const { KafkaClient } = await import('../../shared/kafka.js');
  const admin = new KafkaClient({ brokers: brokers, clientId: 'pgbridge-stack', connectTimeoutMs: 1500 }).admin({ retries: 0 });
  try {
    return (await admin.brokers()).length > 0;
  } finally {
    await admin.close();
  }
}

/** Apicurio with kafkasql storage: schemas live in the broker, as in the local stack. */
function registry(network: StartedNetwork): GenericContainer {
  return (
    new GenericContainer(REGISTRY_IMAGE)
      .withNetwork(network)
      .withEnvironment({
        APICURIO_STORAGE_KIND: 'kafkasql',
        APICURIO_KAFKASQL_BOOTSTRAP_SERVERS: `${KAFKA_ALIAS}:${KAFKA_INTERNAL_PORT}`,
      })
      .withExposedPorts(REGISTRY_PORT)
      .withLabels({ 'pgbridge.service': 'registry' })
      // The Confluent API itself, the URL clients will use (it answers only once storage is ready).
      .withWaitStrategy(Wait.forHttp(`${CCOMPAT_PATH}/subjects`, REGISTRY_PORT).forStatusCode(200))
      .withStartupTimeout(180_000)
  );
}

/**
 * Starts two PostgreSQL 15 clusters, a Kafka broker and the registry, waits until each one
 * answers from the host, and returns their endpoints. On failure, whatever was started is
 * stopped before the error is thrown.
 */
export async function startContainers(): Promise<StartedContainers> {
  const started: StartedTestContainer[] = [];
  let network: StartedNetwork | undefined;
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    const errors: unknown[] = [];
    // Registry first (it is a Kafka client), then the broker, then the databases.
    for (const c of [...started].reverse()) {
      await c.stop().catch((err: unknown) => errors.push(err));
    }
    await network?.stop().catch((err: unknown) => errors.push(err));
    if (errors.length > 0) throw new AggregateError(errors, `stopping the containers: ${errors.length} error(s)`);
  };
  const track = async (p: Promise<StartedTestContainer>): Promise<StartedTestContainer> => {
    const c = await p;
    started.push(c);
    return c;
  };

  try {
    network = await new Network().start();
    const kafkaPort = await freePort();
    const results = await Promise.allSettled([track(postgres('a').start()), track(postgres('b').start()), track(kafka(network, kafkaPort).start())]);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    const [pgA, pgB] = results.map((r) => (r as PromiseFulfilledResult<StartedTestContainer>).value);
    const endpoint = (cluster: ClusterName, c: StartedTestContainer): PgEndpoint =>
      Object.freeze({ cluster, host: HOST, port: c.getMappedPort(5432), user: 'postgres', database: 'postgres' });
    const pgEndpoints = Object.freeze({ a: endpoint('a', pgA!), b: endpoint('b', pgB!) });
    const kafkaBrokers = Object.freeze([`${HOST}:${kafkaPort}`]);

    const reg = await track(registry(network).start());
    const registryUrl = `http://${HOST}:${reg.getMappedPort(REGISTRY_PORT)}${CCOMPAT_PATH}`;

    // What the tests will use, checked through the same addresses and clients.
    await Promise.all([
      waitFromHost('pg-a', 30_000, () => pgFromHost(pgEndpoints.a)),
      waitFromHost('pg-b', 30_000, () => pgFromHost(pgEndpoints.b)),
      waitFromHost('kafka', 60_000, () => kafkaFromHost(kafkaBrokers)),
      waitFromHost('registry', 30_000, async () => (await fetch(`${registryUrl}/subjects`, { signal: AbortSignal.timeout(2000) })).ok),
    ]);

    const endpoints: StackEndpoints = Object.freeze({ pg: pgEndpoints, kafkaBrokers, registryUrl });
    return { endpoints, stop };
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
}
