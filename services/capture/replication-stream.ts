/**
 * The replication connection: a plain pg Client in replication mode running
 * `START_REPLICATION SLOT … LOGICAL`, its CopyBoth stream read by our own reader
 * (wal-stream.ts; docs/decisions.md, "Our own replication stream reader").
 *  - Nothing is acknowledged on its own: the server hears only the positions ack() is given,
 *    durable ones (INV-1, docs/invariants.md), and exactly those (no `+ 1`).
 *  - A message is handled only after the one before it settled; meanwhile the socket is not
 *    read (INV-7). After the first failure of a handler nothing more is handed on.
 *  - Every start is a new connection from the slot's confirmed position.
 *  - pgoutput with `messages`, values decoded as text (pgoutput-decoder.ts).
 */
import pg from 'pg';
import { formatLsn, type Lsn } from '../../shared/lsn.js';
import { PgoutputDecoder, type PgoutputMessage } from './pgoutput-decoder.js';
import { WalStreamQuery } from './wal-stream.js';

export interface StreamHandlers {
  /** Awaited before the next message is taken (backpressure). */
  onMessage(msg: PgoutputMessage, lsn: Lsn): Promise<void>;
  /** Server keepalive: the WAL position the server has sent up to. */
  onKeepalive(serverLsn: Lsn, replyRequested: boolean): void;
  onError(err: Error): void;
}

/** The START_REPLICATION command capture runs. */
export function startReplicationSql(slot: string, publication: string, from: bigint): string {
  const pub = publication.replaceAll("'", "''");
  // proto_version 1, no streaming: only committed transactions arrive, in commit order.
  return `START_REPLICATION SLOT "${slot.replaceAll('"', '""')}" LOGICAL ${formatLsn(from)} (proto_version '1', publication_names '${pub}', messages 'true')`;
}

export class ReplicationStream {
  private client: pg.Client | null = null;
  private query: WalStreamQuery | null = null;
  private failed = false;
  /** Draining: no message or keepalive is handled any more, but acks still reach the server. */
  private paused = false;

  constructor(
    private readonly connection: pg.ClientConfig,
    private readonly slot: string,
    private readonly publication: string,
  ) {}

  /** Starts streaming from `from` (the server starts at max(from, confirmed_flush_lsn)). Resolves when streaming has started. */
  async start(from: Lsn, h: StreamHandlers): Promise<void> {
    const fail = (err: Error): void => {
      if (this.failed) return;
      this.failed = true;
      h.onError(err);
    };
    const client = new pg.Client({ ...this.connection, replication: 'database' } as pg.ClientConfig);
    this.client = client;
    client.on('error', (err) => fail(err));
    try {
      await client.connect();
    } catch (err) {
      fail(err as Error);
      throw err;
    }
    const decoder = new PgoutputDecoder();
    let started: () => void = () => undefined;
    const startedP = new Promise<void>((r) => (started = r));
    const q = new WalStreamQuery(startReplicationSql(this.slot, this.publication, from), {
      onData: (lsn, payload) => {
        if (this.failed || this.paused) return;
        // A decode error fails the run like a handler error (the message is not skipped).
        return h.onMessage(decoder.decode(payload), lsn);
      },
      onKeepalive: (lsn, reply) => {
        // Paused: messages are being dropped unhandled, so a keepalive position is not durable.
        if (!this.failed && !this.paused) h.onKeepalive(lsn, reply);
      },
      onStart: () => started(),
      onHandlerError: (err) => fail(err),
    });
    this.query = q;
    void client.query(q as unknown as pg.QueryConfig);
    const ended = q.done.then(
      () => fail(new Error('replication stream ended')),
      (err: Error) => {
        fail(err);
        throw err;
      },
    );
    await Promise.race([startedP, ended]);
  }

  /** True when no received message waits to be handled (never once paused: messages are dropped then). */
  get drained(): boolean {
    return !!this.query && !this.paused && this.query.idle;
  }

  /**
   * Tells the server that everything before `lsn` is durable (INV-1: callers pass only
   * Kafka-acked positions: a commit's end LSN, or an idle keepalive position). The standby
   * status update carries `lsn` itself as written, flushed and applied position.
   */
  async ack(lsn: Lsn): Promise<void> {
    if (this.query && !this.failed && lsn > 0n) this.query.sendStatus(lsn);
  }

  /**
   * Stops handing on messages and keepalives (the ones that still arrive are dropped and come
   * again from the slot on the next start) while the connection stays open, so that a
   * graceful stop can still ack what it publishes last. Then call stop().
   */
  pause(): void {
    this.paused = true;
  }

  async stop(): Promise<void> {
    this.failed = true;
    this.query?.stop();
    const c = this.client;
    this.client = null;
    this.query = null;
    await c?.end().catch(() => undefined);
    c?.removeAllListeners();
    c?.on('error', () => undefined);
  }
}
