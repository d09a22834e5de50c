/**
 * infra/Dockerfile without Docker: the runtime stage is laid out in a temporary folder as the
 * image would have it (its COPY lines from the project and from the build stage's `dist/`,
 * its `npm` RUN lines run there, its ENV set), and then its entry command and the commands of
 * deploy/kubernetes run from that folder: the CLI's help (the image's CMD), `setup` (the Job),
 * and capture and apply until /readyz and /healthz answer and SIGTERM ends them with code 0.
 * So the production dependencies alone start every service, on the Node of the image.
 *
 * Not emulated: the base image itself (Node is the project's Node 24, the same version), the
 * apt-get line (the host's PostgreSQL client stands in for it) and `USER node`.
 */
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { freePort, writeConfigFile, type ConfigFile } from '../support/processes.js';
import { tablesPipeline, type TablesPipeline } from '../support/services.js';
import { waitUntil } from '../support/pipeline.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

interface Stage {
  env: Record<string, string>;
  workdir: string;
  copies: { from: string | null; src: string; dest: string }[];
  runs: string[];
  cmd: string[];
}

/** The last stage of the Dockerfile (the runtime image), its instructions joined across `\` lines. */
function runtimeStage(): Stage {
  const text = readFileSync(join(ROOT, 'infra/Dockerfile'), 'utf8').replace(/\\\n\s*/g, ' ');
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const args = Object.fromEntries(lines.filter((l) => l.startsWith('ARG ')).map((l) => l.slice(4).split('=') as [string, string]));
  const last = lines
    .map((l, i) => (l.startsWith('FROM ') ? i : -1))
    .filter((i) => i >= 0)
    .pop()!;
  const stage: Stage = { env: {}, workdir: '/', copies: [], runs: [], cmd: [] };
  expect(lines[last]!.replace(/\$\{(\w+)\}/g, (_, k: string) => args[k] ?? '')).toBe(`FROM node:${args.NODE_VERSION}-bookworm-slim`);
  for (const l of lines.slice(last + 1)) {
    const [op, ...rest] = l.split(/\s+/);
    const arg = rest.join(' ');
    if (op === 'ENV') {
      const [k, v] = arg.split(/=(.*)/s) as [string, string];
      stage.env[k] = v;
    } else if (op === 'WORKDIR') stage.workdir = arg;
    else if (op === 'COPY') {
      const from = /^--from=(\S+)\s+/.exec(arg);
      const [src, dest] = arg.replace(/^--from=\S+\s+/, '').split(/\s+/) as [string, string];
      stage.copies.push({ from: from ? from[1]! : null, src, dest });
    } else if (op === 'RUN') stage.runs.push(arg);
    else if (op === 'CMD') stage.cmd = JSON.parse(arg) as string[];
    else if (op !== 'USER') throw new Error(`Dockerfile: the test does not know ${op} (${l})`);
  }
  return stage;
}

describe('the image without Docker (infra/Dockerfile laid out, its commands run)', () => {
  const root = mkdtempSync(join(tmpdir(), 'pgbridge-image-'));
  const stage = runtimeStage();
  const app = join(root, stage.workdir);
  // The image's environment: its ENV lines over a plain PATH with the image's Node first.
  const env = { PATH: `${dirname(process.execPath)}:/usr/local/bin:/usr/bin:/bin`, HOME: root, ...stage.env } as NodeJS.ProcessEnv;
  let p: TablesPipeline | undefined;
  let config: ConfigFile | undefined;
  afterAll(async () => {
    config?.remove();
    await p?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('lays out the runtime stage: production dependencies only, the compiled code and the schemas', () => {
    for (const c of stage.copies) {
      // The build stage's /app/dist is what `npx tsc -p tsconfig.json` made here (the same command).
      const from = c.from === 'build' ? join(ROOT, c.src.replace(/^\/app\//, '')) : join(ROOT, c.src);
      const dest = join(app, c.dest);
      if (c.src.includes('*')) {
        const re = new RegExp(`^${c.src.replace('.', '\\.').replace('*', '.*')}$`);
        for (const f of readdirSync(ROOT).filter((x) => re.test(x))) cpSync(join(ROOT, f), join(dest, f));
      } else cpSync(from, dest, { recursive: true });
    }
    const npm = stage.runs.filter((r) => r.startsWith('npm '));
    expect(npm.length, 'npm RUN lines').toBeGreaterThan(0);
    // Every other RUN line is the PostgreSQL client for sync, which the host stands in for.
    expect(stage.runs.filter((r) => !r.startsWith('npm ')).every((r) => /apt-get install .*postgresql-client/.test(r))).toBe(true);
    for (const r of npm) {
      // Its own npm cache, so that `npm cache clean` cleans nothing of the developer's.
      const x = spawnSync('bash', ['-c', r], {
        cwd: app,
        env: { ...process.env, ...stage.env, npm_config_cache: join(root, '.npm-cache') },
        encoding: 'utf8',
        timeout: 300_000,
      });
      expect(x.status, `${r}\n${x.stdout}${x.stderr}`).toBe(0);
    }
    expect(existsSync(join(app, 'node_modules/pg'))).toBe(true);
    expect(existsSync(join(app, 'node_modules/typescript')), 'a dev dependency in the image').toBe(false);
    expect(existsSync(join(app, 'node_modules/vitest'))).toBe(false);
    expect(existsSync(join(app, 'schemas/control.avsc'))).toBe(true);
  }, 300_000);

  it('the entry command (CMD) runs: the CLI lists its commands', () => {
    expect(stage.cmd[0]).toBe('node');
    const r = spawnSync(process.execPath, stage.cmd.slice(1), { cwd: app, env, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    for (const c of ['setup', 'sync', 'run', 'status']) expect(r.stdout).toContain(c);
  });

  it("the Job's setup and every service of deploy/kubernetes start from the image", async () => {
    p = await tablesPipeline('img', (s) => `CREATE TABLE ${s}.t (id int PRIMARY KEY, v text);`);
    config = writeConfigFile(p.cfg);
    const manifests = parseAllDocuments(readFileSync(join(ROOT, 'deploy/kubernetes/services.yaml'), 'utf8')).map((d) => d.toJS() as Record<string, any>);
    const job = parseAllDocuments(readFileSync(join(ROOT, 'deploy/kubernetes/setup-sync-job.yaml'), 'utf8'))[0]!.toJS() as Record<string, any>;
    const swap = (args: string[], port: number): string[] =>
      args.map((a, i) => (args[i - 1] === '--config' ? config!.path : args[i - 1] === '--metrics-port' ? String(port) : a));

    const setupArgs = swap(job.spec.template.spec.initContainers[0].args as string[], 0);
    const setup = spawnSync(process.execPath, setupArgs, { cwd: app, env, encoding: 'utf8', timeout: 120_000 });
    expect(setup.status, `${setupArgs.join(' ')}\n${setup.stdout}${setup.stderr}`).toBe(0);

    const deployments = manifests.filter((d) => d.kind === 'Deployment');
    expect(deployments).toHaveLength(4);
    for (const d of deployments) {
      const c = d.spec.template.spec.containers[0];
      const port = await freePort();
      const args = swap(c.args as string[], port);
      let out = '';
      const child = spawn(c.command[0] === 'node' ? process.execPath : c.command[0], args, {
        cwd: app,
        env: { ...env, PGBRIDGE_LOG_LEVEL: 'info' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
      child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      try {
        const probe = c.readinessProbe.httpGet.path as string;
        await waitUntil(
          `${d.metadata.name} ready on ${probe}`,
          async () => (await fetch(`http://127.0.0.1:${port}${probe}`)).status === 200,
          60_000,
          200,
        ).catch((err: Error) => {
          throw new Error(`${err.message}\n${out.slice(-3000)}`);
        });
        expect((await fetch(`http://127.0.0.1:${port}${c.livenessProbe.httpGet.path}`)).status).toBe(200);
        expect(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()).toMatch(/^pgbridge_service_state\{[^}]*state="ready"[^}]*\} 1$/m);
      } finally {
        child.kill('SIGTERM');
      }
      expect(await exited, `${d.metadata.name} exit code after SIGTERM\n${out.slice(-2000)}`).toBe(0);
    }
  }, 300_000);
});
