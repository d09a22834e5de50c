/**
 * The pipeline configuration: one YAML file, parsed once with zod, unknown keys rejected
 * with their path, defaults filled in, the result frozen. docs/configuration.md lists every
 * key and default; keep the two in step.
 */
import { readFileSync } from 'node:fs';
import { isMap, isScalar, isSeq, parseDocument, type Node } from 'yaml';
import { z } from 'zod';
import { PgBridgeError } from './errors.js';
import { settingsProblems, tableSettingsSchema } from './table-settings.js';

/** Largest record by default: a row of 64 MiB and its envelope (docs/configuration.md, topics.maxMessageBytes). */
export const DEFAULT_MAX_MESSAGE_BYTES = 65 * 1024 * 1024;
/** Kafka's socket.request.max.bytes default (100 MiB) bounds a produce request: records stay below it. */
const MAX_MESSAGE_BYTES_CEILING = 96 * 1024 * 1024;
/** Room for the record batch and record headers around the largest record. */
export const MESSAGE_OVERHEAD_BYTES = 64 * 1024;

const ident = z.string().regex(/^[a-z][a-z0-9_]{0,30}$/, 'lower-case letters, digits and _, starting with a letter, at most 31 characters');

/** Another role for one service's connections to a cluster (least privilege: pgbridge grants). */
const roleSchema = z
  .object({
    user: z.string().min(1),
    password: z.string().optional(),
    passwordEnv: z.string().optional(),
  })
  .strict();

/** A PEM file named in the config (CA, certificate, key); read when a connection is made. */
const pemFile = z.string().min(1);

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
    /** libpq's sslmode (disable, require, verify-ca, verify-full) for every connection to this cluster. */
    sslMode: z.enum(['disable', 'require', 'verify-ca', 'verify-full']).default('disable'),
    /** CA certificate(s) that signed the server certificate (libpq sslrootcert). */
    sslRootCert: pemFile.optional(),
    /** Client certificate and its key (libpq sslcert, sslkey). */
    sslCert: pemFile.optional(),
    sslKey: pemFile.optional(),
    /** The role capture of this cluster connects as (default: user). */
    capture: roleSchema.optional(),
    /** The role apply into this cluster connects as (default: user). */
    apply: roleSchema.optional(),
  })
  .strict();

const saslSchema = z
  .object({
    mechanism: z.enum(['plain', 'scram-sha-256', 'scram-sha-512']),
    username: z.string().min(1),
    password: z.string().optional(),
    passwordEnv: z.string().optional(),
  })
  .strict();

const tlsSchema = z
  .object({
    /** CA certificate(s) to verify the server with; default: Node's built-in CAs. */
    caFile: pemFile.optional(),
    /** Client certificate and key (mutual TLS). */
    certFile: pemFile.optional(),
    keyFile: pemFile.optional(),
  })
  .strict();

/** fail is DTS's TaskFailed (missing rows are not conflicts that stop); fail-strict stops on every kind, as PostgreSQL 18 counts them. */
export const conflictPolicy = z.enum(['fail', 'fail-strict', 'ignore', 'overwrite', 'last-writer-wins']);
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

/** Rows per second and MB per second a direction's apply may read; positive numbers. */
const throttleLimitShape = {
  rowsPerSecond: z.number().positive().optional(),
  megabytesPerSecond: z.number().positive().optional(),
};

const configSchema = z
  .object({
    pipeline: ident,
    clusters: z.record(ident, clusterSchema).refine((c) => Object.keys(c).length === 2, 'exactly two clusters are needed'),
    /** Direction that does schema and full data sync (DTS "forward"); the other one is incremental only. */
    forward: z.object({ from: ident, to: ident }).strict().optional(),
    kafka: z
      .object({
        brokers: z.array(z.string().min(1)).min(1),
        clientId: z.string().default('pgbridge'),
        connectionTimeoutMs: z.number().int().min(100).default(3000),
        requestTimeoutMs: z.number().int().min(100).default(30000),
        /** TLS towards the brokers: `true` (Node's CAs) or the files to use. */
        ssl: z.union([z.boolean(), tlsSchema]).default(false),
        sasl: saslSchema.optional(),
      })
      .strict(),
    registry: z
      .object({
        url: z.string().url(),
        /** HTTP basic auth (also accepted as user:password@ in the URL). */
        username: z.string().min(1).optional(),
        password: z.string().optional(),
        passwordEnv: z.string().optional(),
      })
      .merge(tlsSchema)
      .strict(),
    topics: z
      .object({
        /** Topic name pattern; {pipeline}, {from} and {to} are replaced. */
        pattern: z.string().default('{pipeline}.{from}.to.{to}'),
        partitions: z.number().int().min(1).default(1),
        replicationFactor: z.number().int().min(1).default(1),
        /** Largest record capture publishes (one row change, encoded); a larger row stops capture. setup sets the topics' max.message.bytes above it. */
        maxMessageBytes: z
          .number()
          .int()
          .min(1024 * 1024)
          .max(MAX_MESSAGE_BYTES_CEILING)
          .default(DEFAULT_MAX_MESSAGE_BYTES),
      })
      .strict()
      .default({ pattern: '{pipeline}.{from}.to.{to}', partitions: 1, replicationFactor: 1, maxMessageBytes: DEFAULT_MAX_MESSAGE_BYTES }),
    selection: z
      .object({
        schemas: z.array(z.string().min(1)).min(1).default(['public']),
        /** Tables as schema.table; empty means every table of the selected schemas. */
        include: z.array(z.string().regex(/^[^.]+\.[^.]+$/, 'schema.table')).default([]),
        exclude: z.array(z.string().regex(/^[^.]+\.[^.]+$/, 'schema.table')).default([]),
        /** Per-table settings (column list, row filter, operations), keyed by schema.table (shared/table-settings.ts). */
        tables: z.record(z.string().regex(/^[^.]+\.[^.]+$/, 'schema.table'), tableSettingsSchema).default({}),
      })
      .strict()
      .default({ schemas: ['public'], include: [], exclude: [], tables: {} }),
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
        /** Compression of the record batches capture produces (docs/decisions.md: none measured best here). */
        compression: z.enum(['none', 'lz4', 'zstd', 'gzip', 'snappy']).default('none'),
      })
      .strict()
      .default({
        heartbeatSeconds: 5,
        foreignOrigins: 'skip',
        batch: { maxTransactions: 500, maxRows: 5000, lingerMs: 20 },
        statusIntervalSeconds: 10,
        compression: 'none',
      }),
    apply: z
      .object({
        batch: batchSchema.default({ maxTransactions: 500, maxRows: 5000, lingerMs: 20 }),
        /** Topic for poison messages; unset means stop at the first one. */
        deadLetterTopic: z.string().min(1).optional(),
        /**
         * Destination connections that load snapshot chunks side by side (each with a
         * replication origin of its own, made by setup); 0 loads them on apply's connection.
         */
        snapshotLoaders: z.number().int().min(0).max(8).default(0),
        /** Incremental throttling (DTS): unset means no limit. `pgbridge throttle` overrides it while apply runs. */
        throttle: z
          .object({
            ...throttleLimitShape,
            /** Per-direction overrides, keyed by direction id (a-b). */
            directions: z
              .record(z.string().regex(/^[a-z][a-z0-9_]*-[a-z][a-z0-9_]*$/, 'a direction id such as a-b'), z.object(throttleLimitShape).strict())
              .default({}),
          })
          .strict()
          .default({ directions: {} }),
      })
      .strict()
      .default({ batch: { maxTransactions: 500, maxRows: 5000, lingerMs: 20 }, snapshotLoaders: 0, throttle: { directions: {} } }),
    sync: z
      .object({
        /** Parallel readers of the initial sync (one source connection and one Kafka producer each). */
        workers: z.number().int().min(1).max(32).default(2),
        /** What the initial sync publishes: snapshot chunk records (apply loads them with COPY) or one op=r event per row. */
        events: z.enum(['chunks', 'rows']).default('chunks'),
      })
      .strict()
      .default({ workers: 2, events: 'chunks' }),
    ddl: z
      .object({
        /** replicate: DDL on the selected schemas of the forward source is recorded (event trigger) and run by apply on the destination, in stream order; off: none is. */
        forward: z.enum(['replicate', 'off']).default('replicate'),
        /** DDL on the selected schemas of the reverse source is never replicated: warn (a WARNING to the session) or reject (the command fails). */
        reverse: z.enum(['warn', 'reject']).default('warn'),
      })
      .strict()
      .default({ forward: 'replicate', reverse: 'warn' }),
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

export type SslMode = 'disable' | 'require' | 'verify-ca' | 'verify-full';

export interface ClusterConfig {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly database: string;
  readonly user: string;
  readonly password: string | undefined;
  readonly sslMode: SslMode;
  readonly sslRootCert?: string;
  readonly sslCert?: string;
  readonly sslKey?: string;
  /** Roles of the services, when they differ from `user` (see serviceConnection). */
  readonly roles?: { readonly capture?: RoleLogin; readonly apply?: RoleLogin };
}

export interface RoleLogin {
  readonly user: string;
  readonly password: string | undefined;
}

/** TLS files (paths) for Kafka or the registry; read when a connection is made. */
export interface TlsFiles {
  readonly caFile?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
}

export type SaslMechanism = 'plain' | 'scram-sha-256' | 'scram-sha-512';

export interface KafkaSecurity {
  /** null: plaintext. */
  readonly ssl: TlsFiles | null;
  readonly sasl: { readonly mechanism: SaslMechanism; readonly username: string; readonly password: string } | null;
}

export interface RegistryConfig extends TlsFiles {
  /** Base URL without credentials (safe to print). */
  readonly url: string;
  readonly username?: string;
  readonly password?: string;
}

export interface Direction {
  /** `a-b` */
  readonly id: string;
  readonly from: string;
  readonly to: string;
  readonly topic: string;
  readonly forward: boolean;
}

export type PipelineConfig = Readonly<Omit<Parsed, 'clusters' | 'kafka' | 'registry'>> & {
  readonly clusters: Readonly<Record<string, ClusterConfig>>;
  readonly kafka: Readonly<Omit<Parsed['kafka'], 'ssl' | 'sasl'>> & KafkaSecurity;
  readonly registry: RegistryConfig;
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
      if (i.code === 'unrecognized_keys')
        return `${where}: ${path === '(top level)' ? '' : `${path}: `}unknown key(s) ${i.keys.map((k) => `"${k}"`).join(', ')}`;
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
  /** password, or the variable passwordEnv names (which wins). */
  const secret = (key: string, o: { password?: string; passwordEnv?: string }): string | undefined => {
    if (!o.passwordEnv) return o.password;
    const v = env[o.passwordEnv];
    if (v === undefined) problems.push(`${where}: ${key}.passwordEnv: environment variable ${o.passwordEnv} is not set`);
    return v;
  };
  const pair = (key: string, cert: string | undefined, keyFile: string | undefined, names: [string, string]): void => {
    if (!!cert !== !!keyFile) problems.push(`${where}: ${key}: ${names[0]} and ${names[1]} go together (a client certificate and its key)`);
  };
  for (const name of names) {
    const cc = c.clusters[name]!;
    const password = secret(`clusters.${name}`, cc);
    pair(`clusters.${name}`, cc.sslCert, cc.sslKey, ['sslCert', 'sslKey']);
    if (cc.sslMode === 'disable' && (cc.sslRootCert || cc.sslCert))
      problems.push(`${where}: clusters.${name}: sslRootCert/sslCert are set but sslMode is disable`);
    const { passwordEnv: _pe, password: _pw, capture, apply, ...rest } = cc;
    const login = (service: 'capture' | 'apply', r: z.output<typeof roleSchema> | undefined): RoleLogin | undefined =>
      r && { user: r.user, password: secret(`clusters.${name}.${service}`, r) };
    const roles =
      capture || apply ? { roles: { ...(capture ? { capture: login('capture', capture) } : {}), ...(apply ? { apply: login('apply', apply) } : {}) } } : {};
    clusters[name] = { name, ...rest, password, ...roles };
  }
  const { ssl, sasl, ...kafkaRest } = c.kafka;
  if (typeof ssl === 'object') pair('kafka.ssl', ssl.certFile, ssl.keyFile, ['certFile', 'keyFile']);
  if (sasl && sasl.password === undefined && !sasl.passwordEnv) problems.push(`${where}: kafka.sasl: password or passwordEnv is needed`);
  const kafka: PipelineConfig['kafka'] = {
    ...kafkaRest,
    ssl: ssl === false ? null : ssl === true ? {} : ssl,
    sasl: sasl ? { mechanism: sasl.mechanism, username: sasl.username, password: secret('kafka.sasl', sasl) ?? '' } : null,
  };
  const registry = registryConfig(c.registry, secret('registry', c.registry));
  pair('registry', registry.certFile, registry.keyFile, ['certFile', 'keyFile']);
  const fwd = c.forward ?? { from: names[0], to: names[1] };
  for (const k of ['from', 'to'] as const) {
    if (!names.includes(fwd[k])) problems.push(`${where}: forward.${k}: "${fwd[k]}" is not one of the clusters (${names.join(', ')})`);
  }
  if (fwd.from === fwd.to) problems.push(`${where}: forward: from and to must differ`);
  for (const t of Object.keys(c.conflicts.tables)) {
    if (!c.selection.schemas.includes(t.split('.')[0]!)) problems.push(`${where}: conflicts.tables.${t}: schema is not in selection.schemas`);
  }
  for (const [t, settings] of Object.entries(c.selection.tables)) {
    const [schema] = t.split('.');
    const { include, exclude } = c.selection;
    if (!c.selection.schemas.includes(schema!) || (include.length > 0 && !include.includes(t)) || exclude.includes(t)) {
      problems.push(`${where}: selection.tables.${t}: the table is not in the selection (schemas, include, exclude)`);
    }
    for (const p of settingsProblems(t, settings, [`${fwd.from}-${fwd.to}`, `${fwd.to}-${fwd.from}`], names)) problems.push(`${where}: ${p}`);
  }
  for (const name of names) {
    // Two tables cannot share a name on one cluster.
    const on = new Map<string, string>();
    for (const [t, settings] of Object.entries(c.selection.tables)) {
      const physical = settings.rename?.[name] ?? t;
      if (on.has(physical)) problems.push(`${where}: selection.tables: ${on.get(physical)} and ${t} are both ${physical} on cluster ${name}`);
      on.set(physical, t);
    }
  }
  if (!c.topics.pattern.includes('{from}') || !c.topics.pattern.includes('{to}')) problems.push(`${where}: topics.pattern: must contain {from} and {to}`);
  if (c.topics.partitions !== 1) {
    // Apply relies on total order and on transaction boundaries within one partition.
    problems.push(
      `${where}: topics.partitions: only 1 is supported (source commit order and whole transactions); pgbridge has no row-keyed partitioning (yet)`,
    );
  }
  for (const name of names) {
    // cdc_<pipeline>_<cluster>, plus the `_resume` suffix of the initial sync's temporary slot, within PostgreSQL's 63 bytes.
    if (`cdc_${c.pipeline}_${name}_resume`.length > 63)
      problems.push(`${where}: pipeline "${c.pipeline}" with cluster "${name}" makes a slot name longer than PostgreSQL allows; shorten one of them`);
  }
  if (problems.length) throw new PgBridgeError('CONFIG_INVALID', problems.join('\n'));
  const topic = (from: string, to: string): string => c.topics.pattern.replaceAll('{pipeline}', c.pipeline).replaceAll('{from}', from).replaceAll('{to}', to);
  const dir = (from: string, to: string, forward: boolean): Direction => ({ id: `${from}-${to}`, from, to, topic: topic(from, to), forward });
  const directions: [Direction, Direction] = [dir(fwd.from, fwd.to, true), dir(fwd.to, fwd.from, false)];
  return deepFreeze({ ...c, clusters, kafka, registry, clusterNames: [fwd.from, fwd.to] as [string, string], directions });
}

/** Credentials in the URL (`https://user:pass@host/…`) move to username and password; the key wins over the URL. */
function registryConfig(r: Parsed['registry'], password: string | undefined): RegistryConfig {
  const u = new URL(r.url);
  const username = r.username ?? (u.username ? decodeURIComponent(u.username) : undefined);
  const pw = password ?? (u.password ? decodeURIComponent(u.password) : undefined);
  u.username = '';
  u.password = '';
  const url = u.toString().replace(/\/$/, '');
  return {
    url,
    ...(username === undefined ? {} : { username }),
    ...(pw === undefined ? {} : { password: pw }),
    ...(r.caFile ? { caFile: r.caFile } : {}),
    ...(r.certFile ? { certFile: r.certFile } : {}),
    ...(r.keyFile ? { keyFile: r.keyFile } : {}),
  };
}

const PLACEHOLDER = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;
const WHOLE_PLACEHOLDER = /^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$/;

/**
 * Replaces `${NAME}` in the string values of a parsed YAML document (never in keys,
 * comments or the raw text): a value can hold `: `, ` #`, quotes or new lines without
 * changing the structure of the file, and a YAML error can never quote a secret. An
 * unquoted value that is one placeholder and nothing else takes the type its text has
 * (`port: ${PG_PORT}` is a number, `true`/`false` a boolean); everything else is a string.
 */
function substitute(node: Node | null, path: string, env: NodeJS.ProcessEnv, missing: Map<string, string[]>): void {
  if (isMap(node)) {
    for (const pair of node.items) {
      const key = isScalar(pair.key) ? String(pair.key.value) : '?';
      substitute(pair.value as Node | null, path ? `${path}.${key}` : key, env, missing);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, i) => substitute(item as Node | null, `${path}[${i}]`, env, missing));
  } else if (isScalar(node) && typeof node.value === 'string' && node.value.includes('${')) {
    const text = node.value;
    let unset = false;
    const value = text.replace(PLACEHOLDER, (_, name: string) => {
      const v = env[name];
      if (v === undefined) {
        unset = true;
        missing.set(name, [...(missing.get(name) ?? []), path]);
      }
      return v ?? '';
    });
    if (unset) return;
    const whole = node.type === 'PLAIN' && WHOLE_PLACEHOLDER.test(text);
    if (whole && /^-?\d+(\.\d+)?$/.test(value)) node.value = Number(value);
    else if (whole && (value === 'true' || value === 'false')) node.value = value === 'true';
    else node.value = value;
  }
}

/**
 * Reads and validates a YAML config file; `${VAR}` in its values is replaced from the
 * environment after parsing (see substitute). Error messages name files, keys and
 * variables, never a value that came from the environment.
 */
export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): PipelineConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new PgBridgeError('CONFIG_INVALID', `${file}: cannot read: ${(err as Error).message}`);
  }
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length) throw new PgBridgeError('CONFIG_INVALID', `${file}: not valid YAML: ${doc.errors[0]!.message}`);
  const missing = new Map<string, string[]>();
  substitute(doc.contents as Node | null, '', env, missing);
  if (missing.size) {
    const list = [...missing].map(([name, paths]) => `${name} (${paths.join(', ')})`).join(', ');
    throw new PgBridgeError('CONFIG_INVALID', `${file}: environment variable(s) not set: ${list}`);
  }
  return parseConfig(doc.toJS(), file, env);
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

/**
 * The connection settings a service uses for a cluster: capture of that cluster and apply
 * into it log in as clusters.<name>.capture / .apply when set (least privilege), everything
 * else (setup, sync, the CLI) as `user`.
 */
export function serviceConnection(c: ClusterConfig, service: 'capture' | 'apply'): ClusterConfig {
  const role = c.roles?.[service];
  return role ? { ...c, user: role.user, password: role.password } : c;
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

/**
 * The replication origin of snapshot loader `n` (1-based) of the direction from `from`: rows it
 * loads are tagged as coming from that cluster, like apply's own (one session holds an origin).
 */
export function loaderOriginName(cfg: PipelineConfig, from: string, n: number): string {
  return `${originName(cfg, from)}~load${n}`;
}

/** The cluster a replication origin name of this pipeline stands for (apply's or a snapshot loader's), or null when it is not ours. */
export function originCluster(cfg: PipelineConfig, name: string): string | null {
  const prefix = `cdc_${cfg.pipeline}_`;
  if (!name.startsWith(prefix)) return null;
  const rest = name.slice(prefix.length);
  const loader = /^(.+)~load\d+$/.exec(rest);
  return loader ? loader[1]! : rest;
}

/** Metrics port of each service, derived from metrics.basePort. */
export function metricsPort(cfg: PipelineConfig, service: { capture: string } | { apply: string }): number {
  if (cfg.metrics.basePort === 0) return 0;
  if ('capture' in service) return cfg.metrics.basePort + cfg.clusterNames.indexOf(service.capture);
  return cfg.metrics.basePort + 2 + cfg.directions.findIndex((d) => d.id === service.apply);
}
