/**
 * The clock process (`rowfleet scheduler`, Procfile `clock:`). It registers pg-boss schedules for
 * the enqueue sweep, the lease rescue and the event_log retention, and works their queues. pg-boss
 * sends one job per cron occurrence however many schedulers run (a singleton per time slot), and
 * each job is fetched by one of them: every tick runs once across the fleet. Schedulers are
 * interchangeable; run two for availability.
 *
 * pg-boss 12 evaluates cron at minute resolution: a six-field expression (seconds) is accepted,
 * but at most one job is sent per 60-second slot. For faster pick-up than a minute, send jobs on
 * upsert (ROWFLEET_ENQUEUE_ON_UPSERT=1) or use the direct engine.
 */
import type pg from 'pg';
import type { PgBoss } from 'pg-boss';
import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';
import { rescue } from '../worker/rescue.ts';
import { CLOCK_QUEUES, KindQueues, startBoss, stopBoss } from '../boss/boss.ts';
import { sweep, type SweepResult } from '../boss/sweep.ts';
import { UsageError } from '../errors.ts';
import { applyRetention } from '../records/retention.ts';
import { writeRecurring, type RecurringTick } from './recurring.ts';

export { applyRetention } from '../records/retention.ts';

export interface SchedulerOptions {
  config: Config;
  pool: pg.Pool;
  log: Logger;
  signal: AbortSignal;
  /** Called with each tick's outcome (tests observe ticks through it). */
  onTick?: (tick: Tick) => void;
}

export type Tick =
  | { task: 'sweep'; jobId: string; result: SweepResult }
  | { task: 'rescue'; jobId: string; rescued: number; poisoned: number }
  | { task: 'retention'; jobId: string; deleted: number }
  | { task: 'recurring'; written: RecurringTick[] };

/** How often the scheduler looks for a recurring kind's tick (a tick is written within this). */
const RECURRING_EVERY_MS = 5_000;

/** Runs the scheduler until `signal` aborts. */
export async function runScheduler({ config, pool, log, signal, onTick }: SchedulerOptions): Promise<void> {
  const b = config.boss;
  const boss = await startBoss({ config: b, pool, role: 'scheduler', log });
  try {
    const lookaheadMs = await registerSchedules(boss, config);
    const queues = new KindQueues(boss, pool, b.queue, b.schema);
    const tick = (t: Tick) => {
      log.info(t, `${t.task} ran`);
      onTick?.(t);
    };
    const work = (name: string, fn: (jobId: string) => Promise<void>) =>
      boss.work(name, { pollingIntervalSeconds: 1 }, async ([job]) => {
        if (job !== undefined) await fn(job.id);
      });
    await work(CLOCK_QUEUES.sweep, async (jobId) => {
      const result = await sweep(pool, boss, { queue: b.queue, schema: b.schema, batch: b.sweepBatch, lookaheadMs }, queues);
      tick({ task: 'sweep', jobId, result });
    });
    await work(CLOCK_QUEUES.rescue, async (jobId) => {
      const rescued = await rescue(pool, { maxExpirations: config.worker.maxExpirations, all: true });
      tick({ task: 'rescue', jobId, rescued: rescued.length, poisoned: rescued.filter((r) => r.status === 'FAILED').length });
    });
    if (b.eventRetentionMs !== null) {
      const retentionMs = b.eventRetentionMs;
      await work(CLOCK_QUEUES.retention, async (jobId) => tick({ task: 'retention', jobId, deleted: await applyRetention(pool, retentionMs) }));
    }
    log.info(
      { sweep: b.sweepCron, rescue: b.rescueCron, retention: b.eventRetentionMs === null ? 'keep everything' : b.retentionCron, eventRetentionMs: b.eventRetentionMs },
      'scheduler started',
    );
    // Recurring kinds: the latest tick of each, written as it passes (src/scheduler/recurring.ts).
    let last = new Map<string, string>();
    const recur = async () => {
      try {
        const written = await writeRecurring(pool, new Date(), log);
        const fresh = written.filter((w) => last.get(w.kind) !== w.id);
        last = new Map(written.map((w) => [w.kind, w.id]));
        if (fresh.length > 0) tick({ task: 'recurring', written: fresh });
      } catch (err) {
        log.warn({ err: { message: (err as Error).message, code: (err as { code?: string }).code } }, 'recurring kinds: could not write their ticks; trying again');
      }
    };
    await recur();
    const recurring = setInterval(() => void recur(), RECURRING_EVERY_MS);
    try {
      await new Promise<void>((resolve) => (signal.aborted ? resolve() : signal.addEventListener('abort', () => resolve(), { once: true })));
    } finally {
      clearInterval(recurring);
    }
    log.info('scheduler stopping: finishing the tick in progress');
  } finally {
    await stopBoss(boss, 30_000);
  }
}

/**
 * Creates or updates the schedules (they live in the database: the last scheduler to start sets
 * them). Returns the sweep's lookahead: the time between two sweep ticks, so that a record due
 * before the next tick is sent now, deferred to when it is due.
 */
async function registerSchedules(boss: PgBoss, config: Config): Promise<number> {
  const b = config.boss;
  const schedule = async (name: string, cron: string, variable: string) => {
    try {
      await boss.schedule(name, cron, {}, { tz: 'UTC' });
    } catch (err) {
      throw new UsageError(`${variable} "${cron}" is not a valid cron expression: ${(err as Error).message}`);
    }
  };
  await schedule(CLOCK_QUEUES.sweep, b.sweepCron, 'ROWFLEET_SWEEP_CRON');
  await schedule(CLOCK_QUEUES.rescue, b.rescueCron, 'ROWFLEET_RESCUE_CRON');
  if (b.eventRetentionMs !== null) await schedule(CLOCK_QUEUES.retention, b.retentionCron, 'ROWFLEET_RETENTION_CRON');
  else await boss.unschedule(CLOCK_QUEUES.retention);
  const [next, after] = boss.previewSchedule(b.sweepCron, { count: 2, tz: 'UTC' });
  // A minute at least (pg-boss's resolution), ten at most.
  return Math.min(10 * 60_000, Math.max(60_000, after!.getTime() - next!.getTime()));
}

