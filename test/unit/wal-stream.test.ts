/**
 * The replication stream reader's protocol handling, on a stand-in socket fed the bytes a
 * walsender sends: messages split anywhere, keepalives, status updates, back-pressure, and
 * the hand-back to pg at an ErrorResponse.
 */
import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { standbyStatusUpdate, WalStreamQuery, type WalHandlers } from '../../services/capture/wal-stream.js';

function msg(code: string, body: Buffer): Buffer {
  const h = Buffer.alloc(5);
  h[0] = code.charCodeAt(0);
  h.writeUInt32BE(body.length + 4, 1);
  return Buffer.concat([h, body]);
}

function xlog(start: bigint, payload: string): Buffer {
  const b = Buffer.alloc(25);
  b[0] = 0x77;
  b.writeBigUInt64BE(start, 1);
  b.writeBigUInt64BE(start + 100n, 9);
  return msg('d', Buffer.concat([b, Buffer.from(payload)]));
}

function keepalive(end: bigint, reply: boolean): Buffer {
  const b = Buffer.alloc(18);
  b[0] = 0x6b;
  b.writeBigUInt64BE(end, 1);
  b[17] = reply ? 1 : 0;
  return msg('d', b);
}

const COPY_BOTH = msg('W', Buffer.from([0, 0, 0]));
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

interface Fake {
  socket: Duplex;
  written: Buffer[];
  pgBytes: Buffer[];
  sql: string[];
  q: WalStreamQuery;
  events: string[];
}

function fake(handlers: Partial<WalHandlers> = {}): Fake {
  const written: Buffer[] = [];
  const pgBytes: Buffer[] = [];
  const sql: string[] = [];
  const events: string[] = [];
  const socket = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      written.push(chunk);
      cb();
    },
  });
  socket.on('data', (b: Buffer) => pgBytes.push(b)); // pg's own parser
  const q = new WalStreamQuery('START_REPLICATION …', {
    onData: (lsn, payload) => void events.push(`data ${lsn} ${payload.toString()}`),
    onKeepalive: (lsn, reply) => void events.push(`keepalive ${lsn} ${reply}`),
    onStart: () => void events.push('start'),
    onHandlerError: (err) => void events.push(`error ${err.message}`),
    ...handlers,
  });
  q.submit({ stream: socket as unknown as Socket, query: (text) => void sql.push(text) });
  return { socket, written, pgBytes, sql, q, events };
}

describe('WalStreamQuery', () => {
  it('hands on XLogData and keepalives whole with bigint LSNs, however the socket splits them', async () => {
    const all = Buffer.concat([
      COPY_BOTH,
      xlog(0x1_0000_0010n, 'first'),
      keepalive(0xffff_ffff_0000_0001n, true),
      xlog(0x2_0000_0000n, 'x'.repeat(300)),
      keepalive(5n, false),
    ]);
    for (const size of [1, 3, 7, 64, all.length]) {
      const f = fake();
      expect(f.sql).toEqual(['START_REPLICATION …']);
      for (let i = 0; i < all.length; i += size) f.socket.push(all.subarray(i, i + size));
      await tick();
      await tick();
      expect(f.events, `chunks of ${size}`).toEqual([
        'start',
        `data ${0x1_0000_0010n} first`,
        `keepalive ${0xffff_ffff_0000_0001n} true`,
        `data ${0x2_0000_0000n} ${'x'.repeat(300)}`,
        'keepalive 5 false',
      ]);
      expect(f.pgBytes).toEqual([]);
      expect(f.q.idle).toBe(true);
    }
  });

  it('stops reading the socket while a message is being handled (back-pressure), then goes on in order', async () => {
    let release: () => void = () => undefined;
    const seen: string[] = [];
    const f = fake({
      onData: (lsn, payload) => {
        seen.push(payload.toString());
        if (payload.toString() === 'slow') return new Promise<void>((r) => (release = r));
      },
    });
    f.socket.push(Buffer.concat([COPY_BOTH, xlog(1n, 'slow'), xlog(2n, 'next')]));
    await tick();
    expect(seen).toEqual(['slow']);
    expect(f.socket.isPaused()).toBe(true);
    expect(f.q.idle).toBe(false);
    // Arrives while paused: stays in the socket, not handed on.
    f.socket.push(xlog(3n, 'later'));
    await tick();
    expect(seen).toEqual(['slow']);
    release();
    await tick();
    await tick();
    expect(seen).toEqual(['slow', 'next', 'later']);
    expect(f.socket.isPaused()).toBe(false);
    expect(f.q.idle).toBe(true);
  });

  it('stops at the first handler failure and hands nothing more on', async () => {
    const seen: string[] = [];
    const f = fake({
      onData: async (_lsn, payload) => {
        seen.push(payload.toString());
        if (payload.toString() === 'bad') throw new Error('boom');
      },
    });
    f.socket.push(Buffer.concat([COPY_BOTH, xlog(1n, 'bad'), xlog(2n, 'after')]));
    await tick();
    await tick();
    expect(seen).toEqual(['bad']);
    expect(f.events).toEqual(['start', 'error boom']);
  });

  it('sends standby status updates with the exact LSN as written, flushed and applied position', () => {
    const f = fake();
    f.socket.push(COPY_BOTH);
    const lsn = 0x1_2345_6789n;
    expect(f.q.sendStatus(lsn)).toBe(true);
    const b = Buffer.concat(f.written);
    expect(b.length).toBe(39);
    expect(b[0]).toBe(0x64); // CopyData
    expect(b.readUInt32BE(1)).toBe(38);
    expect(String.fromCharCode(b[5]!)).toBe('r');
    expect([b.readBigUInt64BE(6), b.readBigUInt64BE(14), b.readBigUInt64BE(22)]).toEqual([lsn, lsn, lsn]);
    expect(b[38]).toBe(0);
    // Send time: microseconds since 2000-01-01.
    const t = standbyStatusUpdate(1n, Date.UTC(2000, 0, 1, 0, 0, 1));
    expect(t.readBigInt64BE(30)).toBe(1_000_000n);
  });

  it('gives the socket back to pg at an ErrorResponse, with every byte after it', async () => {
    const f = fake();
    const err = msg('E', Buffer.from('SFATAL\0Mterminating\0\0'));
    const rz = msg('Z', Buffer.from('I'));
    f.socket.push(Buffer.concat([COPY_BOTH, xlog(1n, 'a'), err.subarray(0, 4)]));
    await tick();
    f.socket.push(Buffer.concat([err.subarray(4), rz]));
    await tick();
    expect(f.events).toEqual(['start', 'data 1 a']);
    // The error's first bytes arrived with data: pg gets them from the message start on.
    expect(Buffer.concat(f.pgBytes)).toEqual(Buffer.concat([err, rz]));
    expect(f.q.sendStatus(1n)).toBe(false);
  });

  it("gives the socket back to pg at the server's CopyDone", async () => {
    const f = fake();
    const tail = Buffer.concat([msg('c', Buffer.alloc(0)), msg('C', Buffer.from('START_STREAMING\0')), msg('Z', Buffer.from('I'))]);
    f.socket.push(Buffer.concat([COPY_BOTH, xlog(7n, 'z'), tail]));
    await tick();
    expect(f.events).toEqual(['start', 'data 7 z']);
    expect(Buffer.concat(f.pgBytes)).toEqual(tail);
  });
});
