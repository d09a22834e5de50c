/**
 * Conflict decisions, pure: given what arrived, what the destination holds and the policy,
 * say what to do. Names follow PostgreSQL 18 (insert_exists, update_missing, update_exists,
 * update_origin_differs, delete_missing, delete_origin_differs, multiple_unique_conflicts).
 */
import type { ConflictPolicy } from '../../shared/config.js';

export type ConflictKind =
  | 'insert_exists'
  | 'update_missing'
  | 'update_exists'
  | 'update_origin_differs'
  | 'delete_missing'
  | 'delete_origin_differs'
  | 'multiple_unique_conflicts';

/** apply_remote: the incoming change is written; keep_local: the destination row stays; fail: stop the direction. */
export type Resolution = 'apply_remote' | 'keep_local' | 'fail';

export interface Stamp {
  /** Commit time in µs since the Unix epoch; null when unknown (row older than track_commit_timestamp, or frozen). */
  readonly ts: bigint | null;
  /** Cluster that wrote it. */
  readonly origin: string;
}

/**
 * Last writer wins: the later commit time wins; equal times go to the greater cluster name,
 * so that both sides pick the same winner. An unknown destination time loses.
 */
export function incomingWins(incoming: Stamp, existing: Stamp): boolean {
  if (existing.ts === null) return true;
  if (incoming.ts === null) return false;
  if (incoming.ts !== existing.ts) return incoming.ts > existing.ts;
  return incoming.origin > existing.origin;
}

/**
 * The destination row was changed by another cluster later than the incoming change was
 * committed at its source: a real concurrent write, not the normal back-and-forth of two-way
 * sync (a row written by b and then, later, by a is not a conflict on b).
 */
export function originDiffers(incoming: Stamp, existing: Stamp): boolean {
  return existing.origin !== incoming.origin && !incomingWins(incoming, existing);
}

/**
 * The decision. Under every policy but `fail-strict`, a missing row is handled as the DTS
 * manual documents it: `update_missing` becomes an insert (which may meet a taken key, a
 * conflict of its own) and `delete_missing` is ignored; both are recorded. `fail-strict`
 * stops on those too (PostgreSQL 18's view: every kind is a conflict).
 */
export function resolve(kind: ConflictKind, policy: ConflictPolicy, incoming: Stamp, existing: Stamp | null): Resolution {
  if (policy === 'fail-strict') return 'fail';
  switch (kind) {
    case 'update_missing':
      return 'apply_remote'; // becomes an insert (DTS behaviour)
    case 'delete_missing':
      return 'keep_local'; // nothing to delete (DTS ignores it whatever the policy)
    case 'multiple_unique_conflicts':
      // A unique key other than the primary key collides: overwriting would mean deleting
      // some other row, which no policy asks for. Kept, and recorded.
      return policy === 'fail' ? 'fail' : 'keep_local';
    case 'insert_exists':
    case 'update_exists':
    case 'update_origin_differs':
    case 'delete_origin_differs':
      if (policy === 'fail') return 'fail';
      if (policy === 'ignore') return 'keep_local';
      if (policy === 'overwrite') return 'apply_remote';
      return existing === null || incomingWins(incoming, existing) ? 'apply_remote' : 'keep_local';
  }
}
