/**
 * Kinds' settings in the database (rowfleet.kinds), so that every worker, API and scheduler
 * agrees: a kind's mode (`latest` or `every`) and the policies that override the handler map's and
 * the workers' own (`rowfleet kinds set`, `rowfleet kinds list`).
 *
 * Changing a kind's mode while records wait:
 * - latest → every: records already waiting are processed once, at their newest version (as they
 *   would have been); every message applied from then on is processed, in order.
 * - every → latest: the messages still waiting are dropped from the queue (they stay in event_log):
 *   each record is processed once more, at its newest version; one being processed finishes its
 *   message, then goes back to COMPLETED for the newest. A record FAILED at a message stays FAILED
 *   until a requeue, which processes its newest version.
 */
import { sql } from 'drizzle-orm';
import { inTransaction, query, type Queryable } from '../db/sql.ts';
import type { KindMode } from '../db/schema.ts';
import type pg from 'pg';

/** What `rowfleet kinds set` stores; undefined: not set (the handler map's or the worker's applies). */
export interface KindSettings {
  mode: KindMode;
  maxAttempts?: number | undefined;
  backoffBaseMs?: number | undefined;
  backoffCapMs?: number | undefined;
  leaseMs?: number | undefined;
  timeoutMs?: number | undefined;
  /** Recurring kinds: the cron expression (UTC) the scheduler upserts a record at. */
  schedule?: string | undefined;
}

export interface KindRow extends KindSettings {
  kind: string;
  /** Set with `rowfleet kinds set` (false: only seen on records, in mode latest). */
  configured: boolean;
  updatedAt: Date | null;
}

/** A change: null clears a setting, undefined leaves it. */
export type KindChange = { mode?: KindMode | undefined; schedule?: string | null | undefined } & {
  [K in Exclude<keyof KindSettings, 'mode' | 'schedule'>]?: number | null | undefined;
};

interface Row {
  kind: string;
  mode: KindMode | null;
  max_attempts: number | null;
  backoff_base_ms: number | null;
  backoff_cap_ms: number | null;
  lease_ms: number | null;
  timeout_ms: number | null;
  schedule: string | null;
  updated_at: Date | null;
}

const toRow = (r: Row): KindRow => ({
  kind: r.kind,
  mode: r.mode ?? 'latest',
  configured: r.mode !== null,
  updatedAt: r.updated_at,
  ...(r.max_attempts !== null && { maxAttempts: r.max_attempts }),
  ...(r.backoff_base_ms !== null && { backoffBaseMs: r.backoff_base_ms }),
  ...(r.backoff_cap_ms !== null && { backoffCapMs: r.backoff_cap_ms }),
  ...(r.lease_ms !== null && { leaseMs: r.lease_ms }),
  ...(r.timeout_ms !== null && { timeoutMs: r.timeout_ms }),
  ...(r.schedule !== null && { schedule: r.schedule }),
});

/**
 * Every kind set with `kinds set`, and every kind that has records (found with a loose scan of
 * the primary key: one descent per kind), by name.
 */
export async function listKinds(db: Queryable): Promise<KindRow[]> {
  const rows = await query<Row>(
    db,
    sql`WITH RECURSIVE present AS (
          SELECT (SELECT r.kind FROM rowfleet.records r ORDER BY r.kind, r.id LIMIT 1) AS kind
          UNION ALL
          SELECT (SELECT r.kind FROM rowfleet.records r WHERE r.kind > p.kind ORDER BY r.kind, r.id LIMIT 1) FROM present p WHERE p.kind IS NOT NULL
        ),
        names AS (
          SELECT kind FROM present WHERE kind IS NOT NULL UNION SELECT kind FROM rowfleet.kinds
        )
        SELECT n.kind, k.mode, k.max_attempts, k.backoff_base_ms, k.backoff_cap_ms, k.lease_ms, k.timeout_ms, k.schedule, k.updated_at
          FROM names n LEFT JOIN rowfleet.kinds k ON k.kind = n.kind
         ORDER BY n.kind`,
  );
  return rows.map(toRow);
}

/** The recurring kinds and their schedules, for the scheduler. */
export async function recurringKinds(db: Queryable): Promise<{ kind: string; schedule: string }[]> {
  return query(db, sql`SELECT kind, schedule FROM rowfleet.kinds WHERE schedule IS NOT NULL ORDER BY kind`);
}

/** The settings of every kind set with `kinds set`, for the workers. */
export async function readKindSettings(db: Queryable): Promise<Map<string, KindSettings>> {
  const rows = await query<Row>(db, sql`SELECT * FROM rowfleet.kinds`);
  return new Map(rows.map((r) => [r.kind, toRow(r)]));
}

/**
 * Creates or changes a kind's settings, in one transaction with what its mode change implies
 * (every → latest: the records stop waiting on messages); workers read it within 5 s. Returns the
 * kind's settings and how many records stopped waiting on a message.
 */
export async function setKind(pool: pg.Pool, kind: string, change: KindChange): Promise<{ settings: KindRow; released: number }> {
  const value = <K extends keyof KindChange>(key: K) => (change[key] === undefined || change[key] === null ? sql`NULL` : sql`${change[key]}`);
  const keep = (column: string, key: keyof KindChange) =>
    change[key] === undefined ? sql.raw(`k.${column}`) : sql`excluded.${sql.raw(column)}`;
  return inTransaction(pool, async (tx) => {
    const [before] = await query<{ mode: KindMode }>(tx, sql`SELECT mode FROM rowfleet.kinds WHERE kind = ${kind} FOR UPDATE`);
    const [row] = await query<Row>(
      tx,
      sql`INSERT INTO rowfleet.kinds AS k (kind, mode, max_attempts, backoff_base_ms, backoff_cap_ms, lease_ms, timeout_ms, schedule, updated_at)
          VALUES (${kind}, ${change.mode ?? 'latest'}, ${value('maxAttempts')}::int, ${value('backoffBaseMs')}::int, ${value('backoffCapMs')}::int,
                  ${value('leaseMs')}::int, ${value('timeoutMs')}::int, ${value('schedule')}::text, now())
          ON CONFLICT (kind) DO UPDATE SET
            mode = ${change.mode === undefined ? sql`k.mode` : sql`excluded.mode`},
            max_attempts = ${keep('max_attempts', 'maxAttempts')}, backoff_base_ms = ${keep('backoff_base_ms', 'backoffBaseMs')},
            backoff_cap_ms = ${keep('backoff_cap_ms', 'backoffCapMs')}, lease_ms = ${keep('lease_ms', 'leaseMs')},
            timeout_ms = ${keep('timeout_ms', 'timeoutMs')}, schedule = ${keep('schedule', 'schedule')}, updated_at = now()
          RETURNING *`,
    );
    const released = before?.mode === 'every' && row!.mode === 'latest' ? await stopWaiting(tx, kind) : 0;
    return { settings: toRow(row!), released };
  });
}

/** Removes a kind's settings (back to mode latest and the workers' policies); `removed` false if it had none. */
export async function resetKind(pool: pg.Pool, kind: string): Promise<{ removed: boolean; released: number }> {
  return inTransaction(pool, async (tx) => {
    const [gone] = await query<{ mode: KindMode }>(tx, sql`DELETE FROM rowfleet.kinds WHERE kind = ${kind} RETURNING mode`);
    const released = gone?.mode === 'every' ? await stopWaiting(tx, kind) : 0;
    return { removed: gone !== undefined, released };
  });
}

/**
 * A kind leaves mode every: its records stop waiting on messages. In key order, as every statement
 * that touches many records; one being processed included (its completion then finds the record
 * in mode latest and goes back to COMPLETED for the newest version).
 */
async function stopWaiting(tx: Queryable, kind: string): Promise<number> {
  const [n] = await query<{ n: number }>(
    tx,
    sql`WITH waiting AS (
          SELECT r.kind, r.id FROM rowfleet.records r WHERE r.kind = ${kind} AND r.next_seq IS NOT NULL ORDER BY r.kind, r.id FOR UPDATE
        ),
        cleared AS (
          UPDATE rowfleet.records r SET next_seq = NULL, updated_at = now()
            FROM waiting w WHERE r.kind = w.kind AND r.id = w.id
          RETURNING 1
        )
        SELECT count(*)::int AS n FROM cleared`,
  );
  return n!.n;
}
