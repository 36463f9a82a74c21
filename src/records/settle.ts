/**
 * A handler's outcome, written with a versioned compare-and-set (rowfleet.complete_records,
 * latest in drizzle/0013_every_chain.sql, and rowfleet.fail_record, in 0012_every_mode.sql): only while the lease is held, and only as the
 * result of the version that was claimed.
 */
import { sql } from 'drizzle-orm';
import { query, type Queryable } from '../db/sql.ts';
import type { Lease } from './lease.ts';
import type { Claimed } from './claim.ts';
import { keyColumns, keyOf } from './key.ts';

export interface Completion extends Lease {
  /** The claim's fence: a message handed on (chained) keeps it. */
  fence?: string | undefined;
  /** The version the handler processed. */
  version: string;
  /** Mode every: the message the claim handed out (null in mode latest). */
  seq?: string | null | undefined;
  result: unknown;
  /**
   * Mode every: hold the record's next message under a lease of this many ms and hand it back
   * (`chained`) rather than put the record back in line; undefined or null: do not.
   */
  chainLeaseMs?: number | null | undefined;
}

/**
 * What became of a completion: stored; stored, and the record has its next message waiting (mode
 * every: back to COMPLETED); stored, and the next message handed back under a new lease (mode
 * every, chained); superseded by a newer version (mode latest: back to COMPLETED); or refused.
 */
export type CompletionOutcome = 'processed' | 'advanced' | 'chained' | 'superseded' | 'lost';

/** A completion's outcome, with the next message when it was chained (as a claim returns it). */
export interface Completed {
  outcome: CompletionOutcome;
  next?: Claimed;
}

interface CompleteRow {
  kind: string;
  id: string;
  processed: boolean;
  pending: boolean;
  chained: boolean;
  next_version: string | null;
  next_data: unknown;
  attempts: number | null;
  lease_token: string | null;
  priority: number | null;
  seq: string | null;
}

/**
 * Versioned completion of many records in one statement. A record still at the processed version
 * becomes PROCESSED with its result; one that received a newer version meanwhile goes back to
 * COMPLETED, due now with fresh attempts, and the stale result is dropped (a hot key is processed
 * once per burst). A lost lease changes nothing.
 */
/** Outcomes are keyed by `kind/id` (keyOf). */
export async function complete(db: Queryable, completions: readonly Completion[], now?: Date): Promise<Map<string, CompletionOutcome>> {
  const completed = await completeChaining(db, completions, now);
  return new Map([...completed].map(([key, c]) => [key, c.outcome]));
}

/** As complete, with the next messages of the records chained (`chainLeaseMs`). */
export async function completeChaining(db: Queryable, completions: readonly Completion[], now?: Date): Promise<Map<string, Completed>> {
  const outcomes = new Map<string, Completed>(completions.map((c) => [keyOf(c), { outcome: 'lost' }]));
  if (completions.length === 0) return outcomes;
  const { kinds, ids } = keyColumns(completions);
  const rows = await query<CompleteRow>(
    db,
    sql`SELECT * FROM rowfleet.complete_records(${sql.param(kinds)}::text[], ${sql.param(ids)}::text[], ${sql.param(completions.map((c) => c.version))}::bigint[],
                                                ${sql.param(completions.map((c) => c.leaseToken))}::uuid[],
                                                ${sql.param(completions.map((c) => JSON.stringify(c.result ?? null)))}::jsonb[],
                                                ${sql.param(completions.map((c) => c.seq ?? null))}::bigint[],
                                                ${sql.param(completions.map((c) => (c.chainLeaseMs == null ? null : Math.round(c.chainLeaseMs))))}::int[], ${now ?? null}::timestamptz)`,
    'rowfleet_complete_records',
  );
  let fences: Map<string, string> | undefined;
  for (const row of rows) {
    if (row.chained) {
      const next: Claimed = { kind: row.kind, id: row.id, version: row.next_version!, data: row.next_data, attempts: row.attempts!, leaseToken: row.lease_token!, priority: row.priority!, seq: row.seq, queueWaitMs: null,
        fence: (fences ??= new Map(completions.map((c) => [keyOf(c), c.fence ?? '0']))).get(keyOf(row))! };
      outcomes.set(keyOf(row), { outcome: 'chained', next });
    } else outcomes.set(keyOf(row), { outcome: row.processed ? (row.pending ? 'advanced' : 'processed') : 'superseded' });
  }
  return outcomes;
}

export interface Failure extends Lease {
  version: string;
  /** Mode every: the message the claim handed out (null in mode latest). */
  seq?: string | null | undefined;
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
 * (attempts exhausted or a permanent error) with a `failed` event, in the same statement. A
 * failure of a version that has since been replaced is not counted: the record goes back to
 * COMPLETED for the new data.
 */
export async function fail(db: Queryable, failure: Failure, now?: Date): Promise<FailureOutcome> {
  const rows = await query<{ outcome: FailureOutcome }>(
    db,
    sql`SELECT outcome FROM rowfleet.fail_record(${failure.kind}::text, ${failure.id}::text, ${failure.leaseToken}::uuid, ${failure.version}::bigint, ${failure.error}::text,
                                                 ${failure.permanent}::boolean, ${failure.maxAttempts}::int, ${Math.round(failure.backoffMs)}::int,
                                                 ${failure.seq ?? null}::bigint, ${now ?? null}::timestamptz) AS outcome`,
    'rowfleet_fail_record',
  );
  return rows[0]?.outcome ?? 'lost';
}
