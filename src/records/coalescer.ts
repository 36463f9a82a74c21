/**
 * Coalesces concurrent single upserts (POST /upsert) into batch calls.
 *
 * Why: measured on 2 cores, one upsert per call costs ~350 µs of Postgres CPU per message, a call
 * of 100 ~45 µs (bench/upsert.ts). Semantics do not change: a batch applies its messages in array
 * order with the same outcomes as one call each, in that order. A message the database refuses
 * is retried alone, so it fails alone; an unavailable database fails them all.
 */
import { Coalescer } from '../coalescer.ts';
import { isDatabaseUnavailable } from '../db/pool.ts';
import type { Queryable } from '../db/sql.ts';
import type { Message } from './message.ts';
import { upsertMessages, type Enqueue, type UpsertResult } from './upsert.ts';

/**
 * Calls in flight for a pool of `poolSize`: two measured best on 2 cores (4,900/s over HTTP against
 * 4,700/s with four, and less Postgres CPU per message: larger calls); the rest of the pool stays
 * free for batches and reads.
 */
export function coalescedCalls(poolSize: number): number {
  return Math.max(1, Math.min(2, poolSize - 1));
}

export class UpsertCoalescer {
  readonly #coalescer: Coalescer<Message, UpsertResult>;

  constructor(db: Queryable, options: { maxInFlight: number; maxBatch: number; enqueue?: Enqueue | undefined }) {
    const { enqueue, ...limits } = options;
    this.#coalescer = new Coalescer({
      ...limits,
      send: (messages) => upsertMessages(db, messages, { enqueue }),
      isolate: (err) => !isDatabaseUnavailable(err),
      // One record's messages keep their order of arrival, in and across calls.
      key: (m) => `${m.kind ?? ''}\u0000${m.id}`,
    });
  }

  upsert(message: Message): Promise<UpsertResult> {
    return this.#coalescer.submit(message);
  }
}
