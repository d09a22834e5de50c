/**
 * pgbridge under test: a pipeline of its own per run (a unique pipeline name scopes slots,
 * publications, origins, topics, consumer groups and cdc rows, so runs never touch the tests
 * sharing the stack), its services as child processes (the same entry points the pods use),
 * their peak RSS, and its release.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { release, setup } from '../services/cli/setup.js';
import { parseConfig, type PipelineConfig, type PipelineConfigInput } from '../shared/config.js';
import { kafkaClient } from '../shared/kafka.js';
import { createLogger } from '../shared/log.js';
import { SERVICE_NODE_ARGS } from '../shared/service-main.js';
import { endpoint, endpoints, sleep, type Side } from './env.js';
import { stackConnections } from '../infra/stack/settings.js';

const distRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
/** PGBRIDGE_CPU_PROF=dir: every spawned pgbridge process writes a V8 CPU profile there. */
const profileArgs = (): string[] => (process.env.PGBRIDGE_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.PGBRIDGE_CPU_PROF}`] : []);
export const benchLog = createLogger('bench', process.env.PGBRIDGE_LOG_LEVEL ?? 'warn');

export interface BridgePipeline {
  readonly cfg: PipelineConfig;
  readonly file: string;
  readonly dir: string;
  /** Config cluster name of each stack side. */
  readonly cluster: Readonly<Record<Side, string>>;
}

/**
 * Writes the pipeline's YAML and runs `setup` (helper tables, publication, slot, origins,
 * topics). The slot exists when this returns: everything written afterwards is captured.
 */
export async function createPipeline(id: string, schema: string, opts: { setup?: boolean } = {}): Promise<BridgePipeline> {
  const cluster = { a: 'a', b: 'b' } as const;
  const input: PipelineConfigInput = {
    pipeline: `bench_${id}`,
    ...stackConnections(endpoints, endpoint('a').database),
    forward: { from: cluster.a, to: cluster.b },
    selection: { schemas: [schema] },
    // Port 0: every service picks a free port, so runs never collide with tests.
    metrics: { basePort: 0 },
    // PGBRIDGE_BENCH_SNAPSHOT_LOADERS=0 loads snapshot chunks on apply's own connection (an A/B of the loaders).
    ...(process.env.PGBRIDGE_BENCH_SNAPSHOT_LOADERS ? { apply: { snapshotLoaders: Number(process.env.PGBRIDGE_BENCH_SNAPSHOT_LOADERS) } } : {}),
  };
  const dir = mkdtempSync(join(tmpdir(), `pgbridge-bench-${id}-`));
  const file = join(dir, 'pipeline.yaml');
  writeFileSync(file, stringify(input));
  const cfg = parseConfig(input, file);
  if (opts.setup !== false) await setup(cfg, benchLog);
  return { cfg, file, dir, cluster };
}

export interface Service {
  readonly name: string;
  readonly child: ChildProcess;
  readonly logFile: string;
  readonly exited: Promise<number>;
  /** Peak resident set size seen so far, in KiB (VmHWM of /proc/<pid>/status). */
  peakKib: number;
}

export type Which = { captures: Side[]; applies: `${Side}-${Side}`[] };

function vmHwmKib(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export class Services {
  private readonly timer: NodeJS.Timeout;
  constructor(readonly list: readonly Service[]) {
    // VmHWM is already a high-water mark; sampling keeps it when a process dies early.
    this.timer = setInterval(() => this.sample(), 250);
  }

  sample(): void {
    for (const s of this.list) s.peakKib = Math.max(s.peakKib, vmHwmKib(s.child.pid));
  }

  /** Throws, with the tail of its log, when a service has exited. */
  check(): void {
    for (const s of this.list) {
      if (s.child.exitCode !== null || s.child.signalCode !== null) {
        const log = tail(s.logFile);
        throw new Error(`${s.name} exited (code ${s.child.exitCode ?? s.child.signalCode}) during the run: ${lastError(log)}\nlast log lines:\n${log}`);
      }
    }
  }

  peakMib(kind: 'capture' | 'apply' | 'sync'): number {
    const kib = Math.max(0, ...this.list.filter((s) => s.name.startsWith(kind)).map((s) => s.peakKib));
    return kib / 1024;
  }

  /** SIGTERM (drain), SIGKILL after 30 s. Returns the exit codes. */
  async stop(): Promise<number[]> {
    this.sample();
    clearInterval(this.timer);
    for (const s of this.list) if (s.child.exitCode === null) s.child.kill('SIGTERM');
    const kill = setTimeout(() => this.list.forEach((s) => s.child.exitCode === null && s.child.kill('SIGKILL')), 30_000);
    const codes = await Promise.all(this.list.map((s) => s.exited));
    clearTimeout(kill);
    return codes;
  }
}

/** The `err` (or `msg`) of the last JSON log line that has one. */
function lastError(log: string): string {
  for (const line of log.split('\n').reverse()) {
    try {
      const o = JSON.parse(line) as { err?: string; msg?: string };
      if (o.err || o.msg) return o.err ?? o.msg!;
    } catch {
      /* not a JSON line */
    }
  }
  return 'no error in its log';
}

function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Spawns the chosen captures and applies: `node dist/services/<svc>/main.js --config … --metrics-port 0`. */
export function startServices(p: BridgePipeline, which: Which): Services {
  const specs = [
    ...which.captures.map((s) => ({ name: `capture-${s}`, script: 'capture/main.js', args: ['--cluster', p.cluster[s]] })),
    ...which.applies.map((d) => {
      const [from, to] = d.split('-') as [Side, Side];
      return { name: `apply-${d}`, script: 'apply/main.js', args: ['--direction', `${p.cluster[from]}-${p.cluster[to]}`] };
    }),
  ];
  const list = specs.map((s): Service => {
    const logFile = join(p.dir, `${s.name}.log`);
    const fd = openSync(logFile, 'a');
    const child = spawn(
      process.execPath,
      [...SERVICE_NODE_ARGS, ...profileArgs(), join(distRoot, 'services', s.script), '--config', p.file, ...s.args, '--metrics-port', '0'],
      {
        stdio: ['ignore', fd, fd],
        env: { ...process.env, PGBRIDGE_LOG_LEVEL: process.env.PGBRIDGE_BENCH_SERVICE_LOG_LEVEL ?? 'warn' },
      },
    );
    closeSync(fd);
    const exited = new Promise<number>((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1))));
    return { name: s.name, child, logFile, exited, peakKib: 0 };
  });
  return new Services(list);
}

/** Spawns `pgbridge sync --config … <args>` as its own process, started like the services (its peak RSS is sampled like theirs). */
export function startSync(p: BridgePipeline, args: readonly string[]): Services {
  const logFile = join(p.dir, 'sync.log');
  const fd = openSync(logFile, 'a');
  const child = spawn(
    process.execPath,
    [...SERVICE_NODE_ARGS, ...profileArgs(), join(distRoot, 'services', 'cli', 'main.js'), 'sync', '--config', p.file, ...args],
    {
      stdio: ['ignore', fd, fd],
      env: { ...process.env, PGBRIDGE_LOG_LEVEL: process.env.PGBRIDGE_BENCH_SERVICE_LOG_LEVEL ?? 'warn' },
    },
  );
  closeSync(fd);
  const exited = new Promise<number>((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1))));
  return new Services([{ name: 'sync', child, logFile, exited, peakKib: 0 }]);
}

/**
 * Watches the direction topics' end offsets: the time at which every watched topic holds
 * `n` messages is about when capture has published the backlog (Kafka transaction markers
 * and heartbeats also take offsets, so it reads slightly early). Diagnostic only.
 */
export function watchPublished(p: BridgePipeline, from: readonly Side[], n: number, t0: number): { stop(): Promise<number | null> } {
  const topics = p.cfg.directions.filter((d) => from.some((s) => p.cluster[s] === d.from)).map((d) => d.topic);
  const admin = kafkaClient(p.cfg, 'bench-watch', benchLog).admin();
  let at: number | null = null;
  let running = true;
  const loop = (async () => {
    try {
      while (running && at === null) {
        const ends = await Promise.all(topics.map(async (t) => (await admin.topicOffsets(t)).reduce((sum, o) => sum + Number(o.high), 0)));
        if (ends.every((e) => e >= n)) at = (performance.now() - t0) / 1000;
        else await sleep(100);
      }
    } finally {
      await admin.close();
    }
  })().catch(() => undefined);
  return {
    async stop() {
      running = false;
      await loop;
      return at;
    },
  };
}

/**
 * `pgbridge release` with topics (slots, publications, origins, this pipeline's rows in the
 * cdc helper tables), then what release leaves behind: the apply consumer groups in Kafka
 * and the topics' subjects in the registry.
 */
export async function releasePipeline(p: BridgePipeline): Promise<void> {
  await release(p.cfg, benchLog, { topics: true });
  const admin = kafkaClient(p.cfg, 'bench-release', benchLog).admin();
  try {
    await admin.deleteGroups(p.cfg.directions.map((d) => `pgbridge-${p.cfg.pipeline}-apply-${d.id}`)).catch(() => undefined);
  } finally {
    await admin.close();
  }
  await deleteSubjects(
    p.cfg.registry.url,
    p.cfg.directions.map((d) => `${d.topic}-`),
  );
  rmSync(p.dir, { recursive: true, force: true });
}

/** Deletes (soft, then permanently) the registry subjects of the pipeline's topics, which release keeps. */
async function deleteSubjects(url: string, prefixes: readonly string[]): Promise<void> {
  const r = await fetch(`${url}/subjects`, { signal: AbortSignal.timeout(5000) });
  if (!r.ok) return;
  const subjects = ((await r.json()) as string[]).filter((s) => prefixes.some((pre) => s.startsWith(pre)));
  for (const s of subjects) {
    const at = `${url}/subjects/${encodeURIComponent(s)}`;
    await fetch(at, { method: 'DELETE', signal: AbortSignal.timeout(5000) }).catch(() => undefined);
    await fetch(`${at}?permanent=true`, { method: 'DELETE', signal: AbortSignal.timeout(5000) }).catch(() => undefined);
  }
}
