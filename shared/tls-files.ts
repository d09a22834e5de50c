/**
 * PEM files named in the pipeline config (CAs, client certificates and keys of PostgreSQL,
 * Kafka and the registry), read when a connection is made so that a renewed certificate is
 * picked up by the next connection.
 */
import { readFileSync } from 'node:fs';
import { PgBridgeError } from './errors.js';

/** Reads a PEM file named by a config key; a missing file is a config error naming the key. */
export function readPem(key: string, file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new PgBridgeError('CONFIG_INVALID', `${key}: cannot read ${file}: ${(err as Error).message}`);
  }
}
