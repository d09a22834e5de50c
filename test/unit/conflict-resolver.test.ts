/**
 * The conflict decision table, pure: every kind under every policy, last-writer-wins by
 * commit time with ties to the greater cluster name, unknown commit times, and the symmetry
 * two-way sync relies on (both sides pick the same winner).
 */
import { describe, expect, it } from 'vitest';
import { incomingWins, originDiffers, resolve, type ConflictKind, type Stamp } from '../../services/apply/conflict-resolver.js';
import type { ConflictPolicy } from '../../shared/config.js';

const KINDS: ConflictKind[] = [
  'insert_exists',
  'update_missing',
  'update_exists',
  'update_origin_differs',
  'delete_missing',
  'delete_origin_differs',
  'multiple_unique_conflicts',
];
/** Kinds where a destination row competes with the incoming change. */
const COMPETING: ConflictKind[] = ['insert_exists', 'update_exists', 'update_origin_differs', 'delete_origin_differs'];

const s = (ts: bigint | null, origin: string): Stamp => ({ ts, origin });
const older = s(1_000n, 'b');
const newer = s(2_000n, 'b');
const fromA = (ts: bigint | null): Stamp => s(ts, 'a');

describe('incomingWins (last writer wins)', () => {
  it('the later commit time wins, whatever the cluster names', () => {
    expect(incomingWins(fromA(2_000n), older)).toBe(true);
    expect(incomingWins(fromA(1_000n), newer)).toBe(false);
    expect(incomingWins(s(2_000n, 'z'), s(1_999n, 'zz'))).toBe(true);
  });

  it('equal commit times go to the greater cluster name', () => {
    expect(incomingWins(s(5n, 'b'), s(5n, 'a'))).toBe(true);
    expect(incomingWins(s(5n, 'a'), s(5n, 'b'))).toBe(false);
  });

  it('equal time and cluster: the destination keeps its row', () => {
    expect(incomingWins(s(5n, 'a'), s(5n, 'a'))).toBe(false);
  });

  it('an unknown destination commit time loses; an unknown incoming time loses to a known one', () => {
    expect(incomingWins(fromA(1n), s(null, 'b'))).toBe(true);
    expect(incomingWins(fromA(null), s(null, 'b'))).toBe(true);
    expect(incomingWins(fromA(null), s(1n, 'b'))).toBe(false);
  });

  it('is antisymmetric for distinct known stamps: both clusters pick the same winner', () => {
    const times = [0n, 1n, 2n, 1_700_000_000_000_000n];
    const names = ['a', 'b', 'east', 'west'];
    for (const t1 of times)
      for (const t2 of times)
        for (const o1 of names)
          for (const o2 of names) {
            if (t1 === t2 && o1 === o2) continue;
            const x = s(t1, o1);
            const y = s(t2, o2);
            expect(incomingWins(x, y), `${t1}/${o1} vs ${t2}/${o2}`).toBe(!incomingWins(y, x));
          }
  });
});

describe('originDiffers (update_origin_differs / delete_origin_differs detection)', () => {
  it('a row last written by the same cluster is never a conflict', () => {
    expect(originDiffers(fromA(1n), s(2n, 'a'))).toBe(false);
    expect(originDiffers(fromA(null), s(2n, 'a'))).toBe(false);
  });

  it('a row written by another cluster earlier is the normal back-and-forth, not a conflict', () => {
    expect(originDiffers(fromA(2_000n), older)).toBe(false);
  });

  it('a row written by another cluster later than the incoming commit is a conflict', () => {
    expect(originDiffers(fromA(1_000n), newer)).toBe(true);
  });

  it('at equal times it is a conflict exactly when the incoming cluster would lose the tie', () => {
    expect(originDiffers(s(5n, 'a'), s(5n, 'b'))).toBe(true);
    expect(originDiffers(s(5n, 'b'), s(5n, 'a'))).toBe(false);
  });

  it('an unknown destination commit time is not a conflict; an unknown incoming time is', () => {
    expect(originDiffers(fromA(1n), s(null, 'b'))).toBe(false);
    expect(originDiffers(fromA(null), s(1n, 'b'))).toBe(true);
  });
});

describe('resolve (decision table)', () => {
  it('fail-strict stops on every kind, with or without a destination row', () => {
    for (const k of KINDS) {
      expect(resolve(k, 'fail-strict', fromA(2n), older), k).toBe('fail');
      expect(resolve(k, 'fail-strict', fromA(2n), null), k).toBe('fail');
    }
  });

  it('fail (DTS TaskFailed) stops on every kind but the missing row ones', () => {
    for (const k of KINDS.filter((x) => x !== 'update_missing' && x !== 'delete_missing')) {
      expect(resolve(k, 'fail', fromA(2n), older), k).toBe('fail');
      expect(resolve(k, 'fail', fromA(2n), null), k).toBe('fail');
    }
  });

  it('update_missing becomes an insert and delete_missing is ignored under every policy but fail-strict (DTS)', () => {
    for (const p of ['fail', 'ignore', 'overwrite', 'last-writer-wins'] as ConflictPolicy[]) {
      expect(resolve('update_missing', p, fromA(1n), null), p).toBe('apply_remote');
      expect(resolve('delete_missing', p, fromA(1n), null), p).toBe('keep_local');
    }
  });

  it('multiple_unique_conflicts keeps the destination under every other policy (overwriting would delete another row)', () => {
    for (const p of ['ignore', 'overwrite', 'last-writer-wins'] as ConflictPolicy[]) {
      expect(resolve('multiple_unique_conflicts', p, fromA(9n), older), p).toBe('keep_local');
      expect(resolve('multiple_unique_conflicts', p, fromA(9n), null), p).toBe('keep_local');
    }
  });

  it('ignore keeps and overwrite applies, whatever the commit times', () => {
    for (const k of COMPETING) {
      for (const existing of [older, newer, s(null, 'b'), s(1_500n, 'a')]) {
        expect(resolve(k, 'ignore', fromA(1_500n), existing), k).toBe('keep_local');
        expect(resolve(k, 'overwrite', fromA(1_500n), existing), k).toBe('apply_remote');
      }
    }
  });

  it('last-writer-wins compares commit times, then cluster names; unknown destination time loses', () => {
    const lww = 'last-writer-wins';
    for (const k of COMPETING) {
      expect(resolve(k, lww, fromA(1_500n), older), `${k} newer incoming`).toBe('apply_remote');
      expect(resolve(k, lww, fromA(1_500n), newer), `${k} older incoming`).toBe('keep_local');
      expect(resolve(k, lww, s(7n, 'a'), s(7n, 'b')), `${k} tie, a→b`).toBe('keep_local');
      expect(resolve(k, lww, s(7n, 'b'), s(7n, 'a')), `${k} tie, b→a`).toBe('apply_remote');
      expect(resolve(k, lww, fromA(1n), s(null, 'b')), `${k} unknown destination`).toBe('apply_remote');
      expect(resolve(k, lww, fromA(1n), null), `${k} no destination row`).toBe('apply_remote');
    }
  });

  it('concurrent writes converge: for each competing kind both directions keep the same write', () => {
    // a wrote at ta, b wrote at tb; on b the incoming is a's write, on a it is b's.
    for (const [ta, tb] of [
      [1n, 2n],
      [2n, 1n],
      [3n, 3n],
    ] as const) {
      const onB = resolve('update_origin_differs', 'last-writer-wins', s(ta, 'a'), s(tb, 'b'));
      const onA = resolve('update_origin_differs', 'last-writer-wins', s(tb, 'b'), s(ta, 'a'));
      const winnerOnB = onB === 'apply_remote' ? 'a' : 'b';
      const winnerOnA = onA === 'apply_remote' ? 'b' : 'a';
      expect(winnerOnB, `ta=${ta} tb=${tb}`).toBe(winnerOnA);
    }
  });
});
