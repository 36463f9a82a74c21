/**
 * The demo's account of a run (`rowfleet demo`): what happened to the records of one kind whose
 * ids start with a prefix, and the checks of DESIGN.md's invariants I1 to I5 over them, read
 * from the records, event_log, and the executions its handler wrote (rowfleet_demo_executions,
 * see src/cli/demo-handler.ts).
 */
import { sql } from 'drizzle-orm';
import { query, type Queryable } from '../db/sql.ts';

/** The demo handler's table: one row per committed execution. */
export const DEMO_EXECUTIONS_TABLE = `CREATE TABLE IF NOT EXISTS rowfleet_demo_executions (
  kind text NOT NULL, id text NOT NULL, version bigint NOT NULL, pid integer NOT NULL, started_at timestamptz NOT NULL, ended_at timestamptz NOT NULL)`;

export interface RunCounts {
  records: number;
  processed: number;
  failed: number;
  /** Waiting or held still. */
  open: number;
  retried: number;
  rescued: number;
  /** Versions that arrived while an older one was being processed: processed once, at the newest. */
  conflated: number;
  failedIds: string[];
}

const like = (prefix: string) => `${prefix.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;

export async function runCounts(db: Queryable, kind: string, prefix: string): Promise<RunCounts> {
  const [row] = await query<{ records: number; processed: number; failed: number; open: number; failed_ids: string[] | null }>(
    db,
    sql`SELECT count(*)::int AS records, count(*) FILTER (WHERE status = 'PROCESSED')::int AS processed, count(*) FILTER (WHERE status = 'FAILED')::int AS failed,
               count(*) FILTER (WHERE status IN ('COMPLETED', 'PROCESSING'))::int AS open,
               array_agg(id ORDER BY id) FILTER (WHERE status = 'FAILED') AS failed_ids
          FROM rowfleet.records WHERE kind = ${kind} AND id LIKE ${like(prefix)}`,
  );
  const [events] = await query<{ retried: number; rescued: number; applied: number }>(
    db,
    sql`SELECT count(*) FILTER (WHERE reason = 'retried')::int AS retried, count(*) FILTER (WHERE reason = 'rescued')::int AS rescued,
               count(*) FILTER (WHERE reason = 'applied')::int AS applied
          FROM rowfleet.event_log WHERE kind = ${kind} AND record_id LIKE ${like(prefix)}`,
  );
  const [runs] = await query<{ versions: number }>(db, sql`SELECT count(DISTINCT (id, version))::int AS versions FROM rowfleet_demo_executions WHERE kind = ${kind} AND id LIKE ${like(prefix)}`);
  return {
    records: row!.records, processed: row!.processed, failed: row!.failed, open: row!.open, failedIds: row!.failed_ids ?? [],
    retried: events!.retried, rescued: events!.rescued,
    // Applied versions that no execution ever committed: replaced by a newer one first.
    conflated: Math.max(0, events!.applied - runs!.versions - row!.failed),
  };
}

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

/**
 * I1 to I5 over the run. `acknowledged`: per record, the highest version the producers were told
 * was applied; `messageIds`: every messageId acknowledged.
 */
export async function checkInvariants(db: Queryable, kind: string, prefix: string, acknowledged: ReadonlyMap<string, bigint>, messageIds: readonly string[], poison: ReadonlySet<string>): Promise<Check[]> {
  const records = await query<{ id: string; version: string; status: string; processed_version: string | null; last_error: string | null; applied_max: string | null }>(
    db,
    sql`SELECT r.id, r.version::text, r.status, r.processed_version::text, r.last_error,
               (SELECT max(e.version)::text FROM rowfleet.event_log e WHERE e.kind = r.kind AND e.record_id = r.id AND e.applied) AS applied_max
          FROM rowfleet.records r WHERE r.kind = ${kind} AND r.id LIKE ${like(prefix)}`,
  );
  const byId = new Map(records.map((r) => [r.id, r]));
  const behind = [...acknowledged].filter(([id, v]) => {
    const record = byId.get(id);
    return record === undefined || BigInt(record.version) < v || record.applied_max !== record.version;
  });
  const [logged] = await query<{ missing: number; twice: number }>(
    db,
    sql`SELECT (SELECT count(*) FROM unnest(${sql.param([...messageIds])}::text[]) AS m(id) WHERE NOT EXISTS (SELECT 1 FROM rowfleet.event_log e WHERE e.message_id = m.id))::int AS missing,
               (SELECT count(*) FROM (SELECT message_id FROM rowfleet.event_log WHERE message_id = ANY (${sql.param([...messageIds])}::text[]) GROUP BY 1 HAVING count(*) > 1) t)::int AS twice`,
  );
  const [overlaps] = await query<{ n: number }>(
    db,
    sql`SELECT count(*)::int AS n FROM rowfleet_demo_executions a JOIN rowfleet_demo_executions b
            ON a.kind = b.kind AND a.id = b.id AND a.ctid < b.ctid AND tstzrange(a.started_at, a.ended_at) && tstzrange(b.started_at, b.ended_at)
         WHERE a.kind = ${kind} AND a.id LIKE ${like(prefix)}`,
  );
  const unsettled = records.filter((r) => poison.has(r.id) ? r.status !== 'FAILED' || r.last_error === null : r.status !== 'PROCESSED' || r.processed_version !== r.version);
  const [once] = await query<{ twice: number; missing: number }>(
    db,
    sql`SELECT (SELECT count(*) FROM (SELECT id, version FROM rowfleet_demo_executions WHERE kind = ${kind} AND id LIKE ${like(prefix)} GROUP BY 1, 2 HAVING count(*) > 1) t)::int AS twice,
               (SELECT count(*) FROM rowfleet.records r WHERE r.kind = ${kind} AND r.id LIKE ${like(prefix)} AND r.status = 'PROCESSED'
                   AND NOT EXISTS (SELECT 1 FROM rowfleet_demo_executions x WHERE x.kind = r.kind AND x.id = r.id AND x.version = r.version))::int AS missing`,
  );
  return [
    { name: 'I1 newest wins', ok: behind.length === 0, detail: behind.length === 0 ? `${acknowledged.size} records hold their newest acknowledged version` : `${behind.length} records hold an older version, e.g. ${behind[0]![0]}` },
    { name: 'I2 every message audited once', ok: logged!.missing === 0 && logged!.twice === 0, detail: `${messageIds.length} acknowledged messages: ${logged!.missing} missing from event_log, ${logged!.twice} logged twice` },
    { name: 'I3 one holder', ok: overlaps!.n === 0, detail: `${overlaps!.n} overlapping committed executions of one record` },
    { name: 'I4 nothing lost', ok: unsettled.length === 0, detail: unsettled.length === 0 ? `every record PROCESSED at its latest version, or FAILED with its error` : `${unsettled.length} records not settled, e.g. ${unsettled[0]!.id} (${unsettled[0]!.status})` },
    { name: 'I5 effectively once', ok: once!.twice === 0 && once!.missing === 0, detail: `${once!.twice} versions with two committed executions, ${once!.missing} processed without one` },
  ];
}
