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
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: string }).code;
  if (code !== undefined && UNAVAILABLE_CODES.has(code)) return true;
  return /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(err.message);
}
