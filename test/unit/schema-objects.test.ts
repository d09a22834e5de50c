/**
 * The decisions of the schema step and the sequence split that the shared stack cannot show:
 * an extension whose files are missing on the destination, one in another schema, one the
 * role may not create (both stack servers have the same contrib modules and a superuser),
 * and the residue arithmetic of the split.
 */
import { describe, expect, it } from 'vitest';
import { evaluateExtensions } from '../../services/cli/precheck/extensions.js';
import type { Finding } from '../../services/cli/precheck/index.js';
import { nextInResidue } from '../../services/cli/sequence-split.js';
import { classifyExtensions, type DestinationExtension, type NeededExtension } from '../../services/snapshot/schema-objects.js';
import { parseConfig } from '../../shared/config.js';

const need = (name: string, schema = 'public'): NeededExtension => ({ name, schema, version: '1.6', direct: true });
const dest = (name: string, over: Partial<DestinationExtension> = {}): DestinationExtension => ({
  name,
  installed: null,
  available: '1.6',
  trusted: true,
  ...over,
});
const superuser = { name: 'sync', superuser: true, createOnDatabase: true };
const plain = { name: 'sync', superuser: false, createOnDatabase: true };

describe('extensions the selected objects use', () => {
  it('creates what is available, keeps what is there, and names what cannot be had, with the fix', () => {
    const r = classifyExtensions(
      [need('citext'), need('hstore', 'ext'), need('postgis'), need('ltree'), need('plv8')],
      [
        dest('citext', { installed: { schema: 'public', version: '1.6' } }),
        dest('hstore'),
        dest('postgis', { available: null }),
        dest('ltree', { installed: { schema: 'other', version: '1.2' } }),
        dest('plv8', { trusted: false }),
      ],
      plain,
      'b',
    );
    expect(r.present.map((e) => e.name)).toEqual(['citext']);
    expect(r.create.map((e) => e.name)).toEqual(['hstore']);
    expect(r.problems.map((p) => p.extension)).toEqual(['postgis', 'ltree', 'plv8']);
    expect(r.problems[0]!.message).toContain('is not available on b');
    expect(r.problems[0]!.fix).toContain('install the package that provides postgis');
    expect(r.problems[1]!.fix).toBe('on b: ALTER EXTENSION "ltree" SET SCHEMA "public"; (create the schema first if needed)');
    expect(r.problems[2]!.message).toContain('not a trusted extension: it needs a superuser');
    expect(r.problems[2]!.fix).toBe('as a superuser on b: CREATE EXTENSION IF NOT EXISTS "plv8" WITH SCHEMA "public";');
    // A superuser creates an untrusted one itself; without CREATE on the database even a trusted one needs help.
    expect(classifyExtensions([need('plv8')], [dest('plv8', { trusted: false })], superuser, 'b').create).toHaveLength(1);
    expect(classifyExtensions([need('hstore')], [dest('hstore')], { ...plain, createOnDatabase: false }, 'b').problems[0]!.message).toContain(
      'no CREATE privilege on the database',
    );
  });

  it('precheck: an error per extension that cannot be had, else one ok line', () => {
    const cfg = parseConfig({
      pipeline: 'p',
      clusters: { a: { host: 'ha' }, b: { host: 'hb' } },
      kafka: { brokers: ['k:9092'] },
      registry: { url: 'http://r:8081' },
      selection: { schemas: ['app'] },
    });
    const run = (needed: NeededExtension[], destination: DestinationExtension[]): Finding[] => {
      const out: Finding[] = [];
      evaluateExtensions(cfg, { needed, destination, role: superuser }, (f) => out.push(f));
      return out;
    };
    const missing = run([need('hstore')], [dest('hstore', { available: null })]);
    expect(missing.map((f) => [f.level, f.check, f.object])).toEqual([['error', 'extensions', 'hstore']]);
    expect(run([need('hstore')], [dest('hstore')]).map((f) => [f.level, f.message])).toEqual([
      ['ok', 'extensions the selected objects use: created on b by the schema step of sync: hstore (schema public)'],
    ]);
    expect(run([], []).map((f) => f.message)).toEqual(['the selected objects use no extension']);
  });
});

describe('sequence split residues', () => {
  it('the smallest value at or above a start in a residue class', () => {
    expect(nextInResidue(101n, 1n, 2n)).toBe(101n);
    expect(nextInResidue(101n, 2n, 2n)).toBe(102n);
    expect(nextInResidue(100n, 1n, 3n)).toBe(100n);
    expect(nextInResidue(100n, 2n, 3n)).toBe(101n);
    expect(nextInResidue(-5n, 1n, 2n)).toBe(-5n);
  });
});
