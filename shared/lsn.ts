/** PostgreSQL log sequence numbers as branded bigints, so they are compared exactly. */
export type Lsn = bigint & { readonly __brand: 'Lsn' };

export const ZERO_LSN = 0n as Lsn;

const HEX_HALF = /^[0-9A-Fa-f]{1,8}$/;
const TWO_32 = 2 ** 32;

/**
 * Parses PostgreSQL's text form: two hexadecimal halves separated by a slash, e.g. 0/16B3748.
 * Called for every replication message: no regular expression over the whole text and one
 * BigInt (the halves are joined as a number, exact below 2^53 bytes of WAL).
 */
export function parseLsn(text: string): Lsn {
  const i = text.indexOf('/');
  const hi = text.slice(0, i).trim();
  const lo = text.slice(i + 1).trim();
  if (i < 0 || !HEX_HALF.test(hi) || !HEX_HALF.test(lo)) throw new Error(`not an LSN: ${JSON.stringify(text)}`);
  const h = parseInt(hi, 16);
  const l = parseInt(lo, 16);
  return (h < 0x200000 ? BigInt(h * TWO_32 + l) : (BigInt(h) << 32n) | BigInt(l)) as Lsn;
}

export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

export function lsnFromBigint(n: bigint): Lsn {
  if (n < 0n) throw new Error(`LSN cannot be negative: ${n}`);
  return n as Lsn;
}
