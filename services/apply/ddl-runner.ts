/**
 * Runs a replicated DDL command on the destination (docs/operations.md, "Schema changes").
 * The text goes through a DO block's EXECUTE: a text of several statements runs whole, and
 * one that tries to end the transaction (BEGIN … COMMIT sent as one string) fails instead of
 * committing apply's transaction halfway. CONCURRENTLY commands cannot run inside a
 * transaction block (nor a DO block): they run as they are, between two transactions.
 */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { PgBridgeError, classifyPgError, errorMessage } from '../../shared/errors.js';
import { ql } from '../../shared/pg.js';
import { runsOutsideTransaction, type DdlRecord } from '../../shared/ddl.js';
import type { ControlEvent } from './event-decoder.js';
import { formatLsn } from '../../shared/lsn.js';

/**
 * A CONCURRENTLY command commits before apply's progress row can: after a crash between the
 * two, it runs again at the restart and finds its work done. A valid index of that name (or
 * no index, for a drop) is that work; an invalid one, left by a build that failed, is not.
 */
async function alreadyDone(client: pg.Client, d: DdlRecord, sqlstate: string | undefined): Promise<boolean> {
  const index = d.objects.find((o) => o.type === 'index')?.identity;
  if (!index) return false;
  if (d.tag === 'DROP INDEX') return sqlstate === '42704';
  if (d.tag !== 'CREATE INDEX' || sqlstate !== '42P07') return false;
  const r = await client.query<{ valid: boolean | string }>('SELECT indisvalid AS valid FROM pg_index WHERE indexrelid = to_regclass($1)', [index]);
  const v = r.rows[0]?.valid;
  return v === true || v === 't';
}

/** Longest command text quoted in a stop message (the whole text is in the topic). */
const QUOTED = 2000;

/** A dollar-quote tag the text does not contain. */
function dollarTag(text: string): string {
  for (;;) {
    const tag = `$pgb_${randomBytes(4).toString('hex')}$`;
    if (!text.includes(tag)) return tag;
  }
}

/**
 * Runs `d` on `client` under the search_path of the session that ran it on the source. Inside
 * the open transaction unless the command cannot run in one (then the caller must have none
 * open). Throws DDL_FAILED with the command, the error and the position; retriable errors
 * (deadlock, serialization, connection) pass through as they are.
 */
export async function runDdl(client: pg.Client, ev: ControlEvent, d: DdlRecord, destination: string): Promise<'applied' | 'already'> {
  const outside = runsOutsideTransaction(d);
  try {
    await client.query('SELECT pg_catalog.set_config($1, $2, $3)', ['search_path', d.searchPath, !outside]);
    try {
      if (outside) {
        await client.query(d.sql);
      } else {
        const tag = dollarTag(d.sql);
        await client.query(`DO ${tag} BEGIN EXECUTE ${ql(d.sql)}; END ${tag}`);
      }
    } finally {
      if (outside) await client.query('RESET search_path').catch(() => undefined);
    }
    if (!outside) await client.query('RESET search_path');
    return 'applied';
  } catch (err) {
    const cls = classifyPgError(err);
    if (cls.retriable) throw err;
    if (outside && (await alreadyDone(client, d, cls.sqlstate))) return 'already';
    const where = `${ev.pos.topic}/${ev.pos.partition}@${ev.pos.offset}`;
    const text = d.sql.length > QUOTED ? `${d.sql.slice(0, QUOTED)}…` : d.sql;
    throw new PgBridgeError(
      'DDL_FAILED',
      `replicated DDL (${d.tag}) at ${where}, source commit LSN ${formatLsn(ev.commitLsn)}, failed on destination ${destination}${cls.sqlstate ? ` (SQLSTATE ${cls.sqlstate})` : ''}: ${errorMessage(err)}. ` +
        `Command (search_path ${d.searchPath}): ${text}. Apply stopped before it: nothing after it was applied. Make the destination accept it (or apply an equivalent change there by hand and move cdc.apply_progress past offset ${ev.pos.offset}), then start apply again.`,
      {
        cause: err,
        details: { topic: ev.pos.topic, partition: ev.pos.partition, offset: String(ev.pos.offset), tag: d.tag, sqlstate: cls.sqlstate ?? null },
      },
    );
  }
}
