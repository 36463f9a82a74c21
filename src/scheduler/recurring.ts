/**
 * Recurring kinds (`rowfleet kinds set report --every '0 * * * *'`): at each tick of a kind's
 * schedule, the scheduler upserts one record of that kind, its id the tick's time
 * (`2026-12-01T18:00:00.000Z`), its data `{ "scheduledAt": <the same> }`, with the messageId
 * `recurring:<kind>:<tick>`. Any number of schedulers may run: the first to write a tick applies
 * it, the others' writes are the same message again (a duplicate, nothing written). A scheduler
 * writes the latest tick that has passed, so one that was down for an hour writes the last tick
 * of that hour, once, not every tick it missed.
 */
import type pg from 'pg';
import { CronExpressionParser } from 'cron-parser';
import type { Logger } from '../log.ts';
import { UsageError } from '../errors.ts';
import { recurringKinds } from '../records/kinds.ts';
import { upsertMessages } from '../records/upsert.ts';

/** The latest tick of `schedule` (UTC) at or before `now`. */
export function latestTick(schedule: string, now: Date): Date {
  // prev() is strictly before its start: start a millisecond after now, so that a tick at now counts.
  return CronExpressionParser.parse(schedule, { currentDate: new Date(now.getTime() + 1), tz: 'UTC' }).prev().toDate();
}

/** A cron expression of five fields (minute hour day month weekday) or six (with seconds first), checked. */
export function parseSchedule(raw: string, name: string): string {
  const value = raw.trim().replace(/\s+/g, ' ');
  const fields = value.split(' ').length;
  const problem = `${name} must be a cron expression like "0 * * * *" (minute hour day month weekday, UTC), got "${raw}"`;
  if (value === '' || fields < 5 || fields > 6) throw new UsageError(problem);
  try {
    CronExpressionParser.parse(value, { tz: 'UTC' });
  } catch (err) {
    throw new UsageError(`${problem}: ${(err as Error).message}`);
  }
  return value;
}

export interface RecurringTick {
  kind: string;
  id: string;
  /** False when another scheduler had written this tick already. */
  applied: boolean;
}

/** Upserts the latest tick of every recurring kind; what was written. */
export async function writeRecurring(pool: pg.Pool, now: Date, log: Logger): Promise<RecurringTick[]> {
  const ticks: RecurringTick[] = [];
  for (const { kind, schedule } of await recurringKinds(pool)) {
    let tick: Date;
    try {
      tick = latestTick(schedule, now);
    } catch (err) {
      log.warn({ kind, schedule, err: { message: (err as Error).message } }, 'a recurring kind has a schedule that does not parse; skipped');
      continue;
    }
    const id = tick.toISOString();
    const [result] = await upsertMessages(pool, [{ kind, id, data: { scheduledAt: id }, messageId: `recurring:${kind}:${id}` }]);
    ticks.push({ kind, id, applied: result!.applied && result!.duplicate !== true });
  }
  return ticks;
}
