import avro from 'avsc';
import { describe, expect, it } from 'vitest';
import { avroType } from '../../shared/avro.js';

// The wire form every Avro reader expects: zigzag varint (the Avro specification's long).
function referenceLong(n: bigint): Buffer {
  let z = n >= 0n ? n << 1n : (-n << 1n) - 1n;
  const out: number[] = [];
  while (z > 0x7fn) {
    out.push(Number(z & 0x7fn) | 0x80);
    z >>= 7n;
  }
  out.push(Number(z));
  return Buffer.from(out);
}

describe('64-bit Avro longs as BigInt', () => {
  const edges = [
    0n,
    1n,
    -1n,
    63n,
    -64n,
    64n,
    2n ** 31n,
    -(2n ** 31n) - 1n,
    2n ** 52n - 1n,
    -(2n ** 52n) + 1n,
    2n ** 52n,
    -(2n ** 52n),
    2n ** 53n + 1n,
    -(2n ** 53n) - 1n,
    2n ** 62n,
    2n ** 63n - 1n,
    -(2n ** 63n),
  ];

  it('encodes every value as the spec zigzag varint and reads it back exactly', () => {
    const t = avroType('long' as avro.Schema);
    for (const n of edges) {
      const buf = t.toBuffer(n);
      expect(buf.toString('hex'), String(n)).toBe(referenceLong(n).toString('hex'));
      expect(t.fromBuffer(buf), String(n)).toBe(n);
    }
  });

  it('round-trips longs inside a record next to other fields, and other readers agree', () => {
    const schema = {
      type: 'record',
      name: 'R',
      fields: [
        { name: 'a', type: 'long' },
        { name: 's', type: 'string' },
        { name: 'b', type: ['null', 'long'] },
      ],
    } as avro.Schema;
    const t = avroType(schema);
    const plain = avro.Type.forSchema(schema);
    for (const n of edges) {
      const buf = t.toBuffer({ a: n, s: 'x', b: -n });
      expect(t.fromBuffer(buf)).toEqual({ a: n, s: 'x', b: -n });
      // avsc's own number long reads the same bytes wherever the value fits a double exactly.
      if (n < 2n ** 52n && n > -(2n ** 52n)) expect(plain.fromBuffer(buf)).toEqual({ a: Number(n), s: 'x', b: Number(-n) });
    }
  });
});
