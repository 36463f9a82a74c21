/**
 * `rowfleet replay`: rebuilds records' `data` and `version` from the applied messages in
 * event_log, for example after restoring an older backup of `records`. A record's state is its
 * latest applied message (applied versions only grow in seq order); `--to-seq` replays as of that
 * point, `--from-seq` and `--id` choose which records are looked at (those with an applied message
 * in the range).
 *
 * A record differs when it is missing, behind its messages (an older version), or holds other
 * data at the same version. Those are rewritten, back to COMPLETED so that they are processed
 * again, each with a `replayed` event, in guarded statements (the record must still be as read).
 * A record ahead of its messages (a newer version than the replay reaches, as with `--to-seq`) is
 * reported and never rewritten: a replay never lowers a version (I1).
 */
import type pg from 'pg';
import { sql, type SQL } from 'drizzle-orm';
import { wakeWorkers } from '../records/wake.ts';
import { query } from '../db/sql.ts';
import { presentVersion } from '../records/message.ts';

export interface ReplayOptions {
  ids?: readonly string[] | undefined;
  fromSeq?: string | undefined;
  toSeq?: string | undefined;
  /** Report differences, change nothing. */
  verify: boolean;
  /** Count what would change, change nothing. */
  dryRun: boolean;
  onProgress?: (checked: number) => void;
}

export type DifferenceKind = 'missing' | 'behind' | 'data' | 'ahead';

export interface Difference {
  id: string;
  kind: DifferenceKind;
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
  byKind: Record<DifferenceKind, number>;
  /** Records rewritten (0 with --verify or --dry-run). */
  rebuilt: number;
  verify: boolean;
  dryRun: boolean;
  /** Every difference, with --verify. */
  differences?: Difference[];
}

const PAGE = 1000;

interface Row {
  id: string;
  replay_version: string;
  replay_data: unknown;
  seq: string;
  version: string | null;
  same_data: boolean | null;
}

export async function replay(pool: pg.Pool, options: ReplayOptions): Promise<ReplayResult> {
  const inRange = rangeSql(options);
  const upTo = options.toSeq === undefined ? sql`true` : sql`e.seq <= ${options.toSeq}::bigint`;
  const byKind: Record<DifferenceKind, number> = { missing: 0, behind: 0, data: 0, ahead: 0 };
  const differences: Difference[] = [];
  let checked = 0;
  let rebuilt = 0;
  let after = '';
  for (;;) {
    const rows = await query<Row>(
      pool,
      sql`WITH candidates AS (
            SELECT DISTINCT record_id FROM rowfleet.event_log
             WHERE applied AND ${inRange} AND record_id > ${after}
             ORDER BY record_id LIMIT ${PAGE}
          ),
          latest AS (
            SELECT DISTINCT ON (e.record_id) e.record_id, e.version, e.data, e.seq
              FROM rowfleet.event_log e JOIN candidates c ON c.record_id = e.record_id
             WHERE e.applied AND ${upTo}
             ORDER BY e.record_id, e.seq DESC
          )
          SELECT l.record_id AS id, l.version AS replay_version, l.data AS replay_data, l.seq, r.version, r.data = l.data AS same_data
            FROM latest l LEFT JOIN rowfleet.records r ON r.id = l.record_id
           ORDER BY l.record_id`,
    );
    if (rows.length === 0) break;
    after = rows.at(-1)!.id;
    checked += rows.length;
    const changes: Row[] = [];
    for (const row of rows) {
      const kind = classify(row);
      if (kind === undefined) continue;
      byKind[kind] += 1;
      if (options.verify) {
        differences.push({
          id: row.id,
          kind,
          version: row.version === null ? null : presentVersion(row.version),
          replayVersion: presentVersion(row.replay_version),
          seq: presentVersion(row.seq),
        });
      }
      if (kind !== 'ahead') changes.push(row);
    }
    if (!options.verify && !options.dryRun && changes.length > 0) rebuilt += await rebuild(pool, changes);
    options.onProgress?.(checked);
  }
  const differ = byKind.missing + byKind.behind + byKind.data + byKind.ahead;
  return { checked, differ, byKind, rebuilt, verify: options.verify, dryRun: options.dryRun, ...(options.verify && { differences }) };
}

function classify(row: Row): DifferenceKind | undefined {
  if (row.version === null) return 'missing';
  const current = BigInt(row.version);
  const replayed = BigInt(row.replay_version);
  if (current < replayed) return 'behind';
  if (current > replayed) return 'ahead';
  return row.same_data ? undefined : 'data';
}

function rangeSql(o: ReplayOptions): SQL {
  const parts: SQL[] = [sql`true`];
  if (o.ids !== undefined && o.ids.length > 0) parts.push(sql`record_id = ANY (${sql.param([...o.ids])}::text[])`);
  if (o.fromSeq !== undefined) parts.push(sql`seq >= ${o.fromSeq}::bigint`);
  if (o.toSeq !== undefined) parts.push(sql`seq <= ${o.toSeq}::bigint`);
  return sql.join(parts, sql` AND `);
}

/**
 * Rewrites records from their replayed message, each guarded by what was read (version, or
 * absence), so a write that raced the replay is never overwritten; one `replayed` event each. A
 * record held by a worker loses its lease (the token is cleared): the old holder's completion is
 * refused and the record is processed again with the rebuilt data.
 */
async function rebuild(pool: pg.Pool, rows: readonly Row[]): Promise<number> {
  const [result] = await query<{ n: number }>(
    pool,
    sql`WITH r AS (
          SELECT * FROM unnest(${sql.param(rows.map((x) => x.id))}::text[], ${sql.param(rows.map((x) => x.replay_version))}::bigint[],
                               ${sql.param(rows.map((x) => JSON.stringify(x.replay_data)))}::jsonb[], ${sql.param(rows.map((x) => x.version))}::bigint[])
                 AS t(id, version, data, was)
        ),
        -- Locked in id order first, as every statement that waits for records does (drizzle/0006).
        locked AS (
          SELECT rec.id FROM rowfleet.records rec WHERE rec.id = ANY (${sql.param(rows.map((x) => x.id))}::text[]) ORDER BY rec.id FOR UPDATE
        ),
        updated AS (
          UPDATE rowfleet.records rec
             SET version = r.version, data = r.data, status = 'COMPLETED', attempts = 0, lease_expirations = 0, run_after = now(),
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, enqueued_at = NULL, last_error = NULL, updated_at = now()
            FROM r
           WHERE rec.id = ANY (ARRAY(SELECT id FROM locked)) AND rec.id = r.id AND r.was IS NOT NULL AND rec.version = r.was
          RETURNING rec.id, rec.version, r.was
        ),
        inserted AS (
          INSERT INTO rowfleet.records (id, version, data)
          SELECT r.id, r.version, r.data FROM r WHERE r.was IS NULL
          ON CONFLICT (id) DO NOTHING
          RETURNING id, version, NULL::bigint AS was
        ),
        logged AS (
          INSERT INTO rowfleet.event_log (record_id, version, applied, reason, detail)
          SELECT c.id, c.version, false, 'replayed', jsonb_build_object('from', c.was)
            FROM (SELECT * FROM updated UNION ALL SELECT * FROM inserted) c
        )
        SELECT ((SELECT count(*) FROM updated) + (SELECT count(*) FROM inserted))::int AS n`,
  );
  if (result!.n > 0) await wakeWorkers(pool);
  return result!.n;
}
