/**
 * Precheck rules on a cluster's server settings: selected schemas, wal_level,
 * wal_sender_timeout, replication slots, wal senders, track_commit_timestamp. One function
 * per rule; each reports every problem it finds, or one ok line.
 */
import { slotName, type PipelineConfig } from '../../../shared/config.js';
import { qi } from '../../../shared/pg.js';
import type { ReachableClusterFacts } from './facts.js';
import { at, list, type AddFinding } from './findings.js';

const RESTART = 'then restart PostgreSQL (the setting takes effect only at server start)';

/** schemas: every selected schema exists on the cluster (the destination may get its tables from the schema sync). */
export function checkSchemas(cfg: PipelineConfig, c: ReachableClusterFacts, add: AddFinding): void {
  const where = `cluster ${at(c)}`;
  const name = c.name;
  for (const s of cfg.selection.schemas) {
    const found = c.schemas.find((x) => x.name === s);
    if (!found) {
      const dest = cfg.directions[0].to === name;
      add({
        level: 'error',
        check: 'schemas',
        cluster: name,
        object: s,
        message: `${where}: selected schema ${qi(s)} does not exist in database ${c.database}; two-way sync needs it on both clusters`,
        fix: dest
          ? `CREATE SCHEMA ${qi(s)}; on ${name} (the initial schema sync ${cfg.directions[0].id} creates its tables), or remove it from selection.schemas`
          : `CREATE SCHEMA ${qi(s)}; on ${name} with its tables, or remove it from selection.schemas`,
      });
    }
  }
  if (cfg.selection.schemas.every((s) => c.schemas.some((x) => x.name === s))) {
    add({ level: 'ok', check: 'schemas', cluster: name, message: `${where}: selected schema(s) ${cfg.selection.schemas.map(qi).join(', ')} exist` });
  }
}

/** wal_level: logical decoding needs `logical`. */
export function checkWalLevel(_cfg: PipelineConfig, c: ReachableClusterFacts, add: AddFinding): void {
  const where = `cluster ${at(c)}`;
  const name = c.name;
  if (c.walLevel !== 'logical') {
    add({
      level: 'error',
      check: 'wal_level',
      cluster: name,
      object: 'wal_level',
      message: `${where}: wal_level is ${c.walLevel}; logical decoding (capture) needs logical`,
      fix: `ALTER SYSTEM SET wal_level = logical; ${RESTART}`,
    });
  } else add({ level: 'ok', check: 'wal_level', cluster: name, object: 'wal_level', message: `${where}: wal_level = logical` });
}

/** wal_sender_timeout: capture's status updates must come more often than the server drops a silent connection. */
export function checkWalSenderTimeout(cfg: PipelineConfig, c: ReachableClusterFacts, add: AddFinding): void {
  const where = `cluster ${at(c)}`;
  const name = c.name;
  const statusMs = cfg.capture.statusIntervalSeconds * 1000;
  if (c.walSenderTimeoutMs > 0 && statusMs >= c.walSenderTimeoutMs) {
    add({
      level: 'error',
      check: 'wal_sender_timeout',
      cluster: name,
      object: 'wal_sender_timeout',
      message: `${where}: wal_sender_timeout is ${c.walSenderTimeoutMs} ms but capture.statusIntervalSeconds is ${cfg.capture.statusIntervalSeconds} s; the server would drop the replication connection between two status updates`,
      fix: `set capture.statusIntervalSeconds below ${c.walSenderTimeoutMs / 1000}, or ALTER SYSTEM SET wal_sender_timeout = '${Math.ceil((statusMs * 3) / 1000)}s'; SELECT pg_reload_conf();`,
    });
  } else
    add({
      level: 'ok',
      check: 'wal_sender_timeout',
      cluster: name,
      object: 'wal_sender_timeout',
      message: `${where}: wal_sender_timeout (${c.walSenderTimeoutMs === 0 ? 'disabled' : `${c.walSenderTimeoutMs} ms`}) is above capture.statusIntervalSeconds`,
    });
}

/** replication_slots: the pipeline's slot exists, or one is free for it. */
export function checkReplicationSlots(cfg: PipelineConfig, c: ReachableClusterFacts, add: AddFinding): void {
  const where = `cluster ${at(c)}`;
  const name = c.name;
  const slot = slotName(cfg, name);
  if (c.ownSlot) {
    add({ level: 'ok', check: 'replication_slots', cluster: name, object: slot, message: `${where}: replication slot ${slot} already exists` });
  } else if (c.maxReplicationSlots - c.slotsInUse < 1) {
    add({
      level: 'error',
      check: 'replication_slots',
      cluster: name,
      object: 'max_replication_slots',
      message: `${where}: max_replication_slots is ${c.maxReplicationSlots} and ${c.slotsInUse} slot(s) exist; none is free for slot ${slot}`,
      fix: `ALTER SYSTEM SET max_replication_slots = ${c.slotsInUse + 1}; ${RESTART} (or drop unused slots: SELECT slot_name, active FROM pg_replication_slots;)`,
    });
  } else
    add({
      level: 'ok',
      check: 'replication_slots',
      cluster: name,
      object: 'max_replication_slots',
      message: `${where}: ${c.maxReplicationSlots - c.slotsInUse} of ${c.maxReplicationSlots} replication slot(s) free for ${slot}`,
    });
}

/** wal_senders: a wal sender is free for capture's replication connection (its own active slot already holds one). */
export function checkWalSenders(_cfg: PipelineConfig, c: ReachableClusterFacts, add: AddFinding): void {
  const where = `cluster ${at(c)}`;
  const name = c.name;
  const sendersNeeded = c.ownSlot?.active ? 0 : 1;
  if (c.maxWalSenders - c.sendersInUse < sendersNeeded) {
    add({
      level: 'error',
      check: 'wal_senders',
      cluster: name,
      object: 'max_wal_senders',
      message: `${where}: max_wal_senders is ${c.maxWalSenders} and ${c.sendersInUse} wal sender(s) are in use; none is free for capture's replication connection`,
      fix: `ALTER SYSTEM SET max_wal_senders = ${c.sendersInUse + 1}; ${RESTART}`,
    });
  } else
    add({
      level: 'ok',
      check: 'wal_senders',
      cluster: name,
      object: 'max_wal_senders',
      message: `${where}: ${c.maxWalSenders - c.sendersInUse} of ${c.maxWalSenders} wal sender(s) free`,
    });
}

/** track_commit_timestamp: on wherever a last-writer-wins policy needs the destination row's commit time. */
export function checkTrackCommitTimestamp(cfg: PipelineConfig, clusters: readonly ReachableClusterFacts[], add: AddFinding): void {
  const lwwTables = Object.entries(cfg.conflicts.tables)
    .filter(([, p]) => p === 'last-writer-wins')
    .map(([t]) => t);
  const global = cfg.conflicts.policy === 'last-writer-wins';
  for (const c of clusters) {
    const where = `cluster ${at(c)}`;
    if (!global && lwwTables.length === 0) {
      add({
        level: 'ok',
        check: 'track_commit_timestamp',
        cluster: c.name,
        object: 'track_commit_timestamp',
        message: `${where}: no last-writer-wins policy, track_commit_timestamp not needed`,
      });
    } else if (!c.trackCommitTimestamp) {
      const why = global ? 'the global conflict policy is last-writer-wins' : `tables ${list(lwwTables)} use last-writer-wins`;
      add({
        level: 'error',
        check: 'track_commit_timestamp',
        cluster: c.name,
        object: 'track_commit_timestamp',
        message: `${where}: track_commit_timestamp is off but ${why}: apply cannot read the destination row's commit time`,
        fix: 'ALTER SYSTEM SET track_commit_timestamp = on; then restart PostgreSQL',
      });
    } else
      add({
        level: 'ok',
        check: 'track_commit_timestamp',
        cluster: c.name,
        object: 'track_commit_timestamp',
        message: `${where}: track_commit_timestamp = on (last-writer-wins)`,
      });
  }
}
