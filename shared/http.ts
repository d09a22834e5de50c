/**
 * /healthz (the process runs), /readyz (the service does its work: streaming or consuming)
 * and /metrics (Prometheus) for each service.
 */
import { createServer, type Server } from 'node:http';
import { Registry, collectDefaultMetrics } from 'prom-client';

export interface Probe {
  ready(): boolean;
  /** Short text shown by /readyz. */
  state(): string;
}

export function metricsRegistry(labels: Record<string, string>): Registry {
  const r = new Registry();
  r.setDefaultLabels(labels);
  collectDefaultMetrics({ register: r });
  return r;
}

/** Starts the HTTP endpoints; port 0 picks a free port (see the returned server's address). */
export async function serveHttp(host: string, port: number, registry: Registry, probe: Probe): Promise<Server> {
  const server = createServer((req, res) => {
    const [url, query] = (req.url ?? '/').split('?') as [string, string | undefined];
    if (url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (url === '/readyz') {
      // `?standby=ready` counts a standby (apply's second instance) as ready: what a
      // Kubernetes readiness probe wants, so that a rollout of a Deployment with a standby
      // completes (deploy/kubernetes). Without it a standby answers 503.
      const standbyReady = new URLSearchParams(query ?? '').get('standby') === 'ready';
      const ok = probe.ready() || (standbyReady && probe.state().startsWith('standby'));
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(`${probe.state()}\n`);
    } else if (url === '/metrics') {
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (err: Error) => res.writeHead(500).end(err.message),
      );
    } else {
      res.writeHead(404).end('not found\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}
