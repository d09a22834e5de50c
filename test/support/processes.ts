/**
 * The real service processes for fault tests: a pipeline config written to a temp YAML file,
 * `node dist/services/<service>/main.js` spawned as a child with its own metrics port, its
 * output kept for failure messages, and the helpers a fault test needs (kill with a real
 * signal, wait until /readyz answers 200, wait for the exit, read a metric).
 *
 * Runs the built code: `npx tsc -p tsconfig.json` first.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { SERVICE_NODE_ARGS } from '../../shared/service-main.js';
import { loadConfig, type PipelineConfig, type PipelineConfigInput } from '../../shared/config.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const OUTPUT_LIMIT = 8 * 1024 * 1024;

/** Every child started by this module, so a failing test file never leaves one running. */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

/** The parsed config back in the file form shared/config.ts reads (same keys, no derived ones). */
export function configInput(cfg: PipelineConfig): PipelineConfigInput {
  const { clusters, clusterNames: _names, directions: _dirs, kafka, ...rest } = cfg;
  const files: PipelineConfigInput['clusters'] = {};
  for (const [name, { name: _n, roles, ...c }] of Object.entries(clusters)) files[name] = { ...c, ...roles };
  const { ssl, sasl, ...kafkaRest } = kafka;
  const kafkaFile = { ...kafkaRest, ssl: ssl ?? false, ...(sasl ? { sasl } : {}) };
  // JSON round trip drops undefined optionals (forward, deadLetterTopic, password) and unfreezes.
  return JSON.parse(JSON.stringify({ ...rest, kafka: kafkaFile, clusters: files })) as PipelineConfigInput;
}

export interface ConfigFile {
  readonly path: string;
  remove(): void;
}

/** Writes `cfg` to a temp YAML file and checks that it loads back to the same config. */
export function writeConfigFile(cfg: PipelineConfig): ConfigFile {
  const dir = mkdtempSync(join(tmpdir(), `pgbridge-${cfg.pipeline}-`));
  const path = join(dir, 'pipeline.yaml');
  writeFileSync(path, `# written by test/support/processes.ts\n${stringify(configInput(cfg))}`);
  const back = loadConfig(path);
  if (JSON.stringify(back) !== JSON.stringify(cfg)) throw new Error(`config written to ${path} does not load back to the same config`);
  return { path, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A TCP port that was free a moment ago (the service binds it right after). */
export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => res(port));
    });
  });
}

/**
 * The first of `n` consecutive ports that were free a moment ago, from 20000 to 29999 (below
 * Linux's ephemeral range, where an outgoing connection could take one before the server binds).
 */
export async function freePorts(n: number): Promise<number> {
  const free = (port: number) =>
    new Promise<boolean>((res) => {
      const srv = createServer()
        .once('error', () => res(false))
        .listen(port, '127.0.0.1', () => srv.close(() => res(true)));
    });
  for (;;) {
    const base = 20000 + Math.floor(Math.random() * (10000 - n));
    if ((await Promise.all(Array.from({ length: n }, (_, i) => free(base + i)))).every(Boolean)) return base;
  }
}

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/**
 * One service (capture of a cluster or apply of a direction). start() spawns a new child each
 * time (a restart after a kill); the metrics port stays the same across restarts.
 */
export class ServiceProcess {
  private child: ChildProcess | null = null;
  private exited: Promise<Exit> = Promise.resolve({ code: null, signal: null });
  private out = '';
  /** Children started so far. */
  starts = 0;
  /** Where the output of the current child begins in `out`. */
  private lastStartAt = 0;

  private constructor(
    readonly name: string,
    private readonly args: readonly string[],
    readonly port: number,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  static async capture(config: ConfigFile, cluster: string, env: NodeJS.ProcessEnv = {}): Promise<ServiceProcess> {
    return new ServiceProcess(`capture-${cluster}`, ['dist/services/capture/main.js', '--config', config.path, '--cluster', cluster], await freePort(), env);
  }

  static async apply(config: ConfigFile, direction: string, env: NodeJS.ProcessEnv = {}): Promise<ServiceProcess> {
    return new ServiceProcess(`apply-${direction}`, ['dist/services/apply/main.js', '--config', config.path, '--direction', direction], await freePort(), env);
  }

  get running(): boolean {
    return this.child !== null;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Spawns the process. Throws if the previous child is still running. */
  start(): this {
    if (this.child) throw new Error(`${this.name} is already running (pid ${this.child.pid})`);
    const script = join(ROOT, this.args[0]!);
    if (!existsSync(script)) throw new Error(`${script} is missing: run npx tsc -p tsconfig.json first`);
    const child = spawn(process.execPath, [...SERVICE_NODE_ARGS, script, ...this.args.slice(1), '--metrics-port', String(this.port)], {
      cwd: ROOT,
      env: { ...process.env, PGBRIDGE_LOG_LEVEL: 'info', ...this.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.starts++;
    this.lastStartAt = this.out.length;
    const n = this.starts;
    this.append(`--- ${this.name} start #${n} pid ${child.pid}\n`);
    child.stdout!.on('data', (b: Buffer) => this.append(b.toString()));
    child.stderr!.on('data', (b: Buffer) => this.append(b.toString()));
    this.child = child;
    live.add(child);
    this.exited = new Promise<Exit>((res) => {
      child.once('exit', (code, signal) => {
        live.delete(child);
        if (this.child === child) this.child = null;
        this.append(`--- ${this.name} #${n} exited code=${code} signal=${signal}\n`);
        res({ code, signal });
      });
    });
    return this;
  }

  /** Sends a real signal to the process (no-op when it is not running). */
  kill(signal: NodeJS.Signals): void {
    this.child?.kill(signal);
  }

  /** Resolves with how the current (or last) child ended. */
  async waitExit(timeoutMs = 30_000): Promise<Exit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, rej) => {
      timer = setTimeout(() => rej(new Error(`${this.name} did not exit within ${timeoutMs} ms\n${this.tail()}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGKILL and wait for the exit. */
  async crash(): Promise<Exit> {
    this.kill('SIGKILL');
    return this.waitExit(10_000);
  }

  /** Polls /readyz until it answers 200. Fails early when the process exits. */
  async waitReady(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = 'no answer';
    while (Date.now() < deadline) {
      if (!this.child) throw new Error(`${this.name} exited before it was ready (last /readyz: ${last})\n${this.tail()}`);
      try {
        const r = await fetch(`http://127.0.0.1:${this.port}/readyz`, { signal: AbortSignal.timeout(2000) });
        last = `${r.status} ${(await r.text()).trim()}`;
        if (r.status === 200) return;
      } catch (err) {
        last = String(err);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${this.name} not ready after ${timeoutMs} ms (last /readyz: ${last})\n${this.tail()}`);
  }

  /** Sum of the samples of a Prometheus metric whose labels include `labels` (0 when absent). */
  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    const r = await fetch(`http://127.0.0.1:${this.port}/metrics`, { signal: AbortSignal.timeout(2000) });
    const text = await r.text();
    let sum = 0;
    for (const line of text.split('\n')) {
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)/.exec(line);
      if (!m || m[1] !== name) continue;
      const have = Object.fromEntries([...(m[3] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
      if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[4]);
    }
    return sum;
  }

  /** Everything the children printed (all starts), for failure messages. */
  output(): string {
    return this.out;
  }

  /** What the current (or last) child printed. */
  lastOutput(): string {
    return this.out.slice(this.lastStartAt);
  }

  tail(chars = 6000): string {
    return this.out.length > chars ? `…${this.out.slice(-chars)}` : this.out;
  }

  /** SIGTERM, then SIGKILL if it does not exit in time. For cleanup. */
  async stop(timeoutMs = 15_000): Promise<Exit | null> {
    if (!this.child) return null;
    this.kill('SIGTERM');
    try {
      return await this.waitExit(timeoutMs);
    } catch {
      this.kill('SIGKILL');
      return this.waitExit(5_000);
    }
  }

  private append(s: string): void {
    this.out += s;
    if (this.out.length > OUTPUT_LIMIT) this.out = this.out.slice(-OUTPUT_LIMIT / 2);
  }
}
