/**
 * The schema registry behind a small interface (Confluent API; tested against Apicurio).
 * Errors are classified here once: transient (retry with backoff), unknown schema (halt,
 * INV-6 in docs/invariants.md), not our wire format (poison).
 */
import { SchemaRegistry, SchemaType } from '@kafkajs/confluent-schema-registry';
import type avro from 'avsc';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { AVRO_OPTIONS, wireSchemaId } from './avro.js';
import type { RegistryConfig } from './config.js';
import { PgBridgeError, errorMessage } from './errors.js';
import { redactUrl } from './log.js';
import { readPem } from './tls-files.js';
import { backoff, sleep } from './retry.js';

export interface DecodedRecord {
  readonly schemaId: number;
  /** Full Avro record name of the writer schema (pgbridge.Control or <ns>.<schema>.<table>.Envelope). */
  readonly recordName: string;
  readonly value: Record<string, unknown>;
}

/**
 * What capture's encoder (and the snapshot's chunk records) need of the registry: a schema
 * registered under a subject, and its id. SchemaStore is the real one.
 */
export interface SchemaRegistrar {
  register(subject: string, schema: Record<string, unknown>): Promise<number>;
}

/** What apply's decoder needs of the registry: a Confluent wire-format message read with its writer schema. */
export interface SchemaReader {
  decode(buf: Buffer | null): Promise<DecodedRecord>;
}

interface ErrorWithStatus {
  status?: number;
}

function statusOf(err: unknown): number | undefined {
  return (err as ErrorWithStatus | undefined)?.status;
}

/**
 * The HTTP agent for the registry: for https, with registry.caFile (else Node's CAs) and the
 * client certificate when one is configured.
 */
export function registryAgent(r: RegistryConfig): HttpAgent {
  if (!r.url.startsWith('https:')) return new HttpAgent({ keepAlive: true });
  return new HttpsAgent({
    keepAlive: true,
    ...(r.caFile ? { ca: readPem('registry.caFile', r.caFile) } : {}),
    ...(r.certFile ? { cert: readPem('registry.certFile', r.certFile) } : {}),
    ...(r.keyFile ? { key: readPem('registry.keyFile', r.keyFile) } : {}),
  });
}

/** Authorization header value for registry.username/password (HTTP basic), if set. */
function basicAuth(r: RegistryConfig): string | undefined {
  if (r.username === undefined) return undefined;
  return `Basic ${Buffer.from(`${r.username}:${r.password ?? ''}`).toString('base64')}`;
}

/**
 * GET <registry.url><path> with the registry's TLS settings and credentials: the status, or
 * a rejection with the network or TLS error. For precheck; the body is read and dropped.
 */
export function registryGet(r: RegistryConfig, path: string, timeoutMs: number): Promise<number> {
  const url = new URL(`${r.url}${path}`);
  const agent = registryAgent(r);
  const auth = basicAuth(r);
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<number>((resolve, reject) => {
    const req = send(
      url,
      { agent, timeout: timeoutMs, headers: { accept: 'application/vnd.schemaregistry.v1+json, application/json', ...(auth ? { authorization: auth } : {}) } },
      (res) => {
        res.resume();
        res.once('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.once('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.once('error', reject);
    req.end();
  }).finally(() => agent.destroy());
}

export class SchemaStore implements SchemaRegistrar, SchemaReader {
  private readonly client: SchemaRegistry;
  private readonly registered = new Map<string, number>();
  /** Writer schemas by id: an id never changes its schema, so a hit costs no registry call. */
  private readonly types = new Map<number, avro.Type>();
  /** The registry's base URL (never with credentials). */
  readonly url: string;

  constructor(
    registry: RegistryConfig,
    private readonly onRetry: (what: string, attempt: number, err: unknown) => void = () => undefined,
    private readonly maxWaitMs = 10 * 60_000,
  ) {
    this.url = registry.url;
    const auth = registry.username === undefined ? {} : { auth: { username: registry.username, password: registry.password ?? '' } };
    this.client = new SchemaRegistry(
      { host: registry.url, retry: { retries: 0 }, agent: registryAgent(registry), ...auth },
      { [SchemaType.AVRO]: AVRO_OPTIONS as never },
    );
  }

  /** Registers (or finds) a schema under a subject. Retries while the registry is unreachable. */
  async register(subject: string, schema: Record<string, unknown>): Promise<number> {
    const text = JSON.stringify(schema);
    const cacheKey = `${subject}\n${text}`;
    const hit = this.registered.get(cacheKey);
    if (hit !== undefined) return hit;
    const id = await this.retrying(`register ${subject}`, async () => {
      try {
        const r = await this.client.register({ type: SchemaType.AVRO, schema: text }, { subject });
        return r.id;
      } catch (err) {
        // The client refuses a subject whose compatibility level is not the one it sets at a
        // subject's first registration (BACKWARD). A process killed between registering a
        // subject and setting its level leaves it at the registry's default (Apicurio: NONE),
        // and every later registration would fail (seen: SIGKILL during an initial sync).
        // The level is the registry's business, not ours: register under the level it has.
        const level = compatibilityMismatch(err);
        if (level !== null) {
          const found = await this.client.getRegistryIdBySchema(subject, { type: SchemaType.AVRO, schema: text }).catch(() => undefined);
          if (found !== undefined) return found;
          const r = await this.client.register({ type: SchemaType.AVRO, schema: text }, { subject, compatibility: level as never });
          return r.id;
        }
        // A retry after a lost response can be refused (seen with Apicurio: "Compatibility does
        // not match the configuration") although the first attempt registered this very
        // schema: look it up before calling it an error.
        const status = statusOf(err);
        if (status !== undefined && status >= 400 && status < 500) {
          const found = await this.client.getRegistryIdBySchema(subject, { type: SchemaType.AVRO, schema: text }).catch(() => undefined);
          if (found !== undefined) return found;
        }
        throw err;
      }
    });
    this.registered.set(cacheKey, id);
    return id;
  }

  /** Writer schema of an id, with BigInt longs. Unknown id → SCHEMA_UNKNOWN after retries. */
  async schema(id: number): Promise<avro.Type> {
    const hit = this.types.get(id);
    if (hit) return hit;
    const type = await this.retrying(
      `fetch schema id ${id}`,
      () => this.client.getSchema(id) as Promise<unknown> as Promise<avro.Type>,
      (err) => {
        if (statusOf(err) === 404)
          throw new PgBridgeError('SCHEMA_UNKNOWN', `schema id ${id} is not in the registry at ${redactUrl(this.url)}`, {
            details: { schemaId: id },
            cause: err,
          });
      },
    );
    this.types.set(id, type);
    return type;
  }

  /** Decodes a Confluent wire-format message. Not wire format or not decodable → POISON. */
  async decode(buf: Buffer | null): Promise<DecodedRecord> {
    const id = wireSchemaId(buf);
    if (id === null) throw new PgBridgeError('POISON', 'not a Confluent Avro message (no magic byte 0 and schema id)');
    const type = this.types.get(id) ?? (await this.schema(id));
    try {
      const value = type.fromBuffer(buf!.subarray(5)) as Record<string, unknown>;
      return { schemaId: id, recordName: type.name ?? '', value };
    } catch (err) {
      throw new PgBridgeError('POISON', `cannot decode with schema id ${id}: ${errorMessage(err)}`, { details: { schemaId: id }, cause: err });
    }
  }

  private async retrying<T>(what: string, fn: () => Promise<T>, fatal?: (err: unknown) => void): Promise<T> {
    const started = Date.now();
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        fatal?.(err);
        const status = statusOf(err);
        const network = /ECONNREFUSED|ECONNRESET|socket hang up|ETIMEDOUT|EAI_AGAIN|fetch failed|network/i.test(errorMessage(err));
        const transient = network || (status !== undefined && (status >= 500 || status === 408 || status === 429));
        const permanent = !transient;
        if (permanent)
          throw new PgBridgeError('REGISTRY', `${what}: registry at ${redactUrl(this.url)} refused: ${errorMessage(err)}`, { cause: err, details: { status } });
        if (Date.now() - started > this.maxWaitMs) {
          throw new PgBridgeError(
            'REGISTRY',
            `${what}: registry at ${redactUrl(this.url)} unreachable for ${Math.round((Date.now() - started) / 1000)} s: ${errorMessage(err)}`,
            { retriable: true, cause: err },
          );
        }
        this.onRetry(what, attempt, err);
        await sleep(backoff(attempt));
      }
    }
  }
}

/** The subject's level when the client refused a registration over a compatibility mismatch, else null. */
function compatibilityMismatch(err: unknown): string | null {
  if (!(err instanceof Error) || err.name !== 'ConfluentSchemaRegistryCompatibilityError') return null;
  return /!= ([A-Z_]+)\)/.exec(err.message)?.[1] ?? null;
}
