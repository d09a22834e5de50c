/**
 * Kafka Connect semantic types of column fields, so that a Connect consumer (the Debezium
 * JDBC sink, for one) sees a `numeric(10,2)` as a decimal and a `timestamptz` as a timestamp,
 * while pgbridge itself still handles every value as PostgreSQL's exact text form.
 *
 * A column of a type listed here gets an Avro field type a Connect converter understands:
 * Avro's `decimal` logical type, or a Debezium semantic name in `connect.name`
 * (`io.debezium.time.Date`, `io.debezium.data.Json`, …), and for types carried as text the
 * source column type in `connect.parameters` (`__debezium.source.column.type`, `…length`,
 * `…scale`), as Debezium's own connector does with column propagation. Every other type stays
 * a plain field (docs/events.md, "Column values").
 *
 * In memory the value is always the PostgreSQL text: the avsc types below convert it to the
 * wire form when writing and back when reading (capture and apply build their Avro types with
 * AVRO_OPTIONS, whose type hook picks them). A value the wire form cannot hold (numeric NaN,
 * date and timestamp infinity, a timestamp past the 64-bit microsecond range) is "special":
 * capture sends its field as null and the text in the envelope's `special` map.
 */
import avro from 'avsc';

/** The column facts the mapping needs (shared/avro.ts ColumnDef has them). */
export interface ColumnType {
  readonly typeOid: number;
  readonly typeMod: number;
}

export interface ConnectField {
  /** Avro type of the field (without the null branch). */
  readonly type: Record<string, unknown>;
  /** True for a value (PostgreSQL text) this field type cannot carry: it travels in `special`. */
  readonly special: ((text: string) => boolean) | null;
}

const OID = {
  int2: 21,
  oid: 26,
  json: 114,
  xml: 142,
  cidr: 650,
  money: 790,
  macaddr: 829,
  inet: 869,
  bpchar: 1042,
  varchar: 1043,
  date: 1082,
  time: 1083,
  timestamp: 1114,
  timestamptz: 1184,
  numeric: 1700,
  uuid: 2950,
  jsonb: 3802,
  int4range: 3904,
  numrange: 3906,
  tsrange: 3908,
  tstzrange: 3910,
  daterange: 3912,
  int8range: 3926,
} as const;

const NAME = {
  date: 'io.debezium.time.Date',
  time: 'io.debezium.time.MicroTime',
  timestamp: 'io.debezium.time.MicroTimestamp',
  timestamptz: 'io.debezium.time.ZonedTimestamp',
  json: 'io.debezium.data.Json',
  uuid: 'io.debezium.data.Uuid',
  xml: 'io.debezium.data.Xml',
} as const;

/** Source column types the Debezium JDBC sink maps by `__debezium.source.column.type` (the value stays text). */
const BY_SOURCE_TYPE: ReadonlyMap<number, string> = new Map([
  [OID.inet, 'INET'],
  [OID.cidr, 'CIDR'],
  [OID.macaddr, 'MACADDR'],
  [OID.money, 'MONEY'],
  [OID.int4range, 'INT4RANGE'],
  [OID.int8range, 'INT8RANGE'],
  [OID.numrange, 'NUMRANGE'],
  [OID.tsrange, 'TSRANGE'],
  [OID.tstzrange, 'TSTZRANGE'],
  [OID.daterange, 'DATERANGE'],
]);

const params = (p: Record<string, string | number>): Record<string, string> =>
  Object.fromEntries(Object.entries(p).map(([k, v]) => [`__debezium.source.column.${k}`, String(v)]));

const isInfinity = (t: string): boolean => t === 'infinity' || t === '-infinity';

/** numeric's typmod: precision and scale (PostgreSQL 15 allows a negative scale, and a scale above the precision). */
function numericTypmod(mod: number): { precision: number; scale: number } | null {
  if (mod < 4) return null;
  const m = mod - 4;
  const scale = ((m & 0x7ff) ^ 1024) - 1024;
  return { precision: (m >> 16) & 0xffff, scale };
}

/** The Connect field type of a column, or null when it stays a plain pgbridge field. */
export function connectField(c: ColumnType): ConnectField | null {
  switch (c.typeOid) {
    case OID.int2:
      return { type: { type: 'int', 'connect.type': 'int16' }, special: null };
    case OID.oid:
      return { type: { type: 'long', 'connect.parameters': params({ type: 'OID' }) }, special: null };
    case OID.numeric: {
      const n = numericTypmod(c.typeMod);
      // Avro's decimal needs 0 <= scale <= precision; an unconstrained numeric has no fixed scale.
      if (!n || n.scale < 0 || n.scale > n.precision) return null;
      return {
        type: {
          type: 'bytes',
          logicalType: 'decimal',
          precision: n.precision,
          scale: n.scale,
          'connect.parameters': { 'connect.decimal.precision': String(n.precision) },
        },
        special: (t) => t === 'NaN',
      };
    }
    case OID.date:
      return { type: { type: 'int', 'connect.name': NAME.date }, special: isInfinity };
    case OID.time:
      return { type: { type: 'long', 'connect.name': NAME.time, ...precision(c.typeMod) }, special: null };
    case OID.timestamp:
      return { type: { type: 'long', 'connect.name': NAME.timestamp, ...precision(c.typeMod) }, special: (t) => isInfinity(t) || !timestampFits(t) };
    case OID.timestamptz:
      return { type: { type: 'string', 'connect.name': NAME.timestamptz, ...precision(c.typeMod) }, special: null };
    case OID.json:
      return { type: { type: 'string', 'connect.name': NAME.json }, special: null };
    case OID.jsonb:
      return { type: { type: 'string', 'connect.name': NAME.json, 'connect.parameters': params({ type: 'JSONB' }) }, special: null };
    case OID.uuid:
      return { type: { type: 'string', 'connect.name': NAME.uuid }, special: null };
    case OID.xml:
      return { type: { type: 'string', 'connect.name': NAME.xml }, special: null };
    case OID.varchar:
    case OID.bpchar: {
      if (c.typeMod < 4) return null;
      return {
        type: { type: 'string', 'connect.parameters': params({ type: c.typeOid === OID.varchar ? 'VARCHAR' : 'BPCHAR', length: c.typeMod - 4 }) },
        special: null,
      };
    }
  }
  const source = BY_SOURCE_TYPE.get(c.typeOid);
  return source ? { type: { type: 'string', 'connect.parameters': params({ type: source }) }, special: null } : null;
}

/** A time type's declared precision as Debezium passes it (`__debezium.source.column.scale`). */
function precision(mod: number): Record<string, unknown> {
  return mod >= 0 ? { 'connect.parameters': params({ scale: mod }) } : {};
}

// ---------------------------------------------------------------- text ⇄ wire

const pad = (n: number | bigint, w: number): string => String(n).padStart(w, '0');

/** Days from 1970-01-01 of a proleptic Gregorian date (astronomical year: 1 BC is 0). */
function daysFromCivil(y: number, m: number, d: number): number {
  y -= m <= 2 ? 1 : 0;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

function civilFromDays(z: number): [number, number, number] {
  z += 719468;
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const d = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const m = mp + (mp < 10 ? 3 : -9);
  return [yoe + era * 400 + (m <= 2 ? 1 : 0), m, d];
}

const DATE = /^(\d{4,})-(\d\d)-(\d\d)( BC)?$/;
const TIME = /^(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?$/;
const TIMESTAMP = /^(\d{4,})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(\+00)?( BC)?$/;

/** PostgreSQL's ISO date text (DateStyle ISO) → astronomical year, month, day. */
function parseDate(y: string, m: string, d: string, bc: string | undefined): [number, number, number] {
  const year = Number(y);
  return [bc ? 1 - year : year, Number(m), Number(d)];
}

function formatDate(y: number, m: number, d: number): string {
  return y <= 0 ? `${pad(1 - y, 4)}-${pad(m, 2)}-${pad(d, 2)} BC` : `${pad(y, 4)}-${pad(m, 2)}-${pad(d, 2)}`;
}

function micros(h: string, mi: string, s: string, frac: string | undefined): bigint {
  return BigInt(((Number(h) * 60 + Number(mi)) * 60 + Number(s)) * 1_000_000 + (frac ? Number(frac.padEnd(6, '0')) : 0));
}

/** HH:MM:SS[.ffffff] with the fraction's trailing zeros cut, as PostgreSQL prints it. */
function formatTime(us: bigint): string {
  const s = us / 1_000_000n;
  const f = us % 1_000_000n;
  const base = `${pad(s / 3600n, 2)}:${pad((s / 60n) % 60n, 2)}:${pad(s % 60n, 2)}`;
  return f === 0n ? base : `${base}.${pad(f, 6).replace(/0+$/, '')}`;
}

const DAY_US = 86_400_000_000n;
const INT64_MAX = 2n ** 63n - 1n;

function timestampMicrosExact(text: string): bigint | undefined {
  const m = TIMESTAMP.exec(text);
  if (!m) return undefined;
  const [y, mo, d] = parseDate(m[1]!, m[2]!, m[3]!, m[9]);
  return BigInt(daysFromCivil(y, mo, d)) * DAY_US + micros(m[4]!, m[5]!, m[6]!, m[7]);
}

function timestampFits(text: string): boolean {
  const us = timestampMicros(text);
  return us !== undefined && us <= INT64_MAX && us >= -INT64_MAX - 1n;
}

/** Microseconds since the epoch → [date text, time text, BC]. */
function splitMicros(us: bigint): { date: string; time: string } {
  let days = us / DAY_US;
  let rest = us % DAY_US;
  if (rest < 0n) {
    rest += DAY_US;
    days -= 1n;
  }
  const [y, m, d] = civilFromDays(Number(days));
  return { date: formatDate(y, m, d), time: formatTime(rest) };
}

function timestampTextExact(us: bigint, tz: boolean): string {
  const { date, time } = splitMicros(us);
  const bc = date.endsWith(' BC');
  return `${bc ? date.slice(0, -3) : date} ${time}${tz ? '+00' : ''}${bc ? ' BC' : ''}`;
}

/** timestamptz text (TimeZone UTC) → ISO 8601 with Z, years outside 0000–9999 signed (Java's ISO parser reads them). */
function timestamptzToIsoExact(text: string): string | undefined {
  if (isInfinity(text)) return text;
  const m = TIMESTAMP.exec(text);
  if (!m || !m[8]) return undefined;
  const [y] = parseDate(m[1]!, m[2]!, m[3]!, m[9]);
  const year = y < 0 ? `-${pad(-y, 4)}` : y > 9999 ? `+${y}` : pad(y, 4);
  return `${year}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}${m[7] ? `.${m[7]}` : ''}Z`;
}

const ISO = /^([+-]?\d{4,})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z$/;

function isoToTimestamptz(iso: string): string {
  if (isInfinity(iso)) return iso;
  const m = ISO.exec(iso);
  if (!m) throw new Error(`not a UTC ISO 8601 timestamp: ${iso}`);
  const y = Number(m[1]);
  const date = formatDate(y, Number(m[2]), Number(m[3]));
  const bc = date.endsWith(' BC');
  const frac = m[7] ? `.${m[7]}` : '';
  return `${bc ? date.slice(0, -3) : date} ${m[4]}:${m[5]}:${m[6]}${frac}+00${bc ? ' BC' : ''}`;
}

// ---------------------------------------------------------------- decimal

function decimalToBytesExact(text: string, scale: number): Buffer | undefined {
  const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(text);
  if (!m) return undefined;
  const frac = m[3] ?? '';
  if (frac.length > scale) return undefined;
  let n = BigInt(m[2]! + frac.padEnd(scale, '0'));
  if (m[1]) n = -n;
  // Two's complement, big-endian, in the fewest bytes that hold the sign.
  let bytes = 1;
  while (n < -(1n << BigInt(8 * bytes - 1)) || n >= 1n << BigInt(8 * bytes - 1)) bytes++;
  const tc = n < 0n ? (1n << BigInt(8 * bytes)) + n : n;
  return Buffer.from(tc.toString(16).padStart(2 * bytes, '0'), 'hex');
}

function bytesToDecimalExact(buf: Buffer, scale: number): string {
  if (buf.length === 0) return scale ? `0.${'0'.repeat(scale)}` : '0';
  let n = BigInt(`0x${buf.toString('hex')}`);
  if (buf[0]! & 0x80) n -= 1n << BigInt(buf.length * 8);
  const neg = n < 0n;
  const digits = (neg ? -n : n).toString().padStart(scale + 1, '0');
  const int = digits.slice(0, digits.length - scale);
  return `${neg ? '-' : ''}${int}${scale ? `.${digits.slice(digits.length - scale)}` : ''}`;
}

// ---------------------------------------------------------------- fast paths
// The common values (years 1000-2254, decimals of up to 15 digits) take Number arithmetic;
// everything else the exact BigInt functions above. test/unit/connect-types.test.ts checks
// that both give the same result.

const DIGIT0 = 48;
/** The number of `len` digits at `at`, or NaN when one is not a digit. */
function digits(t: string, at: number, len: number): number {
  let n = 0;
  for (let i = at; i < at + len; i++) {
    const c = t.charCodeAt(i) - DIGIT0;
    if (c < 0 || c > 9) return NaN;
    n = n * 10 + c;
  }
  return n;
}

/** `YYYY-MM-DD HH:MM:SS[.f{1,6}]` (the year 1000-2254, no BC) → µs since the epoch as a Number, or undefined. */
function fastMicros(t: string, end: number): number | undefined {
  if (end < 19 || t.charCodeAt(4) !== 45 || t.charCodeAt(10) !== 32 || t.charCodeAt(13) !== 58) return undefined;
  const y = digits(t, 0, 4);
  if (!(y >= 1000 && y <= 2254)) return undefined;
  let frac = 0;
  if (end > 19) {
    if (t.charCodeAt(19) !== 46 || end > 26) return undefined;
    frac = digits(t, 20, end - 20) * 10 ** (26 - end);
  }
  const ms = Date.UTC(y, digits(t, 5, 2) - 1, digits(t, 8, 2), digits(t, 11, 2), digits(t, 14, 2), digits(t, 17, 2));
  const us = ms * 1000 + frac;
  return Number.isSafeInteger(us) ? us : undefined;
}

function timestampMicros(text: string): bigint | undefined {
  const us = fastMicros(text, text.length);
  return us !== undefined && text.charCodeAt(text.length - 3) !== 43 ? BigInt(us) : timestampMicrosExact(text);
}

/** ISO-ish date and time of µs within the fast range, or undefined. */
function fastText(us: number): string | undefined {
  if (!Number.isSafeInteger(us)) return undefined;
  const ms = Math.floor(us / 1000);
  const d = new Date(ms);
  const y = d.getUTCFullYear();
  if (y < 1000 || y > 2254) return undefined;
  const f = us - ms * 1000 + d.getUTCMilliseconds() * 1000;
  const base = `${y}-${pad(d.getUTCMonth() + 1, 2)}-${pad(d.getUTCDate(), 2)} ${pad(d.getUTCHours(), 2)}:${pad(d.getUTCMinutes(), 2)}:${pad(d.getUTCSeconds(), 2)}`;
  return f === 0 ? base : `${base}.${pad(f, 6).replace(/0+$/, '')}`;
}

function timestampText(us: bigint, tz: boolean): string {
  const fast = us >= -(2n ** 53n) && us <= 2n ** 53n ? fastText(Number(us)) : undefined;
  return fast !== undefined ? (tz ? `${fast}+00` : fast) : timestampTextExact(us, tz);
}

function timestamptzToIso(text: string): string | undefined {
  const n = text.length;
  // 2026-11-30 07:00:00[.ffffff]+00 → 2026-11-30T07:00:00[.ffffff]Z
  if (n >= 22 && text.charCodeAt(n - 3) === 43 && text.charCodeAt(n - 2) === 48 && text.charCodeAt(n - 1) === 48 && fastMicros(text, n - 3) !== undefined) {
    return `${text.slice(0, 10)}T${text.slice(11, n - 3)}Z`;
  }
  return timestamptzToIsoExact(text);
}

const FAST_DECIMAL = /^-?\d{1,15}(?:\.\d+)?$/;

function decimalToBytes(text: string, scale: number): Buffer | undefined {
  const dot = text.indexOf('.');
  const fracLen = dot < 0 ? 0 : text.length - dot - 1;
  if (text.length - (dot < 0 ? 0 : 1) + (scale - fracLen) > 16 || fracLen > scale || !FAST_DECIMAL.test(text)) return decimalToBytesExact(text, scale);
  const neg = text.charCodeAt(0) === 45;
  const ds = (dot < 0 ? text : text.slice(0, dot) + text.slice(dot + 1)).slice(neg ? 1 : 0);
  let n = Number(ds) * 10 ** (scale - fracLen);
  if (!Number.isSafeInteger(n)) return decimalToBytesExact(text, scale);
  if (neg) n = -n;
  let bytes = 1;
  while (n < -(2 ** (8 * bytes - 1)) || n >= 2 ** (8 * bytes - 1)) bytes++;
  if (bytes > 6) return decimalToBytesExact(text, scale);
  const out = Buffer.allocUnsafe(bytes);
  out.writeIntBE(n, 0, bytes);
  return out;
}

function bytesToDecimal(buf: Buffer, scale: number): string {
  if (buf.length === 0 || buf.length > 6) return bytesToDecimalExact(buf, scale);
  const n = buf.readIntBE(0, buf.length);
  const neg = n < 0;
  const ds = String(neg ? -n : n).padStart(scale + 1, '0');
  const int = ds.slice(0, ds.length - scale);
  return `${neg ? '-' : ''}${int}${scale ? `.${ds.slice(ds.length - scale)}` : ''}`;
}

// ---------------------------------------------------------------- avsc types

type Schema = Record<string, unknown>;

class PgDecimal extends avro.types.LogicalType {
  private readonly scale: number;
  constructor(schema: avro.Schema, opts?: unknown) {
    super(schema, opts);
    this.scale = Number((schema as Schema).scale ?? 0);
  }
  protected override _toValue(v: unknown): Buffer | undefined {
    return typeof v === 'string' ? decimalToBytes(v, this.scale) : undefined;
  }
  protected override _fromValue(b: Buffer): string {
    return bytesToDecimal(b, this.scale);
  }
}

class PgDate extends avro.types.LogicalType {
  protected override _toValue(v: unknown): number | undefined {
    const m = typeof v === 'string' ? DATE.exec(v) : null;
    if (!m) return undefined;
    return daysFromCivil(...parseDate(m[1]!, m[2]!, m[3]!, m[4]));
  }
  protected override _fromValue(days: number): string {
    return formatDate(...civilFromDays(days));
  }
}

class PgTime extends avro.types.LogicalType {
  protected override _toValue(v: unknown): bigint | undefined {
    const m = typeof v === 'string' ? TIME.exec(v) : null;
    return m ? micros(m[1]!, m[2]!, m[3]!, m[4]) : undefined;
  }
  protected override _fromValue(us: bigint): string {
    return formatTime(BigInt(us));
  }
}

class PgTimestamp extends avro.types.LogicalType {
  protected override _toValue(v: unknown): bigint | undefined {
    if (typeof v !== 'string' || v.endsWith('+00') || v.endsWith('+00 BC')) return undefined;
    const us = timestampMicros(v);
    return us !== undefined && us <= INT64_MAX && us >= -INT64_MAX - 1n ? us : undefined;
  }
  protected override _fromValue(us: bigint): string {
    return timestampText(BigInt(us), false);
  }
}

class PgTimestamptz extends avro.types.LogicalType {
  protected override _toValue(v: unknown): string | undefined {
    return typeof v === 'string' ? timestamptzToIso(v) : undefined;
  }
  protected override _fromValue(iso: string): string {
    return isoToTimestamptz(iso);
  }
}

type SemanticClass = new (schema: avro.Schema, opts?: unknown) => avro.Type;
const BY_CONNECT_NAME: ReadonlyMap<string, SemanticClass> = new Map<string, SemanticClass>([
  [NAME.date, PgDate as SemanticClass],
  [NAME.time, PgTime as SemanticClass],
  [NAME.timestamp, PgTimestamp as SemanticClass],
  [NAME.timestamptz, PgTimestamptz as SemanticClass],
]);

let building = false;

/**
 * The avsc type of a Connect semantic schema, or undefined for any other schema. Called from
 * AVRO_OPTIONS.typeHook; while a semantic type builds its underlying type it answers undefined,
 * so that the hook gives the plain type (the BigInt long).
 */
export function connectTypeFor(schema: unknown, opts: unknown): avro.Type | undefined {
  if (building || typeof schema !== 'object' || schema === null || Array.isArray(schema)) return undefined;
  const s = schema as Schema;
  const Cls = s.logicalType === 'decimal' && s.type === 'bytes' ? (PgDecimal as unknown as SemanticClass) : BY_CONNECT_NAME.get(s['connect.name'] as string);
  if (!Cls) return undefined;
  building = true;
  try {
    return new Cls(s as avro.Schema, opts);
  } finally {
    building = false;
  }
}

/** Exposed for the unit tests: text ⇄ wire without an Avro round trip. */
export const wire = {
  decimalToBytes,
  bytesToDecimal,
  timestamptzToIso,
  isoToTimestamptz,
  timestampMicros,
  timestampText,
  daysFromCivil,
  civilFromDays,
  exact: {
    decimalToBytes: decimalToBytesExact,
    bytesToDecimal: bytesToDecimalExact,
    timestamptzToIso: timestamptzToIsoExact,
    timestampMicros: timestampMicrosExact,
    timestampText: timestampTextExact,
  },
};
