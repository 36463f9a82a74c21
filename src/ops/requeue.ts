/**
 * `rowfleet requeue`: moves FAILED (or PROCESSED) records back to COMPLETED so that they are
 * processed again, with fresh attempts. Each page is one guarded statement (the record must still
 * be in the status being requeued, and still match the filter), which also appends one `requeued`
 * event per record with what it was (status, last error): running it twice is a no-op, and the
 * error history stays in event_log. The paging is src/ops/bulk.ts's.
 */
import type pg from 'pg';
import { requeuePage, type RequeueStatus } from '../records/requeue.ts';
import { wakeWorkers } from '../records/wake.ts';
import { runBulk, type BulkOptions, type BulkResult } from './bulk.ts';

export interface RequeueOptions extends BulkOptions {
  status: RequeueStatus;
  /** A new priority for the requeued records (they keep theirs otherwise). */
  priority?: number | undefined;
  /** Not processed before this instant (ISO text); at once otherwise. */
  runAt?: string | undefined;
  /** Who asked, kept in each `requeued` event (`api` for POST /requeue and the dashboard); the CLI's carry none. */
  via?: string | undefined;
}

export interface RequeueResult extends Omit<BulkResult, 'changed'> {
  requeued: number;
}

export async function requeue(pool: pg.Pool, options: RequeueOptions): Promise<RequeueResult> {
  const { changed, ...rest } = await runBulk(pool, options, async (where, after, limit) => {
    const rows = await requeuePage(pool, where, options.status, after, limit, { priority: options.priority, runAt: options.runAt, via: options.via });
    if (rows.some((r) => r.changed)) await wakeWorkers(pool);
    return rows;
  });
  return { matched: rest.matched, requeued: changed, dryRun: rest.dryRun, interrupted: rest.interrupted };
}
