/**
 * Whether two sequences (one per cluster, behind the same column) can hand out the same
 * value: the arithmetic behind precheck's sequences rule and setup --split-sequences.
 */
import type { SequenceFacts } from './facts.js';

/** A sequence's future values: anchor + k·step (k ≥ 0) inside [lo, hi]; step > 0. */
interface FutureValues {
  readonly anchor: bigint;
  readonly step: bigint;
  readonly lo: bigint;
  readonly hi: bigint;
  /** A cycling sequence wraps around: every value in [lo, hi] may come. */
  readonly wraps: boolean;
}

function futureValues(s: Pick<SequenceFacts, 'increment' | 'min' | 'max' | 'cycle' | 'next'>): FutureValues | null {
  const step = s.increment < 0n ? -s.increment : s.increment;
  if (step === 0n) return null;
  if (s.cycle) return { anchor: s.next, step, lo: s.min, hi: s.max, wraps: true };
  const [lo, hi] = s.increment > 0n ? [s.next, s.max] : [s.min, s.next];
  if (lo > hi) return null; // exhausted: hands out nothing more
  return { anchor: s.next, step, lo, hi, wraps: false };
}

export const mod = (a: bigint, m: bigint): bigint => ((a % m) + m) % m;

function egcd(a: bigint, b: bigint): [bigint, bigint, bigint] {
  if (b === 0n) return [a, 1n, 0n];
  const [g, x, y] = egcd(b, a % b);
  return [g, y, x - (a / b) * y];
}

/**
 * Whether two sequences can hand out the same value in future: both value progressions meet
 * inside the overlap of their ranges (CRT). Cycling sequences are compared by range only.
 */
export function sequencesOverlap(
  a: Pick<SequenceFacts, 'increment' | 'min' | 'max' | 'cycle' | 'next'>,
  b: Pick<SequenceFacts, 'increment' | 'min' | 'max' | 'cycle' | 'next'>,
): boolean {
  const fa = futureValues(a);
  const fb = futureValues(b);
  if (!fa || !fb) return false;
  const lo = fa.lo > fb.lo ? fa.lo : fb.lo;
  const hi = fa.hi < fb.hi ? fa.hi : fb.hi;
  if (lo > hi) return false;
  if (fa.wraps || fb.wraps) return true;
  // x ≡ fa.anchor (mod fa.step), x ≡ fb.anchor (mod fb.step)
  const [g, p] = egcd(fa.step, fb.step);
  const diff = fb.anchor - fa.anchor;
  if (mod(diff, g) !== 0n) return false;
  const m2 = fb.step / g;
  const k = mod((diff / g) * p, m2);
  const lcm = fa.step * m2;
  const x0 = fa.anchor + fa.step * k;
  // Smallest common value ≥ lo.
  const x = lo + mod(x0 - lo, lcm);
  return x <= hi;
}

/**
 * Joins to a column `a` of table `c` the sequence behind it: `sc` (its pg_class row), `sn` (its
 * schema) and `s` (its pg_sequence row). That is the identity column's own sequence (internal
 * dependency) or the sequence a nextval() default reads (owned or not). Shared by precheck and
 * the split, so both see the same sequences.
 */
export const COLUMN_SEQUENCE_JOIN = `JOIN LATERAL (
         SELECT d.objid AS seqoid FROM pg_depend d
          WHERE a.attidentity <> '' AND d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
            AND d.refobjid = c.oid AND d.refobjsubid = a.attnum AND d.deptype = 'i'
         UNION
         SELECT d.refobjid FROM pg_attrdef ad
           JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
          WHERE ad.adrelid = c.oid AND ad.adnum = a.attnum AND pg_get_expr(ad.adbin, ad.adrelid) LIKE '%nextval(%'
       ) q ON true
       JOIN pg_class sc ON sc.oid = q.seqoid AND sc.relkind = 'S'
       JOIN pg_namespace sn ON sn.oid = sc.relnamespace
       JOIN pg_sequence s ON s.seqrelid = sc.oid`;
