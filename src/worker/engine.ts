/**
 * How a worker finds work: an engine claims up to n records and is told when a record it held is
 * due again. Everything else (slots, wake-ups, leases, outcomes) is the worker's, the same for
 * both engines; they pass the same conformance suite (test/engine.conformance.test.ts).
 *
 * - direct: claims due rows straight from `records` (records/claim.ts: oldest due first, SKIP
 *   LOCKED). A record due again needs nothing: the next claim finds it.
 * - boss: fetches pg-boss jobs `{id, version}` and claims the records they point to
 *   (claimIds). The jobs are completed once their records are claimed: the row, not the
 *   job, carries retries and errors. A job whose record is not claimable (held, finished, not due)
 *   clears the record's enqueued mark, so the next sweep sends it again if it is still COMPLETED.
 *   A record due again gets its job now (deferred to when it is due), not at the next sweep.
 *
 * Both are woken the same way: LISTEN rowfleet_due (see src/records/wake.ts), polling as the fallback.
 */
import type pg from 'pg';
import type { PgBoss } from 'pg-boss';
import type { EngineName } from '../config.ts';
import { claimDue, claimIds, type Claimed } from '../records/claim.ts';
import { clearMarks } from '../records/marks.ts';
import type { RecordJob } from '../boss/sweep.ts';
import { sendRequeued, type Requeued } from '../boss/enqueue.ts';
import { Coalescer } from '../coalescer.ts';

export interface LeaseTerms {
  owner: string;
  leaseMs: number;
  /** The clock of the statements (tests); the database's now() when undefined. */
  now?: Date | undefined;
}

export interface Engine {
  readonly name: EngineName;
  /** Claims up to `limit` due records under a lease for `terms.owner`. */
  claim(limit: number, terms: LeaseTerms): Promise<Claimed[]>;
  /** A record this worker held is COMPLETED again and due in `delayMs` (a retry, a newer version, a release, a rescue). */
  dueAgain(record: Requeued): Promise<void>;
}

export function directEngine(pool: pg.Pool): Engine {
  return {
    name: 'direct',
    claim: (limit, terms) => claimDue(pool, { limit, ...terms }),
    dueAgain: async () => {},
  };
}

export function bossEngine(pool: pg.Pool, boss: PgBoss, queue: string): Engine {
  // Records given back at about the same time share one insert.
  const requeue = new Coalescer<Requeued, void>({
    maxInFlight: 1,
    maxBatch: 1000,
    send: async (records) => {
      await sendRequeued(boss, queue, records);
      return records.map(() => undefined);
    },
  });
  /** Claims the records `jobs` point to, clears the marks of the rest, and completes the jobs. */
  const claimJobs = async (jobs: readonly { id: string; data: RecordJob }[], terms: LeaseTerms): Promise<Claimed[]> => {
    const ids = [...new Set(jobs.map((j) => j.data.id))];
    const claimed = await claimIds(pool, { ids, ...terms });
    if (claimed.length < ids.length) {
      const held = new Set(claimed.map((c) => c.id));
      await clearMarks(
        pool,
        ids.filter((id) => !held.has(id)),
      );
    }
    await boss.complete(
      queue,
      jobs.map((j) => j.id),
    );
    return claimed;
  };
  return {
    name: 'boss',
    async claim(limit, terms) {
      // Jobs whose records are held or finished claim nothing; fetch on while full pages come back,
      // so that a short claim means what it means for the direct engine: nothing more is due.
      const claimed: Claimed[] = [];
      for (;;) {
        const want = limit - claimed.length;
        const jobs = await boss.fetch<RecordJob>(queue, { batchSize: want });
        if (jobs.length === 0) break;
        claimed.push(...(await claimJobs(jobs, terms)));
        if (jobs.length < want || claimed.length >= limit) break;
      }
      return claimed;
    },
    dueAgain: (record) => requeue.submit(record),
  };
}
