/**
 * The project runs on Node 24 (active LTS) wherever its scripts run it: the test process,
 * the `node` that npm scripts find first on PATH (the services and the CLI are started that
 * way), package.json's engines and the Dockerfile's base image all say the same version.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { engines: { node: string }; devDependencies: Record<string, string> };

describe('Node runtime', () => {
  it('the tests run on Node 24', () => {
    console.log(`[runtime] process.version ${process.version} (${process.execPath})`);
    expect(process.version).toMatch(/^v24\./);
  });

  it('`node --version` on the PATH of npm scripts prints v24 too', () => {
    const r = spawnSync('node', ['--version'], { encoding: 'utf8' });
    expect(r.error).toBeUndefined();
    console.log(`[runtime] node --version: ${r.stdout.trim()}`);
    expect(r.stdout.trim()).toMatch(/^v24\./);
  });

  it('the pinned `node` package, engines and the Dockerfile name the same Node 24', () => {
    const pinned = pkg.devDependencies.node;
    expect(pinned).toMatch(/^24\.\d+\.\d+$/);
    expect(process.version).toBe(`v${pinned}`);
    expect(pkg.engines.node).toMatch(/^>=24\./);
    const dockerfile = readFileSync(join(ROOT, 'infra/Dockerfile'), 'utf8');
    expect(dockerfile).toContain(`ARG NODE_VERSION=${pinned}`);
    const froms = [...dockerfile.matchAll(/^FROM\s+(\S+)/gm)].map((m) => m[1]);
    expect(froms.length).toBeGreaterThan(0);
    for (const f of froms) expect(f).toBe('node:${NODE_VERSION}-bookworm-slim');
  });
});
