/**
 * `rowfleet delete`: turns the records a filter matches into tombstones (src/records/delete.ts),
 * page by page as src/ops/bulk.ts does for every bulk command.
 */
import type pg from 'pg';
import { deletePage } from '../records/delete.ts';
import { runBulk, type BulkOptions, type BulkResult } from './bulk.ts';

export interface DeleteResult extends Omit<BulkResult, 'changed'> {
  deleted: number;
}

export async function deleteRecords(pool: pg.Pool, options: BulkOptions): Promise<DeleteResult> {
  const { changed, ...rest } = await runBulk(pool, options, (where, after, limit) => deletePage(pool, where, after, limit));
  return { matched: rest.matched, deleted: changed, dryRun: rest.dryRun, interrupted: rest.interrupted };
}
