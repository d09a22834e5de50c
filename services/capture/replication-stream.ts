/**
 * The replication connection: pg-logical-replication with acknowledgement fully under our
 * control. Hazards of the library handled here (RELIABILITY.md):
 *  - acknowledge.auto off and timeoutSeconds 0: the library never acks on its own; we ack
 *    only durable positions (INV-1, docs/invariants.md).
 *  - a handler error is emitted and the library would go on with the next message: after the
 *    first error every later message is ignored and the stream is stopped.
 *  - on reconnect the library resumes from the last *received* LSN: an instance is never
 *    reused; every start is a new connection from the slot's confirmed position.
 *  - its pgoutput plugin does not send `messages`: ours does, and decodes values as text.
 */
import { LogicalReplicationService } from 'pg-logical-replication';
import { AbstractPlugin } from 'pg-logical-replication/dist/output-plugins/abstract.plugin.js';
import type pg from 'pg';
import { formatLsn, parseLsn, type Lsn } from '../../shared/lsn.js';
import { PgoutputDecoder, type PgoutputMessage } from './pgoutput-decoder.js';

type Decoded = PgoutputMessage | { tag: 'decode-error'; error: Error };

class PgbridgePgoutputPlugin extends AbstractPlugin<{ publication: string }> {
  private readonly decoder = new PgoutputDecoder();
  get name(): string {
    return 'pgoutput';
  }
  /** Called by the library inside the socket handler: never throw from here. */
  parse(buffer: Buffer): Decoded {
    try {
      return this.decoder.decode(buffer);
    } catch (error) {
      return { tag: 'decode-error', error: error as Error };
    }
  }
  start(client: pg.Client, slotName: string, lastLsn: string): Promise<unknown> {
    const pub = this.options.publication.replaceAll("'", "''");
    // proto_version 1, no streaming: only committed transactions arrive, in commit order.
    return client.query(`START_REPLICATION SLOT "${slotName}" LOGICAL ${lastLsn} (proto_version '1', publication_names '${pub}', messages 'true')`);
  }
}

export interface StreamHandlers {
  /** Awaited before the next message is taken (backpressure). */
  onMessage(msg: PgoutputMessage, lsn: Lsn): Promise<void>;
  /** Server keepalive: the WAL position the server has sent up to. */
  onKeepalive(serverLsn: Lsn, replyRequested: boolean): void;
  onError(err: Error): void;
}

export class ReplicationStream {
  private service: LogicalReplicationService | null = null;
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
    const service = new LogicalReplicationService(
      { ...this.connection } as never,
      { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: true } },
    );
    this.service = service;
    const fail = (err: Error): void => {
      if (this.failed) return;
      this.failed = true;
      h.onError(err);
    };
    service.on('data', async (lsn: string, msg: Decoded) => {
      if (this.failed || this.paused) return;
      if (msg.tag === 'decode-error') {
        fail(msg.error);
        return;
      }
      try {
        await h.onMessage(msg, parseLsn(lsn));
      } catch (err) {
        fail(err as Error);
      }
    });
    service.on('heartbeat', (lsn: string, _ts: number, shouldRespond: boolean) => {
      // Paused: messages are being dropped unhandled, so a keepalive position is not durable.
      if (!this.failed && !this.paused) h.onKeepalive(parseLsn(lsn), shouldRespond);
    });
    service.on('error', (err: Error) => fail(err));
    const started = new Promise<void>((resolve) => service.once('start', () => resolve()));
    const plugin = new PgbridgePgoutputPlugin({ publication: this.publication });
    const subscribed = service.subscribe(plugin as never, this.slot, formatLsn(from));
    subscribed.then(
      () => fail(new Error('replication stream ended')),
      (err: Error) => fail(err),
    );
    await Promise.race([started, subscribed.then(() => undefined)]);
  }

  /** True when the library holds no received-but-unprocessed message (never once paused: messages are dropped then). */
  get drained(): boolean {
    const s = this.service as unknown as { _messageQueue?: unknown[]; _processing?: boolean } | null;
    return !!s && !this.paused && (s._messageQueue?.length ?? 0) === 0 && !s._processing;
  }

  /**
   * Tells the server that everything before `lsn` is durable (INV-1: callers pass only
   * Kafka-acked positions: a commit's end LSN, or an idle keepalive position).
   * The library reports `lsn + 1` as flushed. That would be one byte too far: a commit
   * record that starts exactly at our end LSN (the next record in WAL) would be skipped on
   * restart, since decoding skips commits that start before confirmed_flush_lsn. So we
   * hand it `lsn - 1`.
   */
  async ack(lsn: Lsn): Promise<void> {
    if (this.service && !this.failed && lsn > 0n) await this.service.acknowledge(formatLsn(lsn - 1n));
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
    const s = this.service;
    this.service = null;
    await s?.stop().catch(() => undefined);
    s?.removeAllListeners();
  }
}
