/**
 * The pg pool of one process. Its size is explicit (config.poolSize) because the connection
 * budget of a fleet is the sum of its processes' pools; see the README's "Connections".
 */
import pg from 'pg';
import type { Logger } from '../log.ts';

export type Pool = pg.Pool;

export interface PoolOptions {
  connectionString: string;
  max: number;
  log: Logger;
  applicationName?: string;
}

export function createPool({ connectionString, max, log, applicationName = 'rowfleet' }: PoolOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString,
    max,
    application_name: applicationName,
    // Fail fast when Postgres is down so that callers can answer 503 instead of hanging.
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
  });
  // An idle client that loses its connection (Postgres restart, network) emits `error` on the
  // pool; without a listener that would crash the process. The pool replaces the client.
  pool.on('error', (err) => log.warn({ err: { message: err.message, code: (err as { code?: string }).code } }, 'idle database connection lost'));
  return pool;
}

/** SQLSTATEs and socket errors that mean "the database is unavailable", not "the query is wrong". */
const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
  '53300', // too_many_connections
  '08000',
  '08001',
  '08003',
  '08004',
  '08006',
]);

export function isDatabaseUnavailable(err: unknown): boolean {
  return unavailableCause(err) !== undefined;
}

/** The first of the error and its causes that says the database is unavailable. */
function unavailableCause(err: unknown): Error | undefined {
  for (const e of chain(err)) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && UNAVAILABLE_CODES.has(code)) return e;
    if (/Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(e.message)) return e;
  }
  return undefined;
}

/**
 * The error and its causes, outermost first. drizzle wraps pg's error ("Failed query: ...") and
 * keeps it as `cause`, so a SQLSTATE may sit one level down.
 */
function* chain(err: unknown): Generator<Error> {
  let e = err;
  // A bound: a cause cycle must not hang the error path.
  for (let depth = 0; e instanceof Error && depth < 10; depth += 1) {
    yield e;
    e = e.cause;
  }
}

/**
 * A statement Postgres gave up on because it met another in a lock cycle (deadlock_detected 40P01)
 * or could not serialize it (40001): nothing was written, and the same statement run again
 * succeeds. An infrastructure retry, never a failed attempt of the record's handler.
 */
export function isTransientConflict(err: unknown): boolean {
  const code = sqlStateOf(err)?.code;
  return code === '40P01' || code === '40001';
}

/** The first SQLSTATE (or socket error code) found on the error or its causes, and that error. */
export function sqlStateOf(err: unknown): { code: string; error: Error } | undefined {
  for (const e of chain(err)) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return { code, error: e };
  }
  return undefined;
}

/**
 * SQLSTATEs of a statement that names something the database lacks: a table or schema (42P01,
 * 3F000), a column, function or type (42703, 42883, 42704). Before `rowfleet migrate`, or after an
 * upgrade without it, rowfleet's own statements fail this way; whether that is the cause takes a
 * look at the schema (the CLI does it on this error path only).
 */
const MISSING_OBJECT_CODES = new Set(['42P01', '3F000', '42703', '42883', '42704']);

export function isMissingObject(err: unknown): boolean {
  const state = sqlStateOf(err);
  return state !== undefined && MISSING_OBJECT_CODES.has(state.code);
}

/**
 * One line for a person when Postgres could not be used at all: unreachable, or it refused the
 * connection (no such database 3D000, no such role or not allowed 28000, wrong password 28P01).
 * undefined for anything else. Postgres's own message names the database or role, in the server's
 * language, and never the password; the URL is not repeated because it may carry one.
 */
export function explainConnectionFailure(err: unknown): string | undefined {
  const unavailable = unavailableCause(err);
  if (unavailable !== undefined) {
    return `cannot reach Postgres (${unavailable.message}); check DATABASE_URL, or run \`rowfleet db start\` for the embedded one`;
  }
  const state = sqlStateOf(err);
  const said = state?.error.message;
  switch (state?.code) {
    case '3D000':
      return `Postgres refused the connection: ${said}; create that database, or correct the database name in DATABASE_URL (or --database-url)`;
    case '28P01':
      return `Postgres refused the connection: ${said}; check the user name and password in DATABASE_URL (or --database-url)`;
    case '28000':
      return `Postgres refused the connection: ${said}; check the user name in DATABASE_URL (or --database-url), or the server's pg_hba.conf`;
    case '42501':
      // insufficient_privilege: the role connects, but may not use rowfleet's schema (or create it).
      return `Postgres refused: ${said}; the role in DATABASE_URL (or --database-url) lacks privileges on the rowfleet and pgboss schemas: use the role that ran \`rowfleet migrate\`, or grant it USAGE and table privileges there`;
    default:
      return undefined;
  }
}
