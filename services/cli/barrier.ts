/**
 * Drain barrier: a marker written into the WAL of each source (a `barrier` control record in
 * cdc.control) and awaited in cdc.barriers of each destination. When it returns, every change
 * committed on either side before the call has been applied on the other side.
 */
import { randomUUID } from 'node:crypto';
import type { PipelineConfig } from '../../shared/config.js';
import { PgBridgeError } from '../../shared/errors.js';
import { withClient } from '../../shared/pg.js';
import { writeControl } from '../../shared/control-records.js';

export async function drainBarrier(cfg: PipelineConfig, timeoutMs = 120_000, onWait?: (pending: string[]) => void): Promise<string> {
  const id = `barrier-${randomUUID()}`;
  for (const c of cfg.clusterNames) {
    await withClient(cfg.clusters[c]!, 'pgbridge-barrier', (client) => writeControl(client, cfg.pipeline, 'barrier', id));
  }
  const deadline = Date.now() + timeoutMs;
  let pending = cfg.directions.map((d) => d.id);
  while (pending.length) {
    const still: string[] = [];
    for (const dir of pending) {
      const d = cfg.directions.find((x) => x.id === dir)!;
      const found = await withClient(cfg.clusters[d.to]!, 'pgbridge-barrier', async (client) => {
        const r = await client.query('SELECT 1 FROM cdc.barriers WHERE pipeline = $1 AND direction = $2 AND id = $3', [cfg.pipeline, d.id, id]);
        return (r.rowCount ?? 0) > 0;
      });
      if (!found) still.push(dir);
    }
    pending = still;
    if (!pending.length) break;
    if (Date.now() > deadline)
      throw new PgBridgeError(
        'INTERNAL',
        `drain barrier ${id} not applied after ${timeoutMs / 1000} s in direction(s) ${pending.join(', ')}: is apply running? (pgbridge status)`,
      );
    onWait?.(pending);
    await new Promise((r) => setTimeout(r, 200));
  }
  return id;
}
