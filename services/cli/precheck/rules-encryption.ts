/**
 * Precheck rule `encryption`: whether every connection pgbridge makes is encrypted.
 */
import type { PipelineConfig } from '../../../shared/config.js';
import type { PrecheckFacts } from './facts.js';
import { at, type AddFinding } from './findings.js';

const isLoopback = (host: string): boolean => host === 'localhost' || host === '::1' || /^127\./.test(host);

/**
 * Whether each connection is encrypted: PostgreSQL as the server reports the session
 * (pg_stat_ssl), Kafka and the registry as configured (they were reached with those
 * settings). Plain text to a host other than loopback is a warning (rule: encryption).
 */
export function checkEncryption(cfg: PipelineConfig, facts: PrecheckFacts, add: AddFinding): void {
  const report = (cluster: string, object: string, encrypted: boolean, message: string, fix: string): void => {
    const host = object.replace(/^\w+:\/\//, '').replace(/[:/].*$/, '');
    if (encrypted || isLoopback(host)) add({ level: 'ok', check: 'encryption', cluster, object, message });
    else add({ level: 'warning', check: 'encryption', cluster, object, message, fix });
  };
  for (const name of cfg.clusterNames) {
    const c = facts.clusters[name];
    if (!c?.reachable || c.tls === undefined) continue;
    const mode = cfg.clusters[name]!.sslMode;
    const message = c.tls
      ? `cluster ${at(c)}: encrypted (${c.tls}, sslMode ${mode}${mode === 'require' ? ': the server certificate is not checked' : ''})`
      : `cluster ${at(c)}: not encrypted (sslMode ${mode})`;
    report(name, `${c.host}:${c.port}`, !!c.tls, message, `set clusters.${name}.sslMode: verify-full and sslRootCert (docs/configuration.md)`);
  }
  if (facts.kafka.reachable) {
    const { ssl, sasl } = cfg.kafka;
    const protocol = `${sasl ? 'SASL_' : ''}${ssl ? 'SSL' : 'PLAINTEXT'}`;
    const message = `Kafka at ${facts.kafka.brokers}: ${protocol}${sasl ? ` (${sasl.mechanism.toUpperCase()} as ${sasl.username})` : ''}${ssl ? '' : ', not encrypted'}`;
    report('kafka', cfg.kafka.brokers[0]!, !!ssl, message, 'set kafka.ssl (and kafka.sasl) (docs/configuration.md)');
  }
  if (facts.registry.status !== undefined) {
    const r = cfg.registry;
    const tls = r.url.startsWith('https:');
    const message = `schema registry at ${r.url}: ${tls ? 'HTTPS' : 'HTTP, not encrypted'}${r.username !== undefined ? `, basic auth as ${r.username}` : ''}`;
    report('registry', r.url, tls, message, 'use an https:// registry.url (and registry.caFile) (docs/configuration.md)');
  }
}
