/**
 * node-postgres connections with pgbridge's pinned session: UTC, ISO dates, exact floats,
 * hex bytea, and every value returned as PostgreSQL's text (no Date, no JSON.parse, no
 * float parse): exactness is kept by never converting.
 */
import { checkServerIdentity, type ConnectionOptions } from 'node:tls';
import pg from 'pg';
import type { ClusterConfig } from './config.js';
import { readPem } from './tls-files.js';

export type PgClient = pg.Client;

/** Session settings that make text forms of values identical on both clusters. */
export const SESSION_OPTIONS = '-c timezone=UTC -c datestyle=ISO,YMD -c intervalstyle=postgres -c extra_float_digits=3 -c bytea_output=hex';

const rawText = (v: string): string => v;
const rawBinary = (v: Buffer): Buffer => v;
const bool = (v: string): boolean => v === 't';
const BOOL_OID = 16;
/** Type parsers that hand back the text form of every type but boolean (catalog flags read as booleans). */
export const RAW_TYPES = {
  getTypeParser: ((oid: number, format?: string) =>
    format === 'binary' ? rawBinary : oid === BOOL_OID ? bool : rawText) as unknown as pg.CustomTypesConfig['getTypeParser'],
};

/**
 * node-postgres TLS options for libpq's sslmode: `require` encrypts without checking the
 * server; `verify-ca` checks that the certificate chains to sslRootCert (Node's CAs without
 * it); `verify-full` also checks that it names the configured host (for an IP address, its
 * IP subject alternative name).
 */
export function sslOptions(c: ClusterConfig): false | ConnectionOptions {
  if (c.sslMode === 'disable') return false;
  const key = `clusters.${c.name}`;
  const files: ConnectionOptions = {
    ...(c.sslRootCert ? { ca: readPem(`${key}.sslRootCert`, c.sslRootCert) } : {}),
    ...(c.sslCert ? { cert: readPem(`${key}.sslCert`, c.sslCert) } : {}),
    ...(c.sslKey ? { key: readPem(`${key}.sslKey`, c.sslKey) } : {}),
  };
  if (c.sslMode === 'require') return { ...files, rejectUnauthorized: false };
  if (c.sslMode === 'verify-ca') return { ...files, rejectUnauthorized: true, checkServerIdentity: () => undefined };
  return { ...files, rejectUnauthorized: true, checkServerIdentity: (_servername, cert) => checkServerIdentity(c.host, cert) };
}

/** libpq environment for pg_dump and psql: the same server, role, password and TLS settings. */
export function libpqEnv(c: ClusterConfig): NodeJS.ProcessEnv {
  return {
    PGHOST: c.host,
    PGPORT: String(c.port),
    PGUSER: c.user,
    PGDATABASE: c.database,
    PGSSLMODE: c.sslMode,
    ...(c.password ? { PGPASSWORD: c.password } : {}),
    ...(c.sslRootCert ? { PGSSLROOTCERT: c.sslRootCert } : {}),
    ...(c.sslCert ? { PGSSLCERT: c.sslCert } : {}),
    ...(c.sslKey ? { PGSSLKEY: c.sslKey } : {}),
  };
}

export function clientConfig(c: ClusterConfig, applicationName: string): pg.ClientConfig {
  return {
    ssl: sslOptions(c),
    host: c.host,
    port: c.port,
    database: c.database,
    user: c.user,
    password: c.password,
    application_name: applicationName.slice(0, 63),
    options: SESSION_OPTIONS,
    types: RAW_TYPES,
    connectionTimeoutMillis: 10_000,
    keepAlive: true,
  };
}

export async function connect(c: ClusterConfig, applicationName: string): Promise<pg.Client> {
  const client = new pg.Client(clientConfig(c, applicationName));
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw err;
  }
  return client;
}

/** Runs fn with a connection and always closes it. */
export async function withClient<T>(c: ClusterConfig, applicationName: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = await connect(c, applicationName);
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Double-quotes an identifier. */
export function qi(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** Quoted schema.table */
export function qt(schema: string, table: string): string {
  return `${qi(schema)}.${qi(table)}`;
}

/** Single-quotes a literal. */
export function ql(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}
