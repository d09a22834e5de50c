import { describe, expect, it } from 'vitest';
import { formatCopyLine, parseCopyText } from '../../services/snapshot/copy-text.js';

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
});
