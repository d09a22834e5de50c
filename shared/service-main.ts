/**
 * What every service process shares: config loading, HTTP endpoints, SIGTERM/SIGINT drain,
 * and the retry windows around a run (docs/operations.md, "Retry windows"): connection failures are retried for
 * retry.connectionMinutes, other retriable failures for retry.otherMinutes; anything else
 * stops the process with its error.
 */
import type { Server } from 'node:http';
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { Gauge, type Registry } from 'prom-client';
import { loadConfig, type PipelineConfig } from './config.js';
import { PgBridgeError, classifyPgError, errorDetail, errorMessage } from './errors.js';
import { serveHttp, type Probe } from './http.js';
import { isKafkaConnectionError, isKafkaError, isKafkaFenced } from './kafka.js';
import type { Logger } from './log.js';
import { backoff, sleep } from './retry.js';

/** How often a standby instance tries to take over. */
/** A standby tries the replication origin this often: the takeover after a crash waits at most this long for it. */
const STANDBY_POLL_MS = 1_000;

export interface Runnable {
  run(): Promise<void>;
  stop(): Promise<void>;
  readonly ready: boolean;
  /** The run moved data (capture: a group committed to Kafka; apply: a destination commit). */
  readonly progressed: boolean;
}

/** The states /readyz reports, as `pgbridge_service_state{state}` (1 for the current one). */
const STATES = ['starting', 'ready', 'standby', 'retrying', 'stopped'] as const;

/**
 * Gauges every service exports for its supervisor (the alert rules in deploy/monitoring use
 * them): the current state, and while failures are retried, the retry window in force and
 * how much of it is used. Both read at scrape time.
 */
interface RetryView {
  windowS: number;
  /** First failure of the outage being retried, or null. */
  since: number | null;
  /** The run after the last failure ended the outage (it moved data or lasted a minute): the supervisor would reset the window. */
  recovered(): boolean;
}

function serviceGauges(registry: Registry, probe: Probe, retry: RetryView): void {
  new Gauge({
    name: 'pgbridge_service_state',
    help: 'Current state of the service (1 for the state it is in): starting, ready, standby, retrying, stopped',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const now = probe.ready() ? 'ready' : probe.state().split(':')[0];
      for (const st of STATES) this.set({ state: st }, st === now ? 1 : 0);
    },
  });
  new Gauge({
    name: 'pgbridge_retry_window_seconds',
    help: 'Length of the retry window of the failure being retried (retry.connectionMinutes or retry.otherMinutes); 0 when nothing is retried',
    registers: [registry],
    collect() {
      this.set(retry.since === null || retry.recovered() ? 0 : retry.windowS);
    },
  });
  new Gauge({
    name: 'pgbridge_retry_elapsed_seconds',
    help: 'Time since the first failure of the outage being retried; the service stops when it passes pgbridge_retry_window_seconds; 0 when nothing is retried',
    registers: [registry],
    collect() {
      this.set(retry.since === null || retry.recovered() ? 0 : (Date.now() - retry.since) / 1000);
    },
  });
}

/** True when the module at `url` is the script node was started with. */
export function isMainModule(url: string): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  let real = entry;
  try {
    real = realpathSync(entry); // npm's bin links are symlinks
  } catch {
    /* keep the path as given */
  }
  return url === pathToFileURL(real).href || url === pathToFileURL(entry).href;
}

export function argValue(argv: readonly string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  if (i >= 0) return argv[i + 1];
  const eq = argv.find((a) => a.startsWith(`${name}=`));
  return eq?.slice(name.length + 1);
}

/** --metrics-port (or PGBRIDGE_METRICS_PORT) when given, else `fallback`; anything but a port 0–65535 is a config error. */
export function metricsPortArg(argv: readonly string[], fallback: number): number {
  const raw = argValue(argv, '--metrics-port') ?? process.env.PGBRIDGE_METRICS_PORT;
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (raw.trim() === '' || !Number.isInteger(n) || n < 0 || n > 65535)
    throw new PgBridgeError('CONFIG_INVALID', `--metrics-port / PGBRIDGE_METRICS_PORT: expected a port from 0 to 65535, got ${JSON.stringify(raw)}`);
  return n;
}

export function configFromArgs(argv: readonly string[]): PipelineConfig {
  const file = argValue(argv, '--config') ?? process.env.PGBRIDGE_CONFIG;
  if (!file) throw new PgBridgeError('CONFIG_INVALID', 'no config: pass --config <file.yaml> or set PGBRIDGE_CONFIG');
  return loadConfig(file);
}

/**
 * Row values behind an error (a PostgreSQL detail such as `Key (id)=(7) already exists`, the
 * key of a conflict) at debug level only: messages, /readyz and higher levels never carry them.
 */
export function logRowValues(log: Logger, err: unknown): void {
  const cause = (err as { cause?: unknown })?.cause;
  const detail = errorDetail(err) ?? errorDetail(cause);
  const sensitive = err instanceof PgBridgeError ? err.sensitive : {};
  if (detail === undefined && Object.keys(sensitive).length === 0) return;
  log.debug({ ...sensitive, ...(detail === undefined ? {} : { detail }) }, 'row values of the error above');
}

/**
 * Node options for a service process. Node 24's V8 lets the young generation grow to 3 × 32 MiB
 * semi-spaces under allocation pressure: capture and apply then peaked near 350 MiB RSS
 * (Node 20: about 180). 16 MiB semi-spaces bring them to about 250 MiB at the same CPU per
 * row (bench/stages, 100k single-row transactions). It must be given at start (the flag set
 * from inside has no effect): `pgbridge run`, the benchmarks and the image pass it.
 */
export const SERVICE_NODE_ARGS: readonly string[] = ['--max-semi-space-size=16'];

/** Kafka and network errors that go away when the other side comes back. */
export function isConnectionError(err: unknown): boolean {
  if (err instanceof PgBridgeError) return err.retriable && (err.code === 'CONNECTION' || err.code === 'REGISTRY');
  if (isKafkaConnectionError(err)) return true;
  return classifyPgError(err).connection;
}

export function isRetriable(err: unknown): boolean {
  if (err instanceof PgBridgeError) return err.retriable;
  if (isConnectionError(err)) return true;
  // A run restarts from durable positions (slot, progress row), so any Kafka failure may be
  // retried, except being fenced: another instance with our transactional id has taken over.
  if (isKafkaError(err)) return !isKafkaFenced(err);
  if (/replication stream ended/.test(errorMessage(err))) return true;
  return classifyPgError(err).retriable;
}

/**
 * Runs `make()` instances one after another until SIGTERM, restarting after retriable
 * failures within the retry windows. Exit code 0 after a drain, 1 after a fatal error.
 */
export async function superviseService(opts: {
  name: string;
  cfg: PipelineConfig;
  log: Logger;
  registry: Registry;
  metricsHost: string;
  metricsPort: number;
  make: () => Runnable;
}): Promise<number> {
  const { log, cfg } = opts;
  let current: Runnable | null = null;
  let stopping = false;
  let lastState = 'starting';
  const probe: Probe = {
    ready: () => !!current?.ready,
    state: () => (current?.ready ? 'ready' : lastState),
  };
  let runStartedAt = Date.now();
  const retry: RetryView = {
    windowS: 0,
    since: null,
    recovered: () => !!current && (current.progressed || Date.now() - runStartedAt > 60_000),
  };
  serviceGauges(opts.registry, probe, retry);
  let server: Server | null = null;
  try {
    server = await serveHttp(opts.metricsHost, opts.metricsPort, opts.registry, probe);
    const addr = server.address();
    log.info({ metrics: typeof addr === 'object' && addr ? `http://${addr.address}:${addr.port}/metrics` : addr }, `${opts.name} starting`);
  } catch (err) {
    log.error({ err: errorMessage(err) }, `cannot listen on ${opts.metricsHost}:${opts.metricsPort} for /metrics`);
    return 1;
  }
  const onSignal = (sig: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal: sig }, 'draining');
    void current?.stop();
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));

  let firstFailureAt: number | null = null;
  let standbyLoggedAt = 0;
  let attempt = 0;
  let code = 0;
  while (!stopping) {
    const run = opts.make();
    current = run;
    const startedAt = Date.now();
    runStartedAt = startedAt;
    try {
      await run.run();
      if (stopping) break;
    } catch (err) {
      if (stopping) break;
      const e = err as Error;
      const details = err instanceof PgBridgeError ? { code: err.code, ...err.details } : { errorName: e?.name };
      if (!isRetriable(err)) {
        lastState = `stopped: ${errorMessage(err)}`;
        log.fatal({ err: errorMessage(err), ...details }, `${opts.name} stopped`);
        logRowValues(log, err);
        code = 1;
        break;
      }
      if (err instanceof PgBridgeError && err.code === 'STANDBY') {
        // Another instance does the work: wait as its standby, without a retry window, and
        // say so once (then every ten minutes) rather than at every attempt.
        if (!lastState.startsWith('standby') || Date.now() - standbyLoggedAt > 600_000) {
          log.info({ err: errorMessage(err), ...details }, `${opts.name} is on standby`);
          standbyLoggedAt = Date.now();
        }
        lastState = `standby: ${errorMessage(err)}`;
        firstFailureAt = null;
        attempt = 0;
        retry.since = null;
        await sleep(STANDBY_POLL_MS);
        continue;
      }
      // A run that moved data ended the outage, so its failure starts a new window. Without
      // this, separate incidents minutes apart (a database restart, later a broker restart)
      // added up to one window and stopped the service although each was short. A run that
      // lasted a while resets it too.
      if (run.progressed || Date.now() - startedAt > 60_000) {
        firstFailureAt = null;
        attempt = 0;
        retry.since = null;
      }
      firstFailureAt ??= Date.now();
      attempt++;
      const windowMs = (isConnectionError(err) ? cfg.retry.connectionMinutes : cfg.retry.otherMinutes) * 60_000;
      retry.windowS = windowMs / 1000;
      retry.since = firstFailureAt;
      if (Date.now() - firstFailureAt > windowMs) {
        lastState = `stopped: ${errorMessage(err)}`;
        log.fatal(
          { err: errorMessage(err), ...details, retriedForMs: Date.now() - firstFailureAt },
          `${opts.name} stopped: retry window of ${windowMs / 60_000} min passed`,
        );
        code = 1;
        break;
      }
      lastState = `retrying: ${errorMessage(err)}`;
      const wait = backoff(attempt, 500, 15_000);
      log.warn({ err: errorMessage(err), ...details, attempt, retryInMs: wait }, `${opts.name} failed, restarting`);
      logRowValues(log, err);
      await sleep(wait);
    }
  }
  current = null;
  await new Promise<void>((r) => server!.close(() => r()));
  log.info(`${opts.name} exited`);
  return code;
}
