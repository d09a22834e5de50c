/**
 * What precheck reports: a finding per check and object (error, warning or ok, with the fix
 * to run), the checks in report order, and the options. Shared by gathering, the rules and
 * the report.
 */
import type { Logger } from '../../../shared/log.js';

export type FindingLevel = 'error' | 'warning' | 'ok';

export interface Finding {
  readonly level: FindingLevel;
  readonly check: string;
  /** Cluster name, or `kafka` / `registry`. */
  readonly cluster?: string;
  /** The object concerned: setting, role, schema, table, sequence, topic, URL. */
  readonly object?: string;
  readonly message: string;
  /** What to run or change; printed on its own line. */
  readonly fix?: string;
}

export interface PrecheckOptions {
  /** DTS "Processing Mode of Conflicting Tables": error = "precheck and report errors" (default), ignore = warn and proceed. */
  readonly existingTables?: 'error' | 'ignore';
  /** The Kafka client's log lines go here; default: errors only (failures become findings anyway). */
  readonly log?: Logger;
  /** Time allowed for Kafka and the registry to answer; default 10 s. */
  readonly timeoutMs?: number;
}

/** Checks in report order (formatFindings groups by these). */
export const CHECKS = [
  'connection',
  'schemas',
  'selection',
  'table_settings',
  'wal_level',
  'wal_sender_timeout',
  'replication_slots',
  'wal_senders',
  'privileges',
  'service_roles',
  'replica_identity',
  'track_commit_timestamp',
  'destination_tables',
  'table_structure',
  'extensions',
  'sequences',
  'kafka',
  'kafka_transactions',
  'kafka_topics',
  'registry',
  'encryption',
] as const;
export type CheckName = (typeof CHECKS)[number];

/** How every rule reports: one call per finding. */
export type AddFinding = (f: Finding) => void;

/** `name (host:port)`, how findings name a cluster. */
export function at(c: { name: string; host: string; port: number }): string {
  return `${c.name} (${c.host}:${c.port})`;
}

/** A list for a message, cut after `max` items with how many more there are. */
export function list(items: readonly string[], max = 10): string {
  return items.length <= max ? items.join(', ') : `${items.slice(0, max).join(', ')} and ${items.length - max} more`;
}
