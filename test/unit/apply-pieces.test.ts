/**
 * The parts of apply that decide without a database: what the event guard refuses before
 * anything is written (INV-9, docs/invariants.md), the replay range, and the throttle's
 * token buckets. The guard's look at the source's WAL position needs a database and is
 * tested in test/integration/poison-loopback.test.ts; here every record carries commit LSN
 * 0/0, which the guard accepts without asking the source.
 */
import { describe, expect, it } from 'vitest';
import { EventGuard } from '../../services/apply/event-guard.js';
import type { ApplyEvent } from '../../services/apply/event-decoder.js';
import { filteredOut, inReplay, keylessPassedOver, parseTableList, replayRangeOf, type ReplayColumns } from '../../services/apply/replay-range.js';
import { Throttle, configuredLimit } from '../../services/apply/throttle.js';
import { parseConfig } from '../../shared/config.js';
import { createLogger } from '../../shared/log.js';
import { ZERO_LSN } from '../../shared/lsn.js';

const cfg = parseConfig({
  pipeline: 'p',
  clusters: { a: {}, b: {} },
  kafka: { brokers: ['k:1'] },
  registry: { url: 'http://r' },
  selection: { schemas: ['app'], exclude: ['app.secret'] },
  apply: { throttle: { rowsPerSecond: 100, directions: { 'b-a': { megabytesPerSecond: 0.5 } } } },
});
const [forward, reverse] = cfg.directions;
const guard = (d = forward) => new EventGuard(cfg, d, createLogger('test', 'silent'));

const base = { pos: { topic: forward.topic, partition: 0, offset: 0n }, sourceCluster: 'a', origin: 'a', commitLsn: ZERO_LSN, commitTs: 1n, last: true };
const changeOn = (schema: string, table: string, extra: Partial<Record<string, unknown>> = {}): ApplyEvent =>
  ({ ...base, kind: 'change', schema, table, op: 'c', before: null, after: { id: 1 }, unchanged: [], snapshot: false, ...extra }) as ApplyEvent;
const controlOf = (control: string, id: string | null, payload: string | null, extra: Partial<Record<string, unknown>> = {}): ApplyEvent =>
  ({ ...base, kind: 'control', control, id, payload, ...extra }) as ApplyEvent;

describe('event guard: what apply refuses before it writes', () => {
  it("lets a change of a selected table from the direction's source through", () => {
    expect(guard().refuse(changeOn('app', 'orders'))).toBeNull();
  });

  it('refuses a record from another source cluster, naming both', () => {
    expect(guard().refuse(changeOn('app', 'orders', { sourceCluster: 'b' }))).toEqual({
      reason: 'source-cluster',
      message: 'source.cluster is "b", but topic p.a.to.b carries the changes of cluster "a"',
    });
  });

  it('refuses tables outside the selection: another schema, an excluded table, cdc and the system schemas', () => {
    for (const [schema, table] of [
      ['public', 'orders'],
      ['app', 'secret'],
      ['cdc', 'apply_progress'],
      ['pg_catalog', 'pg_authid'],
      ['information_schema', 'tables'],
    ] as const) {
      expect(guard().refuse(changeOn(schema, table)), `${schema}.${table}`).toEqual({
        reason: 'table',
        message: `table ${schema}.${table} is not in the selection of pipeline p`,
      });
    }
  });

  it('refuses an unknown op', () => {
    expect(guard().refuse(changeOn('app', 'orders', { op: 'x' }))).toEqual({ reason: 'op', message: 'unknown op "x"' });
  });

  it('refuses a watermark for an unselected table or without an LSN', () => {
    expect(guard().refuse(controlOf('watermark', 'cdc.control', '0/10'))).toMatchObject({ reason: 'table' });
    expect(guard().refuse(controlOf('watermark', 'app.orders', 'soon'))).toEqual({
      reason: 'lsn',
      message: 'watermark for app.orders carries "soon", not an LSN',
    });
    expect(guard().refuse(controlOf('watermark', 'app.orders', '0/0'))).toBeNull();
  });

  it("refuses DDL records in the reverse direction and ones that are not this pipeline's", () => {
    expect(guard(reverse).refuse(controlOf('ddl', 'ALTER TABLE', '{}', { sourceCluster: 'b' }))).toMatchObject({
      reason: 'ddl',
      message: expect.stringContaining('forward direction only'),
    });
    expect(guard().refuse(controlOf('ddl', 'ALTER TABLE', 'not json'))).toEqual({
      reason: 'ddl',
      message: 'DDL record whose payload is not a DDL record of this pipeline',
    });
  });

  it('lets heartbeats and barriers of the source through', () => {
    expect(guard().refuse(controlOf('heartbeat', null, null))).toBeNull();
    expect(guard().refuse(controlOf('barrier', 'b-1', null))).toBeNull();
  });
});

describe('replay range', () => {
  const row = (over: Partial<ReplayColumns>): ReplayColumns => ({
    replay_until: '100',
    replay_id: 'r1',
    replay_lsn: '0/50',
    replay_mode: null,
    replay_tables: null,
    replay_since_us: null,
    ...over,
  });

  it('no replay_until means no range', () => {
    expect(replayRangeOf(row({ replay_until: null }))).toBeNull();
    expect(inReplay(null, 0n)).toBe(false);
  });

  it('offsets below replay_until are in the range, the rest are not', () => {
    const r = replayRangeOf(row({}))!;
    expect(r).toMatchObject({ id: 'r1', mode: 'replay', until: 100n, lsn: '0/50', tables: null, sinceUs: null });
    expect([inReplay(r, 0n), inReplay(r, 99n), inReplay(r, 100n)]).toEqual([true, true, false]);
  });

  it('--tables (jsonb text or parsed) and --from time filter changes; snapshot rows are not filtered by time', () => {
    const r = replayRangeOf(row({ replay_tables: '["app.a"]', replay_since_us: '1000' }))!;
    expect(filteredOut(r, 'app', 'b', 5000n, false)).toBe(true);
    expect(filteredOut(r, 'app', 'a', 999n, false)).toBe(true);
    expect(filteredOut(r, 'app', 'a', 1000n, false)).toBe(false);
    expect(filteredOut(r, 'app', 'a', 1n, true)).toBe(false);
    expect(replayRangeOf(row({ replay_tables: ['app.a'] }))!.tables).toEqual(new Set(['app.a']));
  });

  it('tables without a key are passed over in a replay, written in a rebuild', () => {
    expect(keylessPassedOver(replayRangeOf(row({})), 5n)).toBe(true);
    expect(keylessPassedOver(replayRangeOf(row({ replay_mode: 'rebuild' })), 5n)).toBe(false);
    expect(keylessPassedOver(replayRangeOf(row({})), 100n)).toBe(false);
  });

  it('--tables lists: trimmed, empty parts dropped, a name without schema refused', () => {
    expect(parseTableList(' app.a , ,app.b')).toEqual(['app.a', 'app.b']);
    expect(() => parseTableList('app.a,orders')).toThrow('"orders" is not schema.table');
  });
});

describe('throttle', () => {
  it("the configured limit: the direction's override, else the global one; MB/s in bytes", () => {
    expect(configuredLimit(cfg, 'a-b')).toEqual({ rowsPerSecond: 100, bytesPerSecond: 0, source: 'config' });
    expect(configuredLimit(cfg, 'b-a')).toEqual({ rowsPerSecond: 100, bytesPerSecond: 524288, source: 'config' });
  });

  it('no limit: never waits', () => {
    const t = new Throttle();
    expect(t.active).toBe(false);
    expect(t.take(1_000_000, 1e12, 0)).toBe(0);
  });

  it("a burst of one second's rows goes at once; beyond it the wait keeps the rate", () => {
    const t = new Throttle();
    t.set({ rowsPerSecond: 100, bytesPerSecond: 0, source: 'config' });
    const start = performance.now();
    expect(t.take(100, 0, start)).toBe(0);
    expect(t.take(50, 0, start)).toBeCloseTo(500, 6);
    // After the wait the bucket has refilled what was spent beyond it.
    expect(t.take(0, 0, start + 500)).toBe(0);
  });

  it('the bytes bucket limits on its own, and the larger wait of the two wins', () => {
    const t = new Throttle();
    t.set({ rowsPerSecond: 1000, bytesPerSecond: 1000, source: 'cdc.apply_throttle' });
    const start = performance.now();
    expect(t.take(1, 3000, start)).toBeCloseTo(2000, 6);
    expect(t.current.source).toBe('cdc.apply_throttle');
  });
});
