/**
 * Replay's statements (src/ops/replay.ts decides what differs): read each record's latest applied
 * message beside the record, and rewrite records from it, guarded by what was read.
 */
import type pg from 'pg';
import { sql, type SQL } from 'drizzle-orm';
import { query, type Queryable } from '../db/sql.ts';
import { wakeWorkers } from './wake.ts';
import type { RecordKey } from './key.ts';

export interface ReplayRow {
  kind: string;
  id: string;
  replay_version: string;
  replay_data: unknown;
  /** The replayed message's priority and runAt (null when it carried none). */
  replay_priority: number | null;
  replay_run_at: Date | null;
  seq: string;
  version: string | null;
  same_data: boolean | null;
}

/**
 * The next `limit` records (by key, after `after`) with an applied message matching `inRange`:
 * each one's latest applied message up to `upTo`, beside the record as it is.
 */
export async function replayPage(db: Queryable, inRange: SQL, upTo: SQL, after: RecordKey, limit: number): Promise<ReplayRow[]> {
  return query<ReplayRow>(
    db,
    sql`WITH candidates AS (
          SELECT DISTINCT kind, record_id FROM rowfleet.event_log
           WHERE applied AND ${inRange} AND (kind, record_id) > (${after.kind}, ${after.id})
           ORDER BY kind, record_id LIMIT ${limit}
        ),
        latest AS (
          SELECT DISTINCT ON (e.kind, e.record_id) e.kind, e.record_id, e.version, e.data, e.priority, e.run_at, e.seq
            FROM rowfleet.event_log e JOIN candidates c ON c.kind = e.kind AND c.record_id = e.record_id
           WHERE e.applied AND ${upTo}
           ORDER BY e.kind, e.record_id, e.seq DESC
        )
        SELECT l.kind, l.record_id AS id, l.version AS replay_version, l.data AS replay_data, l.priority AS replay_priority, l.run_at AS replay_run_at,
               l.seq, r.version, r.data = l.data AS same_data
          FROM latest l LEFT JOIN rowfleet.records r ON r.kind = l.kind AND r.id = l.record_id
         ORDER BY l.kind, l.record_id`,
  );
}

/**
 * Rewrites records from their replayed message, each guarded by what was read (version, or
 * absence), so a write that raced the replay is never overwritten; one `replayed` event each. A
 * record held by a worker loses its lease (the token is cleared): the old holder's completion is
 * refused and the record is processed again with the rebuilt data.
 */
export async function rebuild(pool: pg.Pool, rows: readonly ReplayRow[]): Promise<number> {
  const [result] = await query<{ n: number }>(
    pool,
    sql`WITH r AS (
          SELECT * FROM unnest(${sql.param(rows.map((x) => x.kind))}::text[], ${sql.param(rows.map((x) => x.id))}::text[],
                               ${sql.param(rows.map((x) => x.replay_version))}::bigint[],
                               ${sql.param(rows.map((x) => JSON.stringify(x.replay_data)))}::jsonb[], ${sql.param(rows.map((x) => x.version))}::bigint[],
                               ${sql.param(rows.map((x) => x.replay_priority ?? 0))}::int[],
                               ${sql.param(rows.map((x) => x.replay_run_at?.toISOString() ?? null))}::timestamptz[])
                 AS t(kind, id, version, data, was, priority, run_at)
        ),
        -- Locked in key order first, as every statement that waits for records does (drizzle/0011).
        locked AS (
          SELECT rec.kind, rec.id FROM r JOIN rowfleet.records rec ON rec.kind = r.kind AND rec.id = r.id ORDER BY rec.kind, rec.id FOR UPDATE OF rec
        ),
        updated AS (
          UPDATE rowfleet.records rec
             SET version = r.version, data = r.data, status = 'COMPLETED', attempts = 0, lease_expirations = 0,
                 priority = r.priority, run_after = greatest(coalesce(r.run_at, now()), now()),
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, enqueued_at = NULL, last_error = NULL, next_seq = NULL, updated_at = now()
            FROM r JOIN locked l ON l.kind = r.kind AND l.id = r.id
           WHERE rec.kind = r.kind AND rec.id = r.id AND r.was IS NOT NULL AND rec.version = r.was
          RETURNING rec.kind, rec.id, rec.version, r.was
        ),
        inserted AS (
          INSERT INTO rowfleet.records (kind, id, version, data, priority, run_after)
          SELECT r.kind, r.id, r.version, r.data, r.priority, greatest(coalesce(r.run_at, now()), now()) FROM r WHERE r.was IS NULL
          ON CONFLICT (kind, id) DO NOTHING
          RETURNING kind, id, version, NULL::bigint AS was
        ),
        logged AS (
          INSERT INTO rowfleet.event_log (kind, record_id, version, applied, reason, detail)
          SELECT c.kind, c.id, c.version, false, 'replayed', jsonb_build_object('from', c.was)
            FROM (SELECT * FROM updated UNION ALL SELECT * FROM inserted) c
        ),
        counted AS (
          INSERT INTO rowfleet.stats AS s (minute, backend, replayed)
          SELECT date_trunc('minute', now()), pg_backend_pid(), count(*) FROM (SELECT * FROM updated UNION ALL SELECT * FROM inserted) c HAVING count(*) > 0
          ON CONFLICT (minute, backend) DO UPDATE SET replayed = s.replayed + excluded.replayed
        )
        SELECT ((SELECT count(*) FROM updated) + (SELECT count(*) FROM inserted))::int AS n`,
  );
  if (result!.n > 0) await wakeWorkers(pool);
  return result!.n;
}
