/**
 * Running one claimed record's handler under its lease: the handler gets an AbortSignal (aborted
 * on a lost lease, a timeout or shutdown) and, when it opts into a transaction, a client whose
 * writes commit together with the versioned completion, or not at all.
 */
import type pg from 'pg';
import { presentVersion } from '../records/message.ts';
import type { Claimed } from '../records/claim.ts';
import { extendLeases } from '../records/lease.ts';
import { complete } from '../records/settle.ts';
import type { Logger } from '../log.ts';
import type { HandlerContext, HandlerRecord, LoadedHandler } from './handler.ts';

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

/** A record being processed by this worker. */
export class Execution {
  readonly controller = new AbortController();
  readonly startedAt = performance.now();
  /** The handler has returned or thrown: heartbeats leave the lease to the settlement. */
  settling = false;
  lost = false;
  readonly claimed: Claimed;

  constructor(claimed: Claimed) {
    this.claimed = claimed;
  }

  /** The lease is gone (expired, rescued, taken over): abort the handler; its outcome will be discarded. */
  loseLease(): void {
    if (this.lost || this.settling) return;
    this.lost = true;
    this.controller.abort(new LeaseLostError(`lease on ${this.claimed.id} was lost`));
  }
}

export type HandlerOutcome = { ok: true; result: unknown; committed: boolean } | { ok: false; error: unknown };

export interface ExecutionDeps {
  pool: pg.Pool;
  handler: LoadedHandler;
  leaseMs: number;
  timeoutMs: number;
  log: () => Logger;
  now?: (() => Date) | undefined;
}

/** Runs the handler to an outcome; never throws. */
export async function runHandler(execution: Execution, deps: ExecutionDeps): Promise<HandlerOutcome> {
  const { claimed, controller } = execution;
  const timeout = setTimeout(() => controller.abort(new HandlerTimeoutError(`handler timed out after ${deps.timeoutMs} ms`)), deps.timeoutMs);
  try {
    return await (deps.handler.transactional ? inTransaction(execution, deps) : outside(execution, deps));
  } finally {
    clearTimeout(timeout);
  }

  function context(): HandlerContext {
    return {
      signal: controller.signal,
      // A child logger per record costs more than a no-op handler: made only when used.
      get log() {
        return deps.log();
      },
      attempt: claimed.attempts,
      idempotencyKey: `${claimed.id}:${claimed.version}`,
      extendLease: async () => {
        const lost = await extendLeases(deps.pool, { leases: [claimed], leaseMs: deps.leaseMs, now: deps.now?.() });
        if (lost.length > 0) {
          execution.loseLease();
          throw new LeaseLostError(`lease on ${claimed.id} was lost`);
        }
      },
    };
  }

  async function outside(execution: Execution, deps: ExecutionDeps): Promise<HandlerOutcome> {
    try {
      return { ok: true, result: await untilAborted(() => deps.handler.run(recordOf(execution.claimed), context()), controller.signal), committed: false };
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
      await client.query('BEGIN');
      const ctx = context();
      ctx.query = (text, params) => (open ? client.query(text, params) : Promise.reject(new Error('this execution has ended; its transaction is closed')));
      const result = await untilAborted(() => deps.handler.run(recordOf(execution.claimed), ctx), controller.signal);
      open = false;
      const outcome = (await complete(client, [{ ...execution.claimed, result }], deps.now?.())).get(execution.claimed.id);
      await client.query(outcome === 'processed' ? 'COMMIT' : 'ROLLBACK');
      return { ok: true, result, committed: outcome === 'processed' };
    } catch (error) {
      open = false;
      await client.query('ROLLBACK').catch(() => {});
      return { ok: false, error };
    } finally {
      client.off('error', onError);
      client.release(broken);
    }
  }
}

function recordOf(claimed: Claimed): HandlerRecord {
  return { id: claimed.id, version: presentVersion(claimed.version), data: claimed.data, attempts: claimed.attempts };
}

/** Runs `fn`, rejecting as soon as `signal` aborts even if the handler ignores it. */
function untilAborted<T>(fn: () => Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    Promise.resolve()
      .then(fn)
      .then(resolve, reject)
      .finally(() => signal.removeEventListener('abort', onAbort));
  });
}
