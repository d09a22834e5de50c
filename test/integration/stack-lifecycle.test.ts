/**
 * up / status / down / up again on a second, private stack (own ports and folder), so the
 * shared stack the other tests use is left alone.
 */
import { describe, expect, it } from 'vitest';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stackSettings } from '../../infra/stack/settings.js';
import { down, pidAlive, status, up } from '../../infra/stack/stack.js';

describe('stack lifecycle', () => {
  it('up is idempotent, status reports all four healthy, down leaves no process behind', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgbridge-stack-'));
    chmodSync(dir, 0o755); // initdb runs as postgres when the tests run as root
    const s = stackSettings({
      ...process.env,
      PGBRIDGE_STACK_DIR: join(dir, 'state'),
      PGBRIDGE_PG_A_PORT: '16432',
      PGBRIDGE_PG_B_PORT: '16433',
      PGBRIDGE_KAFKA_PORT: '29092',
      PGBRIDGE_KAFKA_CONTROLLER_PORT: '29093',
      PGBRIDGE_REGISTRY_PORT: '28081',
    });
    const lines: string[] = [];
    try {
      await up(s, (l) => lines.push(l));
      const first = await status(s);
      expect(first.map((r) => [r.service, r.healthy])).toEqual([
        ['pg-a', true],
        ['pg-b', true],
        ['kafka', true],
        ['registry', true],
      ]);
      const pids = first.map((r) => r.pid!);
      lines.length = 0;
      await up(s, (l) => lines.push(l));
      expect(lines.filter((l) => l.includes('already running'))).toHaveLength(4);
      expect((await status(s)).map((r) => r.pid)).toEqual(pids);

      await down(s);
      expect(pids.filter((p) => pidAlive(p))).toEqual([]);
      expect((await status(s)).every((r) => !r.healthy)).toBe(true);
    } finally {
      await down(s).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);

  it('a failure names the service and shows the tail of its log', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pgbridge-stack-'));
    chmodSync(dir, 0o755); // initdb runs as postgres when the tests run as root
    // Kafka's port is held by the shared stack's PostgreSQL: kafka must refuse to start.
    const shared = stackSettings();
    const s = stackSettings({
      ...process.env,
      PGBRIDGE_STACK_DIR: join(dir, 'state'),
      PGBRIDGE_PG_A_PORT: '16532',
      PGBRIDGE_PG_B_PORT: '16533',
      PGBRIDGE_KAFKA_PORT: String(shared.pg.a.port),
      PGBRIDGE_KAFKA_CONTROLLER_PORT: '29193',
      PGBRIDGE_REGISTRY_PORT: '28181',
    });
    try {
      await expect(up(s)).rejects.toThrow(/^kafka: port 15432 is taken by another process; set PGBRIDGE_KAFKA_PORT/);
      expect(readFileSync(join(dir, 'state', 'pg-a', 'data', 'postgresql.conf'), 'utf8')).toMatch(/port = 16532/);
    } finally {
      await down(s).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
