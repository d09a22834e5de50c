/**
 * `pgbridge sync` and `pgbridge resync`: the initial sync lives in services/snapshot (this
 * file only hands it on); resync reads its chunks with the snapshot code's table reader.
 */
import type { PipelineConfig } from '../../shared/config.js';
import { PgBridgeError } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import { connect } from '../../shared/pg.js';
import { type ResyncChunk, type ResyncWindow } from '../capture/change-builder.js';
import { writeControl } from '../../shared/control-records.js';
import { pipelineDef, scoped, tableChunks, tableDef } from '../snapshot/table.js';
import { ClusterNaming } from '../../shared/naming.js';
import { selectedTables, type SelectedTable } from './setup.js';

export { formatProgress, initialSync, syncSchema, type SyncOptions, type SyncReport, type TableProgress } from '../snapshot/initial-sync.js';

export interface ResyncReport {
  readonly table: string;
  readonly from: string;
  readonly rows: number;
  readonly chunks: number;
  readonly seconds: number;
}

/**
 * `pgbridge resync --table s.t`: re-reads one table from a source while both directions stay
 * live, DBLog-style. For each primary-key chunk it writes a low watermark into the source's
 * WAL (control record resync.low in cdc.control), reads the chunk as it is now, and
 * writes a high watermark carrying the chunk (resync.high). Capture drops from the chunk
 * every key that changed in the stream between the two watermarks and publishes the rest as
 * op=r events at the high watermark's place in commit order: no row older than a change can
 * overtake it, and no row deleted meanwhile comes back. Apply writes them through the normal
 * path (an existing row is overwritten unless the policy keeps it; the destination is not
 * truncated, so rows that exist only there stay). Capture of the source must run (now or
 * later: the watermarks wait in the slot).
 */
export async function resyncTable(
  cfg: PipelineConfig,
  table: string,
  log: Logger,
  opts: { from?: string; chunkRows?: number; where?: string; onProgress?: (rows: number) => void } = {},
): Promise<ResyncReport> {
  const t0 = Date.now();
  const from = opts.from ?? cfg.directions[0].from;
  if (!cfg.clusters[from]) throw new PgBridgeError('CONFIG_INVALID', `no cluster "${from}" in this pipeline`);
  const src = cfg.clusters[from]!;
  const reader = await connect(src, 'pgbridge-resync');
  try {
    // `table` is the pipeline's name; on `from` it may be named otherwise (selection.tables.<t>.rename).
    const tables = await selectedTables(reader, cfg, from);
    const nameOf = (x: SelectedTable): string => x.name ?? `${x.schema}.${x.table}`;
    const t = tables.find((x) => nameOf(x) === table);
    if (!t)
      throw new PgBridgeError(
        'CONFIG_INVALID',
        `table ${table} is not selected by this pipeline on ${from} (selected: ${tables.map(nameOf).join(', ') || 'none'})`,
      );
    const naming = new ClusterNaming(cfg, from);
    const whole = await tableDef(reader, t);
    const pk = whole.pk;
    // What this direction replicates of the table: its column list and row filter.
    const to = cfg.clusterNames.find((c) => c !== from)!;
    const { def, where: filter } = scoped(cfg, `${from}-${to}`, whole.def, naming);
    // Read under the source's names, sent under the pipeline's (capture matches its window by them).
    const wire = pipelineDef(def, table, naming);
    const where =
      [filter, opts.where]
        .filter((x): x is string => !!x)
        .map((x) => `(${x})`)
        .join(' AND ') || undefined;
    if (pk.length === 0) throw new PgBridgeError('CONFIG_INVALID', `table ${table} has no primary key: resync reads and matches chunks by key`);
    const key = wire.columns.filter((c) => c.key).map((c) => c.name);
    const id = `${cfg.pipeline}:${Date.now().toString(36)}:${Math.random().toString(36).slice(2, 8)}`;
    const emit = (kind: 'resync.low' | 'resync.high', payload: ResyncWindow | ResyncChunk): Promise<void> =>
      writeControl(reader, cfg.pipeline, kind, JSON.stringify(payload));
    let rows = 0;
    let chunks = 0;
    const it = tableChunks(reader, t, def, pk, opts.chunkRows ?? 1000, null, where);
    for (;;) {
      const cid = `${id}:${chunks}`;
      await emit('resync.low', { id: cid, pipeline: cfg.pipeline, table });
      // Each chunk is read in a read-only transaction: a --where condition cannot write.
      await reader.query('BEGIN TRANSACTION READ ONLY');
      const next = await it.next();
      await reader.query('COMMIT');
      if (next.done) break;
      const payload: ResyncChunk = { id: cid, pipeline: cfg.pipeline, table: wire, key, rows: next.value.rows };
      await emit('resync.high', payload);
      rows += next.value.rows.length;
      chunks++;
      opts.onProgress?.(rows);
    }
    log.info({ table, rows, chunks }, 'resync watermarks written');
    return { table, from, rows, chunks, seconds: (Date.now() - t0) / 1000 };
  } finally {
    await reader.end().catch(() => undefined);
  }
}
