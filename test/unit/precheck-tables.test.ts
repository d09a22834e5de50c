import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../shared/config.js';
import { evaluateTableSettings, filterColumns, type SettingsTableFacts } from '../../services/cli/precheck/table-settings.js';
import type { Finding } from '../../services/cli/precheck/index.js';

const base = { pipeline: 'p', clusters: { a: {}, b: {} }, kafka: { brokers: ['k:9092'] }, registry: { url: 'http://r:8081' } };
const table = (over: Partial<SettingsTableFacts> = {}): SettingsTableFacts => ({
  exists: true,
  columns: ['id', 'region', 'note', 'len'],
  generated: ['len'],
  identity: ['id'],
  ...over,
});

function findings(tables: Record<string, unknown>, a: Record<string, SettingsTableFacts>, b: Record<string, SettingsTableFacts> = a): Finding[] {
  const cfg = parseConfig({ ...base, selection: { schemas: ['app'], tables } });
  const out: Finding[] = [];
  evaluateTableSettings(cfg, { a, b }, (f) => out.push(f));
  return out;
}

describe('precheck: selection.tables', () => {
  it('reads the columns of a row filter, not words in its string literals', () => {
    expect(filterColumns(`region = 'eu' AND "Note" IS NOT NULL AND lower(note) <> 'region'`, ['id', 'region', 'note', 'Note'])).toEqual([
      'region',
      'note',
      'Note',
    ]);
  });

  it('settings that fit give one ok line', () => {
    const f = findings({ 'app.t': { columns: { exclude: ['note'] }, where: 'id > 10' } }, { 'app.t': table() });
    expect(f.map((x) => [x.level, x.check])).toEqual([['ok', 'table_settings']]);
  });

  it('a table missing on a cluster, an unknown column, a generated column listed, a list without the key and a filter outside the replica identity are errors with their fix', () => {
    const f = findings(
      {
        'app.gone': { operations: ['insert'] },
        'app.t': { columns: { include: ['region', 'nosuch', 'len'] }, where: { 'b-a': "region = 'eu'" } },
      },
      { 'app.gone': table({ exists: false }), 'app.t': table() },
    );
    expect(f.map((x) => [x.level, x.cluster, x.message.split(':')[0]])).toEqual([
      ['error', 'a', 'selection.tables.app.gone'],
      ['error', 'a', 'selection.tables.app.t.columns names nosuch, which app.t does not have on cluster a'],
      ['error', 'a', 'selection.tables.app.t.columns names generated column(s) len'],
      ['error', 'a', 'selection.tables.app.t.columns leaves out id of the replica identity of app.t on cluster a'],
      ['error', 'b', 'selection.tables.app.gone'],
      ['error', 'b', 'selection.tables.app.t.columns names nosuch, which app.t does not have on cluster b'],
      ['error', 'b', 'selection.tables.app.t.columns names generated column(s) len'],
      ['error', 'b', 'selection.tables.app.t.columns leaves out id of the replica identity of app.t on cluster b'],
      ['error', 'b', 'selection.tables.app.t.where (b-a) reads region, outside the replica identity of app.t on cluster b'],
    ]);
    expect(f.at(-1)!.fix).toBe(
      'on b: CREATE UNIQUE INDEX ON "app"."t" (<key columns>, region); ALTER TABLE "app"."t" REPLICA IDENTITY USING INDEX <that index>;',
    );
  });

  it('a filter or list outside the replica identity is fine when only inserts replicate, and REPLICA IDENTITY FULL covers every filter', () => {
    expect(findings({ 'app.t': { where: "region = 'eu'", operations: ['insert'] } }, { 'app.t': table() }).map((x) => x.level)).toEqual(['ok']);
    expect(findings({ 'app.t': { where: "region = 'eu'" } }, { 'app.t': table({ identity: 'full' }) }).map((x) => x.level)).toEqual(['ok']);
    const full = findings({ 'app.t': { columns: { exclude: ['note'] } } }, { 'app.t': table({ identity: 'full' }) });
    expect(full.map((x) => [x.level, x.fix])).toEqual([
      [
        'error',
        'give app.t a primary key (or REPLICA IDENTITY USING INDEX) without the excluded columns, or replicate only inserts (selection.tables.app.t.operations)',
      ],
      [
        'error',
        'give app.t a primary key (or REPLICA IDENTITY USING INDEX) without the excluded columns, or replicate only inserts (selection.tables.app.t.operations)',
      ],
    ]);
  });
});
