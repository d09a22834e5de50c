/**
 * Reading the services' own HTTP endpoints (/readyz, /metrics), for status, run and the demo.
 */

/** Every metric of a service summed over its labels, or null when it does not answer. */
export async function scrapeMetrics(host: string, port: number): Promise<Map<string, number> | null> {
  if (port === 0) return null;
  try {
    const r = await fetch(`http://${host}:${port}/metrics`, { signal: AbortSignal.timeout(1500) });
    if (!r.ok) return null;
    const out = new Map<string, number>();
    for (const line of (await r.text()).split('\n')) {
      if (line.startsWith('#') || !line.trim()) continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
      if (m) out.set(m[1]!, (out.get(m[1]!) ?? 0) + Number(m[3]));
    }
    return out;
  } catch {
    return null;
  }
}

/** 'running', 'not ready: <state>', 'not running', or 'unknown' (no fixed port). */
export async function readiness(host: string, port: number): Promise<string> {
  if (port === 0) return 'unknown';
  try {
    const r = await fetch(`http://${host}:${port}/readyz`, { signal: AbortSignal.timeout(1500) });
    return r.ok ? 'running' : `not ready: ${(await r.text()).trim()}`;
  } catch {
    return 'not running';
  }
}

/** Waits until every port answers /readyz with 200. */
export async function waitReady(host: string, ports: readonly number[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (const port of ports) {
    while ((await readiness(host, port)) !== 'running') {
      if (Date.now() > deadline) throw new Error(`service on port ${port} not ready after ${timeoutMs / 1000} s (see the services log)`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}
