/**
 * Every built-in type family with values at its extremes, for the tests that check values
 * travel exactly (capture's Avro, apply's round trip). `mood` (an enum) and `posint` (a domain
 * over int4) are made in the test's schema.
 */
/** [column type, values as PostgreSQL text (null = SQL NULL)] */
export const TYPES: [string, (string | null)[]][] = [
  ['int2', ['-32768', '32767', null]],
  ['int4', ['-2147483648', '2147483647', '0']],
  ['int8', ['-9223372036854775808', '9223372036854775807', '9007199254740993']],
  ['oid', ['4294967295', '0', '1']],
  ['numeric', ['NaN', '-123456789012345678901234567890.123456789012345678901234567890', '0.00000000000000000001']],
  ['numeric(10,2)', ['-99999999.99', '0.10', 'NaN']],
  ['float4', ['1.1', '-0', 'NaN']],
  ['float4', ['3.4028235e+38', '-Infinity', '1e-45']],
  ['float8', ['1.7976931348623157e+308', '5e-324', '-0']],
  ['float8', ['Infinity', 'NaN', '0.1']],
  ['bool', ['true', 'false', null]],
  ['text', ['it\'s "quoted" \\ back\nslash ☃ 𝄞', '', 'NULL']],
  ['varchar(5)', ['abcde', 'ä', ' ']],
  ['char(3)', ['ab', 'abc', ' ']],
  ['bytea', ['\\x00ff10', '\\x', '\\x5c78']],
  ['date', ['4713-01-01 BC', '5874897-12-31', 'infinity']],
  ['time', ['24:00:00', '00:00:00.000001', '12:34:56.789']],
  ['timetz', ['00:00:00+1559', '23:59:59.999999-1559', '12:00:00+00']],
  ['timestamp', ['294276-12-31 23:59:59.999999', '4713-01-01 00:00:00 BC', '-infinity']],
  ['timestamptz', ['2020-02-29 12:34:56.123456+05:30', 'infinity', '1970-01-01 00:00:00+00']],
  ['interval', ['178000000 years', '-1 days +00:00:00.000001', '1 mon -2 days 03:04:05']],
  ['uuid', ['00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff', null]],
  ['inet', ['::ffff:1.2.3.4/128', '10.0.0.1/8', '2001:db8::1']],
  ['cidr', ['10.0.0.0/8', '2001:db8::/32', '0.0.0.0/0']],
  ['macaddr', ['08:00:2b:01:02:03', 'ff:ff:ff:ff:ff:ff', '00:00:00:00:00:00']],
  ['json', ['{"a": 1, "a": 2,   "b": [1.0e5, null]}', '"x"', '12345678901234567890']],
  ['jsonb', ['{"n": 12345678901234567890.5, "s": "\\u00e9"}', '[]', 'null']],
  ['money', ['-92233720368547758.08', '92233720368547758.07', '0.01']],
  ['int4range', ['[1,5)', 'empty', '(,)']],
  ['tstzrange', ['["2020-01-01 00:00:00+00","infinity")', 'empty', '[,"2000-01-01 00:00:00+00")']],
  ['int4[]', ['{1,NULL,-3}', '{}', '{{1,2},{3,4}}']],
  ['text[]', ['{"a,b","c\\"d",NULL,"NULL"}', '{""}', '{x}']],
  ['bit(4)', ['1010', '0000', '1111']],
  ['varbit', ['', '1', '101010101010']],
  ['point', ['(1.5,-2.25)', '(0,0)', '(1e+300,-1e-300)']],
  ['tsvector', ["'a':1 'fat':2", '', "'x y'"]],
  ['xml', ['<a b="1">&amp;</a>', 'text', '<x/>']],
  ['mood', ['happy', 'sad', 'ok']],
  ['posint', ['1', '2147483647', '42']],
];

/** The column type as written in the test's schema `schema`. */
export function columnType(t: string, schema: string): string {
  return t === 'mood' || t === 'posint' ? `${schema}.${t}` : t;
}

/** CREATE TYPE/DOMAIN for the user types of TYPES. */
export function userTypesSql(schema: string): string {
  return `CREATE TYPE ${schema}.mood AS ENUM ('happy', 'sad', 'ok'); CREATE DOMAIN ${schema}.posint AS int4 CHECK (VALUE > 0);`;
}
