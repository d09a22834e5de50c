/**
 * The life of one run of a service (a capture or an apply): work is serialized, the first
 * failure wins and tears the run down, and `done` settles once: resolved after stop(),
 * rejected with the failure. A restart is always a new run (nothing carries over but what
 * the slot, Kafka and the progress table hold).
 */
import { errorMessage } from './errors.js';
import type { Logger } from './log.js';

export abstract class ServiceRun {
  protected failure: Error | null = null;
  protected stopping = false;
  /** Set by the subclass when data moved (see Runnable.progressed). */
  progressed = false;
  protected readonly done: Promise<void>;
  private chain: Promise<void> = Promise.resolve();
  private resolveDone!: () => void;
  private rejectDone!: (err: Error) => void;
  protected abstract readonly log: Logger;

  constructor() {
    this.done = new Promise<void>((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    this.done.catch(() => undefined);
  }

  /** Runs fn after all work queued before it; skipped once the run has failed. A failure of fn fails the run. */
  protected serial(fn: () => Promise<void>): Promise<void> {
    const next = this.chain.then(() => (this.failure ? undefined : fn()));
    this.chain = next.catch(() => undefined);
    return next.catch((err: Error) => {
      this.fail(err);
      throw err;
    });
  }

  /** Records the first failure, tears the run down, then rejects `done`. Later calls do nothing. */
  protected fail(err: Error): void {
    if (this.failure || this.stopping) return;
    this.failure = err;
    const code = (err as { code?: string }).code;
    // A standby's attempt to take over is expected to fail while the other instance runs.
    if (code === 'STANDBY') this.log.debug({ err: errorMessage(err), code }, 'run failed');
    else this.log.error({ err: errorMessage(err), code }, 'run failed');
    void this.teardownAfterFailure().then(
      () => this.rejectDone(err),
      () => this.rejectDone(err),
    );
  }

  /** Graceful stop, once: drains (the subclass's part), then resolves `done`. */
  async stop(): Promise<void> {
    if (!this.stopping) {
      this.stopping = true;
      await this.drain();
      this.resolveDone();
    }
    return this.done.catch(() => undefined);
  }

  /** What a graceful stop finishes and closes. */
  protected abstract drain(): Promise<void>;

  /** What a failed run closes (connections, producers, timers). */
  protected abstract teardownAfterFailure(): Promise<void>;
}
