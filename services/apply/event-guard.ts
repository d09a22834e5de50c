/**
 * What apply checks before it writes (docs/operations.md, "Trust boundary"; INV-9 in docs/invariants.md): a direction topic is an input that someone
 * other than capture may be able to write, so a record must name a table of the selection
 * (never cdc, pg_catalog, information_schema, pg_toast), carry a known op, come from the
 * direction's source cluster, and carry a commit LSN the source has actually reached. A forged
 * LSN far ahead would otherwise make the duplicate skip (INV-4) drop every real transaction
 * after it. A refused record is poison: dead-letter topic or a stop naming its position.
 */
import type pg from 'pg';
import { clusterByName, serviceConnection, type Direction, type PipelineConfig } from '../../shared/config.js';
import { errorMessage } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import { formatLsn, parseLsn, type Lsn } from '../../shared/lsn.js';
import { connect } from '../../shared/pg.js';
import { isSelected, isSystemSchema, splitTableName } from '../../shared/selection.js';
import { parseDdlRecord } from '../../shared/ddl.js';
import type { ApplyEvent } from './event-decoder.js';

export type RefusalReason = 'source-cluster' | 'op' | 'table' | 'lsn' | 'ddl';

export interface Refusal {
  readonly reason: RefusalReason;
  readonly message: string;
}

const OPS = new Set(['c', 'u', 'd', 'r', 't']);
/** After a failed look at the source, wait this long before the next one. */
const SOURCE_RETRY_MS = 5_000;

export class EventGuard {
  /** Highest WAL position the source was seen at: every LSN at or below it is plausible. */
  private ceiling = 0n as Lsn;
  private source: pg.Client | null = null;
  private lastFailure = 0;
  private unverifiedLogged = false;

  constructor(
    private readonly cfg: PipelineConfig,
    private readonly direction: Direction,
    private readonly log: Logger,
    /** Called for every record let through without an LSN check (source unreachable). */
    private readonly onUnverified: () => void = () => undefined,
  ) {}

  /** Null when the event may be applied, else why not; a promise only when the source must be asked. */
  refuse(ev: ApplyEvent): Refusal | null | Promise<Refusal | null> {
    const d = this.direction;
    if (ev.sourceCluster !== d.from) {
      return { reason: 'source-cluster', message: `source.cluster is "${ev.sourceCluster}", but topic ${d.topic} carries the changes of cluster "${d.from}"` };
    }
    let lsn = ev.commitLsn;
    if (ev.kind === 'change') {
      if (!OPS.has(ev.op)) return { reason: 'op', message: `unknown op "${ev.op}"` };
      if (!isSelected(this.cfg, ev.schema, ev.table))
        return { reason: 'table', message: `table ${ev.schema}.${ev.table} is not in the selection of pipeline ${this.cfg.pipeline}` };
    } else if (ev.control === 'watermark') {
      // A watermark makes apply skip a table's changes below an LSN: same checks as a change.
      const [schema, table] = splitTableName(ev.id ?? '');
      if (!isSelected(this.cfg, schema, table))
        return { reason: 'table', message: `watermark for table ${ev.id ?? '(none)'}, which is not in the selection of pipeline ${this.cfg.pipeline}` };
      let w: Lsn;
      try {
        w = parseLsn(ev.payload ?? '');
      } catch {
        return { reason: 'lsn', message: `watermark for ${ev.id} carries "${ev.payload}", not an LSN` };
      }
      if (w > lsn) lsn = w;
    } else if (ev.control === 'ddl') {
      // DDL runs as apply's role on the destination: only what the forward source's trigger records.
      if (!d.forward || this.cfg.ddl.forward !== 'replicate')
        return { reason: 'ddl', message: `DDL record on ${d.topic}: DDL is replicated in the forward direction only, with ddl.forward: replicate` };
      const rec = parseDdlRecord(ev.payload ?? '');
      if (!rec || rec.pipeline !== this.cfg.pipeline) return { reason: 'ddl', message: 'DDL record whose payload is not a DDL record of this pipeline' };
      const outside = rec.objects.find((o) => isSystemSchema(o.schema) || !this.cfg.selection.schemas.includes(o.schema));
      if (outside || rec.objects.length === 0)
        return {
          reason: 'table',
          message: `DDL record (${rec.tag}) on ${outside?.identity ?? 'no object'}, which is not in the schemas of pipeline ${this.cfg.pipeline}`,
        };
    }
    if (lsn <= this.ceiling) return null;
    return this.reached(lsn).then((ok) =>
      ok
        ? null
        : { reason: 'lsn' as const, message: `commit LSN ${formatLsn(lsn)} is beyond the WAL position of cluster ${d.from} (${formatLsn(this.ceiling)})` },
    );
  }

  /**
   * Whether the source has reached `lsn`. Looks at the source only when an LSN passes the
   * highest one seen there (about once per group while streaming, once for a whole backlog).
   * When the source cannot be reached, apply keeps draining (a lost source is when the topic
   * matters most): the record passes unverified, counted, and the check resumes once it is back.
   */
  private async reached(lsn: Lsn): Promise<boolean> {
    if (Date.now() - this.lastFailure < SOURCE_RETRY_MS) return this.unverified();
    try {
      if (!this.source) {
        // The apply role of the source cluster (clusters.<from>.apply) is enough: it reads the WAL position only.
        const c = await connect(serviceConnection(clusterByName(this.cfg, this.direction.from), 'apply'), `pgbridge-apply-${this.direction.id}-guard`);
        c.on('error', () => {
          if (this.source === c) this.source = null;
        });
        this.source = c;
      }
      const r = await this.source.query<{ lsn: string }>(
        'SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text AS lsn',
      );
      const now = parseLsn(r.rows[0]!.lsn);
      if (now > this.ceiling) this.ceiling = now;
      this.unverifiedLogged = false;
      return lsn <= this.ceiling;
    } catch (err) {
      this.lastFailure = Date.now();
      await this.source?.end().catch(() => undefined);
      this.source = null;
      if (!this.unverifiedLogged)
        this.log.warn(
          { err: errorMessage(err), cluster: this.direction.from },
          'cannot reach the source to check commit LSNs; applying unverified until it is back',
        );
      this.unverifiedLogged = true;
      return this.unverified();
    }
  }

  private unverified(): boolean {
    this.onUnverified();
    return true;
  }

  async close(): Promise<void> {
    await this.source?.end().catch(() => undefined);
    this.source = null;
  }
}
