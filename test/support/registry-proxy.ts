/**
 * A schema registry the way managed services offer one: HTTPS with a certificate from a
 * private CA and HTTP basic auth, in front of the local stack's registry (Apicurio needs an
 * OIDC server for basic auth). Requests without the right credentials get 401 and never
 * reach the registry behind.
 */
import { request } from 'node:http';
import { createServer, type Server } from 'node:https';
import { readFileSync } from 'node:fs';

export interface RegistryProxy {
  /** https://127.0.0.1:<port> + the path of the upstream URL. */
  readonly url: string;
  /** Requests let through (right credentials) and refused (401). */
  readonly counts: { passed: number; refused: number };
  close(): Promise<void>;
}

/** `tls.ca` set: clients must also present a certificate signed by it (mutual TLS). */
export async function startRegistryProxy(
  upstreamUrl: string,
  tls: { cert: string; key: string; ca?: string },
  user: string,
  password: string,
): Promise<RegistryProxy> {
  const upstream = new URL(upstreamUrl);
  const expected = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
  const counts = { passed: 0, refused: 0 };
  const mutual = tls.ca ? { ca: readFileSync(tls.ca), requestCert: true, rejectUnauthorized: true } : {};
  const server: Server = createServer({ cert: readFileSync(tls.cert), key: readFileSync(tls.key), ...mutual }, (req, res) => {
    if (req.headers.authorization !== expected) {
      counts.refused++;
      req.resume();
      res
        .writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Basic realm="registry"' })
        .end('{"error_code":401,"message":"Unauthorized"}');
      return;
    }
    counts.passed++;
    const { authorization: _a, host: _h, ...headers } = req.headers;
    const up = request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.once('error', (err) => res.writeHead(502).end(err.message));
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    url: `https://127.0.0.1:${port}${upstream.pathname.replace(/\/$/, '')}`,
    counts,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
