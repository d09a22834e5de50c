/**
 * PostgreSQL's text COPY format, as `COPY … TO STDOUT` writes it: one line per row ending in
 * \n, columns separated by a tab, NULL as \N, and backslash escapes for backslash, newline,
 * carriage return, tab, backspace, form feed and vertical tab. A raw newline never occurs
 * inside a value, so chunks are cut at newlines.
 */

/** Cuts a stream of COPY output buffers into chunks of whole lines, each at most maxBytes (a longer single row makes a chunk of its own) and maxRows. */
export class LineChunker {
  private cur: Buffer[] = [];
  private bytes = 0;
  private rows = 0;
  /** Head of a line whose end has not arrived yet. */
  private carry: Buffer = Buffer.alloc(0);

  constructor(private readonly maxBytes: number, private readonly maxRows: number) {}

  /** Adds output; returns the chunks that are full. */
  push(buf: Buffer): { data: Buffer; rows: number }[] {
    const out: { data: Buffer; rows: number }[] = [];
    let from = 0;
    if (this.carry.length) {
      // Only the unfinished line is joined with the head of this buffer (no copy of the rest).
      const nl = buf.indexOf(10);
      if (nl < 0) {
        this.carry = Buffer.concat([this.carry, buf]);
        return out;
      }
      this.lines(Buffer.concat([this.carry, buf.subarray(0, nl + 1)]), out);
      this.carry = Buffer.alloc(0);
      from = nl + 1;
    }
    const lastNl = buf.lastIndexOf(10);
    if (lastNl < from) {
      this.carry = Buffer.from(buf.subarray(from));
      return out;
    }
    if (lastNl + 1 < buf.length) this.carry = Buffer.from(buf.subarray(lastNl + 1));
    this.lines(buf.subarray(from, lastNl + 1), out);
    return out;
  }

  /** Whole lines: added to the current chunk, which is handed out whenever the next line does not fit. */
  private lines(lines: Buffer, out: { data: Buffer; rows: number }[]): void {
    let pos = 0;
    let segStart = 0;
    while (pos < lines.length) {
      const nl = lines.indexOf(10, pos);
      const len = nl + 1 - pos;
      if (this.rows > 0 && (this.bytes + len > this.maxBytes || this.rows >= this.maxRows)) {
        if (pos > segStart) this.cur.push(lines.subarray(segStart, pos));
        out.push(this.take());
        segStart = pos;
      }
      this.bytes += len;
      this.rows++;
      pos = nl + 1;
    }
    if (pos > segStart) this.cur.push(lines.subarray(segStart, pos));
  }

  /** The last chunk at the end of the output (COPY ends every row with \n). */
  end(): { data: Buffer; rows: number } | null {
    if (this.carry.length) throw new Error('COPY output ended inside a row');
    return this.rows > 0 ? this.take() : null;
  }

  private take(): { data: Buffer; rows: number } {
    const c = { data: this.cur.length === 1 ? this.cur[0]! : Buffer.concat(this.cur), rows: this.rows };
    this.cur = [];
    this.bytes = 0;
    this.rows = 0;
    return c;
  }
}

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
      out.push(field.replace(/\\(x[0-9A-Fa-f]{1,2}|[0-7]{1,3}|.)/g, (_m, e: string) => {
        if (e.length > 1 || /[0-7]/.test(e)) return e[0] === 'x' ? String.fromCharCode(parseInt(e.slice(1), 16)) : String.fromCharCode(parseInt(e, 8));
        return UNESCAPE[e] ?? e;
      }));
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
