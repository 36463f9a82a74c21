/**
 * The workers table: who is running where, seen when. Written by each worker about itself.
 */
import os from 'node:os';
import { sql } from 'drizzle-orm';
import { query, type Queryable } from '../db/sql.ts';

export interface WorkerInfo {
  id: string;
  engine: string;
  concurrency: number;
}

export async function registerWorker(db: Queryable, info: WorkerInfo): Promise<void> {
  await query(
    db,
    sql`INSERT INTO rowfleet.workers (id, host, pid, engine, concurrency)
        VALUES (${info.id}, ${os.hostname()}, ${process.pid}, ${info.engine}, ${info.concurrency})
        ON CONFLICT (id) DO UPDATE SET last_seen_at = now()`,
  );
}

/**
 * With every heartbeat; also forgets workers silent for a day (they died without a goodbye) and
 * outcome counts older than a day.
 */
export async function touchWorker(db: Queryable, id: string, state: { inFlight: number; handlerMs: number | null }): Promise<void> {
  await query(
    db,
    sql`WITH gone AS (DELETE FROM rowfleet.workers WHERE last_seen_at < now() - interval '1 day'),
             old AS (DELETE FROM rowfleet.stats WHERE minute < now() - interval '1 day')
        UPDATE rowfleet.workers SET last_seen_at = now(), in_flight = ${state.inFlight},
               handler_ms = ${state.handlerMs === null ? null : Math.round(state.handlerMs)}::int
         WHERE id = ${id}`,
  );
}

export async function unregisterWorker(db: Queryable, id: string): Promise<void> {
  await query(db, sql`DELETE FROM rowfleet.workers WHERE id = ${id}`);
}

/** A worker process that died without a goodbye (the fleet saw it exit): forget its rows. */
export async function unregisterProcess(db: Queryable, host: string, pid: number): Promise<void> {
  await query(db, sql`DELETE FROM rowfleet.workers WHERE host = ${host} AND pid = ${pid}`);
}
