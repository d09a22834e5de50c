/**
 * One error type for the whole project: a stable `code`, whether a retry can help, and the
 * position or object it concerns, so a stop always says what and where.
 */
export type ErrorCode =
  | 'CONFIG_INVALID'
  | 'CONNECTION'
  | 'STANDBY'
  | 'APPLY_RUNNING'
  | 'SLOT_MISSING'
  | 'SLOT_INVALIDATED'
  | 'SLOT_AHEAD'
  | 'SYSTEM_CHANGED'
  | 'OFFSET_BELOW_LOG_START'
  | 'SCHEMA_UNKNOWN'
  | 'REGISTRY'
  | 'ENCODE'
  | 'ROW_TOO_LARGE'
  | 'DECODE'
  | 'POISON'
  | 'CONFLICT'
  | 'DESTINATION_REJECTED'
  | 'PRECHECK'
  | 'DDL_FAILED'
  | 'INTERNAL';

export class PgBridgeError extends Error {
  readonly code: ErrorCode;
  readonly retriable: boolean;
  readonly details: Readonly<Record<string, unknown>>;
  /** Row values (keys, columns) that help find the cause: logged at debug level only, never in the message. */
  declare readonly sensitive: Readonly<Record<string, unknown>>;

  constructor(
    code: ErrorCode,
    message: string,
    opts: { retriable?: boolean; details?: Record<string, unknown>; sensitive?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'PgBridgeError';
    this.code = code;
    this.retriable = opts.retriable ?? false;
    this.details = Object.freeze({ ...(opts.details ?? {}) });
    // Not enumerable: loggers that serialize the whole error leave it out.
    Object.defineProperty(this, 'sensitive', { value: Object.freeze({ ...(opts.sensitive ?? {}) }), enumerable: false });
  }
}

/** SQLSTATE classes whose errors go away by themselves (connection loss, shutdown, serialization, deadlock, resources). */
const RETRIABLE_SQLSTATE_CLASSES = new Set(['08', '53', '57', '40']);

interface PgLikeError {
  code?: string;
  message?: string;
  detail?: string;
  table?: string;
  column?: string;
  constraint?: string;
}

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

/** Classifies an error thrown by node-postgres once, by SQLSTATE (or socket error code). */
export function classifyPgError(err: unknown): { retriable: boolean; connection: boolean; sqlstate: string | undefined } {
  const e = (err ?? {}) as PgLikeError;
  const code = e.code;
  if (code && NETWORK_CODES.has(code)) return { retriable: true, connection: true, sqlstate: undefined };
  if (code && /^[0-9A-Z]{5}$/.test(code)) {
    const cls = code.slice(0, 2);
    // 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now
    return { retriable: RETRIABLE_SQLSTATE_CLASSES.has(cls), connection: cls === '08' || cls === '57', sqlstate: code };
  }
  const msg = String(e.message ?? '');
  if (/Connection terminated|connection closed|Client has encountered a connection error|timeout exceeded when trying to connect/i.test(msg)) {
    return { retriable: true, connection: true, sqlstate: undefined };
  }
  return { retriable: false, connection: false, sqlstate: undefined };
}

/**
 * The text of an error for messages, logs, /readyz and status: never row values. A
 * PostgreSQL error's `detail` (`Key (id)=(42) already exists`, `Failing row contains (…)`)
 * is left out, and a data exception (SQLSTATE class 22) loses the value it quotes at the end
 * (`invalid input syntax for type integer: "…"`). errorDetail has what is left out, for
 * debug-level logs.
 */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as PgLikeError).code;
    if (typeof code === 'string' && /^22[0-9A-Z]{3}$/.test(code)) return err.message.replace(/: "(?:[^"]|"")*"$/, ': "…"');
    if (typeof code === 'string' && code.startsWith('PLT_KFK')) return kafkaChain(err);
    return err.message;
  }
  return String(err);
}

/**
 * A Kafka client error with the causes below it, which say what happened: `Cannot connect to
 * any broker.: Connection to 127.0.0.1:9093 failed.: SASL authentication failed.` (or the TLS
 * verification error) instead of the first line alone.
 */
function kafkaChain(err: Error): string {
  const parts: string[] = [];
  let e: unknown = err;
  for (let depth = 0; e instanceof Error && depth < 5; depth++) {
    const text = e.message.replace(/\.$/, '');
    if (!parts.includes(text)) parts.push(text);
    const inner: { errors?: unknown[]; cause?: unknown } = e as never;
    e = inner.errors?.length ? inner.errors[0] : inner.cause;
  }
  return parts.join(': ');
}

/** A PostgreSQL error's detail (it may hold row values): for debug-level logs only. */
export function errorDetail(err: unknown): string | undefined {
  return (err as PgLikeError | undefined)?.detail;
}
