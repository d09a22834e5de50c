import { describe, expect, it } from 'vitest';
import { LineChunker, formatCopyLine, parseCopyText } from '../../services/snapshot/copy-text.js';

const rows: (string | null)[][] = [
  ['1', 'plain', null],
  ['2', 'tab\there', 'new\nline'],
  ['3', 'back\\slash \r \b \f \v', ''],
  ['4', 'ünïcödé', '\\N as text'],
];
const text = rows.map(formatCopyLine).join('');

describe('COPY text format', () => {
  it('round-trips values with every escape, NULL and the empty string', () => {
    expect(parseCopyText(text)).toEqual(rows);
    expect(formatCopyLine(['a\tb', null])).toBe('a\\tb\t\\N\n');
  });

  it('cuts a stream split anywhere into chunks of whole lines within the byte and row limits', () => {
    const all = Buffer.from(text.repeat(50));
    for (const [maxBytes, maxRows] of [[40, 1000], [1000, 3], [10_000, 10_000], [1, 1000]] as const) {
      for (const piece of [1, 7, 64, all.length]) {
        const c = new LineChunker(maxBytes, maxRows);
        const out: { data: Buffer; rows: number }[] = [];
        for (let i = 0; i < all.length; i += piece) out.push(...c.push(all.subarray(i, i + piece)));
        const last = c.end();
        if (last) out.push(last);
        expect(Buffer.concat(out.map((x) => x.data)).equals(all)).toBe(true);
        for (const x of out) {
          expect(x.data[x.data.length - 1]).toBe(10);
          expect(parseCopyText(x.data).length).toBe(x.rows);
          expect(x.rows).toBeLessThanOrEqual(maxRows);
          // A single row longer than the limit makes a chunk of its own.
          if (x.rows > 1) expect(x.data.length).toBeLessThanOrEqual(maxBytes);
        }
        expect(out.reduce((s, x) => s + x.rows, 0)).toBe(rows.length * 50);
      }
    }
  });

  it('refuses output that ends inside a row', () => {
    const c = new LineChunker(100, 100);
    c.push(Buffer.from('1\tx\n2\t'));
    expect(() => c.end()).toThrow(/inside a row/);
  });
});
