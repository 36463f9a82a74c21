/**
 * Writing a handler's outcome: a result is completed with a versioned compare-and-set (completions
 * that finish together share one statement), an error spends an attempt (retry with backoff, or
 * FAILED), and a record this worker cannot finish (shutdown, or the database failed under a
 * transactional handler) is released without spending one. Database failures along the way are
 * retried; a record that goes back to COMPLETED is reported through `dueAgain`.
 */
import type pg from 'pg';
import type { Logger } from '../log.ts';
import { Coalescer } from '../coalescer.ts';
import { release } from '../records/lease.ts';
import { completeChaining, fail, type Completed, type Completion } from '../records/settle.ts';
import type { Claimed } from '../records/claim.ts';
import { keyOf } from '../records/key.ts';
import { PermanentError } from './handler.ts';
import { HandlerTimeoutError, ShutdownError, type Execution, type HandlerOutcome } from './execution.ts';
import type { FailureReason, WorkerMetrics } from './metrics.ts';
import { isInfrastructure } from './infrastructure.ts';
import { backoffMs } from './policy.ts';

export interface WorkerStats {
  processed: number;
  superseded: number;
  retried: number;
  failed: number;
  lost: number;
  released: number;
  rescued: number;
  /** Mode every: messages handed back by the completion of the one before (no claim). */
  chained: number;
}

export interface SettlementDeps {
  pool: pg.Pool;
  random?: (() => number) | undefined;
  now?: (() => Date | undefined) | undefined;
  stats: WorkerStats;
  /** Counted alongside `stats`, by kind, when the worker serves metrics. */
  metrics?: WorkerMetrics | undefined;
  /** The worker's monotonic clock (ms): claim-to-completion times. */
  monotonic: () => number;
  /** A database step, retried while the database is unavailable. */
  retrying: <T>(what: string, fn: () => Promise<T>) => Promise<T>;
  /** The record is COMPLETED again and due in `delayMs`. */
  dueAgain: (execution: Execution, delayMs: number) => void;
  /** Mode every: the lease to hold the record's next message under, handed back by the completion; null: put it back in line. */
  chainLeaseMs: (execution: Execution) => number | null;
  /** The completion handed back the record's next message, held under `next`'s lease. */
  chained: (execution: Execution, next: Claimed) => void;
  log: (execution: Execution) => Logger;
  /** Whether debug lines are written (the per-record child logger is not made otherwise). */
  debug: boolean;
}

export class Settlement {
  readonly #d: SettlementDeps;
  readonly #completer: Coalescer<Completion, Completed>;

  constructor(deps: SettlementDeps) {
    this.#d = deps;
    this.#completer = new Coalescer({
      maxInFlight: 1,
      maxBatch: 1000,
      // A claimed batch's handlers often finish in one turn: their completions share a statement.
      gather: true,
      send: async (items) => {
        const outcomes = await completeChaining(deps.pool, items, deps.now?.());
        return items.map((c) => outcomes.get(keyOf(c)) ?? { outcome: 'lost' });
      },
    });
  }

  async settle(execution: Execution, outcome: HandlerOutcome): Promise<void> {
    const { stats, pool } = this.#d;
    const { claimed } = execution;
    // Committed with the handler's transaction under the lease: done, even if a heartbeat that
    // ran meanwhile found the lease gone (the completion had just cleared it).
    if (outcome.ok && outcome.committed) {
      this.#processed(execution);
      if (outcome.advanced === true) this.#d.dueAgain(execution, 0);
      return;
    }
    if (execution.lost) {
      // Given up by the local clock, which keeps a tenth of the lease back: if Postgres still has
      // it, give the record back now rather than let the lease expire (an expiration counts toward
      // poison, and a record held alone would be FAILED for this worker's slowness).
      if (execution.lostLocally) {
        const released = await release(pool, [claimed], this.#d.now?.()).catch(() => 0);
        stats.released += released;
        this.#d.metrics?.released.inc({ kind: claimed.kind }, released);
        if (released > 0) this.#d.dueAgain(execution, 0);
      }
      this.#lost(execution);
      this.#d.log(execution).warn({ durationMs: this.#ms(execution) }, 'lease lost: the lease expired while the handler ran; its result is discarded');
      return;
    }
    // Shutdown, or the database went away (or chose this transaction as a deadlock's victim) under a
    // transactional handler: not the record's fault, so give it back without spending an attempt
    // (infrastructure retries stay apart from job retries).
    if (!outcome.ok && (execution.reason instanceof ShutdownError || (execution.handler.transactional && isInfrastructure(outcome.error)))) {
      const released = await this.#d.retrying('release', () => release(pool, [claimed], this.#d.now?.()));
      stats.released += released;
      this.#d.metrics?.released.inc({ kind: claimed.kind }, released);
      if (released > 0) this.#d.dueAgain(execution, 0);
      return;
    }
    if (outcome.ok) return this.#complete(execution, outcome.result);
    return this.#fail(execution, outcome.error);
  }

  async #complete(execution: Execution, result: unknown): Promise<void> {
    const { stats } = this.#d;
    const chainLeaseMs = execution.claimed.seq === null ? null : this.#d.chainLeaseMs(execution);
    const { outcome, next } = await this.#d.retrying('complete', () => this.#completer.submit({ ...execution.claimed, result, chainLeaseMs }));
    const kind = execution.claimed.kind;
    if (outcome === 'processed') this.#processed(execution);
    else if (outcome === 'chained') {
      // Mode every: this message is done, and the next one is ours already.
      this.#processed(execution);
      stats.chained += 1;
      this.#d.metrics?.chained.inc({ kind });
      this.#d.chained(execution, next!);
    } else if (outcome === 'advanced') {
      // Mode every: this message is done, and the record's next one is due now.
      this.#processed(execution);
      this.#d.dueAgain(execution, 0);
    } else if (outcome === 'superseded') {
      stats.superseded += 1;
      this.#d.metrics?.superseded.inc({ kind });
      this.#d.dueAgain(execution, 0);
      if (this.#d.debug) this.#d.log(execution).debug({ durationMs: this.#ms(execution) }, 'superseded: a newer version arrived while processing; the record will be processed again');
    } else {
      this.#lost(execution);
      this.#d.log(execution).warn({ durationMs: this.#ms(execution) }, 'lease lost: the completion was refused');
    }
  }

  #processed(execution: Execution): void {
    this.#d.stats.processed += 1;
    if (this.#d.debug) this.#d.log(execution).debug({ durationMs: this.#ms(execution) }, 'completed');
    const m = this.#d.metrics;
    if (m === undefined) return;
    const { kind } = execution.claimed;
    m.processed.inc({ kind });
    m.claimToCompletion.observe({ kind }, (this.#d.monotonic() - execution.startedAt) / 1000);
  }

  /** Since the claim (or the hand-off of a chained message). */
  #ms(execution: Execution): number {
    return Math.round((this.#d.monotonic() - execution.startedAt) * 10) / 10;
  }

  #lost(execution: Execution): void {
    this.#d.stats.lost += 1;
    this.#d.metrics?.failures.inc({ kind: execution.claimed.kind, reason: 'lease_lost' });
  }

  async #fail(execution: Execution, error: unknown): Promise<void> {
    const { stats, pool } = this.#d;
    const { claimed } = execution;
    const permanent = error instanceof PermanentError || (error as Error)?.name === 'PermanentError';
    const message = errorMessage(error);
    const m = this.#d.metrics;
    const reason: FailureReason = permanent ? 'permanent' : execution.reason instanceof HandlerTimeoutError ? 'timeout' : 'error';
    const { policy } = execution;
    const delay = backoffMs(claimed.attempts, policy.backoff, this.#d.random);
    const outcome = await this.#d.retrying('fail', () =>
      fail(pool, { ...claimed, error: message, permanent, maxAttempts: policy.maxAttempts, backoffMs: delay }, this.#d.now?.()),
    );
    // A completion refused for a lost lease counts as that, not as the handler's error.
    if (outcome !== 'lost') m?.failures.inc({ kind: claimed.kind, reason });
    if (outcome === 'retry') {
      stats.retried += 1;
      m?.retries.inc({ kind: claimed.kind });
      this.#d.dueAgain(execution, delay);
      this.#d.log(execution).warn({ error: message, reason, retryInMs: delay, durationMs: this.#ms(execution) }, 'retried: the handler failed; it will run again');
    } else if (outcome === 'superseded') {
      this.#d.dueAgain(execution, 0);
    } else if (outcome === 'failed') {
      stats.failed += 1;
      m?.failed.inc({ kind: claimed.kind });
      this.#d.log(execution).warn({ error: message, reason, permanent, durationMs: this.#ms(execution) }, 'failed: the record is FAILED');
    } else {
      this.#lost(execution);
    }
  }
}

/**
 * What `last_error` keeps of a handler's error: its message and its causes, so that
 * `TypeError: fetch failed` comes with the `ECONNREFUSED` that explains it.
 */
function errorMessage(error: unknown): string {
  const parts: string[] = [];
  const seen = new Set<unknown>();
  for (let e: unknown = error; e !== undefined && e !== null && !seen.has(e) && parts.length < 5; e = e instanceof Error ? e.cause : undefined) {
    seen.add(e);
    parts.push(describeError(e));
  }
  return parts.join('; caused by: ').slice(0, 2000);
}

function describeError(error: unknown): string {
  if (!(error instanceof Error)) return typeof error === 'object' ? JSON.stringify(error) ?? String(error) : String(error);
  const code = (error as { code?: unknown }).code;
  // Node's network errors often carry an empty message beside their code (AggregateError [ECONNREFUSED]).
  let text = error.message !== '' ? error.message : typeof code === 'string' ? code : '';
  if (error instanceof AggregateError && error.errors.length > 0) text += `${text === '' ? '' : ': '}${error.errors.map(describeError).join(', ')}`;
  return `${error.name === 'Error' ? '' : `${error.name}: `}${text}`;
}
