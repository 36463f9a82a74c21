/**
 * `rowfleet replay`: rebuilds records' `data` and `version` from the applied messages in
 * event_log, for example after restoring an older backup of `records`. A record's state is its
 * latest applied message (applied versions only grow in seq order); `--to-seq` replays as of that
 * point, `--from-seq`, `--kind` and `--id` choose which records are looked at (those with an
 * applied message in the range).
 *
 * A record differs when it is missing, behind its messages (an older version), or holds other
 * data at the same version. Those are rewritten, back to COMPLETED so that they are processed
 * again, each with a `replayed` event, in guarded statements (the record must still be as read).
 * A record ahead of its messages (a newer version than the replay reaches, as with `--to-seq`) is
 * reported and never rewritten: a replay never lowers a version (I1).
 */
import type pg from 'pg';
import { sql, type SQL } from 'drizzle-orm';
import { rebuild, replayPage, type ReplayRow } from '../records/replay.ts';
import { presentVersion } from '../records/message.ts';
import { FIRST_KEY, type RecordKey } from '../records/key.ts';

export interface ReplayOptions {
  kinds?: readonly string[] | undefined;
  ids?: readonly string[] | undefined;
  fromSeq?: string | undefined;
  toSeq?: string | undefined;
  /** Report differences, change nothing. */
  verify: boolean;
  /** Count what would change, change nothing. */
  dryRun: boolean;
  onProgress?: (checked: number) => void;
}

export type Problem = 'missing' | 'behind' | 'data' | 'ahead';

export interface Difference {
  kind: string;
  id: string;
  problem: Problem;
  /** The record's version now (null when missing). */
  version: number | string | null;
  /** The version its messages replay to. */
  replayVersion: number | string;
  /** The seq of that message. */
  seq: number | string;
}

export interface ReplayResult {
  /** Records with an applied message in the range. */
  checked: number;
  differ: number;
  byProblem: Record<Problem, number>;
  /** Records rewritten (0 with --verify or --dry-run). */
  rebuilt: number;
  verify: boolean;
  dryRun: boolean;
  /** Every difference, with --verify. */
  differences?: Difference[];
}

const PAGE = 1000;

export async function replay(pool: pg.Pool, options: ReplayOptions): Promise<ReplayResult> {
  const inRange = rangeSql(options);
  const upTo = options.toSeq === undefined ? sql`true` : sql`e.seq <= ${options.toSeq}::bigint`;
  const byProblem: Record<Problem, number> = { missing: 0, behind: 0, data: 0, ahead: 0 };
  const differences: Difference[] = [];
  let checked = 0;
  let rebuilt = 0;
  let after: RecordKey = FIRST_KEY;
  for (;;) {
    const rows = await replayPage(pool, inRange, upTo, after, PAGE);
    if (rows.length === 0) break;
    after = rows.at(-1)!;
    checked += rows.length;
    const changes: ReplayRow[] = [];
    for (const row of rows) {
      const problem = classify(row);
      if (problem === undefined) continue;
      byProblem[problem] += 1;
      if (options.verify) {
        differences.push({
          kind: row.kind,
          id: row.id,
          problem,
          version: row.version === null ? null : presentVersion(row.version),
          replayVersion: presentVersion(row.replay_version),
          seq: presentVersion(row.seq),
        });
      }
      if (problem !== 'ahead') changes.push(row);
    }
    if (!options.verify && !options.dryRun && changes.length > 0) rebuilt += await rebuild(pool, changes);
    options.onProgress?.(checked);
  }
  const differ = byProblem.missing + byProblem.behind + byProblem.data + byProblem.ahead;
  return { checked, differ, byProblem, rebuilt, verify: options.verify, dryRun: options.dryRun, ...(options.verify && { differences }) };
}

function classify(row: ReplayRow): Problem | undefined {
  if (row.version === null) return 'missing';
  const current = BigInt(row.version);
  const replayed = BigInt(row.replay_version);
  if (current < replayed) return 'behind';
  if (current > replayed) return 'ahead';
  return row.same_data ? undefined : 'data';
}

function rangeSql(o: ReplayOptions): SQL {
  const parts: SQL[] = [sql`true`];
  if (o.kinds !== undefined && o.kinds.length > 0) parts.push(sql`kind = ANY (${sql.param([...o.kinds])}::text[])`);
  if (o.ids !== undefined && o.ids.length > 0) parts.push(sql`record_id = ANY (${sql.param([...o.ids])}::text[])`);
  if (o.fromSeq !== undefined) parts.push(sql`seq >= ${o.fromSeq}::bigint`);
  if (o.toSeq !== undefined) parts.push(sql`seq <= ${o.toSeq}::bigint`);
  return sql.join(parts, sql` AND `);
}
