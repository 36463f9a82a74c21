/**
 * Waking workers without serializing commits.
 *
 * A NOTIFY inside the writing transaction takes Postgres's global notification lock at commit, so
 * every upsert that notified committed one at a time (32 clients: ~5k/s with it, ~25k/s without).
 * Instead a worker that is about to sleep raises a flag (`rowfleet.workers.waiting_since`). An
 * upsert looks at the flags before it commits (rowfleet.notify_waiting): with one raised it clears
 * them and notifies in its own transaction, so the worker wakes at that commit; with none, it only
 * read a few rows. Busy workers raise no flag, so under load nobody notifies; an idle worker is
 * woken once per sleep, not once per message.
 *
 * A flag raised while the upsert's transaction ran is not seen by it. So producers also call
 * rowfleet.wake_workers() after their commit (below, in the background). Why nothing is missed:
 * the worker commits its flag and only then claims again (a new snapshot). Either that call sees
 * the flag and notifies, or the flag was not yet committed when it looked, and then the worker's
 * claim, later still, sees the producer's row. Polling stays as the fallback for a lost connection.
 */
import type pg from 'pg';
import { sql } from 'drizzle-orm';
import { query, type Queryable } from '../db/sql.ts';

/** The channel rowfleet.wake_workers notifies. */
export const DUE_CHANNEL = 'rowfleet_due';

/** Raises this worker's flag: it found less work than it has room for and will sleep until woken. */
export async function awaitWork(db: Queryable, workerId: string): Promise<void> {
  await query(db, sql`SELECT rowfleet.await_work(${workerId}::text)`, 'rowfleet_await_work');
}

/** Wakes waiting workers now; returns how many were waiting. */
export async function wakeWorkers(db: Queryable): Promise<number> {
  const rows = await query<{ n: number }>(db, sql`SELECT rowfleet.wake_workers() AS n`, 'rowfleet_wake_workers');
  return rows[0]?.n ?? 0;
}

interface WakeState {
  running: Promise<void> | undefined;
  again: boolean;
}

const states = new WeakMap<pg.Pool, WakeState>();

/**
 * Calls back to back are spaced this far apart at least: under a steady stream of upserts the
 * wake-up call would otherwise run continuously on one connection of the pool, costing Postgres
 * about as much CPU as the upserts themselves, to find no flag raised (busy workers raise none).
 */
const WAKE_SPACING_MS = 1;

/**
 * After a commit that made records due: wakes waiting workers in the background, at most one call
 * in flight per pool. A commit made while a call runs gets one more call after it (that call may
 * have looked before the commit), at least WAKE_SPACING_MS after the last one started. Failures
 * are ignored: a worker that is not woken polls.
 */
export function wakeAfterCommit(pool: pg.Pool): void {
  let state = states.get(pool);
  if (state === undefined) states.set(pool, (state = { running: undefined, again: false }));
  if (state.running !== undefined) {
    state.again = true;
    return;
  }
  const s = state;
  s.running = (async () => {
    for (let first = true; first || s.again; first = false) {
      const started = performance.now();
      s.again = false;
      await wakeWorkers(pool).catch(() => undefined);
      const wait = started + WAKE_SPACING_MS - performance.now();
      if (s.again && wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
    s.running = undefined;
  })();
}

/** Waits for the pool's background wake-up, if any (before closing a pool that just wrote). */
export async function settleWakes(pool: pg.Pool): Promise<void> {
  await states.get(pool)?.running;
}
