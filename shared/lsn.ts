/** PostgreSQL log sequence numbers as branded bigints, so they are compared exactly. */
export type Lsn = bigint & { readonly __brand: 'Lsn' };

export const ZERO_LSN = 0n as Lsn;

/** Parses PostgreSQL's text form: two hexadecimal halves separated by a slash, e.g. 0/16B3748. */
export function parseLsn(text: string): Lsn {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text.trim());
  if (!m) throw new Error(`not an LSN: ${JSON.stringify(text)}`);
  return ((BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`)) as Lsn;
}

export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

export function lsnFromBigint(n: bigint): Lsn {
  if (n < 0n) throw new Error(`LSN cannot be negative: ${n}`);
  return n as Lsn;
}
