/**
 * Rescue of expired leases, shared by every worker (on a timer) and by the scheduler (on its cron):
 * records whose holder died or stalled past its lease go back to COMPLETED (or FAILED as poison),
 * and waiting workers are woken for them.
 */
import type pg from 'pg';
import { rescueExpired, type Rescued } from '../records/rescue.ts';
import { wakeWorkers } from '../records/wake.ts';

export interface RescueOptions {
  maxExpirations: number;
  /** Records per statement. */
  limit?: number;
  /** Keep going while full batches come back (the scheduler); one batch otherwise. */
  all?: boolean;
  now?: Date | undefined;
}

/** Rescues expired leases; returns what was rescued. */
export async function rescue(pool: pg.Pool, options: RescueOptions): Promise<Rescued[]> {
  const limit = options.limit ?? 1000;
  const rescued: Rescued[] = [];
  for (;;) {
    const batch = await rescueExpired(pool, { maxExpirations: options.maxExpirations, limit, now: options.now });
    rescued.push(...batch);
    if (!options.all || batch.length < limit) break;
  }
  if (rescued.some((r) => r.status === 'COMPLETED')) await wakeWorkers(pool);
  return rescued;
}
