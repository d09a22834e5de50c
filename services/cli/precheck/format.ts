/**
 * Precheck, stage three: the report. One line per finding, grouped by check in CHECKS order.
 */
import { CHECKS, type CheckName, type Finding, type FindingLevel } from './findings.js';

const TITLES: Record<CheckName, string> = {
  connection: 'Connections',
  schemas: 'Selected schemas',
  selection: 'Selection',
  table_settings: 'Table settings (column lists, row filters, operations)',
  wal_level: 'wal_level',
  wal_sender_timeout: 'wal_sender_timeout',
  replication_slots: 'Replication slots',
  wal_senders: 'WAL senders',
  privileges: 'Privileges',
  service_roles: 'Service roles',
  replica_identity: 'Primary key / replica identity',
  track_commit_timestamp: 'track_commit_timestamp (last-writer-wins)',
  destination_tables: 'Destination tables',
  table_structure: 'Table structure',
  extensions: 'Extensions',
  sequences: 'Sequences',
  kafka: 'Kafka',
  kafka_transactions: 'Kafka transactions',
  kafka_topics: 'Kafka topics',
  registry: 'Schema registry',
  encryption: 'Encryption',
};

const TAG: Record<FindingLevel, string> = { error: 'ERROR', warning: 'WARN ', ok: 'ok   ' };

/** One line per finding, grouped by check (errors first in each), each fix on the next indented line, then the summary line. */
export function formatFindings(findings: readonly Finding[]): string {
  const rank: Record<FindingLevel, number> = { error: 0, warning: 1, ok: 2 };
  const groups = new Map<string, Finding[]>();
  for (const c of CHECKS) groups.set(c, []);
  for (const f of findings) groups.set(f.check, [...(groups.get(f.check) ?? []), f]);
  const lines: string[] = [];
  for (const [check, fs] of groups) {
    if (fs.length === 0) continue;
    lines.push(`${TITLES[check as CheckName] ?? check}:`);
    for (const f of [...fs].sort((a, b) => rank[a.level] - rank[b.level])) {
      lines.push(`  ${TAG[f.level]} ${f.message}`);
      if (f.fix) lines.push(`         fix: ${f.fix}`);
    }
  }
  const errors = findings.filter((f) => f.level === 'error').length;
  const warnings = findings.filter((f) => f.level === 'warning').length;
  lines.push(`precheck: ${errors} error(s), ${warnings} warning(s)`);
  return lines.join('\n');
}
