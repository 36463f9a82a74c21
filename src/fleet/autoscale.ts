/**
 * When a fleet grows or shrinks. The decision is a pure function of one sample (how long the
 * oldest due record has waited, how many records this fleet's workers hold) and a little state
 * (the current count, how many samples in a row were idle), so tests check it exactly; the one
 * statement that takes the sample lives here too.
 *
 * Grow by one while the oldest due record waits longer than the target: waiting is what users
 * feel, and unlike a due count it does not mistake a burst that is being drained quickly for a
 * lack of capacity. Shrink by one only after several idle samples in a row, idle meaning nothing
 * is due and what is held would fit in one worker fewer: a fleet of busy workers with 15 s jobs
 * shows nothing due between claims, and shrinking it would only make the backlog grow back.
 * One step per sample either way, so a new worker has started (and claimed) before the next look.
 */
import os from 'node:os';
import { sql } from 'drizzle-orm';
import { query, type Queryable } from '../db/sql.ts';

export interface ScaleLimits {
  min: number;
  max: number;
  /** Grow while the oldest due record has waited longer than this. */
  targetWaitMs: number;
  /** Idle samples in a row before shrinking by one. */
  idleSamples: number;
}

export interface ScaleInput {
  /** Workers now (those waiting to be restarted included). */
  count: number;
  /** How long the oldest due record has waited; null when nothing is due. */
  oldestDueAgeMs: number | null;
  /** Idle samples in a row, this one included (see isIdle). */
  idleStreak: number;
}

export type ScaleReason = 'below-min' | 'above-max' | 'backlog' | 'idle' | 'at-max' | 'steady';

export interface ScaleDecision {
  from: number;
  /** Equal to `from` when the fleet holds. */
  to: number;
  reason: ScaleReason;
}

export function decideScale(input: ScaleInput, limits: ScaleLimits): ScaleDecision {
  const { count, oldestDueAgeMs, idleStreak } = input;
  const hold = (reason: ScaleReason): ScaleDecision => ({ from: count, to: count, reason });
  if (count < limits.min) return { from: count, to: limits.min, reason: 'below-min' };
  if (count > limits.max) return { from: count, to: limits.max, reason: 'above-max' };
  if (oldestDueAgeMs !== null && oldestDueAgeMs > limits.targetWaitMs) {
    return count < limits.max ? { from: count, to: count + 1, reason: 'backlog' } : hold('at-max');
  }
  if (oldestDueAgeMs === null && idleStreak >= limits.idleSamples && count > limits.min) return { from: count, to: count - 1, reason: 'idle' };
  return hold('steady');
}

export interface BacklogSample {
  oldestDueAgeMs: number | null;
  /** Records held by this fleet's workers, as of their last heartbeats. */
  inFlight: number;
}

/** Nothing is due, and what the fleet holds would fit in one worker fewer. */
export function isIdle(sample: BacklogSample, count: number, concurrency: number): boolean {
  return sample.oldestDueAgeMs === null && sample.inFlight <= Math.max(0, count - 1) * concurrency;
}

/**
 * One sample. min(run_after) over due rows reads the first entry of the partial index
 * records_due_idx, so the sample costs the same with ten due rows or ten million (a count would
 * not). In-flight counts come from the workers' own rows, found by this host and the pids the
 * fleet started.
 */
export async function sampleBacklog(db: Queryable, workerPids: readonly number[]): Promise<BacklogSample> {
  const rows = await query<{ oldest_due_age_ms: number | null; in_flight: number }>(
    db,
    sql`SELECT (SELECT (extract(epoch FROM now() - min(run_after)) * 1000)::float8
                  FROM rowfleet.records WHERE status = 'COMPLETED' AND run_after <= now()) AS oldest_due_age_ms,
               (SELECT coalesce(sum(in_flight), 0)::int
                  FROM rowfleet.workers WHERE host = ${os.hostname()} AND pid = ANY (${sql.param([...workerPids])}::int[])) AS in_flight`,
  );
  const row = rows[0];
  return { oldestDueAgeMs: row?.oldest_due_age_ms ?? null, inFlight: row?.in_flight ?? 0 };
}
