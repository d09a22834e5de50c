/**
 * `COPY … TO STDOUT` (text format) read straight off a pg connection into chunks of whole rows.
 *
 * In a text COPY out, PostgreSQL sends every row as one CopyData message. So the chunks are
 * cut at message boundaries: no scan for newlines, no list of small buffers joined later.
 * Each row is copied once, from the socket buffer into its chunk, and counted as it goes.
 *
 * Like pg-copy-streams, it takes over the connection's socket while the COPY runs (pg's own
 * parser would make one message object per row) and hands it back to pg at CopyDone or at
 * an ErrorResponse, so pg sees CommandComplete, ReadyForQuery or the error as usual.
 * Back-pressure: at most `QUEUE` full chunks wait for the consumer; beyond that the socket
 * is not read, so the server waits (TCP) rather than the process's memory growing.
 */
import type { Socket } from 'node:net';
import type pg from 'pg';

export interface CopyChunk {
  readonly data: Buffer;
  readonly rows: number;
}

/** Full chunks that may wait for the consumer before the socket is left unread. */
const QUEUE = 2;

const COPY_DATA = 0x64; // 'd'
const COPY_DONE = 0x63; // 'c'
const ERROR_RESPONSE = 0x45; // 'E'

interface PgConnection {
  readonly stream: Socket;
  query(text: string): void;
}

/**
 * The rows of `sql` (a `COPY … TO STDOUT` in text format) as chunks of at most `maxBytes`
 * (a single longer row makes a chunk of its own) and `maxRows` rows. The iteration fails
 * with the server's error if the COPY fails, and checks the row count the server reports.
 */
export async function* copyOutChunks(client: pg.Client, sql: string, maxBytes: number, maxRows: number): AsyncGenerator<CopyChunk> {
  const q = new CopyOutQuery(sql, maxBytes, maxRows);
  const done = new Promise<void>((resolve, reject) => {
    q.finished = resolve;
    q.failed = reject;
  });
  done.catch(() => undefined); // observed through q.error below
  void client.query(q as unknown as pg.QueryConfig);
  for (;;) {
    const c = q.queue.shift();
    if (c) {
      q.resume();
      yield c;
      continue;
    }
    if (q.error) throw q.error;
    if (q.ended) break;
    await new Promise<void>((r) => {
      q.wake = r;
    });
  }
  await done;
  if (q.serverRows !== null && q.serverRows !== q.rowsSeen) {
    throw new Error(`COPY reported ${q.serverRows} rows but ${q.rowsSeen} arrived: ${sql}`);
  }
}

/** The pg Submittable behind copyOutChunks. */
class CopyOutQuery {
  readonly queue: CopyChunk[] = [];
  ended = false;
  error: Error | null = null;
  rowsSeen = 0;
  serverRows: number | null = null;
  wake: (() => void) | null = null;
  finished: () => void = () => undefined;
  failed: (err: Error) => void = () => undefined;

  private conn: PgConnection | null = null;
  private pgOnData: ((buf: Buffer) => void) | null = null;
  private readonly onReadable = (): void => this.pump();
  /** Message header (code + length) being assembled across socket reads. */
  private readonly head = Buffer.alloc(5);
  private headHave = 0;
  private code = 0;
  /** Bytes of the current message's body not read yet. */
  private bodyLeft = 0;
  private chunk: Buffer;
  private bytes = 0;
  private rows = 0;
  private detached = false;

  constructor(
    private readonly text: string,
    private readonly maxBytes: number,
    private readonly maxRows: number,
  ) {
    this.chunk = Buffer.allocUnsafe(maxBytes);
  }

  /** pg calls this when the query's turn comes. */
  submit(connection: PgConnection): void {
    this.conn = connection;
    const s = connection.stream;
    const listeners = s.listeners('data') as ((buf: Buffer) => void)[];
    if (listeners.length !== 1) throw new Error(`COPY out: the connection has ${listeners.length} data listeners, 1 expected`);
    this.pgOnData = listeners[0]!;
    s.removeListener('data', this.pgOnData);
    s.pause();
    s.on('readable', this.onReadable);
    connection.query(this.text);
  }

  /** The consumer took a chunk: read on if the socket was left unread. */
  resume(): void {
    if (!this.detached && this.conn && this.queue.length < QUEUE) this.pump();
  }

  private pump(): void {
    const s = this.conn!.stream;
    while (!this.detached && this.queue.length < QUEUE) {
      const buf = s.read() as Buffer | null;
      if (buf === null) return;
      this.parse(buf);
    }
  }

  private parse(buf: Buffer): void {
    let at = 0;
    while (at < buf.length) {
      if (this.bodyLeft === 0 && this.headHave < 5) {
        if (this.headHave === 0 && (buf[at] === ERROR_RESPONSE || buf[at] === COPY_DONE)) {
          if (buf[at] === COPY_DONE) this.flush();
          // pg reads CopyDone (which it ignores), CommandComplete, ReadyForQuery or the error itself.
          this.detach(buf.subarray(at));
          return;
        }
        const n = Math.min(5 - this.headHave, buf.length - at);
        buf.copy(this.head, this.headHave, at, at + n);
        this.headHave += n;
        at += n;
        if (this.headHave < 5) return;
        this.code = this.head[0]!;
        this.bodyLeft = this.head.readUInt32BE(1) - 4;
        if (this.code === COPY_DATA) this.startRow(this.bodyLeft);
        if (this.bodyLeft === 0) this.endMessage();
        continue;
      }
      const n = Math.min(this.bodyLeft, buf.length - at);
      // Rows go into the chunk; the other messages of a COPY out (CopyOutResponse, notices,
      // parameter status) are passed over.
      if (this.code === COPY_DATA) {
        buf.copy(this.chunk, this.bytes, at, at + n);
        this.bytes += n;
      }
      at += n;
      this.bodyLeft -= n;
      if (this.bodyLeft === 0) this.endMessage();
    }
  }

  /** A row of `len` bytes starts: the chunk is handed out first if the row does not fit. */
  private startRow(len: number): void {
    if (this.rows > 0 && (this.bytes + len > this.maxBytes || this.rows >= this.maxRows)) this.flush();
    if (len > this.chunk.length - this.bytes) {
      // A row longer than a chunk: a chunk of its own, of its size.
      this.chunk = Buffer.allocUnsafe(Math.max(len, this.maxBytes));
    }
  }

  private endMessage(): void {
    this.headHave = 0;
    if (this.code === COPY_DATA) {
      this.rows++;
      this.rowsSeen++;
    }
  }

  private flush(): void {
    if (this.rows === 0) return;
    this.queue.push({ data: this.chunk.subarray(0, this.bytes), rows: this.rows });
    this.chunk = Buffer.allocUnsafe(this.maxBytes);
    this.bytes = 0;
    this.rows = 0;
    this.notify();
  }

  /** The socket goes back to pg, with what was read past the COPY's data. */
  private detach(rest: Buffer): void {
    this.detached = true;
    const s = this.conn!.stream;
    s.removeListener('readable', this.onReadable);
    s.on('data', this.pgOnData!);
    if (rest.length) this.pgOnData!(rest);
    // pg's handler may pause the socket; it must flow again once this read is over.
    process.nextTick(() => s.resume());
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  // pg's Submittable callbacks, once pg parses again.
  handleCommandComplete(msg: { text?: string }): void {
    const m = /^COPY (\d+)/.exec(msg.text ?? '');
    if (m) this.serverRows = Number(m[1]);
  }

  handleReadyForQuery(): void {
    this.ended = true;
    this.finished();
    this.notify();
  }

  handleError(err: Error): void {
    this.error = err;
    this.ended = true;
    this.failed(err);
    this.notify();
  }

  handleCopyData(): void {
    // Not reached: the COPY's data is read before pg sees the socket again.
  }
}
