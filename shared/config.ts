/**
 * The pipeline configuration: one YAML file, parsed once with zod, unknown keys rejected
 * with their path, defaults filled in, the result frozen. docs/configuration.md lists every
 * key and default; keep the two in step.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { PgBridgeError } from './errors.js';

const ident = z.string().regex(/^[a-z][a-z0-9_]{0,30}$/, 'lower-case letters, digits and _, starting with a letter, at most 31 characters');

const clusterSchema = z
  .object({
    host: z.string().min(1).default('127.0.0.1'),
    port: z.number().int().min(1).max(65535).default(5432),
    database: z.string().min(1).default('postgres'),
    user: z.string().min(1).default('postgres'),
    /** Literal password; prefer passwordEnv. */
    password: z.string().optional(),
    /** Name of an environment variable holding the password. */
    passwordEnv: z.string().optional(),
  })
  .strict();

export const conflictPolicy = z.enum(['fail', 'ignore', 'overwrite', 'last-writer-wins']);
export type ConflictPolicy = z.infer<typeof conflictPolicy>;

const batchSchema = z
  .object({
    /** Source transactions grouped into one Kafka transaction (capture) or one destination transaction (apply). */
    maxTransactions: z.number().int().min(1).default(500),
    /** Rows (events) after which the group is closed at the next transaction boundary. */
    maxRows: z.number().int().min(1).default(5000),
    /** How long capture waits for more transactions before it closes a group. */
    lingerMs: z.number().int().min(0).default(20),
  })
  .strict();

const configSchema = z
  .object({
    pipeline: ident,
    clusters: z.record(ident, clusterSchema).refine((c) => Object.keys(c).length === 2, 'exactly two clusters are needed'),
    /** Direction that does schema and full data sync (DTS "forward"); the other one is incremental only. */
    forward: z
      .object({ from: ident, to: ident })
      .strict()
      .optional(),
    kafka: z
      .object({
        brokers: z.array(z.string().min(1)).min(1),
        clientId: z.string().default('pgbridge'),
        connectionTimeoutMs: z.number().int().min(100).default(3000),
        requestTimeoutMs: z.number().int().min(100).default(30000),
      })
      .strict(),
    registry: z.object({ url: z.string().url() }).strict(),
    topics: z
      .object({
        /** Topic name pattern; {pipeline}, {from} and {to} are replaced. */
        pattern: z.string().default('{pipeline}.{from}.to.{to}'),
        partitions: z.number().int().min(1).default(1),
        replicationFactor: z.number().int().min(1).default(1),
      })
      .strict()
      .default({ pattern: '{pipeline}.{from}.to.{to}', partitions: 1, replicationFactor: 1 }),
    selection: z
      .object({
        schemas: z.array(z.string().min(1)).min(1).default(['public']),
        /** Tables as schema.table; empty means every table of the selected schemas. */
        include: z.array(z.string().regex(/^[^.]+\.[^.]+$/, 'schema.table')).default([]),
        exclude: z.array(z.string().regex(/^[^.]+\.[^.]+$/, 'schema.table')).default([]),
      })
      .strict()
      .default({ schemas: ['public'], include: [], exclude: [] }),
    conflicts: z
      .object({
        policy: conflictPolicy.default('last-writer-wins'),
        /** Per-table overrides, keyed by schema.table. */
        tables: z.record(z.string().regex(/^[^.]+\.[^.]+$/, 'schema.table'), conflictPolicy).default({}),
      })
      .strict()
      .default({ policy: 'last-writer-wins', tables: {} }),
    origin: z
      .object({
        /** replication-origin (needs superuser or pg_replication_origin_* grants), message (origin marker rows in cdc.control), auto (detect at start). */
        method: z.enum(['auto', 'replication-origin', 'message']).default('auto'),
      })
      .strict()
      .default({ method: 'auto' }),
    capture: z
      .object({
        heartbeatSeconds: z.number().min(0).default(5),
        /** skip: do not publish transactions that apply wrote (two-way); publish: publish them tagged, apply drops them. */
        foreignOrigins: z.enum(['skip', 'publish']).default('skip'),
        batch: batchSchema.default({ maxTransactions: 500, maxRows: 5000, lingerMs: 20 }),
        /** Standby status interval towards PostgreSQL (must be below wal_sender_timeout). */
        statusIntervalSeconds: z.number().min(1).default(10),
      })
      .strict()
      .default({ heartbeatSeconds: 5, foreignOrigins: 'skip', batch: { maxTransactions: 500, maxRows: 5000, lingerMs: 20 }, statusIntervalSeconds: 10 }),
    apply: z
      .object({
        batch: batchSchema.default({ maxTransactions: 500, maxRows: 5000, lingerMs: 20 }),
        /** Topic for poison messages; unset means stop at the first one. */
        deadLetterTopic: z.string().min(1).optional(),
      })
      .strict()
      .default({ batch: { maxTransactions: 500, maxRows: 5000, lingerMs: 20 } }),
    retry: z
      .object({
        connectionMinutes: z.number().min(0).default(720),
        otherMinutes: z.number().min(0).default(10),
      })
      .strict()
      .default({ connectionMinutes: 720, otherMinutes: 10 }),
    metrics: z
      .object({
        host: z.string().default('127.0.0.1'),
        /** First port; capture of the first cluster, capture of the second, apply forward, apply reverse take it and the next three. */
        basePort: z.number().int().min(0).max(65532).default(9101),
      })
      .strict()
      .default({ host: '127.0.0.1', basePort: 9101 }),
  })
  .strict();

export type PipelineConfigInput = z.input<typeof configSchema>;
type Parsed = z.output<typeof configSchema>;

export interface ClusterConfig {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly database: string;
  readonly user: string;
  readonly password: string | undefined;
}

export interface Direction {
  /** `a-b` */
  readonly id: string;
  readonly from: string;
  readonly to: string;
  readonly topic: string;
  readonly forward: boolean;
}

export type PipelineConfig = Readonly<Omit<Parsed, 'clusters'>> & {
  readonly clusters: Readonly<Record<string, ClusterConfig>>;
  readonly clusterNames: readonly [string, string];
  readonly directions: readonly [Direction, Direction];
};

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as Record<string, unknown>)) deepFreeze(v);
  }
  return o;
}

function formatIssues(err: z.ZodError, where: string): string {
  return err.issues
    .map((i) => {
      const path = i.path.map(String).join('.') || '(top level)';
      if (i.code === 'unrecognized_keys') return `${where}: ${path === '(top level)' ? '' : `${path}: `}unknown key(s) ${i.keys.map((k) => `"${k}"`).join(', ')}`;
      return `${where}: ${path}: ${i.message}`;
    })
    .join('\n');
}

/** Validates a config object. Throws CONFIG_INVALID listing every problem with its key path. */
export function parseConfig(input: unknown, where = 'config', env: NodeJS.ProcessEnv = process.env): PipelineConfig {
  const r = configSchema.safeParse(input);
  if (!r.success) throw new PgBridgeError('CONFIG_INVALID', formatIssues(r.error, where));
  const c = r.data;
  const names = Object.keys(c.clusters) as [string, string];
  const problems: string[] = [];
  const clusters: Record<string, ClusterConfig> = {};
  for (const name of names) {
    const cc = c.clusters[name]!;
    let password = cc.password;
    if (cc.passwordEnv) {
      password = env[cc.passwordEnv];
      if (password === undefined) problems.push(`${where}: clusters.${name}.passwordEnv: environment variable ${cc.passwordEnv} is not set`);
    }
    clusters[name] = { name, host: cc.host, port: cc.port, database: cc.database, user: cc.user, password };
  }
  const fwd = c.forward ?? { from: names[0], to: names[1] };
  for (const k of ['from', 'to'] as const) {
    if (!names.includes(fwd[k])) problems.push(`${where}: forward.${k}: "${fwd[k]}" is not one of the clusters (${names.join(', ')})`);
  }
  if (fwd.from === fwd.to) problems.push(`${where}: forward: from and to must differ`);
  for (const t of Object.keys(c.conflicts.tables)) {
    if (!c.selection.schemas.includes(t.split('.')[0]!)) problems.push(`${where}: conflicts.tables.${t}: schema is not in selection.schemas`);
  }
  if (!c.topics.pattern.includes('{from}') || !c.topics.pattern.includes('{to}')) problems.push(`${where}: topics.pattern: must contain {from} and {to}`);
  if (c.topics.partitions !== 1) {
    // Apply relies on total order and on transaction boundaries within one partition.
    problems.push(`${where}: topics.partitions: only 1 is supported (source commit order and whole transactions); pgbridge has no row-keyed partitioning (yet)`);
  }
  for (const name of names) {
    // cdc_<pipeline>_<cluster>, plus the `_resume` suffix of the initial sync's temporary slot, within PostgreSQL's 63 bytes.
    if (`cdc_${c.pipeline}_${name}_resume`.length > 63) problems.push(`${where}: pipeline "${c.pipeline}" with cluster "${name}" makes a slot name longer than PostgreSQL allows; shorten one of them`);
  }
  if (problems.length) throw new PgBridgeError('CONFIG_INVALID', problems.join('\n'));
  const topic = (from: string, to: string): string => c.topics.pattern.replaceAll('{pipeline}', c.pipeline).replaceAll('{from}', from).replaceAll('{to}', to);
  const dir = (from: string, to: string, forward: boolean): Direction => ({ id: `${from}-${to}`, from, to, topic: topic(from, to), forward });
  const directions: [Direction, Direction] = [dir(fwd.from, fwd.to, true), dir(fwd.to, fwd.from, false)];
  return deepFreeze({ ...c, clusters, clusterNames: [fwd.from, fwd.to] as [string, string], directions });
}

/** Reads and validates a YAML config file; `${VAR}` in the text is replaced from the environment. */
export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): PipelineConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new PgBridgeError('CONFIG_INVALID', `${file}: cannot read: ${(err as Error).message}`);
  }
  const missing: string[] = [];
  const expanded = text.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
    const v = env[name];
    if (v === undefined) missing.push(name);
    return v ?? '';
  });
  if (missing.length) throw new PgBridgeError('CONFIG_INVALID', `${file}: environment variable(s) not set: ${missing.join(', ')}`);
  let doc: unknown;
  try {
    doc = parseYaml(expanded);
  } catch (err) {
    throw new PgBridgeError('CONFIG_INVALID', `${file}: not valid YAML: ${(err as Error).message}`);
  }
  return parseConfig(doc, file, env);
}

export function directionById(cfg: PipelineConfig, id: string): Direction {
  const d = cfg.directions.find((x) => x.id === id);
  if (!d) throw new PgBridgeError('CONFIG_INVALID', `no direction "${id}"; this pipeline has ${cfg.directions.map((x) => x.id).join(' and ')}`);
  return d;
}

export function clusterByName(cfg: PipelineConfig, name: string): ClusterConfig {
  const c = cfg.clusters[name];
  if (!c) throw new PgBridgeError('CONFIG_INVALID', `no cluster "${name}"; this pipeline has ${cfg.clusterNames.join(' and ')}`);
  return c;
}

export function policyFor(cfg: PipelineConfig, schema: string, table: string): ConflictPolicy {
  return cfg.conflicts.tables[`${schema}.${table}`] ?? cfg.conflicts.policy;
}

/** The replication slot (and publication) a capture owns: cdc_<pipeline>_<cluster>. */
export function slotName(cfg: PipelineConfig, cluster: string): string {
  return `cdc_${cfg.pipeline}_${cluster}`;
}

/**
 * Replication origin that apply uses when writing changes that came from `from`:
 * cdc_<pipeline>_<from>. Origins are per cluster, not per database or pipeline, so the
 * pipeline name keeps two pipelines on one cluster from sharing (and fighting over) one.
 */
export function originName(cfg: PipelineConfig, from: string): string {
  return `cdc_${cfg.pipeline}_${from}`;
}

/** The cluster a replication origin name of this pipeline stands for, or null when it is not ours. */
export function originCluster(cfg: PipelineConfig, name: string): string | null {
  const prefix = `cdc_${cfg.pipeline}_`;
  return name.startsWith(prefix) ? name.slice(prefix.length) : null;
}

/** Metrics port of each service, derived from metrics.basePort. */
export function metricsPort(cfg: PipelineConfig, service: { capture: string } | { apply: string }): number {
  if (cfg.metrics.basePort === 0) return 0;
  if ('capture' in service) return cfg.metrics.basePort + cfg.clusterNames.indexOf(service.capture);
  return cfg.metrics.basePort + 2 + cfg.directions.findIndex((d) => d.id === service.apply);
}
