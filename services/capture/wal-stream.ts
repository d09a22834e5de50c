/**
 * The CopyBoth stream of `START_REPLICATION … LOGICAL`, read straight off a pg connection.
 *
 * Like the COPY-out reader (services/snapshot/copy-out.ts) it takes over the connection's
 * socket while the stream runs, so pg makes no message object, event or string per WAL
 * message. Each socket chunk is parsed in place: an XLogData payload that lies within one
 * chunk is handed on as a view of it (no copy); only a message split across chunks is
 * assembled into a buffer of its own. LSNs stay bigints (no 'X/Y' text).
 *
 * Back-pressure (INV-7): while the handler of a message has not settled, the socket is paused,
 * so unread WAL waits in the kernel and the server rather than in this process. At most one
 * socket chunk (and the chunks Node had already read) is held.
 *
 * At an ErrorResponse or a CopyDone from the server, the socket goes back to pg with what was
 * read past the stream, so pg reports the error or the end of the command as for any query.
 */
import type { Socket } from 'node:net';
import type { Lsn } from '../../shared/lsn.js';

const COPY_DATA = 0x64; // 'd'
const COPY_DONE = 0x63; // 'c'
const COPY_BOTH_RESPONSE = 0x57; // 'W'
const ERROR_RESPONSE = 0x45; // 'E'
const XLOG_DATA = 0x77; // 'w'
const KEEPALIVE = 0x6b; // 'k'
/** XLogData: 'w', start LSN, end LSN, send time; the payload follows. */
const XLOG_HEADER = 25;
/** Microseconds between 1970-01-01 and 2000-01-01 (PostgreSQL's epoch). */
const PG_EPOCH_MS = 946_684_800_000;

export interface WalHandlers {
  /** One XLogData message: `payload` is a view that is valid until the returned promise settles. */
  onData(walStart: Lsn, payload: Buffer): Promise<void> | void;
  /** Primary keepalive: the server's WAL end and whether it asks for a status update now. */
  onKeepalive(walEnd: Lsn, replyRequested: boolean): void;
  /** CopyBothResponse: streaming has started. */
  onStart(): void;
  /** A handler threw or rejected: nothing more is read (the caller stops the connection). */
  onHandlerError(err: Error): void;
}

export interface PgConnection {
  readonly stream: Socket;
  query(text: string): void;
}

/**
 * A standby status update (CopyData 'r') telling the server that everything before `lsn` is
 * written, flushed and applied. `lsn` is sent as it is: the server stores it as the slot's
 * confirmed_flush_lsn.
 */
export function standbyStatusUpdate(lsn: bigint, now = Date.now(), replyRequested = false): Buffer {
  const b = Buffer.allocUnsafe(1 + 4 + 34);
  b[0] = COPY_DATA;
  b.writeUInt32BE(4 + 34, 1);
  b[5] = 0x72; // 'r'
  b.writeBigUInt64BE(lsn, 6);
  b.writeBigUInt64BE(lsn, 14);
  b.writeBigUInt64BE(lsn, 22);
  b.writeBigInt64BE(BigInt(now - PG_EPOCH_MS) * 1000n, 30);
  b[38] = replyRequested ? 1 : 0;
  return b;
}

/** The pg Submittable that runs START_REPLICATION and reads its stream. */
export class WalStreamQuery {
  /** Settles when pg has seen the command end (resolve) or fail (reject). */
  readonly done: Promise<void>;
  private finished: () => void = () => undefined;
  private failed: (err: Error) => void = () => undefined;

  private conn: PgConnection | null = null;
  private pgOnData: ((buf: Buffer) => void) | null = null;
  private readonly onSocketData = (buf: Buffer): void => this.receive(buf);
  /** Chunks read but not parsed yet (more than one only if Node emitted data while paused). */
  private readonly inbox: Buffer[] = [];
  private chunk: Buffer | null = null;
  private at = 0;
  /** Message header (code + length) split across chunks. */
  private readonly head = Buffer.alloc(5);
  private headHave = 0;
  /** A message body split across chunks, assembled here. */
  private body: Buffer | null = null;
  private bodyHave = 0;
  /** Code of the message being assembled in `body`. */
  private code = 0;
  private pumping = false;
  private detached = false;
  private stopped = false;
  /** A handler promise has not settled. */
  private handling = false;

  constructor(
    private readonly text: string,
    private readonly h: WalHandlers,
  ) {
    this.done = new Promise<void>((resolve, reject) => {
      this.finished = resolve;
      this.failed = reject;
    });
    this.done.catch(() => undefined);
  }

  /** Nothing received is waiting to be handled. */
  get idle(): boolean {
    return !this.handling && this.headHave === 0 && this.body === null && (this.chunk === null || this.at >= this.chunk.length) && this.inbox.length === 0;
  }

  /** Writes a standby status update; false when the stream is not open. */
  sendStatus(lsn: bigint, replyRequested = false): boolean {
    const s = this.conn?.stream;
    if (!s || this.detached || this.stopped || s.destroyed) return false;
    s.write(standbyStatusUpdate(lsn, Date.now(), replyRequested));
    return true;
  }

  /** No handler is called any more (the connection is being closed). */
  stop(): void {
    this.stopped = true;
  }

  /** pg calls this when the query's turn comes. */
  submit(connection: PgConnection): void {
    this.conn = connection;
    const s = connection.stream;
    const listeners = s.listeners('data') as ((buf: Buffer) => void)[];
    if (listeners.length !== 1) throw new Error(`replication stream: the connection has ${listeners.length} data listeners, 1 expected`);
    this.pgOnData = listeners[0]!;
    s.removeListener('data', this.pgOnData);
    s.on('data', this.onSocketData);
    connection.query(this.text);
  }

  private receive(buf: Buffer): void {
    if (this.detached) {
      this.pgOnData!(buf);
      return;
    }
    this.inbox.push(buf);
    if (!this.pumping) void this.pump();
  }

  /** Parses every chunk in the inbox; the socket is paused while a handler runs. */
  private async pump(): Promise<void> {
    this.pumping = true;
    const s = this.conn!.stream;
    let paused = false;
    try {
      for (;;) {
        if (this.chunk === null || this.at >= this.chunk.length) {
          const next = this.inbox.shift();
          if (!next) break;
          this.chunk = next;
          this.at = 0;
        }
        const p = this.step();
        if (p) {
          if (!paused) {
            s.pause();
            paused = true;
          }
          this.handling = true;
          try {
            await p;
          } finally {
            this.handling = false;
          }
        }
        if (this.detached || this.stopped) break;
      }
    } catch (err) {
      this.stopped = true;
      this.h.onHandlerError(err as Error);
    } finally {
      this.pumping = false;
      if (this.detached || this.stopped) this.inbox.length = 0;
      if (paused && !this.stopped && !s.destroyed) s.resume();
    }
  }

  /**
   * Parses from `chunk[at]` up to the end of the next whole message (or the end of the chunk)
   * and handles it; returns the handler's promise when there is one to wait for.
   */
  private step(): Promise<void> | void {
    const c = this.chunk!;
    let at = this.at;
    if (this.body === null) {
      let code: number;
      let len: number;
      if (this.headHave === 0 && c.length - at >= 5) {
        code = c[at]!;
        if (code === ERROR_RESPONSE || code === COPY_DONE) return this.detach(c.subarray(at));
        len = c.readUInt32BE(at + 1) - 4;
        at += 5;
      } else {
        if (this.headHave === 0 && (c[at] === ERROR_RESPONSE || c[at] === COPY_DONE)) return this.detach(c.subarray(at));
        const n = Math.min(5 - this.headHave, c.length - at);
        c.copy(this.head, this.headHave, at, at + n);
        this.headHave += n;
        this.at = at + n;
        if (this.headHave < 5) return;
        at = this.at;
        this.headHave = 0;
        code = this.head[0]!;
        len = this.head.readUInt32BE(1) - 4;
      }
      if (c.length - at >= len) {
        // The whole message is in this chunk: handled as a view of it.
        this.at = at + len;
        return this.message(code, c, at, at + len);
      }
      this.body = Buffer.allocUnsafe(len);
      this.bodyHave = 0;
      this.code = code;
    }
    const body = this.body;
    const n = Math.min(body.length - this.bodyHave, c.length - at);
    c.copy(body, this.bodyHave, at, at + n);
    this.bodyHave += n;
    this.at = at + n;
    if (this.bodyHave < body.length) return;
    this.body = null;
    return this.message(this.code, body, 0, body.length);
  }

  private message(code: number, b: Buffer, from: number, to: number): Promise<void> | void {
    if (this.stopped) return;
    if (code === COPY_DATA && to > from) {
      const kind = b[from];
      if (kind === XLOG_DATA && to - from >= XLOG_HEADER) {
        return this.h.onData(b.readBigUInt64BE(from + 1) as Lsn, b.subarray(from + XLOG_HEADER, to));
      }
      if (kind === KEEPALIVE && to - from >= 18) {
        this.h.onKeepalive(b.readBigUInt64BE(from + 1) as Lsn, b[from + 17] !== 0);
      }
      // Other CopyData kinds are not part of logical replication: passed over.
    } else if (code === COPY_BOTH_RESPONSE) {
      this.h.onStart();
    }
    // NoticeResponse, ParameterStatus and the like: passed over.
  }

  /** The socket goes back to pg, with what was read past the stream. */
  private detach(rest: Buffer): void {
    this.detached = true;
    this.chunk = null;
    const s = this.conn!.stream;
    s.removeListener('data', this.onSocketData);
    s.on('data', this.pgOnData!);
    const later = this.inbox.splice(0);
    this.pgOnData!(rest);
    for (const b of later) this.pgOnData!(b);
    // pg's handler may pause the socket; it must flow again once this read is over.
    process.nextTick(() => {
      if (!s.destroyed) s.resume();
    });
  }

  // pg's Submittable callbacks, once pg parses again.
  handleReadyForQuery(): void {
    this.finished();
  }

  handleError(err: Error): void {
    this.failed(err);
  }

  handleCommandComplete(): void {}
  handleRowDescription(): void {}
  handleDataRow(): void {}
  handleEmptyQuery(): void {}
  handlePortalSuspended(): void {}
  handleCopyInResponse(): void {}
  handleCopyData(): void {}
}
