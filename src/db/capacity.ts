/**
 * Whether the connections a process (or a fleet of them) may open fit in what Postgres allows: a
 * warning at start-up, with the arithmetic, instead of 503s and retried connection failures once
 * the pools fill under load (issue 13: 20 max_connections and default pools lost 770 of 31,699
 * requests to 503s, and nothing said why beforehand).
 */
import type pg from 'pg';
import type { Logger } from '../log.ts';

export interface ConnectionBudget {
  /** max_connections. */
  max: number;
  /** Kept for superusers (superuser_reserved_connections, and reserved_connections from Postgres 16). */
  reserved: number;
  /** Client connections open now, ours excluded. */
  others: number;
}

export async function readConnectionBudget(pool: pg.Pool): Promise<ConnectionBudget> {
  const { rows } = await pool.query<ConnectionBudget>(
    `SELECT current_setting('max_connections')::int AS max,
            current_setting('superuser_reserved_connections')::int + coalesce(nullif(current_setting('reserved_connections', true), '')::int, 0) AS reserved,
            (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())::int AS others`,
  );
  return rows[0]!;
}

/** What a process may open: its parts, like [['12 workers × (pool 10 + 1 LISTEN)', 132], ['the fleet', 2]]. */
export type ConnectionNeed = readonly (readonly [what: string, count: number])[];

/** The warning's line when `need` does not fit in what is left of `budget`; undefined when it fits. */
export function connectionShortfall(process: string, need: ConnectionNeed, budget: ConnectionBudget): string | undefined {
  const total = need.reduce((n, [, count]) => n + count, 0);
  const free = budget.max - budget.reserved - budget.others;
  if (total <= free) return undefined;
  const parts = need.map(([what, count]) => (need.length === 1 ? what : `${what} ${count}`)).join(' + ');
  return (
    `${process} may open ${total} connections (${parts}), but Postgres allows ${free} more ` +
    `(max_connections ${budget.max} − ${budget.reserved} reserved − ${budget.others} open by others): under load requests will wait and fail; ` +
    'lower ROWFLEET_POOL_SIZE (or the number of workers), put PgBouncer in front, or raise max_connections'
  );
}

/** Logs the warning when the need does not fit; never fails the start (the check itself may not run). */
export async function warnIfConnectionsShort(pool: pg.Pool, log: Logger, process: string, need: ConnectionNeed): Promise<void> {
  let budget: ConnectionBudget;
  try {
    budget = await readConnectionBudget(pool);
  } catch {
    return;
  }
  const line = connectionShortfall(process, need, budget);
  if (line !== undefined) log.warn({ need: need.reduce((n, [, c]) => n + c, 0), ...budget }, line);
}
