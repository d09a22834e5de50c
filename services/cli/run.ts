/**
 * `pgbridge run`: the four services of a pipeline as child processes on one machine (the
 * same entry points the pods use), with a live status line. SIGINT/SIGTERM drain them all.
 * If one service stops for good (exit code not 0), the others are stopped too.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { metricsPort, type PipelineConfig } from '../../shared/config.js';
import { SERVICE_NODE_ARGS } from '../../shared/service-main.js';
import { scrapeMetrics } from './probe.js';

const distServices = join(dirname(fileURLToPath(import.meta.url)), '..');

export interface ServiceProcess {
  readonly name: string;
  readonly port: number;
  readonly child: ChildProcess;
  readonly exited: Promise<number>;
}

export interface RunOptions {
  /** Where children's JSON logs go (default: inherit stderr). */
  readonly logFile?: number;
  readonly env?: NodeJS.ProcessEnv;
}

export function spawnServices(cfgFile: string, cfg: PipelineConfig, opts: RunOptions = {}): ServiceProcess[] {
  const specs: { name: string; script: string; args: string[]; port: number }[] = [
    ...cfg.clusterNames.map((c) => ({ name: `capture-${c}`, script: 'capture/main.js', args: ['--cluster', c], port: metricsPort(cfg, { capture: c }) })),
    ...cfg.directions.map((d) => ({ name: `apply-${d.id}`, script: 'apply/main.js', args: ['--direction', d.id], port: metricsPort(cfg, { apply: d.id }) })),
  ];
  return specs.map((s) => {
    const out = opts.logFile ?? 'inherit';
    const child = spawn(process.execPath, [...SERVICE_NODE_ARGS, join(distServices, s.script), '--config', cfgFile, ...s.args], {
      stdio: ['ignore', out, out],
      env: { ...process.env, ...opts.env },
    });
    const exited = new Promise<number>((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1))));
    return { name: s.name, port: s.port, child, exited };
  });
}

export async function stopServices(procs: ServiceProcess[], timeoutMs = 30_000): Promise<number[]> {
  for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGTERM');
  const timer = setTimeout(() => procs.forEach((p) => p.child.exitCode === null && p.child.kill('SIGKILL')), timeoutMs);
  const codes = await Promise.all(procs.map((p) => p.exited));
  clearTimeout(timer);
  return codes;
}

/** One line: events published per capture, rows applied and lag per direction. */
export async function statusLine(cfg: PipelineConfig): Promise<string> {
  const host = cfg.metrics.host;
  const parts: string[] = [];
  for (const c of cfg.clusterNames) {
    const m = await scrapeMetrics(host, metricsPort(cfg, { capture: c }));
    parts.push(`capture ${c}: ${m ? `${m.get('pgbridge_capture_events_total') ?? 0} ev` : 'down'}`);
  }
  for (const d of cfg.directions) {
    const m = await scrapeMetrics(host, metricsPort(cfg, { apply: d.id }));
    const v = (name: string): number => m?.get(name) ?? 0;
    parts.push(
      `apply ${d.from}→${d.to}: ${m ? `${v('pgbridge_apply_rows_total')} rows, lag ${v('pgbridge_apply_lag_seconds').toFixed(1)} s, ${v('pgbridge_apply_conflicts_total')} conflicts` : 'down'}`,
    );
  }
  return parts.join(' | ');
}

/** Runs until a signal or a service failure. Returns the exit code for the CLI. */
export async function runPipeline(cfgFile: string, cfg: PipelineConfig): Promise<number> {
  const procs = spawnServices(cfgFile, cfg);
  let stopping = false;
  const tty = process.stdout.isTTY;
  const timer = setInterval(
    () => {
      void statusLine(cfg).then((l) => {
        if (!stopping) process.stdout.write(tty ? `\r\x1b[K${l}` : `${l}\n`);
      });
    },
    tty ? 1000 : 10_000,
  );
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    clearInterval(timer);
    process.stdout.write('\nstopping services…\n');
    void stopServices(procs);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  const first = await Promise.race(procs.map((p, i) => p.exited.then((code) => ({ code, i }))));
  if (!stopping) {
    process.stdout.write(`\n${procs[first.i]!.name} exited with code ${first.code}; stopping the others\n`);
    stop();
  }
  const codes = await Promise.all(procs.map((p) => p.exited));
  clearInterval(timer);
  // 0 only when every service drained cleanly.
  return codes.some((c) => c !== 0) ? 1 : 0;
}
