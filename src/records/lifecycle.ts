/**
 * Every state change a worker makes to `rowfleet.records`, one guarded statement each:
 *
 *   COMPLETED --claimDue / claimIds--> PROCESSING --complete--> PROCESSED
 *                                          |  \--complete, newer version arrived--> COMPLETED (conflation)
 *                                          |--fail--> COMPLETED (run_after = backoff) | FAILED (+ event either way)
 *                                          |--release (shutdown)--> COMPLETED, attempt not spent
 *                                          \--rescueExpired (lease ran out)--> COMPLETED | FAILED poison (+ event)
 *
 * A lease is (owner, token, expiry in database time). Heartbeats, completions, failures and
 * releases are guarded by id, token, status PROCESSING and an unexpired lease: zero rows means the
 * lease was lost, and the caller stops. Once a lease expires only rescue may touch the row, so an
 * old holder's late write can never race the rescue or a new holder.
 *
 * `now` is optional everywhere: tests pass a time to move the clock without sleeping.
 */
import { sql, type SQL } from 'drizzle-orm';
import { query, type Queryable } from '../db/sql.ts';

export interface Claimed {
  id: string;
  version: string;
  data: unknown;
  /** Claims of this version so far, this one included. */
  attempts: number;
  leaseToken: string;
}

export interface Lease {
  id: string;
  leaseToken: string;
}

const dbNow = (now: Date | undefined): SQL => (now === undefined ? sql`now()` : sql`${now.toISOString()}::timestamptz`);
const millis = (ms: number): SQL => sql`(${ms} * interval '1 millisecond')`;
/** The rowfleet.stats row a state change counts itself in: its minute (see the table in schema.ts). */
const statsMinute = (at: SQL): SQL => sql`date_trunc('minute', ${at})`;
/**
 * The lease is unexpired. Written with IS TRUE so that the planner cannot drive an update through
 * records_lease_idx: it estimated ~150 matching entries where a busy drain has ~41,000 (every
 * lease of the last lease period, dead ones included), instead of looking rows up by id.
 */
const leaseHeld = (at: SQL): SQL => sql`(r.lease_expires_at > ${at}) IS TRUE`;
/** Hot statements are prepared once per connection; one with an injected clock has other text. */
const named = (name: string, now: Date | undefined): string | undefined => (now === undefined ? name : undefined);

interface ClaimRow {
  id: string;
  version: string;
  data: unknown;
  attempts: number;
  lease_token: string;
}

const toClaimed = (row: ClaimRow): Claimed => ({
  id: row.id,
  version: row.version,
  data: row.data,
  attempts: row.attempts,
  leaseToken: row.lease_token,
});

/**
 * Claims up to `limit` due records, oldest due first, in one statement. The CTE is what makes
 * SKIP LOCKED and LIMIT bind before the update (as a plain subquery the planner may update more
 * rows than the limit); the partial index records_due_idx makes it O(limit).
 *
 * The update finds the claimed rows by `id = ANY(ARRAY(...))`, a primary-key lookup. Written as
 * `UPDATE ... FROM due WHERE r.id = due.id`, it was planned as a hash join over a sequential scan
 * of the whole table: 48 of 62 ms per claim of 1000 at 100,000 rows (O(table), not O(batch)).
 * The statements below that join a set back to records add the same `id = ANY(...)` for the same
 * reason.
 */
export async function claimDue(db: Queryable, options: { owner: string; limit: number; leaseMs: number; now?: Date }): Promise<Claimed[]> {
  const now = dbNow(options.now);
  const due = sql`SELECT id FROM rowfleet.records
                   WHERE status = 'COMPLETED' AND run_after <= ${now}
                   ORDER BY run_after, id
                   LIMIT ${options.limit}
                   FOR UPDATE SKIP LOCKED`;
  return claim(db, due, options, named('rowfleet_claim_due', options.now));
}

/**
 * Claims the given records if they are due and not held: the pg-boss engine's claim of the record
 * a job points to. Records held by another worker, not due, or gone are skipped.
 */
export async function claimIds(db: Queryable, options: { ids: readonly string[]; owner: string; leaseMs: number; now?: Date }): Promise<Claimed[]> {
  // IS TRUE keeps the planner on the primary key: with the plain condition it chose
  // records_due_idx and read every due entry (26-28 ms for 500 ids at a 100,000 backlog, 7 ms by id).
  const due = sql`SELECT id FROM rowfleet.records
                   WHERE id = ANY (${sql.param([...options.ids])}::text[]) AND (status = 'COMPLETED' AND run_after <= ${dbNow(options.now)}) IS TRUE
                   ORDER BY id
                   FOR UPDATE SKIP LOCKED`;
  return claim(db, due, options);
}

/**
 * Takes the rows `due` selects (and locks): PROCESSING under a fresh lease, one more attempt. The
 * enqueued mark goes: whatever job pointed here has served, and the record's next return to
 * COMPLETED is new work for the sweep.
 */
async function claim(db: Queryable, due: SQL, options: { owner: string; leaseMs: number; now?: Date }, name?: string): Promise<Claimed[]> {
  const now = dbNow(options.now);
  const rows = await query<ClaimRow>(
    db,
    sql`WITH due AS (${due})
        UPDATE rowfleet.records r
           SET status = 'PROCESSING', lease_owner = ${options.owner}, lease_token = gen_random_uuid(),
               lease_expires_at = ${now} + ${millis(options.leaseMs)}, attempts = r.attempts + 1, updated_at = ${now},
               enqueued_at = NULL
         WHERE r.id = ANY (ARRAY(SELECT id FROM due))
        RETURNING r.id, r.version, r.data, r.attempts, r.lease_token`,
    name,
  );
  return rows.map(toClaimed);
}

/** Extends the leases still held; returns the ids whose lease was lost (expired, rescued, reclaimed). */
export async function extendLeases(db: Queryable, options: { leases: readonly Lease[]; leaseMs: number; now?: Date }): Promise<string[]> {
  if (options.leases.length === 0) return [];
  const now = dbNow(options.now);
  const rows = await query<{ id: string }>(
    db,
    sql`UPDATE rowfleet.records r
           SET lease_expires_at = ${now} + ${millis(options.leaseMs)}
          FROM unnest(${sql.param(options.leases.map((l) => l.id))}::text[], ${sql.param(options.leases.map((l) => l.leaseToken))}::uuid[]) AS h(id, token)
         WHERE r.id = ANY (${sql.param(options.leases.map((l) => l.id))}::text[]) AND r.id = h.id
           AND r.lease_token = h.token AND r.status = 'PROCESSING' AND ${leaseHeld(now)}
        RETURNING r.id`,
    named('rowfleet_extend_leases', options.now),
  );
  const held = new Set(rows.map((r) => r.id));
  return options.leases.filter((l) => !held.has(l.id)).map((l) => l.id);
}

export interface Completion extends Lease {
  /** The version the handler processed. */
  version: string;
  result: unknown;
}

/** What became of a completion: stored, superseded by a newer version (back to COMPLETED), or refused. */
export type CompletionOutcome = 'processed' | 'superseded' | 'lost';

/**
 * Versioned completion of many records in one statement. A record still at the processed version
 * becomes PROCESSED with its result; one that received a newer version meanwhile goes back to
 * COMPLETED, due now with fresh attempts, and the stale result is dropped (a hot key is processed
 * once per burst). A lost lease changes nothing.
 */
export async function complete(db: Queryable, completions: readonly Completion[], now?: Date): Promise<Map<string, CompletionOutcome>> {
  const outcomes = new Map<string, CompletionOutcome>(completions.map((c) => [c.id, 'lost']));
  if (completions.length === 0) return outcomes;
  const at = dbNow(now);
  const rows = await query<{ id: string; processed: boolean }>(
    db,
    sql`WITH done AS (
          SELECT * FROM unnest(${sql.param(completions.map((c) => c.id))}::text[], ${sql.param(completions.map((c) => c.version))}::bigint[],
                               ${sql.param(completions.map((c) => c.leaseToken))}::uuid[],
                               ${sql.param(completions.map((c) => JSON.stringify(c.result ?? null)))}::jsonb[]) AS d(id, version, token, result)
        ),
        updated AS (
          UPDATE rowfleet.records r
             SET status = CASE WHEN r.version = done.version THEN 'PROCESSED' ELSE 'COMPLETED' END,
                 result = CASE WHEN r.version = done.version THEN done.result ELSE r.result END,
                 processed_version = CASE WHEN r.version = done.version THEN done.version ELSE r.processed_version END,
                 processed_at = CASE WHEN r.version = done.version THEN ${at} ELSE r.processed_at END,
                 last_error = CASE WHEN r.version = done.version THEN NULL ELSE r.last_error END,
                 attempts = CASE WHEN r.version = done.version THEN r.attempts ELSE 0 END,
                 lease_expirations = 0,
                 run_after = ${at},
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = ${at}
            FROM done
           WHERE r.id = ANY (${sql.param(completions.map((c) => c.id))}::text[]) AND r.id = done.id
             AND r.lease_token = done.token AND r.status = 'PROCESSING' AND ${leaseHeld(at)}
          RETURNING r.id, r.status = 'PROCESSED' AS processed
        ),
        counted AS (
          INSERT INTO rowfleet.stats AS s (minute, backend, processed, superseded)
          SELECT ${statsMinute(at)}, pg_backend_pid(), count(*) FILTER (WHERE processed), count(*) FILTER (WHERE NOT processed)
            FROM updated HAVING count(*) > 0
          ON CONFLICT (minute, backend) DO UPDATE SET processed = s.processed + excluded.processed, superseded = s.superseded + excluded.superseded
        )
        SELECT id, processed FROM updated`,
    // Not prepared: a generic plan, blind to the batch size, measured 3x slower at 1000 rows.
  );
  for (const row of rows) outcomes.set(row.id, row.processed ? 'processed' : 'superseded');
  return outcomes;
}

export interface Failure extends Lease {
  version: string;
  error: string;
  /** Straight to FAILED (PermanentError), whatever the attempts. */
  permanent: boolean;
  maxAttempts: number;
  /** When to retry, if attempts remain. */
  backoffMs: number;
}

export type FailureOutcome = 'retry' | 'failed' | 'superseded' | 'lost';

/**
 * Records a failed attempt: back to COMPLETED after `backoffMs` with a `retried` event, or FAILED
 * (attempts exhausted or a permanent error) with a `failed` event, in the same statement. A failure of a version that
 * has since been replaced is not counted: the record goes back to COMPLETED for the new data.
 */
export async function fail(db: Queryable, failure: Failure, now?: Date): Promise<FailureOutcome> {
  const at = dbNow(now);
  const rows = await query<{ outcome: FailureOutcome }>(
    db,
    sql`WITH updated AS (
          UPDATE rowfleet.records r
             SET status = CASE
                            WHEN r.version <> ${failure.version}::bigint THEN 'COMPLETED'
                            WHEN ${failure.permanent}::boolean OR r.attempts >= ${failure.maxAttempts}::int THEN 'FAILED'
                            ELSE 'COMPLETED'
                          END,
                 run_after = CASE
                               WHEN r.version <> ${failure.version}::bigint THEN ${at}
                               ELSE ${at} + ${millis(failure.backoffMs)}
                             END,
                 attempts = CASE WHEN r.version <> ${failure.version}::bigint THEN 0 ELSE r.attempts END,
                 last_error = ${failure.error}::text,
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = ${at}
           WHERE r.id = ${failure.id} AND r.lease_token = ${failure.leaseToken}::uuid AND r.status = 'PROCESSING'
             AND ${leaseHeld(at)}
          RETURNING r.id, r.version, r.status, r.attempts, r.run_after
        ),
        logged AS (
          INSERT INTO rowfleet.event_log (record_id, version, applied, reason, detail)
          SELECT u.id, u.version, false, CASE WHEN u.status = 'FAILED' THEN 'failed' ELSE 'retried' END,
                 jsonb_build_object('error', ${failure.error}::text, 'attempts', u.attempts, 'permanent', ${failure.permanent}::boolean)
                   || CASE WHEN u.status = 'FAILED' THEN '{}'::jsonb ELSE jsonb_build_object('retryAt', u.run_after) END
            FROM updated u WHERE u.version = ${failure.version}::bigint
        ),
        counted AS (
          INSERT INTO rowfleet.stats AS s (minute, backend, failed, retried)
          SELECT ${statsMinute(at)}, pg_backend_pid(), count(*) FILTER (WHERE u.status = 'FAILED'), count(*) FILTER (WHERE u.status <> 'FAILED')
            FROM updated u WHERE u.version = ${failure.version}::bigint HAVING count(*) > 0
          ON CONFLICT (minute, backend) DO UPDATE SET failed = s.failed + excluded.failed, retried = s.retried + excluded.retried
        )
        SELECT CASE
                 WHEN u.version <> ${failure.version}::bigint THEN 'superseded'
                 WHEN u.status = 'FAILED' THEN 'failed'
                 ELSE 'retry'
               END AS outcome
          FROM updated u`,
  );
  return rows[0]?.outcome ?? 'lost';
}

/** Gives records back on shutdown: COMPLETED, due now, the attempt not spent. */
export async function release(db: Queryable, leases: readonly Lease[], now?: Date): Promise<number> {
  if (leases.length === 0) return 0;
  const at = dbNow(now);
  const rows = await query<{ id: string }>(
    db,
    sql`UPDATE rowfleet.records r
           SET status = 'COMPLETED', attempts = greatest(r.attempts - 1, 0), run_after = ${at},
               lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = ${at}
          FROM unnest(${sql.param(leases.map((l) => l.id))}::text[], ${sql.param(leases.map((l) => l.leaseToken))}::uuid[]) AS h(id, token)
         WHERE r.id = ANY (${sql.param(leases.map((l) => l.id))}::text[]) AND r.id = h.id
           AND r.lease_token = h.token AND r.status = 'PROCESSING' AND ${leaseHeld(at)}
        RETURNING r.id`,
  );
  return rows.length;
}

export interface Rescued {
  id: string;
  version: string;
  /** The worker whose lease expired. */
  owner: string | null;
  /** COMPLETED (will be retried) or FAILED (poison: expired more than maxExpirations times). */
  status: 'COMPLETED' | 'FAILED';
}

/**
 * Returns records whose lease expired (crash, kill -9, a pause past the lease) to COMPLETED, or to
 * FAILED once their lease has expired more than `maxExpirations` times without a completion
 * (poison: a record that kills its worker). One `rescued` or `failed` event each.
 */
export async function rescueExpired(db: Queryable, options: { maxExpirations: number; limit?: number; now?: Date }): Promise<Rescued[]> {
  const at = dbNow(options.now);
  const rows = await query<Rescued>(
    db,
    sql`WITH expired AS (
          SELECT id, lease_owner FROM rowfleet.records
           WHERE status = 'PROCESSING' AND lease_expires_at <= ${at}
           ORDER BY lease_expires_at
           LIMIT ${options.limit ?? 1000}::int
           FOR UPDATE SKIP LOCKED
        ),
        updated AS (
          UPDATE rowfleet.records r
             SET lease_expirations = r.lease_expirations + 1,
                 status = CASE WHEN r.lease_expirations + 1 > ${options.maxExpirations}::int THEN 'FAILED' ELSE 'COMPLETED' END,
                 last_error = CASE
                                WHEN r.lease_expirations + 1 > ${options.maxExpirations}::int
                                THEN 'poison: the lease expired ' || (r.lease_expirations + 1) || ' times without a completion'
                                ELSE r.last_error
                              END,
                 run_after = ${at},
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = ${at}
            FROM expired e
           WHERE r.id = ANY (ARRAY(SELECT id FROM expired)) AND r.id = e.id
          RETURNING r.id, r.version, r.status, r.lease_expirations, e.lease_owner AS owner
        ),
        logged AS (
          INSERT INTO rowfleet.event_log (record_id, version, applied, reason, detail)
          SELECT u.id, u.version, false, CASE WHEN u.status = 'FAILED' THEN 'failed' ELSE 'rescued' END,
                 jsonb_build_object('owner', u.owner, 'leaseExpirations', u.lease_expirations)
            FROM updated u
        ),
        counted AS (
          INSERT INTO rowfleet.stats AS s (minute, backend, rescued, failed)
          SELECT ${statsMinute(at)}, pg_backend_pid(), count(*), count(*) FILTER (WHERE u.status = 'FAILED')
            FROM updated u HAVING count(*) > 0
          ON CONFLICT (minute, backend) DO UPDATE SET rescued = s.rescued + excluded.rescued, failed = s.failed + excluded.failed
        )
        SELECT id, version, owner, status FROM updated`,
  );
  return rows;
}
