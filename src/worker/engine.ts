/**
 * How a worker finds work. Both engines converge on the same claim, completion, failure and
 * rescue statements (src/records/lifecycle.ts) and pass the same conformance suite
 * (test/engine.conformance.test.ts).
 *
 * - direct: claims due rows straight from `records` (one statement, SKIP LOCKED), woken by
 *   LISTEN rowfleet_due, polling as the fallback.
 */
import type pg from 'pg';
import type { Logger } from '../log.ts';
import { listen, type Listener } from '../db/listen.ts';
import { claimDue, type Claimed } from '../records/lifecycle.ts';

export const ENGINES = ['direct'] as const;
export type EngineName = (typeof ENGINES)[number];

/** The channel the upsert functions notify when records become due. */
export const DUE_CHANNEL = 'rowfleet_due';

export interface Engine {
  readonly name: EngineName;
  /** Claims up to `limit` due records for `owner` under a lease of `leaseMs`. */
  claim(limit: number, owner: string, leaseMs: number): Promise<Claimed[]>;
  /** Calls `wake` whenever new work may be due, until the listener is closed. */
  subscribe(wake: () => void): Listener;
}

export function directEngine(pool: pg.Pool, databaseUrl: string, log: Logger): Engine {
  return {
    name: 'direct',
    claim: (limit, owner, leaseMs) => claimDue(pool, { owner, limit, leaseMs }),
    subscribe: (wake) => listen(databaseUrl, DUE_CHANNEL, wake, log),
  };
}
