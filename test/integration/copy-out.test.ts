/**
 * copyOutChunks on a real PostgreSQL: COPY text output cut into chunks of whole rows within the
 * byte and row limits, byte for byte what COPY writes; a failing COPY fails the iteration with
 * the server's error and leaves the connection usable; a row longer than a chunk travels alone.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyOutChunks, type CopyChunk } from '../../services/snapshot/copy-out.js';
import { clientConfig } from '../../shared/pg.js';
import { formatCopyLine, parseCopyText } from '../../services/snapshot/copy-text.js';
import { testConfig, uniqueName } from '../support/pipeline.js';

/** Rows with every escape COPY text uses, NULL, the empty string and non-ASCII text. */
const ROWS_SQL = `SELECT g, CASE g % 5 WHEN 0 THEN E'tab\\there' WHEN 1 THEN E'new\\nline \\\\ back\\rslash' WHEN 2 THEN 'ünïcödé ' || g WHEN 3 THEN '' ELSE NULL END AS a,
                  repeat('x', g % 97) AS b FROM generate_series(1, 20000) g ORDER BY g`;

async function all(c: pg.Client, sql: string, maxBytes: number, maxRows: number): Promise<CopyChunk[]> {
  const out: CopyChunk[] = [];
  for await (const x of copyOutChunks(c, sql, maxBytes, maxRows)) out.push({ data: Buffer.from(x.data), rows: x.rows });
  return out;
}

describe('COPY out in chunks', () => {
  let c: pg.Client;

  beforeAll(async () => {
    const cfg = testConfig(uniqueName('cpo'), 'public');
    c = new pg.Client(clientConfig(cfg.clusters.a!, 'copy-out-test'));
    await c.connect();
  });
  afterAll(async () => {
    await c?.end();
  });

  it('cuts the output into whole rows within the limits, equal to what COPY writes', async () => {
    const expected = await c.query<{ g: string; a: string | null; b: string }>(`SELECT s.g::text AS g, s.a, s.b FROM (${ROWS_SQL}) s ORDER BY s.g`);
    const text = Buffer.from(expected.rows.map((r) => formatCopyLine([r.g, r.a, r.b])).join(''));
    for (const [maxBytes, maxRows] of [
      [4096, 1_000_000],
      [1_000_000, 333],
      [960 * 1024, 50_000],
      [64, 1_000_000],
    ] as const) {
      const out = await all(c, `COPY (${ROWS_SQL}) TO STDOUT`, maxBytes, maxRows);
      expect(Buffer.concat(out.map((x) => x.data)).equals(text)).toBe(true);
      for (const x of out) {
        expect(x.data[x.data.length - 1]).toBe(10);
        expect(parseCopyText(x.data).length).toBe(x.rows);
        expect(x.rows).toBeLessThanOrEqual(maxRows);
        if (x.rows > 1) expect(x.data.length).toBeLessThanOrEqual(maxBytes);
      }
      expect(out.reduce((s, x) => s + x.rows, 0)).toBe(20_000);
      if (maxBytes === 4096) expect(out.length).toBeGreaterThan(100);
    }
  });

  it('fails with the server error when the COPY fails midway, and the connection stays usable', async () => {
    const sql = 'COPY (SELECT g, 1 / (g - 15000) FROM generate_series(1, 20000) g) TO STDOUT';
    await expect(all(c, sql, 4096, 1_000_000)).rejects.toThrow(/division by zero/);
    await expect(all(c, 'COPY (SELECT * FROM no_such_table_here) TO STDOUT', 4096, 10)).rejects.toThrow(/no_such_table_here/);
    expect((await c.query<{ one: string }>('SELECT 1 AS one')).rows[0]!.one).toBe('1');
  });

  it('sends a row longer than a chunk alone, and an empty result as no chunk', async () => {
    const out = await all(c, "COPY (SELECT g, CASE WHEN g = 3 THEN repeat('y', 300000) ELSE 'z' END FROM generate_series(1, 5) g) TO STDOUT", 1024, 1000);
    expect(out.map((x) => x.rows)).toEqual([2, 1, 2]);
    expect(out[1]!.data.length).toBe(300_000 + 3);
    expect(await all(c, 'COPY (SELECT 1 WHERE false) TO STDOUT', 1024, 10)).toEqual([]);
    expect((await c.query<{ one: string }>('SELECT 1 AS one')).rows[0]!.one).toBe('1');
  });
});
