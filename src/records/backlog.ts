/**
 * What autoscaling reads: how much is due, how much a set of workers holds, how long their
 * handlers take. Each read is bounded: the due count stops at `cap` (rowfleet.due_summary, which
 * reads records_due_idx per kind and priority; counted up to `cap` per kind, then in all),
 * holdings are read from the records themselves (not from heartbeats, which lag), durations from
 * the workers' own rows.
 */
import os from 'node:os';
import { sql } from 'drizzle-orm';
import { query, type Queryable } from '../db/sql.ts';

export interface BacklogSample {
  /** Due COMPLETED records, counted up to the cap. */
  due: number;
  /** How long the oldest due record has waited; null when nothing is due. */
  oldestDueAgeMs: number | null;
  /** Records held (PROCESSING) by the given workers right now. */
  inFlight: number;
  /** The given workers' mean handler duration; null before any has finished a record. */
  handlerMs: number | null;
}

/** One sample for the worker processes `pids` on this host, which serve `kinds` (undefined: every kind). */
export async function sampleBacklog(db: Queryable, pids: readonly number[], cap: number, kinds?: readonly string[]): Promise<BacklogSample> {
  const served = kinds === undefined ? sql`true` : sql`d.kind = ANY (${sql.param([...kinds])}::text[])`;
  // The workers rows of this fleet, as a FROM item.
  const fleet = sql`rowfleet.workers WHERE host = ${os.hostname()} AND pid = ANY (${sql.param([...pids])}::int[])`;
  const rows = await query<{ due: number; oldest_due_age_ms: number | null; in_flight: number; handler_ms: number | null }>(
    db,
    sql`SELECT least(coalesce(sum(d.due), 0), ${cap})::int AS due, (extract(epoch FROM now() - min(d.oldest)) * 1000)::float8 AS oldest_due_age_ms,
               (SELECT count(*)::int FROM rowfleet.records WHERE status = 'PROCESSING' AND lease_owner IN (SELECT id FROM ${fleet})) AS in_flight,
               (SELECT avg(handler_ms)::float8 FROM ${fleet}) AS handler_ms
          FROM rowfleet.due_summary(${cap}::int, NULL) d WHERE ${served}`,
  );
  const row = rows[0];
  return { due: row?.due ?? 0, oldestDueAgeMs: row?.oldest_due_age_ms ?? null, inFlight: row?.in_flight ?? 0, handlerMs: row?.handler_ms ?? null };
}
