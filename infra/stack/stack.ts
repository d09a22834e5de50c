/**
 * The local stack: two PostgreSQL clusters (initdb), one Apache Kafka broker (KRaft) and an
 * Apicurio registry (Confluent API), run as plain processes on loopback.
 *
 * `up` is idempotent: it downloads once into the cache, starts what is not running, waits
 * until every service answers and returns the endpoints. A failure names the service and
 * shows the tail of its log.
 */
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync, chownSync, appendFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import {
  APICURIO_VERSION,
  KAFKA_VERSION,
  endpointsOf,
  kafkaServerProperties,
  postgresConf,
  secureFiles,
  SECURE_PG_HBA,
  type ClusterName,
  type StackEndpoints,
  type StackSettings,
} from './settings.js';

export type ServiceName = 'pg-a' | 'pg-b' | 'kafka' | 'registry';

export interface ServiceStatus {
  readonly service: ServiceName;
  readonly healthy: boolean;
  readonly pid: number | null;
  readonly listen: string;
  readonly detail: string;
}

export class StackError extends Error {
  constructor(
    readonly service: ServiceName | 'connect' | 'stack',
    message: string,
  ) {
    super(`${service}: ${message}`);
    this.name = 'StackError';
  }
}

type Say = (line: string) => void;

const here = dirname(fileURLToPath(import.meta.url));
/** infra/stack/maven/kafka/pom.xml, found from the source tree or from dist/. */
function kafkaPom(): string {
  for (const candidate of [join(here, 'maven/kafka/pom.xml'), join(here, '../../../infra/stack/maven/kafka/pom.xml')]) {
    if (existsSync(candidate)) return candidate;
  }
  throw new StackError('kafka', 'infra/stack/maven/kafka/pom.xml not found next to the stack module');
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

function run(cmd: string, args: string[], opts: { asPostgres?: boolean; cwd?: string } = {}): SpawnSyncReturns<string> {
  const [c, a] = opts.asPostgres && isRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
  return spawnSync(c, a, { encoding: 'utf8', cwd: opts.cwd, maxBuffer: 64 * 1024 * 1024 });
}

function tail(file: string, lines = 30): string {
  try {
    const text = readFileSync(file, 'utf8').trimEnd().split('\n');
    return text.slice(-lines).join('\n');
  } catch {
    return `(no log at ${file})`;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitFor(
  service: ServiceName,
  what: string,
  timeoutMs: number,
  log: string,
  check: () => Promise<boolean>,
  alive?: () => boolean,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    if (alive && !alive()) {
      throw new StackError(service, `process exited before ${what}; last lines of ${log}:\n${tail(log)}`);
    }
    await sleep(250);
  }
  throw new StackError(service, `not ${what} after ${Math.round(timeoutMs / 1000)} s; last lines of ${log}:\n${tail(log)}`);
}

function tcpOpen(host: string, port: number): Promise<boolean> {
  return new Promise((res) => {
    const sock = createConnection({ host, port });
    sock.setTimeout(1000);
    sock.once('connect', () => {
      sock.destroy();
      res(true);
    });
    sock.once('error', () => res(false));
    sock.once('timeout', () => {
      sock.destroy();
      res(false);
    });
  });
}

/** True while the process exists and is not a zombie waiting to be reaped. */
export function pidAlive(pid: number | null): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true; // no /proc: trust kill(0)
  }
}

function readPid(file: string): number | null {
  try {
    const n = Number(readFileSync(file, 'utf8').split('\n')[0]?.trim());
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- TLS (secure stack)

function openssl(args: string[]): void {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  if (r.error) throw new StackError('stack', `cannot run openssl: ${r.error.message}`);
  if (r.status !== 0) throw new StackError('stack', `openssl ${args[0]} failed: ${r.stderr}`);
}

/**
 * Makes, once per stack folder, a CA, a server certificate for 127.0.0.1 and localhost, a
 * client certificate for the role postgres, the broker's PEM keystore and the Kafka SASL
 * user's password. Keys are 0600.
 */
export function ensureCertificates(s: StackSettings, say: Say = () => undefined): void {
  const f = secureFiles(s);
  if (existsSync(join(f.dir, '.complete'))) return;
  mkdirSync(f.dir, { recursive: true, mode: 0o755 });
  const days = '3650';
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', f.caKey, '-out', f.caCert, '-days', days, '-subj', '/CN=pgbridge local stack CA']);
  const sign = (name: string, cn: string, ext: string): void => {
    const csr = join(f.dir, `${name}.csr`);
    const extFile = join(f.dir, `${name}.ext`);
    writeFileSync(extFile, `${ext}\n`);
    openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(f.dir, `${name}.key`), '-out', csr, '-subj', `/CN=${cn}`]);
    openssl([
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      f.caCert,
      '-CAkey',
      f.caKey,
      '-CAcreateserial',
      '-out',
      join(f.dir, `${name}.crt`),
      '-days',
      days,
      '-extfile',
      extFile,
    ]);
    rmSync(csr);
    rmSync(extFile);
  };
  sign('server', 'localhost', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth');
  sign('client', 'postgres', 'extendedKeyUsage=clientAuth');
  writeFileSync(f.kafkaKeystore, readFileSync(f.serverKey, 'utf8') + readFileSync(f.serverCert, 'utf8'), { mode: 0o600 });
  writeFileSync(f.kafkaPasswordFile, `${randomBytes(18).toString('hex')}\n`, { mode: 0o600 });
  for (const key of [f.caKey, f.serverKey, f.clientKey]) chmodSync(key, 0o600);
  writeFileSync(join(f.dir, '.complete'), `${new Date().toISOString()}\n`);
  say(`tls: CA, server (127.0.0.1, localhost) and client (postgres) certificates in ${f.dir}`);
}

/** The Kafka SASL user's password of the secure stack. */
export function secureKafkaPassword(s: StackSettings): string {
  return readFileSync(secureFiles(s).kafkaPasswordFile, 'utf8').trim();
}

/** TLS options of a client of the secure stack (CA-verified server, client certificate). */
function securePgSsl(s: StackSettings): { ca: string; cert: string; key: string; rejectUnauthorized: true } {
  const f = secureFiles(s);
  return { ca: readFileSync(f.caCert, 'utf8'), cert: readFileSync(f.clientCert, 'utf8'), key: readFileSync(f.clientKey, 'utf8'), rejectUnauthorized: true };
}

// ---------------------------------------------------------------- PostgreSQL

/** Directory holding initdb/pg_ctl of PostgreSQL 15 or newer. */
export function findPgBin(env: NodeJS.ProcessEnv = process.env): string {
  const candidates: string[] = [];
  if (env.PGBRIDGE_PG_BIN) candidates.push(env.PGBRIDGE_PG_BIN);
  const cfg = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' });
  if (cfg.status === 0) candidates.push(cfg.stdout.trim());
  const debian = '/usr/lib/postgresql';
  if (existsSync(debian)) {
    for (const v of readdirSync(debian).sort((x, y) => Number(y) - Number(x))) candidates.push(join(debian, v, 'bin'));
  }
  for (const dir of candidates) {
    if (!existsSync(join(dir, 'initdb'))) continue;
    const out = spawnSync(join(dir, 'initdb'), ['--version'], { encoding: 'utf8' });
    const major = Number(/(\d+)/.exec(out.stdout ?? '')?.[1] ?? 0);
    if (major >= 15) return dir;
  }
  throw new StackError('stack', 'no PostgreSQL 15+ server binaries found (initdb); install postgresql-15 or set PGBRIDGE_PG_BIN');
}

function pgDir(s: StackSettings, c: ClusterName): string {
  return join(s.stateDir, `pg-${c}`);
}

function pgPid(s: StackSettings, c: ClusterName): number | null {
  return readPid(join(pgDir(s, c), 'data', 'postmaster.pid'));
}

async function pgAnswers(s: StackSettings, c: ClusterName): Promise<boolean> {
  const ep = s.pg[c];
  const client = new pg.Client({
    host: ep.host,
    port: ep.port,
    user: ep.user,
    database: ep.database,
    connectionTimeoutMillis: 2000,
    ...(s.secure ? { ssl: securePgSsl(s) } : {}),
  });
  try {
    await client.connect();
    const r = await client.query<{ wal_level: string }>('SHOW wal_level');
    return r.rows[0]?.wal_level === 'logical';
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function pgUp(s: StackSettings, c: ClusterName, say: Say): Promise<void> {
  const service: ServiceName = `pg-${c}`;
  const dir = pgDir(s, c);
  const data = join(dir, 'data');
  const log = join(dir, 'postgres.log');
  if (pidAlive(pgPid(s, c)) && (await pgAnswers(s, c).catch(() => false))) {
    say(`${service}: already running on ${s.pg[c].host}:${s.pg[c].port}`);
    return;
  }
  const bin = findPgBin();
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  if (isRoot) {
    chownTree(dir);
    // initdb runs as postgres: every folder above the data must be traversable by it.
    if (run('test', ['-w', dir], { asPostgres: true }).status !== 0) {
      throw new StackError(
        service,
        `the postgres user cannot reach ${dir}; make its parent folders world-traversable (chmod o+x) or set PGBRIDGE_STACK_DIR elsewhere`,
      );
    }
  }
  if (!existsSync(join(data, 'PG_VERSION'))) {
    say(`${service}: initdb`);
    const r = run(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--locale=C', '--no-sync'], { asPostgres: true });
    if (r.status !== 0) throw new StackError(service, `initdb failed:\n${r.stderr || r.stdout}`);
    appendFileSync(join(data, 'postgresql.conf'), postgresConf(s.pg[c], s.secure));
    if (s.secure) {
      // The server's files live in its data folder, owned by the server's user, key 0600.
      const f = secureFiles(s);
      writeFileSync(join(data, 'server.crt'), readFileSync(f.serverCert));
      writeFileSync(join(data, 'server.key'), readFileSync(f.serverKey), { mode: 0o600 });
      writeFileSync(join(data, 'root.crt'), readFileSync(f.caCert));
      writeFileSync(join(data, 'pg_hba.conf'), SECURE_PG_HBA);
      if (isRoot) for (const file of ['server.crt', 'server.key', 'root.crt', 'pg_hba.conf']) chownTree(join(data, file));
    }
  }
  // The port on the command line wins over postgresql.conf: moving PGBRIDGE_PG_*_PORT later works.
  const r = run(join(bin, 'pg_ctl'), ['-D', data, '-l', log, '-o', `-p ${s.pg[c].port}`, '-w', '-t', '60', 'start'], { asPostgres: true });
  if (r.status !== 0) throw new StackError(service, `pg_ctl start failed: ${(r.stderr || r.stdout).trim()}; last lines of ${log}:\n${tail(log)}`);
  await waitFor(service, 'answering', 30_000, log, () => pgAnswers(s, c));
  say(`${service}: listening on ${s.pg[c].host}:${s.pg[c].port}`);
}

function chownTree(dir: string): void {
  const u = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  const g = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
  if (u.status !== 0) throw new StackError('stack', 'running as root but there is no postgres user to run initdb as');
  chownSync(dir, Number(u.stdout.trim()), Number(g.stdout.trim()));
}

async function pgDown(s: StackSettings, c: ClusterName, mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
  const data = join(pgDir(s, c), 'data');
  const pid = pgPid(s, c);
  if (!pid) return;
  const bin = findPgBin();
  run(join(bin, 'pg_ctl'), ['-D', data, '-m', mode, '-w', '-t', '60', 'stop'], { asPostgres: true });
  // pg_ctl returns when the pid file is gone, a moment before the postmaster has exited.
  const deadline = Date.now() + 15_000;
  while (pidAlive(pid) && Date.now() < deadline) await sleep(50);
}

// ---------------------------------------------------------------- Java services

interface JavaService {
  readonly service: 'kafka' | 'registry';
  readonly dir: string;
  readonly pidFile: string;
  readonly log: string;
}

function javaService(s: StackSettings, service: 'kafka' | 'registry'): JavaService {
  const dir = join(s.stateDir, service);
  return { service, dir, pidFile: join(dir, `${service}.pid`), log: join(dir, `${service}.log`) };
}

function mvn(args: string[], service: ServiceName): void {
  const r = spawnSync('mvn', ['-q', '-B', ...args], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.error) throw new StackError(service, `cannot run Maven (mvn): ${r.error.message}`);
  if (r.status !== 0) throw new StackError(service, `Maven download failed:\n${(r.stdout + r.stderr).split('\n').slice(-30).join('\n')}`);
}

/** Resolves Kafka and its dependencies into the cache once. Returns the folder of jars. */
export function ensureKafkaJars(s: StackSettings, say: Say): string {
  const libs = join(s.cacheDir, `kafka-${KAFKA_VERSION}`, 'libs');
  if (existsSync(join(libs, '.complete'))) return libs;
  say(`kafka: downloading Apache Kafka ${KAFKA_VERSION} through Maven into ${libs}`);
  const tmp = `${libs}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  mvn(['-f', kafkaPom(), 'dependency:copy-dependencies', `-DoutputDirectory=${tmp}`, '-DincludeScope=runtime'], 'kafka');
  writeFileSync(join(tmp, '.complete'), `${new Date().toISOString()}\n`);
  rmSync(libs, { recursive: true, force: true });
  renameSync(tmp, libs);
  return libs;
}

/** Fetches the Apicurio Registry fast-jar from Maven Central once. Returns its runner jar. */
export function ensureRegistryJar(s: StackSettings, say: Say): string {
  const home = join(s.cacheDir, `apicurio-registry-${APICURIO_VERSION}`);
  const jar = join(home, `apicurio-registry-app-${APICURIO_VERSION}-runner.jar`);
  if (existsSync(join(home, '.complete')) && existsSync(jar)) return jar;
  say(`registry: downloading Apicurio Registry ${APICURIO_VERSION} through Maven into ${home}`);
  const tmp = `${home}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  mvn(['dependency:copy', `-Dartifact=io.apicurio:apicurio-registry-app:${APICURIO_VERSION}:tar.gz:all`, `-DoutputDirectory=${tmp}`], 'registry');
  const archive = join(tmp, `apicurio-registry-app-${APICURIO_VERSION}-all.tar.gz`);
  const x = spawnSync('tar', ['xzf', archive, '-C', tmp], { encoding: 'utf8' });
  if (x.status !== 0) throw new StackError('registry', `cannot unpack ${archive}: ${x.stderr}`);
  rmSync(archive);
  writeFileSync(join(tmp, '.complete'), `${new Date().toISOString()}\n`);
  rmSync(home, { recursive: true, force: true });
  renameSync(tmp, home);
  return jar;
}

function startDetached(js: JavaService, args: string[]): number {
  mkdirSync(js.dir, { recursive: true });
  const out = openSync(js.log, 'a');
  const child = spawn(process.env.JAVA ?? 'java', args, { detached: true, stdio: ['ignore', out, out], cwd: js.dir });
  if (!child.pid) throw new StackError(js.service, 'java did not start (is Java 17+ on PATH?)');
  child.unref();
  writeFileSync(js.pidFile, `${child.pid}\n`);
  return child.pid;
}

async function kafkaAnswers(s: StackSettings): Promise<boolean> {
  // A metadata round trip through the real client, not just an open port.
  const { KafkaClient } = await import('../../shared/kafka.js');
  const secure = s.secure
    ? { tls: securePgSsl(s), sasl: { mechanism: 'SCRAM-SHA-512' as const, username: secureFiles(s).kafkaUser, password: secureKafkaPassword(s) } }
    : {};
  const admin = new KafkaClient({ brokers: [`${s.host}:${s.kafkaPort}`], clientId: 'pgbridge-stack', connectTimeoutMs: 1500, ...secure }).admin({ retries: 0 });
  try {
    return (await admin.brokers()).length > 0;
  } finally {
    await admin.close();
  }
}

async function kafkaUp(s: StackSettings, say: Say): Promise<void> {
  const js = javaService(s, 'kafka');
  if (pidAlive(readPid(js.pidFile)) && (await kafkaAnswers(s).catch(() => false))) {
    say(`kafka: already running on ${s.host}:${s.kafkaPort}`);
    return;
  }
  if (await tcpOpen(s.host, s.kafkaPort)) throw new StackError('kafka', `port ${s.kafkaPort} is taken by another process; set PGBRIDGE_KAFKA_PORT`);
  const libs = ensureKafkaJars(s, say);
  const data = join(js.dir, 'data');
  mkdirSync(data, { recursive: true });
  const props = join(js.dir, 'server.properties');
  writeFileSync(props, kafkaServerProperties(s, data, s.secure ? secureKafkaPassword(s) : ''), { mode: 0o600 });
  const log4j = join(js.dir, 'log4j2.yaml');
  writeFileSync(
    log4j,
    'Configuration:\n  Appenders:\n    Console:\n      name: STDOUT\n      PatternLayout:\n        pattern: "[%d] %p %m (%c)%n"\n  Loggers:\n    Root:\n      level: WARN\n      AppenderRef:\n        - ref: STDOUT\n    Logger:\n      - name: kafka.server.KafkaRaftServer\n        level: INFO\n',
  );
  const cp = `${libs}/*`;
  if (!existsSync(join(data, 'meta.properties'))) {
    const id = spawnSync('java', ['-cp', cp, 'kafka.tools.StorageTool', 'random-uuid'], { encoding: 'utf8' });
    const clusterId = id.stdout.trim().split('\n').pop() ?? '';
    if (id.status !== 0 || clusterId === '') throw new StackError('kafka', `cannot make a cluster id: ${id.stderr}`);
    // The secure broker's SCRAM credentials live in the cluster metadata, written at format time (KRaft).
    const scram = s.secure
      ? ['SCRAM-SHA-256', 'SCRAM-SHA-512'].flatMap((m) => ['--add-scram', `${m}=[name=${secureFiles(s).kafkaUser},password=${secureKafkaPassword(s)}]`])
      : [];
    const f = spawnSync('java', ['-cp', cp, 'kafka.tools.StorageTool', 'format', '-t', clusterId, '-c', props, ...scram], { encoding: 'utf8' });
    if (f.status !== 0) throw new StackError('kafka', `formatting the storage failed: ${f.stderr || f.stdout}`);
  }
  const pid = startDetached(js, [
    `-Xmx${s.kafkaHeapMb}m`,
    `-Xms${Math.min(256, s.kafkaHeapMb)}m`,
    '-XX:+UseG1GC',
    '-XX:MaxGCPauseMillis=20',
    '-Djava.awt.headless=true',
    `-Dlog4j2.configurationFile=${log4j}`,
    '-Dpgbridge.stack=kafka',
    '-cp',
    cp,
    'kafka.Kafka',
    props,
  ]);
  await waitFor(
    'kafka',
    'answering',
    90_000,
    js.log,
    () => kafkaAnswers(s),
    () => pidAlive(pid),
  );
  say(`kafka: Apache Kafka ${KAFKA_VERSION} listening on ${s.host}:${s.kafkaPort}`);
}

async function registryAnswers(s: StackSettings): Promise<boolean> {
  const r = await fetch(`http://${s.host}:${s.registryPort}/apis/ccompat/v7/subjects`, { signal: AbortSignal.timeout(2000) });
  return r.ok;
}

async function registryUp(s: StackSettings, say: Say): Promise<void> {
  const js = javaService(s, 'registry');
  if (pidAlive(readPid(js.pidFile)) && (await registryAnswers(s).catch(() => false))) {
    say(`registry: already running on http://${s.host}:${s.registryPort}`);
    return;
  }
  if (await tcpOpen(s.host, s.registryPort)) throw new StackError('registry', `port ${s.registryPort} is taken by another process; set PGBRIDGE_REGISTRY_PORT`);
  const jar = ensureRegistryJar(s, say);
  // kafkasql storage keeps the schemas in the broker (like Confluent's _schemas topic), so a
  // registry restart keeps every schema id that events in the topics refer to.
  const pid = startDetached(js, [
    `-Xmx${s.registryHeapMb}m`,
    '-XX:+UseSerialGC',
    '-Dpgbridge.stack=registry',
    `-Dquarkus.http.port=${s.registryPort}`,
    `-Dquarkus.http.host=${s.host}`,
    '-Dquarkus.log.level=WARN',
    '-Dquarkus.log.category."io.quarkus".level=INFO',
    '-Dapicurio.storage.kind=kafkasql',
    `-Dapicurio.kafkasql.bootstrap.servers=${s.host}:${s.secure ? s.kafkaInternalPort : s.kafkaPort}`,
    '-jar',
    jar,
  ]);
  await waitFor(
    'registry',
    'answering',
    120_000,
    js.log,
    () => registryAnswers(s),
    () => pidAlive(pid),
  );
  say(`registry: Apicurio Registry ${APICURIO_VERSION} (Confluent API) at ${endpointsOf(s).registryUrl}`);
}

async function javaDown(s: StackSettings, service: 'kafka' | 'registry', signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  const js = javaService(s, service);
  const pid = readPid(js.pidFile);
  if (pidAlive(pid)) {
    process.kill(pid!, signal);
    const deadline = Date.now() + 30_000;
    while (pidAlive(pid) && Date.now() < deadline) await sleep(200);
    if (pidAlive(pid)) process.kill(pid!, 'SIGKILL');
    while (pidAlive(pid)) await sleep(100);
  }
  rmSync(js.pidFile, { force: true });
}

// ---------------------------------------------------------------- public API

export const SERVICES: readonly ServiceName[] = ['pg-a', 'pg-b', 'kafka', 'registry'];

/** Starts one service of the stack (if it is not running) and waits until it answers. */
export async function startService(s: StackSettings, service: ServiceName, say: Say = () => undefined): Promise<void> {
  mkdirSync(s.stateDir, { recursive: true, mode: 0o755 });
  if (s.secure) ensureCertificates(s, say);
  if (service === 'pg-a' || service === 'pg-b') await pgUp(s, service === 'pg-a' ? 'a' : 'b', say);
  else if (service === 'kafka') await kafkaUp(s, say);
  else await registryUp(s, say);
}

/**
 * Stops one service and waits until its process is gone. `crash` stops it the hard way
 * (PostgreSQL immediate mode, SIGKILL for Java): what fault drills use.
 */
export async function stopService(s: StackSettings, service: ServiceName, how: 'graceful' | 'crash' = 'graceful'): Promise<void> {
  if (service === 'pg-a' || service === 'pg-b') await pgDown(s, service === 'pg-a' ? 'a' : 'b', how === 'crash' ? 'immediate' : 'fast');
  else await javaDown(s, service, how === 'crash' ? 'SIGKILL' : 'SIGTERM');
}

/** Starts whatever is not running (of `only`, all four by default) and waits until each answers. Idempotent. */
export async function up(s: StackSettings, say: Say = () => undefined, only: readonly ServiceName[] = SERVICES): Promise<StackEndpoints> {
  for (const service of SERVICES) if (only.includes(service)) await startService(s, service, say);
  return endpointsOf(s);
}

/** Stops every service of the stack (or those in `only`) and waits until no process is left. Data is kept. */
export async function down(s: StackSettings, say: Say = () => undefined, only: readonly ServiceName[] = SERVICES): Promise<void> {
  // The registry stores its schemas in Kafka: it goes first.
  for (const service of [...SERVICES].reverse()) {
    if (!only.includes(service)) continue;
    await stopService(s, service);
    say(`${service}: stopped`);
  }
}

/** Stops the stack, deletes its data (not the download cache) and starts it fresh. */
export async function reset(s: StackSettings, say: Say = () => undefined): Promise<StackEndpoints> {
  await down(s, say);
  rmSync(s.stateDir, { recursive: true, force: true });
  say(`removed ${s.stateDir}`);
  return up(s, say);
}

export async function status(s: StackSettings): Promise<ServiceStatus[]> {
  const out: ServiceStatus[] = [];
  for (const c of ['a', 'b'] as const) {
    const pid = pgPid(s, c);
    const ok = pidAlive(pid) && (await pgAnswers(s, c).catch(() => false));
    out.push({
      service: `pg-${c}`,
      healthy: ok,
      pid: pidAlive(pid) ? pid : null,
      listen: `${s.pg[c].host}:${s.pg[c].port}`,
      detail: ok ? 'PostgreSQL, wal_level=logical' : 'not answering',
    });
  }
  const kpid = readPid(javaService(s, 'kafka').pidFile);
  const kok = pidAlive(kpid) && (await kafkaAnswers(s).catch(() => false));
  out.push({
    service: 'kafka',
    healthy: kok,
    pid: pidAlive(kpid) ? kpid : null,
    listen: `${s.host}:${s.kafkaPort}`,
    detail: kok ? `Apache Kafka ${KAFKA_VERSION} (KRaft)` : 'not answering',
  });
  const rpid = readPid(javaService(s, 'registry').pidFile);
  const rok = pidAlive(rpid) && (await registryAnswers(s).catch(() => false));
  out.push({
    service: 'registry',
    healthy: rok,
    pid: pidAlive(rpid) ? rpid : null,
    listen: endpointsOf(s).registryUrl,
    detail: rok ? `Apicurio Registry ${APICURIO_VERSION}` : 'not answering',
  });
  return out;
}

export function formatStatus(rows: readonly ServiceStatus[]): string {
  const w = Math.max(...rows.map((r) => r.listen.length));
  return rows
    .map((r) => `${r.service.padEnd(9)} ${(r.healthy ? 'healthy' : 'DOWN').padEnd(8)} ${r.listen.padEnd(w)}  pid ${String(r.pid ?? '-').padEnd(8)} ${r.detail}`)
    .join('\n');
}
