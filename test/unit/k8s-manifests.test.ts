/**
 * deploy/kubernetes against the Kubernetes API schemas and against what pgbridge needs.
 *
 * Schemas: every object is validated with `kubernetes-models` (the Kubernetes OpenAPI schemas
 * as JSON-schema validators, from npm); and, since those allow unknown fields, every object is
 * also type-checked by TypeScript as a literal of the package's declared type, which rejects a
 * misspelt or misplaced field at any depth (what `kubeconform -strict` does).
 * pgbridge: the four services with their arguments, probes on /readyz and /healthz at the
 * metrics port, the config from the ConfigMap (it parses with every passwordEnv set from the
 * Secret), a standby apply, memory requests at the measured peak RSS, and the setup/sync Job.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments, parse } from 'yaml';
import { parseConfig } from '../../shared/config.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const DIR = join(ROOT, 'deploy/kubernetes');

type Obj = Record<string, any>;
const docs: Obj[] = readdirSync(DIR)
  .filter((f) => f.endsWith('.yaml'))
  .sort()
  .flatMap((f) =>
    parseAllDocuments(readFileSync(join(DIR, f), 'utf8'))
      .map((d) => {
        if (d.errors.length) throw new Error(`${f}: ${d.errors[0]!.message}`);
        return d.toJS() as Obj;
      })
      .filter((d) => d !== null),
  );
const byKind = (kind: string): Obj[] => docs.filter((d) => d.kind === kind);
const named = (kind: string, name: string): Obj => {
  const d = docs.find((x) => x.kind === kind && x.metadata?.name === name);
  if (!d) throw new Error(`no ${kind} ${name} in deploy/kubernetes`);
  return d;
};

/** kubernetes-models' module of an object: kubernetes-models/<group/version or v1>/<Kind>. */
const modelPath = (d: Obj): string => `kubernetes-models/${d.apiVersion}/${d.kind}`;

function mib(q: string): number {
  const m = /^(\d+)(Mi|Gi)$/.exec(q);
  if (!m) throw new Error(`memory quantity ${q} is not in Mi or Gi`);
  return Number(m[1]) * (m[2] === 'Gi' ? 1024 : 1);
}

/** Runs tsc on a file that declares each object as a literal of its kubernetes-models type. */
function typeCheck(objects: Obj[], name: string): { code: number | null; out: string } {
  // Under node_modules so that the package resolves; removed afterwards.
  const dir = join(ROOT, 'node_modules/.cache/pgbridge-k8s-check');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${name}.ts`);
  const imports = [...new Set(objects.map(modelPath))].map((p, i) => `import type { I${objects.find((o) => modelPath(o) === p)!.kind} as T${i} } from '${p}';`);
  const typeOf = (o: Obj) => `T${[...new Set(objects.map(modelPath))].indexOf(modelPath(o))}`;
  writeFileSync(file, `${imports.join('\n')}\n${objects.map((o, i) => `export const o${i}: ${typeOf(o)} = ${JSON.stringify(o, null, 1)};`).join('\n')}\n`);
  try {
    const r = spawnSync(
      join(ROOT, 'node_modules/.bin/tsc'),
      ['--noEmit', '--strict', '--skipLibCheck', '--target', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext', file],
      { encoding: 'utf8', cwd: ROOT },
    );
    return { code: r.status, out: `${r.stdout}${r.stderr}` };
  } finally {
    rmSync(file, { force: true });
  }
}

describe('Kubernetes manifests (deploy/kubernetes)', () => {
  it('every object is valid against the Kubernetes schemas (kubernetes-models)', async () => {
    expect(docs.length).toBeGreaterThanOrEqual(9);
    for (const d of docs) {
      const mod = (await import(modelPath(d))) as Record<string, new (data: Obj) => { validate(): void }>;
      const Model = mod[d.kind];
      expect(Model, `${d.apiVersion} ${d.kind} is a Kubernetes kind`).toBeDefined();
      expect(() => new Model!(d).validate(), `${d.kind} ${d.metadata?.name}`).not.toThrow();
    }
  });

  it('no object has a field its Kubernetes type does not have (strict, through the TypeScript declarations)', () => {
    const ok = typeCheck(docs, 'manifests');
    expect(ok.code, ok.out).toBe(0);
    // The check itself rejects a misspelt field deep inside a Deployment, and a wrong type.
    const typo = structuredClone(named('Deployment', 'pgbridge-apply-a-b'));
    typo.spec.template.spec.containers[0].readinessProbe.httpGet.paht = '/readyz';
    const wrong = structuredClone(named('Deployment', 'pgbridge-capture-a'));
    wrong.spec.replicas = 'one';
    const bad = typeCheck([typo, wrong], 'negative');
    expect(bad.code).not.toBe(0);
    expect(bad.out).toMatch(/'"paht"' does not exist in type 'IHTTPGetAction'/);
    expect(bad.out).toMatch(/Type 'string' is not assignable to type 'number'/);
  }, 120_000);

  it('one Deployment per service, with its arguments, the probes, the ConfigMap and the Secret', () => {
    const services: [string, string[], number][] = [
      ['pgbridge-capture-a', ['dist/services/capture/main.js', '--cluster', 'a'], 1],
      ['pgbridge-capture-b', ['dist/services/capture/main.js', '--cluster', 'b'], 1],
      ['pgbridge-apply-a-b', ['dist/services/apply/main.js', '--direction', 'a-b'], 2],
      ['pgbridge-apply-b-a', ['dist/services/apply/main.js', '--direction', 'b-a'], 2],
    ];
    expect(
      byKind('Deployment')
        .map((d) => d.metadata.name)
        .sort(),
    ).toEqual(services.map(([n]) => n).sort());
    for (const [name, args, replicas] of services) {
      const d = named('Deployment', name);
      // The apply Deployments run an active instance and a standby.
      expect(d.spec.replicas, name).toBe(replicas);
      const pod = d.spec.template.spec;
      expect(pod.containers).toHaveLength(1);
      const c = pod.containers[0];
      expect(c.command).toEqual(['node']);
      expect(existsSync(join(ROOT, c.args[0])), `${c.args[0]} is built`).toBe(true);
      const flag = (f: string) => c.args[c.args.indexOf(f) + 1];
      expect([c.args[0], args[1], flag(args[1]!)]).toEqual(args);
      const port = c.ports.find((p: Obj) => p.name === 'metrics');
      expect(String(port.containerPort)).toBe(flag('--metrics-port'));
      expect(c.readinessProbe.httpGet).toEqual({ path: replicas > 1 ? '/readyz?standby=ready' : '/readyz', port: 'metrics' });
      expect(c.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
      expect(c.envFrom).toEqual([{ secretRef: { name: 'pgbridge-secrets' } }]);
      const mount = c.volumeMounts.find((m: Obj) => m.mountPath === dirname(flag('--config')));
      const volume = pod.volumes.find((v: Obj) => v.name === mount.name);
      expect(volume.configMap.name).toBe('pgbridge-config');
      expect(named('ConfigMap', 'pgbridge-config').data[basename(flag('--config'))]).toBeDefined();
      expect(d.spec.selector.matchLabels).toEqual(
        Object.fromEntries(Object.entries(d.spec.template.metadata.labels).filter(([k]) => k in d.spec.selector.matchLabels)),
      );
    }
    // No two Deployments select the same pods.
    const selectors = byKind('Deployment').map((d) => JSON.stringify(d.spec.selector.matchLabels));
    expect(new Set(selectors).size).toBe(selectors.length);
  });

  it("the ConfigMap's pipeline parses, with every password from the Secret, and serves metrics on the pod address", () => {
    const secret = named('Secret', 'pgbridge-secrets').stringData as Record<string, string>;
    const text = named('ConfigMap', 'pgbridge-config').data['pipeline.yaml'] as string;
    const cfg = parseConfig(parse(text), 'deploy/kubernetes/config.yaml', secret);
    expect(cfg.metrics.host).toBe('0.0.0.0');
    expect(cfg.clusterNames).toEqual(['a', 'b']);
    expect(() => parseConfig(parse(text), 'config', {})).toThrow(/passwordEnv: environment variable \w+ is not set/);
  });

  it('memory requests match the measured peak RSS of the services (docs/operations.md)', () => {
    const ops = readFileSync(join(ROOT, 'docs/operations.md'), 'utf8');
    const row = /^\| \(none\) \| [\d.]+, (\d+) MiB \| [\d.]+, (\d+) MiB \|$/m.exec(ops);
    expect(row, 'the peak RSS table of docs/operations.md').not.toBeNull();
    const peak = Math.max(Number(row![1]), Number(row![2]));
    for (const d of byKind('Deployment')) {
      const r = d.spec.template.spec.containers[0].resources;
      expect(mib(r.requests.memory), d.metadata.name).toBeGreaterThanOrEqual(peak);
      expect(mib(r.requests.memory), d.metadata.name).toBeLessThanOrEqual(peak * 1.25);
      expect(mib(r.limits.memory)).toBeGreaterThan(mib(r.requests.memory));
    }
  });

  it('a Job runs setup, then the initial sync, with the same config and secrets', () => {
    const jobs = byKind('Job');
    expect(jobs).toHaveLength(1);
    const pod = jobs[0]!.spec.template.spec;
    expect(pod.initContainers.map((c: Obj) => c.args.slice(0, 2))).toEqual([['dist/services/cli/main.js', 'setup']]);
    expect(pod.containers.map((c: Obj) => c.args.slice(0, 2))).toEqual([['dist/services/cli/main.js', 'sync']]);
    for (const c of [...pod.initContainers, ...pod.containers]) {
      expect(c.envFrom).toEqual([{ secretRef: { name: 'pgbridge-secrets' } }]);
      expect(c.args).toContain('/etc/pgbridge/pipeline.yaml');
      expect(c.image).toBe(byKind('Deployment')[0]!.spec.template.spec.containers[0].image);
    }
    expect(['OnFailure', 'Never']).toContain(pod.restartPolicy);
  });
});
