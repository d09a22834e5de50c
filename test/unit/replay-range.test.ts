import { describe, expect, it } from 'vitest';
import { filteredOut, inReplay, keylessPassedOver, parseTableList, replayRangeOf } from '../../services/apply/replay-range.js';
import { parseReplayFrom } from '../../services/cli/replay.js';

describe('replay --from', () => {
  it('takes earliest, an offset, or an ISO time with its zone', () => {
    expect(parseReplayFrom('earliest')).toEqual({ kind: 'earliest' });
    expect(parseReplayFrom('1234')).toEqual({ kind: 'offset', offset: 1234n });
    expect(parseReplayFrom('2026-11-30T07:00:00Z')).toEqual({ kind: 'time', ms: Date.UTC(2026, 10, 30, 7), text: '2026-11-30T07:00:00.000Z' });
    expect(parseReplayFrom('2026-11-30T09:00:00+02:00')).toMatchObject({ kind: 'time', ms: Date.UTC(2026, 10, 30, 7) });
  });

  it('refuses a time without its zone, a bad time and anything else, saying what it expects', () => {
    expect(() => parseReplayFrom('2026-11-30T07:00:00')).toThrow(/time zone/);
    expect(() => parseReplayFrom('2026-13-45T99:00:00Z')).toThrow(/not a valid ISO 8601 time/);
    expect(() => parseReplayFrom('-5')).toThrow(/expected earliest, an offset/);
    expect(() => parseReplayFrom('latest')).toThrow(/expected earliest, an offset/);
  });
});

describe('replay range', () => {
  const row = { replay_until: '100', replay_id: 'replay-x', replay_lsn: '0/10', replay_mode: 'replay', replay_tables: '["s.t"]', replay_since_us: '5000' };

  it('is read from the progress row and absent without replay_until', () => {
    const r = replayRangeOf(row)!;
    expect(r).toMatchObject({ id: 'replay-x', mode: 'replay', until: 100n, lsn: '0/10', sinceUs: 5000n });
    expect([...r.tables!]).toEqual(['s.t']);
    expect(replayRangeOf({ ...row, replay_until: null })).toBeNull();
    expect(replayRangeOf({ ...row, replay_tables: null, replay_since_us: null, replay_mode: 'rebuild' })).toMatchObject({
      tables: null,
      sinceUs: null,
      mode: 'rebuild',
    });
  });

  it('covers the offsets below its end only', () => {
    const r = replayRangeOf(row)!;
    expect(inReplay(r, 99n)).toBe(true);
    expect(inReplay(r, 100n)).toBe(false);
    expect(inReplay(null, 1n)).toBe(false);
  });

  it('filters by table and by source commit time, not snapshot rows by time', () => {
    const r = replayRangeOf(row)!;
    expect(filteredOut(r, 's', 't', 6000n, false)).toBe(false);
    expect(filteredOut(r, 's', 'u', 6000n, false)).toBe(true);
    expect(filteredOut(r, 's', 't', 4999n, false)).toBe(true);
    expect(filteredOut(r, 's', 't', 4999n, true)).toBe(false);
  });

  it('passes tables without a key over in a replay, not in a rebuild', () => {
    expect(keylessPassedOver(replayRangeOf(row), 1n)).toBe(true);
    expect(keylessPassedOver(replayRangeOf({ ...row, replay_mode: 'rebuild' }), 1n)).toBe(false);
    expect(keylessPassedOver(replayRangeOf(row), 100n)).toBe(false);
  });

  it('reads a --tables list', () => {
    expect(parseTableList(' s.t, s.u ,')).toEqual(['s.t', 's.u']);
    expect(() => parseTableList('t')).toThrow(/"t" is not schema.table/);
  });
});
