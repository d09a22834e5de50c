/**
 * Kafka Connect for the interop test: a standalone worker (Apache Kafka's connect-runtime)
 * with two plugins, the Debezium JDBC sink connector and Apicurio's Avro converter, all
 * resolved through Maven into the download cache like the broker. It is not part of `up`:
 * `infra/stack/stack up connect` or the interop test starts it, `down` stops it.
 *
 * Connectors are created and removed through the worker's REST API (standalone mode keeps
 * their offsets in a file under the stack folder).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { APICURIO_CONVERTER_VERSION, CONNECT_VERSION, DEBEZIUM_JDBC_VERSION, type StackSettings } from './settings.js';
import { pidAlive, StackError } from './stack.js';

type Say = (line: string) => void;

const here = dirname(fileURLToPath(import.meta.url));

function pom(name: string): string {
  for (const candidate of [join(here, `maven/${name}/pom.xml`), join(here, `../../../infra/stack/maven/${name}/pom.xml`)]) {
    if (existsSync(candidate)) return candidate;
  }
  throw new StackError('connect', `infra/stack/maven/${name}/pom.xml not found next to the stack module`);
}

function mvn(args: string[]): void {
  const r = spawnSync('mvn', ['-q', '-B', ...args], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.error) throw new StackError('connect', `cannot run Maven (mvn): ${r.error.message}`);
  if (r.status !== 0) throw new StackError('connect', `Maven download failed:\n${(r.stdout + r.stderr).split('\n').slice(-30).join('\n')}`);
}

/** Fills `dir` once (a `.complete` marker), building it in a temporary folder first. */
function cached(dir: string, say: Say, what: string, fill: (tmp: string) => void): string {
  if (existsSync(join(dir, '.complete'))) return dir;
  say(`connect: downloading ${what} through Maven into ${dir}`);
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  fill(tmp);
  writeFileSync(join(tmp, '.complete'), `${new Date().toISOString()}\n`);
  rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
  return dir;
}

export interface ConnectFiles {
  /** The worker's class path (connect-runtime and its dependencies). */
  readonly libs: string;
  /** plugin.path: one folder per plugin. */
  readonly plugins: string;
}

/** Resolves the worker and the two plugins into the cache (once). */
export function ensureConnectJars(s: StackSettings, say: Say): ConnectFiles {
  const libs = cached(join(s.cacheDir, `connect-${CONNECT_VERSION}`, 'libs'), say, `Kafka Connect ${CONNECT_VERSION}`, (tmp) => {
    mvn(['-f', pom('connect'), 'dependency:copy-dependencies', `-DoutputDirectory=${tmp}`, '-DincludeScope=runtime']);
  });
  const plugins = join(s.cacheDir, `connect-plugins-jdbc-${DEBEZIUM_JDBC_VERSION}-apicurio-${APICURIO_CONVERTER_VERSION}`);
  cached(join(plugins, 'debezium-connector-jdbc'), say, `the Debezium JDBC sink ${DEBEZIUM_JDBC_VERSION}`, (tmp) => {
    mvn(['dependency:copy', `-Dartifact=io.debezium:debezium-connector-jdbc:${DEBEZIUM_JDBC_VERSION}:tar.gz:plugin`, `-DoutputDirectory=${tmp}`]);
    const archive = join(tmp, `debezium-connector-jdbc-${DEBEZIUM_JDBC_VERSION}-plugin.tar.gz`);
    // The archive holds one folder, debezium-connector-jdbc/: its jars go straight into tmp.
    const x = spawnSync('tar', ['xzf', archive, '-C', tmp, '--strip-components=1'], { encoding: 'utf8' });
    if (x.status !== 0) throw new StackError('connect', `cannot unpack ${archive}: ${x.stderr}`);
    rmSync(archive);
  });
  cached(join(plugins, 'apicurio-converter'), say, `Apicurio's Avro converter ${APICURIO_CONVERTER_VERSION}`, (tmp) => {
    // Kafka's own jars come from the worker: a plugin bringing older copies of them would clash.
    mvn([
      '-f',
      pom('apicurio-converter'),
      'dependency:copy-dependencies',
      `-DoutputDirectory=${tmp}`,
      '-DincludeScope=runtime',
      '-DexcludeGroupIds=org.apache.kafka',
    ]);
  });
  if (!readdirSync(join(plugins, 'debezium-connector-jdbc')).some((f) => f.startsWith('debezium-connector-jdbc-'))) {
    throw new StackError('connect', `no debezium-connector-jdbc jar in ${plugins}`);
  }
  return { libs, plugins };
}

export interface ConnectPaths {
  readonly dir: string;
  readonly pidFile: string;
  readonly log: string;
  readonly url: string;
}

export function connectPaths(s: StackSettings): ConnectPaths {
  const dir = join(s.stateDir, 'connect');
  return { dir, pidFile: join(dir, 'connect.pid'), log: join(dir, 'connect.log'), url: `http://${s.host}:${s.connectPort}` };
}

/** The standalone worker's properties: read_committed (capture writes in Kafka transactions), REST on loopback. */
export function connectWorkerProperties(s: StackSettings, plugins: string, dir: string): string {
  return [
    '# written by pgbridge infra/stack',
    `bootstrap.servers=${s.host}:${s.kafkaPort}`,
    `listeners=http://${s.host}:${s.connectPort}`,
    `rest.advertised.host.name=${s.host}`,
    `plugin.path=${plugins}`,
    `offset.storage.file.filename=${join(dir, 'offsets')}`,
    'offset.flush.interval.ms=1000',
    // The connectors set their own converters; these are only the worker's defaults.
    'key.converter=org.apache.kafka.connect.json.JsonConverter',
    'value.converter=org.apache.kafka.connect.json.JsonConverter',
    'consumer.isolation.level=read_committed',
    'consumer.auto.offset.reset=earliest',
    '',
  ].join('\n');
}

function readPid(file: string): number | null {
  try {
    const n = Number(readFileSync(file, 'utf8').split('\n')[0]?.trim());
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** True when the worker answers and lists the JDBC sink among its plugins. */
export async function connectAnswers(s: StackSettings): Promise<boolean> {
  const r = await fetch(`${connectPaths(s).url}/connector-plugins`, { signal: AbortSignal.timeout(2000) });
  if (!r.ok) return false;
  const plugins = (await r.json()) as { class: string }[];
  return plugins.some((p) => p.class === 'io.debezium.connector.jdbc.JdbcSinkConnector');
}

/** Starts the worker unless it runs; waits until its REST API answers with the JDBC sink loaded. */
export async function connectUp(s: StackSettings, say: Say = () => undefined): Promise<string> {
  const p = connectPaths(s);
  if (pidAlive(readPid(p.pidFile)) && (await connectAnswers(s).catch(() => false))) {
    say(`connect: already running at ${p.url}`);
    return p.url;
  }
  const { libs, plugins } = ensureConnectJars(s, say);
  mkdirSync(p.dir, { recursive: true });
  const props = join(p.dir, 'worker.properties');
  writeFileSync(props, connectWorkerProperties(s, plugins, p.dir));
  // Properties, not YAML: the worker's class path has no YAML parser for log4j.
  const log4j = join(p.dir, 'log4j2.properties');
  writeFileSync(
    log4j,
    [
      'status = warn',
      'appender.console.type = Console',
      'appender.console.name = STDOUT',
      'appender.console.layout.type = PatternLayout',
      'appender.console.layout.pattern = [%d] %p %m (%c)%n',
      'rootLogger.level = WARN',
      'rootLogger.appenderRef.stdout.ref = STDOUT',
      'logger.debezium.name = io.debezium',
      'logger.debezium.level = INFO',
      '',
    ].join('\n'),
  );
  const out = openSync(p.log, 'a');
  const child = spawn(
    process.env.JAVA ?? 'java',
    [
      `-Xmx${s.connectHeapMb}m`,
      '-XX:+UseSerialGC',
      '-Djava.awt.headless=true',
      `-Dlog4j2.configurationFile=${log4j}`,
      '-Dpgbridge.stack=connect',
      '-cp',
      `${libs}/*`,
      'org.apache.kafka.connect.cli.ConnectStandalone',
      props,
    ],
    { detached: true, stdio: ['ignore', out, out], cwd: p.dir },
  );
  if (!child.pid) throw new StackError('connect', 'java did not start (is Java 17+ on PATH?)');
  child.unref();
  writeFileSync(p.pidFile, `${child.pid}\n`);
  const deadline = Date.now() + 180_000;
  while (Date.now() < deadline) {
    if (await connectAnswers(s).catch(() => false)) {
      say(
        `connect: Kafka Connect ${CONNECT_VERSION} (Debezium JDBC sink ${DEBEZIUM_JDBC_VERSION}, Apicurio converter ${APICURIO_CONVERTER_VERSION}) at ${p.url}`,
      );
      return p.url;
    }
    if (!pidAlive(child.pid)) break;
    await sleep(500);
  }
  const lines = existsSync(p.log) ? readFileSync(p.log, 'utf8').split('\n').slice(-30).join('\n') : '';
  throw new StackError('connect', `the worker did not answer at ${p.url}; last lines of ${p.log}:\n${lines}`);
}

/** Stops the worker if it runs. */
export async function connectDown(s: StackSettings): Promise<boolean> {
  const p = connectPaths(s);
  const pid = readPid(p.pidFile);
  const was = pidAlive(pid);
  if (was) {
    process.kill(pid!, 'SIGTERM');
    const deadline = Date.now() + 30_000;
    while (pidAlive(pid) && Date.now() < deadline) await sleep(200);
    if (pidAlive(pid)) process.kill(pid!, 'SIGKILL');
    while (pidAlive(pid)) await sleep(100);
  }
  rmSync(p.pidFile, { force: true });
  return was;
}

/** Creates (or replaces) a connector and waits until its task runs. */
export async function putConnector(s: StackSettings, name: string, config: Record<string, string>): Promise<void> {
  const url = connectPaths(s).url;
  const r = await fetch(`${url}/connectors/${encodeURIComponent(name)}/config`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(config),
  });
  if (!r.ok) throw new StackError('connect', `cannot create connector ${name}: ${r.status} ${await r.text()}`);
  const deadline = Date.now() + 60_000;
  let last = '';
  while (Date.now() < deadline) {
    const st = await fetch(`${url}/connectors/${encodeURIComponent(name)}/status`)
      .then((x) => x.json() as Promise<{ connector: { state: string }; tasks: { state: string; trace?: string }[] }>)
      .catch(() => null);
    last = JSON.stringify(st);
    const failed = st?.tasks.find((t) => t.state === 'FAILED');
    if (failed) throw new StackError('connect', `connector ${name} failed: ${failed.trace?.split('\n').slice(0, 12).join('\n')}`);
    if (st?.connector.state === 'RUNNING' && st.tasks.length > 0 && st.tasks.every((t) => t.state === 'RUNNING')) return;
    await sleep(250);
  }
  throw new StackError('connect', `connector ${name} not running after 60 s: ${last}`);
}

/** The state of a connector's tasks, with the first lines of a failed task's trace. */
export async function connectorTaskErrors(s: StackSettings, name: string): Promise<string[]> {
  const st = (await fetch(`${connectPaths(s).url}/connectors/${encodeURIComponent(name)}/status`).then((x) => x.json())) as {
    tasks: { id: number; state: string; trace?: string }[];
  };
  return st.tasks.filter((t) => t.state === 'FAILED').map((t) => `task ${t.id}: ${t.trace?.split('\n').slice(0, 12).join('\n')}`);
}

export async function deleteConnector(s: StackSettings, name: string): Promise<void> {
  await fetch(`${connectPaths(s).url}/connectors/${encodeURIComponent(name)}`, { method: 'DELETE' }).catch(() => undefined);
}
