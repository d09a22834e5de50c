/**
 * Precheck, stage two: the rules over the gathered facts. Pure (unit-tested over hand-made
 * facts), and every finding is reported, never only the first. This file holds the order:
 * per cluster, then the selection, then the two clusters compared, then Kafka, the registry
 * and encryption; the rules themselves are in rules-*.ts, one function each.
 */
import type { PipelineConfig } from '../../../shared/config.js';
import { evaluateExtensions } from './extensions.js';
import type { PrecheckFacts, ReachableClusterFacts } from './facts.js';
import { at, type AddFinding, type Finding, type PrecheckOptions } from './findings.js';
import { checkEncryption } from './rules-encryption.js';
import { checkKafka, checkKafkaTopics, checkKafkaTransactions, checkRegistry } from './rules-kafka.js';
import { checkPrivileges, checkServiceRoles } from './rules-privileges.js';
import { checkReplicationSlots, checkSchemas, checkTrackCommitTimestamp, checkWalLevel, checkWalSenderTimeout, checkWalSenders } from './rules-server.js';
import { checkDestinationTables, checkReplicaIdentity, checkSelection, checkSequences, checkTableStructure } from './rules-tables.js';
import { evaluateTableSettings } from './table-settings.js';

type ClusterRule = (cfg: PipelineConfig, c: ReachableClusterFacts, add: AddFinding) => void;

/** The rules run on each reachable cluster, in report order. */
const CLUSTER_RULES: readonly ClusterRule[] = [
  checkSchemas,
  checkWalLevel,
  checkWalSenderTimeout,
  checkReplicationSlots,
  checkWalSenders,
  checkPrivileges,
  checkServiceRoles,
  checkReplicaIdentity,
];

const CLUSTER_CHECKS_SKIPPED =
  'wal_level, wal_sender_timeout, replication slots, wal senders, privileges, schemas, replica identity, track_commit_timestamp, and the table, structure and sequence comparisons with the other cluster';

/** Pure: turns gathered facts into findings, every one of them, in CHECKS order per system. */
export function evaluateFacts(cfg: PipelineConfig, facts: PrecheckFacts, opts: Pick<PrecheckOptions, 'existingTables'> = {}): Finding[] {
  const out: Finding[] = [];
  const add: AddFinding = (f) => {
    out.push(f);
  };
  const reachable = checkConnections(cfg, facts, add);
  for (const c of reachable) for (const rule of CLUSTER_RULES) rule(cfg, c, add);
  checkSelection(cfg, reachable, add);
  if (facts.tableSettings) evaluateTableSettings(cfg, facts.tableSettings, add);
  checkTrackCommitTimestamp(cfg, reachable, add);
  const from = facts.clusters[cfg.directions[0].from];
  const to = facts.clusters[cfg.directions[0].to];
  if (from?.reachable && to?.reachable && !from.tablesError && !to.tablesError) {
    checkDestinationTables(cfg, from, to, opts.existingTables ?? 'error', add);
    checkTableStructure(cfg, from, to, add);
    checkSequences(cfg, from, to, add);
    if (facts.extensions) evaluateExtensions(cfg, facts.extensions, add);
  }
  checkKafka(cfg, facts.kafka, add);
  checkKafkaTransactions(cfg, facts.kafka, add);
  checkKafkaTopics(cfg, facts.kafka, add);
  checkRegistry(facts.registry, add);
  checkEncryption(cfg, facts, add);
  return out;
}

/** connection: each cluster answered; the others are skipped by every cluster rule. Returns the reachable ones. */
function checkConnections(cfg: PipelineConfig, facts: PrecheckFacts, add: AddFinding): ReachableClusterFacts[] {
  const reachable: ReachableClusterFacts[] = [];
  for (const name of cfg.clusterNames) {
    const c = facts.clusters[name];
    if (!c) continue;
    if (!c.reachable) {
      add({
        level: 'error',
        check: 'connection',
        cluster: name,
        object: `${c.host}:${c.port}`,
        message: `cluster ${at(c)}: cannot connect to database ${c.database} as ${c.user}: ${c.reason}; skipped for this cluster: ${CLUSTER_CHECKS_SKIPPED}`,
        fix: `check clusters.${name} (host, port, database, user, password) and that PostgreSQL accepts connections from here (listen_addresses, pg_hba.conf)`,
      });
      continue;
    }
    reachable.push(c);
    add({
      level: 'ok',
      check: 'connection',
      cluster: name,
      object: `${c.host}:${c.port}`,
      message: `cluster ${at(c)}: connected to ${c.database} as ${c.user} (PostgreSQL ${c.serverVersion})`,
    });
  }
  return reachable;
}
