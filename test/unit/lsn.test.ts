import { describe, expect, it } from 'vitest';
import { formatLsn, parseLsn } from '../../shared/lsn.js';

describe('LSN text form', () => {
  it('parses and formats every range exactly, high halves beyond 2^21 included', () => {
    for (const text of ['0/0', '0/16B3748', '1/0', 'FF/FFFFFFFF', '1FFFFF/FFFFFFFF', '200000/1', 'FFFFFFFF/FFFFFFFF']) {
      const [hi, lo] = text.split('/');
      expect(parseLsn(text)).toBe((BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`));
      expect(formatLsn(parseLsn(text))).toBe(text);
    }
    expect(parseLsn('0/16b3748')).toBe(parseLsn('0/16B3748'));
  });

  it('refuses what is not an LSN', () => {
    for (const bad of ['', '0', '/1', '1/', '0x1/2', '1/2/3', '123456789/0', 'G/0', '1/2z']) expect(() => parseLsn(bad), bad).toThrow(/not an LSN/);
  });
});
