/**
 * pino JSON logs with fixed field names (cluster, slot, lsn, xid, origin, table, topic,
 * partition, offset). Secrets are redacted; row values are logged only at trace level.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(service: string, level: string = process.env.PGBRIDGE_LOG_LEVEL ?? 'info'): Logger {
  return pino({
    name: 'pgbridge',
    level,
    base: { service, pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    redact: {
      paths: ['password', '*.password', '*.*.password', 'connection.password', 'sasl', '*.sasl', 'config.kafka.sasl'],
      censor: '[redacted]',
    },
  });
}

/** A URL with its password replaced by `***` (a user name stays): for every message and log line. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (!u.password) return url;
    u.password = '***';
    return u.toString();
  } catch {
    // Not a URL: hide anything between "//" and an "@".
    return url.replace(/\/\/[^/@]*@/, '//***@');
  }
}
