/**
 * Sending jobs outside the sweep: in the upsert's own transaction (ROWFLEET_ENQUEUE_ON_UPSERT=1),
 * and by a boss-engine worker when a record it held goes back to COMPLETED (a retry, a newer
 * version, a release on shutdown), so that the boss engine keeps the same timing as the direct one
 * instead of waiting for the next sweep. Either may fail harmlessly: the sweep finds what they miss.
 */
import type pg from 'pg';
import type { PgBoss } from 'pg-boss';
import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';
import type { Enqueue } from '../records/upsert.ts';
import { bossDb, KindQueues, startBoss, stopBoss } from './boss.ts';
import { insertJobs, recordJob } from './sweep.ts';
import type { RecordKey } from '../records/key.ts';

/** Jobs for applied records, in the caller's transaction. */
export function enqueuer(boss: PgBoss, queues: KindQueues): Enqueue {
  return async (tx, applied) => {
    await insertJobs(boss, queues, applied.map((a) => recordJob(a.kind, a.id, a.version, a.runAt, a.priority)), { db: bossDb(tx) });
  };
}

/** A record due again after `delayMs` (0: now). */
export interface Requeued extends RecordKey {
  version: string;
  delayMs: number;
  /** The record's priority, when the worker knows it. */
  priority?: number | undefined;
}

/** Jobs for records a worker gave back, deferred to when each is due. */
export async function sendRequeued(boss: PgBoss, queues: KindQueues, records: readonly Requeued[]): Promise<void> {
  if (records.length === 0) return;
  await insertJobs(boss, queues, records.map((r) => recordJob(r.kind, r.id, r.version, r.delayMs > 0 ? `${Math.ceil(r.delayMs)} milliseconds` : undefined, r.priority)));
}

/**
 * The enqueue-on-upsert hook for a process that writes records (api, library, `rowfleet upsert`):
 * undefined unless ROWFLEET_ENQUEUE_ON_UPSERT is on. `close()` stops its pg-boss.
 */
export async function openEnqueue(config: Config, pool: pg.Pool, log: Logger): Promise<{ enqueue: Enqueue; close: () => Promise<void> } | undefined> {
  if (!config.boss.enqueueOnUpsert) return undefined;
  const boss = await startBoss({ config: config.boss, pool, role: 'client', log });
  return { enqueue: enqueuer(boss, new KindQueues(boss, pool, config.boss.queue, config.boss.schema)), close: () => stopBoss(boss) };
}
