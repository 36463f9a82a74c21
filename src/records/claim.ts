/**
 * Claims: COMPLETED → PROCESSING under a fresh lease, one more attempt, in one statement (the
 * functions rowfleet.claim_due, claim_ids and claim_alone, latest in drizzle/0016_poison_fencing.sql). SKIP LOCKED:
 * a claim never waits for a lock, so two workers never take one record and never deadlock.
 * The enqueued mark goes: whatever job pointed here has served. Each claim adds one to the
 * record's fence (the handler's fencing token).
 *
 * Suspects, records whose lease expired `maxExpirations` times, are left by claimDue and claimIds:
 * a worker with nothing in flight takes one with claimAlone and holds it alone, so that if it
 * kills its process again no innocent record dies with it (see drizzle/0016_poison_fencing.sql).
 */
import { sql } from 'drizzle-orm';
import { query, type Queryable } from '../db/sql.ts';
import type { RecordKey } from './key.ts';

export interface Claimed extends RecordKey {
  version: string;
  data: unknown;
  /** Claims of this version so far, this one included. */
  attempts: number;
  leaseToken: string;
  /** -1000..1000: the latest applied message's (0 when it carried none). */
  priority: number;
  /**
   * Mode every: the event_log seq of the message handed out (its version and data are the ones
   * above); null in mode latest, where they are the record's.
   */
  seq: string | null;
  /** How long it had been due when claimed (the statement's clock); null for a chained message. */
  queueWaitMs: number | null;
  /** Claims of this record ever, this one included: the handler's fencing token (a decimal). */
  fence: string;
}

interface ClaimRow {
  kind: string;
  id: string;
  version: string;
  data: unknown;
  attempts: number;
  lease_token: string;
  priority: number;
  seq: string | null;
  queue_wait_ms: number;
  fence: string;
}

const toClaimed = (row: ClaimRow): Claimed => ({
  kind: row.kind, id: row.id, version: row.version, data: row.data, attempts: row.attempts, leaseToken: row.lease_token, priority: row.priority, seq: row.seq,
  queueWaitMs: row.queue_wait_ms, fence: row.fence,
});

/** Lease expirations after which a record is claimed only alone, and is poison if it expires so (`--max-expirations`). */
export const DEFAULT_MAX_EXPIRATIONS = 3;

/** A kind a claim may take records of, with its cap and lease. */
export interface KindShare {
  kind: string;
  /** Most records of this kind in this claim. */
  cap: number;
  leaseMs: number;
}

export interface ClaimDueOptions {
  owner: string;
  limit: number;
  /** The kinds to claim, each with its cap and lease; undefined: every kind, under `leaseMs`. */
  kinds?: readonly KindShare[] | undefined;
  /** The lease of every kind when `kinds` is undefined. */
  leaseMs: number;
  /** Which kind is offered its share first: the caller turns it with every claim (fair sharing). */
  turn?: number | undefined;
  /** Records expired this often are left to claimAlone; DEFAULT_MAX_EXPIRATIONS when undefined. */
  maxExpirations?: number | undefined;
  now?: Date | undefined;
}

/**
 * Up to `limit` due records, shared fairly among the kinds, within a kind highest priority first,
 * then oldest due: per (kind, priority) present one descent of records_due_idx and a range of its
 * due entries, however large the backlog.
 */
export async function claimDue(db: Queryable, options: ClaimDueOptions): Promise<Claimed[]> {
  const kinds = options.kinds;
  const rows = await query<ClaimRow>(
    db,
    sql`SELECT * FROM rowfleet.claim_due(${options.owner}::text, ${kinds === undefined ? null : sql.param(kinds.map((k) => k.kind))}::text[],
                                         ${kinds === undefined ? null : sql.param(kinds.map((k) => k.cap))}::int[],
                                         ${sql.param(kinds === undefined ? [options.leaseMs] : kinds.map((k) => k.leaseMs))}::int[],
                                         ${options.limit}::int, ${options.turn ?? 0}::int, ${options.maxExpirations ?? DEFAULT_MAX_EXPIRATIONS}::int,
                                         ${options.now ?? null}::timestamptz)`,
    'rowfleet_claim_due',
  );
  return rows.map(toClaimed);
}

/**
 * The given records, if due and not held: the pg-boss engine's claim of the records its jobs
 * point to. Records held by another worker, not due, or gone are skipped.
 */
export async function claimIds(
  db: Queryable,
  options: { kind: string; ids: readonly string[]; owner: string; leaseMs: number; maxExpirations?: number | undefined; now?: Date | undefined },
): Promise<Claimed[]> {
  const rows = await query<ClaimRow>(
    db,
    sql`SELECT * FROM rowfleet.claim_ids(${options.kind}::text, ${sql.param([...options.ids])}::text[], ${options.owner}::text, ${options.leaseMs}::int,
                                         ${options.maxExpirations ?? DEFAULT_MAX_EXPIRATIONS}::int, ${options.now ?? null}::timestamptz)`,
    'rowfleet_claim_ids',
  );
  return rows.map(toClaimed);
}

export interface ClaimAloneOptions {
  owner: string;
  /** The kinds served, each with its lease; undefined: every kind, under `leaseMs` (or the kind's stored lease). */
  kinds?: readonly Pick<KindShare, 'kind' | 'leaseMs'>[] | undefined;
  leaseMs: number;
  maxExpirations: number;
  now?: Date | undefined;
}

/**
 * One suspect (a waiting record whose lease expired `maxExpirations` times), under a lease marked
 * alone: the caller holds nothing else until it is settled. Only an expiration of such a lease
 * makes a record FAILED as poison. Undefined when no suspect is due.
 */
export async function claimAlone(db: Queryable, options: ClaimAloneOptions): Promise<Claimed | undefined> {
  const kinds = options.kinds;
  const rows = await query<ClaimRow>(
    db,
    sql`SELECT * FROM rowfleet.claim_alone(${options.owner}::text, ${kinds === undefined ? null : sql.param(kinds.map((k) => k.kind))}::text[],
                                           ${sql.param(kinds === undefined ? [options.leaseMs] : kinds.map((k) => k.leaseMs))}::int[],
                                           ${options.maxExpirations}::int, ${options.now ?? null}::timestamptz)`,
    'rowfleet_claim_alone',
  );
  return rows[0] === undefined ? undefined : toClaimed(rows[0]);
}

/** Whether a suspect of these kinds (undefined: any) is due, waiting for a claimAlone. */
export async function suspectsWaiting(db: Queryable, options: { kinds?: readonly string[] | undefined; maxExpirations: number; now?: Date | undefined }): Promise<boolean> {
  const rows = await query<{ waiting: boolean }>(
    db,
    sql`SELECT rowfleet.suspects_waiting(${options.kinds === undefined ? null : sql.param([...options.kinds])}::text[], ${options.maxExpirations}::int,
                                         ${options.now ?? null}::timestamptz) AS waiting`,
    'rowfleet_suspects_waiting',
  );
  return rows[0]?.waiting === true;
}
