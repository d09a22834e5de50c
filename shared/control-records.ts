/**
 * Control records: the instructions capture obeys from a source's WAL (loop marker, drain
 * barrier, resync watermarks, DDL of the forward source). They are rows of `cdc.control`, which only pgbridge's roles can
 * write: PUBLIC has no privilege on the table (and none on schema cdc), so an ordinary login
 * cannot forge one. Transactional logical messages (`pg_logical_emit_message`) are executable
 * by every login and are never obeyed (docs/decisions.md, "Control records are rows").
 *
 * A record is inserted and deleted in the writer's transaction: capture acts on the insert
 * at its place in commit order and ignores the delete, and the table stays empty.
 */
import type pg from 'pg';

export const CONTROL_SCHEMA = 'cdc';
export const CONTROL_TABLE = 'control';

/** `ddl` records are written by the forward source's event trigger (shared/ddl.ts), not by writeControl. */
export type ControlKind = 'origin' | 'barrier' | 'resync.low' | 'resync.high' | 'ddl';
export const CONTROL_KINDS: readonly ControlKind[] = ['origin', 'barrier', 'resync.low', 'resync.high', 'ddl'];

/** DDL of the table (part of the helper schema that `setup` creates). */
export const CONTROL_TABLE_SQL = `
CREATE TABLE IF NOT EXISTS cdc.control (
  id bigserial PRIMARY KEY,
  pipeline text NOT NULL,
  kind text NOT NULL,
  payload text NOT NULL,
  written_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
REVOKE ALL ON cdc.control FROM PUBLIC;
REVOKE ALL ON SEQUENCE cdc.control_id_seq FROM PUBLIC;
`;

export function isControlTable(schema: string, table: string): boolean {
  return schema === CONTROL_SCHEMA && table === CONTROL_TABLE;
}

/**
 * Writes one control record on `client`, inside its open transaction if there is one (the
 * record then takes that transaction's place in the stream), else in a transaction of its own.
 */
export async function writeControl(client: pg.ClientBase, pipeline: string, kind: ControlKind, payload: string): Promise<void> {
  const r = await client.query<{ id: string }>('INSERT INTO cdc.control (pipeline, kind, payload) VALUES ($1, $2, $3) RETURNING id::text AS id', [
    pipeline,
    kind,
    payload,
  ]);
  await client.query('DELETE FROM cdc.control WHERE id = $1', [r.rows[0]!.id]);
}
