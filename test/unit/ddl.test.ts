import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../shared/config.js';
import { parseDdlRecord, renamedTablesTouched, runsOutsideTransaction, type DdlRecord } from '../../shared/ddl.js';

const cfg = parseConfig({
  pipeline: 'p',
  clusters: { a: {}, b: {} },
  kafka: { brokers: ['k:9092'] },
  registry: { url: 'http://r:8081' },
  selection: { schemas: ['app'], tables: { 'app.t': { rename: { b: 'app.t2' } }, 'app.u': { renameColumns: { b: { x: 'y' } } } } },
});

const rec = (sql: string, objects: DdlRecord['objects'], tag = 'ALTER TABLE'): DdlRecord => ({
  pipeline: 'p',
  tag,
  sql,
  searchPath: 'app',
  role: 'r',
  objects,
});

describe('DDL records', () => {
  it('finds the renamed tables a DDL touches, by its table objects or by a whole identifier in its text', () => {
    expect(renamedTablesTouched(cfg, rec('ALTER TABLE app.t ADD COLUMN c int', [{ type: 'table', schema: 'app', identity: 'app.t' }]))).toEqual(['app.t']);
    expect(renamedTablesTouched(cfg, rec('CREATE INDEX i ON u (x)', [{ type: 'index', schema: 'app', identity: 'app.i' }], 'CREATE INDEX'))).toEqual(['app.u']);
    // "t" inside other words, and tables without a mapping, are not matches.
    expect(renamedTablesTouched(cfg, rec('ALTER TABLE app.tt ADD COLUMN t_x int', [{ type: 'table', schema: 'app', identity: 'app.tt' }]))).toEqual([]);
  });

  it('reads a payload back, refuses a malformed one, and tells which commands run outside a transaction', () => {
    const d = rec('CREATE INDEX CONCURRENTLY i ON t (x)', [{ type: 'index', schema: 'app', identity: 'app.i' }], 'CREATE INDEX');
    expect(parseDdlRecord(JSON.stringify(d))).toEqual(d);
    expect(parseDdlRecord('{"pipeline":"p"}')).toBeNull();
    expect(parseDdlRecord('not json')).toBeNull();
    expect(runsOutsideTransaction(d)).toBe(true);
    expect(runsOutsideTransaction({ ...d, sql: 'CREATE INDEX i ON t (x)' })).toBe(false);
  });
});
