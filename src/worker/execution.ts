/**
 * Running one claimed record's handler under its lease: the handler gets an AbortSignal (aborted
 * on a lost lease, a timeout or shutdown) and, when it opts into a transaction, a client whose
 * writes commit together with the versioned completion, or not at all.
 *
 * This is the per-record path of a drain, so it allocates little: the context is a class (no
 * closures), the signal is made on first use, the timeout is the worker's one clock.
 */
import type pg from 'pg';
import { presentVersion } from '../records/message.ts';
import type { Claimed } from '../records/claim.ts';
import { extendLeases } from '../records/lease.ts';
import { complete } from '../records/settle.ts';
import type { Logger } from '../log.ts';
import { keyOf } from '../records/key.ts';
import type { HandlerContext, HandlerRecord, KindHandler, KindPolicy } from './handler.ts';

/** Why a handler's signal was aborted. */
export class LeaseLostError extends Error {
  override name = 'LeaseLostError';
}
export class HandlerTimeoutError extends Error {
  override name = 'HandlerTimeoutError';
}
export class ShutdownError extends Error {
  override name = 'ShutdownError';
}

/**
 * A record being processed by this worker. Its AbortSignal is made only when the handler asks for
 * it (most never do), and aborting rejects the handler's run at once either way: per record this
 * costs no AbortController, no listener and no timer (timeouts are checked by the worker's clock).
 */
export class Execution {
  /** On the worker's monotonic clock. */
  readonly startedAt: number;
  /**
   * When the lease ends, on the worker's monotonic clock: nine tenths of the lease's length after
   * the statement that took or last extended it answered (see localLeaseMs). The worker aborts the
   * handler then, without waiting for a heartbeat's answer, and first when a paused process resumes.
   */
  leaseDeadline: number;
  /** The handler has returned or thrown: heartbeats leave the lease to the settlement. */
  settling = false;
  /** Mode every: messages of this record this worker went through in a row before this one, each handed back by the completion of the one before. */
  chain = 0;
  lost = false;
  /** Lost by the worker's own clock (its local deadline), not found gone in Postgres: a moment of it may be left there. */
  lostLocally = false;
  readonly claimed: Claimed;
  /** The handler of the record's kind, and the settings it runs with. */
  readonly handler: KindHandler;
  readonly policy: KindPolicy;
  #controller: AbortController | undefined;
  #reason: unknown;
  #aborted = false;
  #reject: ((reason: unknown) => void) | undefined;

  /** `startedAt`: just after the statement that took the lease answered. */
  constructor(claimed: Claimed, startedAt: number, handler: KindHandler, policy: KindPolicy) {
    this.claimed = claimed;
    this.startedAt = startedAt;
    this.leaseDeadline = startedAt + localLeaseMs(policy.leaseMs);
    this.handler = handler;
    this.policy = policy;
  }

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.#aborted) this.#controller.abort(this.#reason);
    }
    return this.#controller.signal;
  }

  /** Why it was aborted (a LeaseLostError, HandlerTimeoutError or ShutdownError), if it was. */
  get reason(): unknown {
    return this.#reason;
  }

  abort(reason: unknown): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#reason = reason;
    this.#controller?.abort(reason);
    this.#reject?.(reason);
  }

  /** The lease is gone (expired, rescued, taken over): abort the handler; its outcome will be discarded. */
  loseLease(): void {
    if (this.lost || this.settling) return;
    this.lost = true;
    this.abort(new LeaseLostError(`lease on ${keyOf(this.claimed)} was lost`));
  }

  /** Runs `fn`, rejecting as soon as this execution is aborted even if the handler ignores it. */
  race<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#aborted) return Promise.reject(this.#reason);
    return new Promise<T>((resolve, reject) => {
      this.#reject = reject;
      try {
        fn().then(resolve, reject);
      } catch (err) {
        reject(err);
      }
    });
  }
}

/**
 * `committed`: a transactional handler's completion was written with its work (`advanced`: and the
 * record has its next message waiting, mode every).
 */
export type HandlerOutcome = { ok: true; result: unknown; committed: boolean; advanced?: boolean } | { ok: false; error: unknown };

export interface ExecutionDeps {
  pool: pg.Pool;
  log: () => Logger;
  /** The worker's monotonic clock (ms): lease deadlines. */
  monotonic: () => number;
  now?: (() => Date | undefined) | undefined;
}

/** What a handler sees besides its record. */
class ExecutionContext implements HandlerContext {
  readonly #execution: Execution;
  readonly #deps: ExecutionDeps;
  query?: HandlerContext['query'];

  constructor(execution: Execution, deps: ExecutionDeps) {
    this.#execution = execution;
    this.#deps = deps;
  }

  get signal(): AbortSignal {
    return this.#execution.signal;
  }

  // A child logger per record costs more than a no-op handler: made only when used.
  get log(): Logger {
    return this.#deps.log();
  }

  get attempt(): number {
    return this.#execution.claimed.attempts;
  }

  get idempotencyKey(): string {
    const { kind, id, version } = this.#execution.claimed;
    return `${kind}:${id}:${version}`;
  }

  get fencingToken(): number {
    return Number(this.#execution.claimed.fence);
  }

  async extendLease(): Promise<void> {
    const execution = this.#execution;
    const { claimed, policy } = execution;
    const lost = await extendLeases(this.#deps.pool, { leases: [claimed], leaseMs: policy.leaseMs, now: this.#deps.now?.() });
    if (lost.length > 0) {
      execution.loseLease();
      throw new LeaseLostError(`lease on ${keyOf(claimed)} was lost`);
    }
    execution.leaseDeadline = Math.max(execution.leaseDeadline, this.#deps.monotonic() + localLeaseMs(policy.leaseMs));
  }
}

/** Runs the handler to an outcome; never throws. */
export async function runHandler(execution: Execution, deps: ExecutionDeps): Promise<HandlerOutcome> {
  return execution.handler.transactional ? inTransaction(execution, deps) : outside(execution, deps);
}

async function outside(execution: Execution, deps: ExecutionDeps): Promise<HandlerOutcome> {
  const ctx = new ExecutionContext(execution, deps);
  try {
    return { ok: true, result: await execution.race(() => execution.handler.run(recordOf(execution.claimed), ctx)), committed: false };
  } catch (error) {
    return { ok: false, error };
  }
}

/** The handler's queries and the completion commit together, or not at all. */
async function inTransaction(execution: Execution, deps: ExecutionDeps): Promise<HandlerOutcome> {
  let client: pg.PoolClient;
  try {
    client = await deps.pool.connect();
  } catch (error) {
    return { ok: false, error };
  }
  // A checked-out client has no pool listener: a connection dropped while the handler runs
  // (Postgres restart, pg_terminate_backend) would be an unhandled 'error' that kills the
  // process. The pending query rejects by itself; the broken client is discarded on release.
  let broken: Error | undefined;
  const onError = (err: Error) => (broken = err);
  client.on('error', onError);
  // A handler that ignores its aborted signal must not write through a client that is back in
  // the pool, inside another record's transaction.
  let open = true;
  try {
    // A worker cut off from Postgres mid-transaction (a partition: no reset, no close) would leave
    // its session idle in the transaction, holding its records' locks, until TCP gives up (hours):
    // no rescue could take them. The handler cannot run past its timeout, so neither may the
    // transaction's idle time (SET LOCAL: nothing outlives the transaction, through a pooler too).
    await client.query(`BEGIN; SET LOCAL idle_in_transaction_session_timeout = ${idleInTransactionMs(execution.policy.timeoutMs)}`);
    const ctx = new ExecutionContext(execution, deps);
    ctx.query = (text, params) => (open ? client.query(text, params) : Promise.reject(new Error('this execution has ended; its transaction is closed')));
    const result = await execution.race(() => execution.handler.run(recordOf(execution.claimed), ctx));
    open = false;
    const outcome = (await complete(client, [{ ...execution.claimed, result }], deps.now?.())).get(keyOf(execution.claimed));
    const stored = outcome === 'processed' || outcome === 'advanced';
    await client.query(stored ? 'COMMIT' : 'ROLLBACK');
    return { ok: true, result, committed: stored, advanced: outcome === 'advanced' };
  } catch (error) {
    open = false;
    await client.query('ROLLBACK').catch(() => {});
    return { ok: false, error };
  } finally {
    client.off('error', onError);
    client.release(broken);
  }
}

/**
 * How long the worker counts a lease of `leaseMs` to last from the answer of the statement that
 * took or extended it. Postgres started the lease before that answer, by the statement's time in
 * Postgres and the answer's way back, so the tenth kept back covers those. Counted from before the
 * statement instead, a wait for a pool connection would shorten it: under load the worker once
 * gave up records 14 ms into their handlers, whose leases had most of their time left.
 */
export function localLeaseMs(leaseMs: number): number {
  return leaseMs * 0.9;
}

/** How long a transactional handler's transaction may sit idle: its timeout and a second (at most Postgres's maximum). */
function idleInTransactionMs(timeoutMs: number): number {
  return Math.min(2_147_483_647, Math.ceil(timeoutMs) + 1_000);
}

function recordOf(claimed: Claimed): HandlerRecord {
  return { kind: claimed.kind, id: claimed.id, version: presentVersion(claimed.version), data: claimed.data, attempts: claimed.attempts, priority: claimed.priority };
}
