/**
 * Test factories: put a record into any state directly, as a crash, a race or time would leave it,
 * keeping the schema's rules (a lease exactly while PROCESSING). Each writes one row and returns
 * nothing; read the state back with `recordRow`.
 */
import type pg from 'pg';

export interface RecordState {
  /** `default` when not given. */
  kind?: string;
  status?: 'COMPLETED' | 'PROCESSING' | 'PROCESSED' | 'FAILED';
  version?: number;
  data?: unknown;
  attempts?: number;
  /** Due this many ms from now (negative: overdue). */
  dueInMs?: number;
  /** PROCESSING only: the holder and when its lease runs out, from now (negative: expired). */
  lease?: { owner: string; expiresInMs: number; /** Held alone in its process (claimAlone's lease). */ alone?: boolean };
  leaseExpirations?: number;
  lastError?: string;
  /** The sweep sent it a job (engine boss). */
  enqueued?: boolean;
}

/** Creates or overwrites record `id` in the given state (COMPLETED and due now by default). */
export async function putRecord(pool: pg.Pool, id: string, state: RecordState = {}): Promise<void> {
  const status = state.status ?? (state.lease === undefined ? 'COMPLETED' : 'PROCESSING');
  if ((status === 'PROCESSING') !== (state.lease !== undefined)) throw new Error(`putRecord ${id}: a lease exactly when PROCESSING`);
  await pool.query(
    `WITH lease AS (SELECT CASE WHEN $7::text IS NULL THEN NULL ELSE gen_random_uuid() END AS token)
     INSERT INTO rowfleet.records AS r (kind, id, version, data, status, attempts, run_after, lease_owner, lease_token, lease_expires_at,
                                        lease_expirations, last_error, enqueued_at, alone_token)
     SELECT $12, $1, $2, $3, $4, $5, now() + $6 * interval '1 millisecond', $7, lease.token,
            now() + $8 * interval '1 millisecond', $9, $10, CASE WHEN $11 THEN now() END, CASE WHEN $13 THEN lease.token END FROM lease
     ON CONFLICT (kind, id) DO UPDATE SET version = excluded.version, data = excluded.data, status = excluded.status, attempts = excluded.attempts,
            run_after = excluded.run_after, lease_owner = excluded.lease_owner, lease_token = excluded.lease_token,
            lease_expires_at = excluded.lease_expires_at, lease_expirations = excluded.lease_expirations, last_error = excluded.last_error,
            enqueued_at = excluded.enqueued_at, alone_token = CASE WHEN $13 THEN excluded.lease_token END`,
    [
      id,
      state.version ?? 1,
      JSON.stringify(state.data ?? {}),
      status,
      state.attempts ?? (status === 'PROCESSING' ? 1 : 0),
      state.dueInMs ?? 0,
      state.lease?.owner ?? null,
      state.lease === undefined ? null : state.lease.expiresInMs,
      state.leaseExpirations ?? 0,
      state.lastError ?? null,
      state.enqueued ?? false,
      state.kind ?? 'default',
      state.lease?.alone === true,
    ],
  );
}

/** Moves every waiting or held record out of the way (PROCESSED), so a test sees only its own as due. */
export async function settleAll(pool: pg.Pool): Promise<void> {
  await pool.query(
    `UPDATE rowfleet.records SET status = 'PROCESSED', lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, enqueued_at = NULL, next_seq = NULL
      WHERE status IN ('COMPLETED', 'PROCESSING')`,
  );
}

/** The columns tests assert on. */
export async function recordRow(pool: pg.Pool, id: string): Promise<Record<string, unknown> | undefined> {
  const { rows } = await pool.query(
    `SELECT status, version, attempts, result, last_error, lease_expirations, run_after, processed_version, lease_owner, enqueued_at
       FROM rowfleet.records WHERE id = $1`,
    [id],
  );
  return rows[0];
}
