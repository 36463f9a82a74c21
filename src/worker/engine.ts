/**
 * How a worker finds work: an engine claims up to n records and is told when a record it held is
 * due again. Everything else (slots, wake-ups, leases, outcomes) is the worker's, the same for
 * both engines; they pass the same conformance suite (test/engine.conformance.test.ts).
 *
 * - direct: claims due rows straight from `records` (records/claim.ts: kinds shared fairly, within
 *   a kind highest priority then oldest due first, SKIP LOCKED). A record due again needs
 *   nothing: the next claim finds it.
 * - boss: fetches pg-boss jobs `{kind, id, version}` from the queues of its kinds, shared among
 *   them as the direct claim shares, and claims the records they point to (claimIds). The jobs are completed once their records are claimed: the row, not the
 *   job, carries retries and errors. A job whose record is not claimable (held, finished, not due)
 *   clears the record's enqueued mark, so the next sweep sends it again if it is still COMPLETED.
 *   A record due again gets its job now (deferred to when it is due), not at the next sweep.
 *
 * Both are woken the same way: LISTEN rowfleet_due (see src/records/wake.ts), polling as the fallback.
 */
import type pg from 'pg';
import type { PgBoss } from 'pg-boss';
import type { EngineName } from '../config.ts';
import { claimDue, claimIds, type Claimed, type KindShare } from '../records/claim.ts';
import { clearMarks } from '../records/marks.ts';
import { wakeAfterCommit } from '../records/wake.ts';
import type { RecordJob } from '../boss/sweep.ts';
import { sendRequeued, type Requeued } from '../boss/enqueue.ts';
import { KindQueues } from '../boss/boss.ts';
import { Coalescer } from '../coalescer.ts';

export interface LeaseTerms {
  owner: string;
  /** The lease of every kind when `kinds` is undefined. */
  leaseMs: number;
  /** The kinds to claim, each with its cap and lease; undefined: every kind. */
  kinds?: readonly KindShare[] | undefined;
  /** Which kind is offered its share first (the worker turns it with every claim). */
  turn?: number | undefined;
  /** Records whose lease expired this often are left to the worker's claimAlone. */
  maxExpirations?: number | undefined;
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
    // Due now (a newer version, mode every's next message, a release): another worker asleep on
    // an empty claim may take it, as it would a producer's record (one call per millisecond at most).
    dueAgain: async (record) => {
      if (record.delayMs <= 0) wakeAfterCommit(pool);
    },
  };
}

export function bossEngine(pool: pg.Pool, boss: PgBoss, queue: string, schema: string): Engine {
  const queues = new KindQueues(boss, pool, queue, schema);
  // Records given back at about the same time share one insert.
  const requeue = new Coalescer<Requeued, void>({
    maxInFlight: 1,
    maxBatch: 1000,
    send: async (records) => {
      await sendRequeued(boss, queues, records);
      return records.map(() => undefined);
    },
  });
  /** Claims the records `jobs` of `kind` point to, clears the marks of the rest, and completes the jobs. */
  const claimJobs = async (name: string, kind: string, jobs: readonly { id: string; data: RecordJob }[], leaseMs: number, terms: LeaseTerms): Promise<Claimed[]> => {
    const ids = [...new Set(jobs.map((j) => j.data.id))];
    const claimed = await claimIds(pool, { kind, ids, owner: terms.owner, leaseMs, maxExpirations: terms.maxExpirations, now: terms.now });
    if (claimed.length < ids.length) {
      const held = new Set(claimed.map((c) => c.id));
      await clearMarks(
        pool,
        ids.filter((id) => !held.has(id)).map((id) => ({ kind, id })),
      );
    }
    await boss.complete(
      name,
      jobs.map((j) => j.id),
    );
    return claimed;
  };
  /**
   * Up to `limit` records of one kind. Jobs whose records are held or finished claim nothing;
   * fetch on while full pages come back, so that a short claim means what it means for the direct
   * engine: nothing more of this kind is due.
   */
  const claimKind = async (share: KindShare, limit: number, terms: LeaseTerms, into: Claimed[]): Promise<number> => {
    const name = await queues.ensure(share.kind);
    let taken = 0;
    for (;;) {
      const want = limit - taken;
      const jobs = await boss.fetch<RecordJob>(name, { batchSize: want });
      if (jobs.length === 0) break;
      const claimed = await claimJobs(name, share.kind, jobs, share.leaseMs, terms);
      into.push(...claimed);
      taken += claimed.length;
      if (jobs.length < want || taken >= limit) break;
    }
    return taken;
  };
  return {
    name: 'boss',
    async claim(limit, terms) {
      const shares = terms.kinds ?? (await queues.list()).map((kind) => ({ kind, cap: limit, leaseMs: terms.leaseMs }));
      const claimed: Claimed[] = [];
      await shareOut(shares, limit, terms.turn ?? 0, (share, n) => claimKind(share, n, terms, claimed));
      return claimed;
    },
    dueAgain: (record) => requeue.submit(record),
  };
}

/**
 * Fair sharing of a claim of `limit` among kinds, as the direct claim does it in SQL (drizzle/0011_kinds.sql): a first
 * pass offers each kind (starting at `turn`) an equal share of what is left, within its cap; a
 * second gives what kinds with less due left over to those that took their whole share.
 */
export async function shareOut(shares: readonly KindShare[], limit: number, turn: number, take: (share: KindShare, n: number) => Promise<number>): Promise<void> {
  const n = shares.length;
  const got = new Array<number>(n).fill(0);
  const full = new Array<boolean>(n).fill(false);
  let left = limit;
  for (let i = 0; i < n && left > 0; i++) {
    const k = (i + turn) % n;
    const want = Math.min(shares[k]!.cap, Math.ceil(left / (n - i)));
    if (want <= 0) continue;
    got[k] = await take(shares[k]!, want);
    full[k] = got[k] === want;
    left -= got[k]!;
  }
  for (let i = 0; i < n && left > 0; i++) {
    const k = (i + turn) % n;
    const want = Math.min(shares[k]!.cap - got[k]!, left);
    if (!full[k] || want <= 0) continue;
    left -= await take(shares[k]!, want);
  }
}
