/**
 * PostgreSQL's text COPY format, as `COPY … TO STDOUT` writes it: one line per row ending in
 * \n, columns separated by a tab, NULL as \N, and backslash escapes for backslash, newline,
 * carriage return, tab, backspace, form feed and vertical tab. A raw newline never occurs
 * inside a value.
 */

const UNESCAPE: Record<string, string> = { b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v', '\\': '\\' };

/** One line (without its \n) → column values as PostgreSQL text, null for \N. */
export function parseCopyLine(line: string): (string | null)[] {
  const out: (string | null)[] = [];
  for (const field of line.split('\t')) {
    if (field === '\\N') {
      out.push(null);
    } else if (!field.includes('\\')) {
      out.push(field);
    } else {
      out.push(
        field.replace(/\\(x[0-9A-Fa-f]{1,2}|[0-7]{1,3}|.)/g, (_m, e: string) => {
          if (e.length > 1 || /[0-7]/.test(e)) return e[0] === 'x' ? String.fromCharCode(parseInt(e.slice(1), 16)) : String.fromCharCode(parseInt(e, 8));
          return UNESCAPE[e] ?? e;
        }),
      );
    }
  }
  return out;
}

/** A chunk's data → rows of column values as PostgreSQL text. */
export function parseCopyText(data: Buffer | string): (string | null)[][] {
  const text = typeof data === 'string' ? data : data.toString('utf8');
  if (text === '') return [];
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return lines.map(parseCopyLine);
}

/** Column values as PostgreSQL text → one COPY text line (with its \n). */
export function formatCopyLine(values: readonly (string | null)[]): string {
  return `${values.map((v) => (v === null ? '\\N' : v.replace(/[\\\n\r\t\b\f\v]/g, (c) => ({ '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\b': '\\b', '\f': '\\f', '\v': '\\v' })[c]!))).join('\t')}\n`;
}
