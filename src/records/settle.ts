/**
 * A handler's outcome, written with a versioned compare-and-set (rowfleet.complete_records and
 * rowfleet.fail_record, latest in drizzle/0011_kinds.sql): only while the lease is held, and only as the
 * result of the version that was claimed.
 */
import { sql } from 'drizzle-orm';
import { query, type Queryable } from '../db/sql.ts';
import type { Lease } from './lease.ts';
import { keyColumns, keyOf } from './key.ts';

export interface Completion extends Lease {
  /** The version the handler processed. */
  version: string;
  /** Mode every: the message the claim handed out (null in mode latest). */
  seq?: string | null | undefined;
  result: unknown;
}

/**
 * What became of a completion: stored; stored, and the record has its next message waiting (mode
 * every: back to COMPLETED); superseded by a newer version (mode latest: back to COMPLETED); or
 * refused.
 */
export type CompletionOutcome = 'processed' | 'advanced' | 'superseded' | 'lost';

/**
 * Versioned completion of many records in one statement. A record still at the processed version
 * becomes PROCESSED with its result; one that received a newer version meanwhile goes back to
 * COMPLETED, due now with fresh attempts, and the stale result is dropped (a hot key is processed
 * once per burst). A lost lease changes nothing.
 */
/** Outcomes are keyed by `kind/id` (keyOf). */
export async function complete(db: Queryable, completions: readonly Completion[], now?: Date): Promise<Map<string, CompletionOutcome>> {
  const outcomes = new Map<string, CompletionOutcome>(completions.map((c) => [keyOf(c), 'lost']));
  if (completions.length === 0) return outcomes;
  const { kinds, ids } = keyColumns(completions);
  const rows = await query<{ kind: string; id: string; processed: boolean; pending: boolean }>(
    db,
    sql`SELECT * FROM rowfleet.complete_records(${sql.param(kinds)}::text[], ${sql.param(ids)}::text[], ${sql.param(completions.map((c) => c.version))}::bigint[],
                                                ${sql.param(completions.map((c) => c.leaseToken))}::uuid[],
                                                ${sql.param(completions.map((c) => JSON.stringify(c.result ?? null)))}::jsonb[],
                                                ${sql.param(completions.map((c) => c.seq ?? null))}::bigint[], ${now ?? null}::timestamptz)`,
    'rowfleet_complete_records',
  );
  for (const row of rows) outcomes.set(keyOf(row), row.processed ? (row.pending ? 'advanced' : 'processed') : 'superseded');
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
