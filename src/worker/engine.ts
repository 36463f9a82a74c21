/**
 * How a worker finds work. Both engines converge on the same claim, completion, failure and
 * rescue statements (src/records/lifecycle.ts) and pass the same conformance suite
 * (test/engine.conformance.test.ts).
 *
 * - direct: claims due rows straight from `records` (one statement, SKIP LOCKED), woken by
 *   LISTEN rowfleet_due, polling as the fallback.
 * - boss: consumes pg-boss jobs `{id, version}` in batches (work(), woken by pg-boss's
 *   LISTEN/NOTIFY), then claims the records they point to with the same hand-rolled SKIP LOCKED
 *   claim. A job whose record is not claimable (held, finished, not due) completes as a no-op.
 *   Handler failures are recorded on the row; the pg-boss job has done its work once the record
 *   is claimed, and is completed then.
 */
import type pg from 'pg';
import type { PgBoss } from 'pg-boss';
import { ENGINES, type EngineName } from '../config.ts';
import type { Logger } from '../log.ts';
import { listen } from '../db/listen.ts';
import { claimDue, claimIds, type Claimed } from '../records/lifecycle.ts';
import { clearMarks, type RecordJob } from '../boss/sweep.ts';
import { sendRequeued, type Requeued } from '../boss/enqueue.ts';
import { Coalescer } from '../coalescer.ts';

export { ENGINES, type EngineName };

/** The channel the upsert functions notify when records become due. */
export const DUE_CHANNEL = 'rowfleet_due';

/** What an engine sees of its worker. */
export interface Feed {
  readonly owner: string;
  readonly leaseMs: number;
  readonly batch: number;
  readonly concurrency: number;
  /** How many records to claim now (0: too few slots free to be worth a statement). */
  claimSize(): number;
  /** Starts a handler for each claimed record. */
  execute(claimed: readonly Claimed[]): void;
  /** Waits until `n` slots are free and holds them for a claim; false if `signal` aborted first. */
  reserve(n: number, signal: AbortSignal): Promise<boolean>;
  /** Gives back reserved slots (call right before `execute`, in the same tick). */
  unreserve(n: number): void;
  /** Waits until `n` slots are free (without holding them) or `signal` aborts. */
  waitForRoom(n: number, signal: AbortSignal): Promise<void>;
  /** Waits for a wake-up (notification, finished handler, rescue, shutdown) or the poll interval. */
  idle(signal: AbortSignal): Promise<void>;
  pause(ms: number, signal: AbortSignal): Promise<void>;
  /** Runs a database step, retrying a few times while the database is unavailable (a restart). */
  retry<T>(what: string, fn: () => Promise<T>): Promise<T>;
  poke(): void;
  warn(err: unknown, message: string): void;
}

export interface Engine {
  readonly name: EngineName;
  /** One claim of up to `limit` records for `owner` (tests and benchmarks drive engines with it). */
  claim(limit: number, owner: string, leaseMs: number): Promise<Claimed[]>;
  /** Feeds the worker claimed records until `signal` aborts. */
  run(feed: Feed, signal: AbortSignal): Promise<void>;
  /**
   * A record this worker held is COMPLETED again (retry after `delayMs`, newer version, release).
   * The direct engine needs nothing; the boss engine sends its job now rather than at the next sweep.
   */
  requeued?(record: Requeued): Promise<void>;
  /**
   * A retry this worker scheduled is due now. The direct engine is woken through its feed; the
   * boss engine asks pg-boss to fetch now instead of at its next poll.
   */
  wake?(): void;
}

export function directEngine(pool: pg.Pool, databaseUrl: string, log: Logger): Engine {
  const claim = (limit: number, owner: string, leaseMs: number) => claimDue(pool, { owner, limit, leaseMs });
  return {
    name: 'direct',
    claim,
    async run(feed, signal) {
      const listener = listen(databaseUrl, DUE_CHANNEL, () => feed.poke(), log);
      let failures = 0;
      try {
        while (!signal.aborted) {
          const want = feed.claimSize();
          let claimed: Claimed[] = [];
          if (want > 0) {
            try {
              claimed = await claim(want, feed.owner, feed.leaseMs);
              failures = 0;
            } catch (err) {
              failures += 1;
              feed.warn(err, 'claim failed; retrying');
              await feed.pause(Math.min(10_000, 100 * 2 ** failures), signal);
              continue;
            }
            feed.execute(claimed);
          }
          // A full claim suggests more is due: claim again at once. Otherwise wait to be woken.
          if (claimed.length === 0 || claimed.length < want) await feed.idle(signal);
        }
      } finally {
        await listener.close();
      }
    },
  };
}

export interface BossEngineOptions {
  queue: string;
  /** Fetch loops in this process (pg-boss localConcurrency). */
  localConcurrency: number;
  /** Poll interval when no notification arrives. */
  pollMs: number;
}

export function bossEngine(pool: pg.Pool, boss: PgBoss, options: BossEngineOptions, log: Logger): Engine {
  const { queue } = options;

  /** Claims the records `jobs` point to; clears the mark of those it could not claim. */
  const claimJobs = async (jobs: readonly { data: RecordJob }[], owner: string, leaseMs: number): Promise<Claimed[]> => {
    const ids = [...new Set(jobs.map((j) => j.data.id))];
    const claimed = await claimIds(pool, { ids, owner, leaseMs });
    if (claimed.length < ids.length) {
      const held = new Set(claimed.map((c) => c.id));
      await clearMarks(
        pool,
        ids.filter((id) => !held.has(id)),
      );
    }
    return claimed;
  };

  // Records given back at about the same time share one insert.
  const requeue = new Coalescer<Requeued, void>({
    maxInFlight: 1,
    maxBatch: 1000,
    send: async (records) => {
      await sendRequeued(boss, queue, records);
      return records.map(() => undefined);
    },
  });

  let workId: string | undefined;
  return {
    name: 'boss',
    requeued: (record) => requeue.submit(record),
    wake: () => {
      if (workId !== undefined) boss.notifyWorker(workId);
    },
    async claim(limit, owner, leaseMs) {
      const jobs = await boss.fetch<RecordJob>(queue, { batchSize: limit });
      if (jobs.length === 0) return [];
      const claimed = await claimJobs(jobs, owner, leaseMs);
      await boss.complete(
        queue,
        jobs.map((j) => j.id),
      );
      return claimed;
    },
    async run(feed, signal) {
      // Each fetch asks for half of what the worker may hold, so the next batch is fetched while the
      // last one runs; the reservation keeps several fetch loops within `concurrency`.
      const batchSize = Math.max(1, Math.ceil(Math.min(feed.batch, feed.concurrency) / 2));
      const pollingIntervalSeconds = Math.max(0.5, options.pollMs / 1000);
      workId = await boss.work<RecordJob>(
        queue,
        {
          batchSize,
          localConcurrency: options.localConcurrency,
          pollingIntervalSeconds,
          // pg-boss refuses a notify interval below the poll interval (a --poll over 30s did not start).
          notifyPollingIntervalSeconds: Math.max(pollingIntervalSeconds, Math.min(30, (10 * options.pollMs) / 1000)),
          burstWhenBatchFull: true,
        },
        async (jobs) => {
          if (!(await feed.reserve(jobs.length, signal))) {
            // Shutting down: the jobs complete unclaimed, so their records must be sent again.
            await clearMarks(
              pool,
              jobs.map((j) => j.data.id),
            ).catch((err) => feed.warn(err, 'could not clear marks on shutdown; the sweep will find these records'));
            return;
          }
          let claimed: Claimed[] = [];
          try {
            claimed = await feed.retry('claim', () => claimJobs(jobs, feed.owner, feed.leaseMs));
          } finally {
            feed.unreserve(jobs.length);
            feed.execute(claimed);
          }
          // Fetch the next batch only when it fits: jobs are not held while handlers run.
          await feed.waitForRoom(batchSize, signal);
        },
      );
      log.debug({ queue, batchSize, localConcurrency: options.localConcurrency }, 'consuming pg-boss jobs');
      await new Promise<void>((resolve) => (signal.aborted ? resolve() : signal.addEventListener('abort', () => resolve(), { once: true })));
      await boss.offWork(queue, { id: workId, wait: true });
      workId = undefined;
    },
  };
}
