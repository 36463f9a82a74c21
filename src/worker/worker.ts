/**
 * The worker loop. Read top to bottom: claim what fits, run each handler under a lease, complete
 * with a versioned compare-and-set, sleep until woken. Heartbeats extend the leases; a lost lease
 * aborts its handler, and the guard refuses its writes. Rescue of expired leases runs here too.
 *
 * Infrastructure failures (connection lost, Postgres restarting) are logged and retried with
 * backoff, never thrown out of the loop; handler failures are recorded on the record.
 */
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import type { Logger } from '../log.ts';
import { Coalescer } from '../coalescer.ts';
import { isDatabaseUnavailable, isTransientConflict } from '../db/pool.ts';
import { presentVersion } from '../records/message.ts';
import {
  complete,
  extendLeases,
  fail,
  release,
  rescueExpired,
  type Claimed,
  type Completion,
  type CompletionOutcome,
} from '../records/lifecycle.ts';
import { PermanentError, type HandlerContext, type HandlerRecord, type LoadedHandler } from './handler.ts';
import type { Engine, Feed } from './engine.ts';
import { backoffMs, heartbeatEveryMs } from './policy.ts';
import { registerWorker, touchWorker, unregisterWorker } from './registry.ts';

export interface WorkerOptions {
  pool: pg.Pool;
  engine: Engine;
  handler: LoadedHandler;
  log: Logger;
  /** Handlers running at once. */
  concurrency: number;
  /** Most records claimed in one statement. */
  batch: number;
  leaseMs: number;
  /** A handler running longer is aborted, and the attempt counts as failed. */
  timeoutMs: number;
  maxAttempts: number;
  backoff: { baseMs: number; capMs: number };
  /** Lease expirations after which a record is poison (FAILED). */
  maxExpirations: number;
  /** Claim at least this often when no notification arrives. */
  pollMs: number;
  rescueEveryMs: number;
  /** On shutdown, how long in-flight handlers may take to finish before their records are released. */
  graceMs: number;
  id?: string;
  random?: () => number;
}

/** Why a handler's signal was aborted. */
export class LeaseLostError extends Error {
  override name = 'LeaseLostError';
}
export class HandlerTimeoutError extends Error {
  override name = 'HandlerTimeoutError';
}
class ShutdownError extends Error {
  override name = 'ShutdownError';
}

interface Execution {
  claimed: Claimed;
  controller: AbortController;
  /** The handler has returned or thrown: heartbeats leave the lease to the completion. */
  settling: boolean;
  lost: boolean;
}

type HandlerOutcome = { ok: true; result: unknown; committed: boolean } | { ok: false; error: unknown };

export interface WorkerStats {
  processed: number;
  superseded: number;
  retried: number;
  failed: number;
  lost: number;
  released: number;
  rescued: number;
}

export class Worker {
  readonly id: string;
  readonly stats: WorkerStats = { processed: 0, superseded: 0, retried: 0, failed: 0, lost: 0, released: 0, rescued: 0 };
  readonly #o: WorkerOptions;
  readonly #log: Logger;
  readonly #active = new Map<string, Execution>();
  readonly #completer: Coalescer<Completion, CompletionOutcome>;
  #poked = false;
  #wakeUp: (() => void) | undefined;
  /** Wake-ups at the due times of the retries this worker scheduled. */
  readonly #retryTimers = new Set<NodeJS.Timeout>();
  /** Slots held for an engine's claim in progress. */
  #reserved = 0;
  readonly #roomWaiters = new Set<() => void>();

  constructor(options: WorkerOptions) {
    this.#o = options;
    this.id = options.id ?? `${os.hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
    this.#log = options.log.child({ worker: this.id });
    // Completions that finish together share one statement.
    this.#completer = new Coalescer({
      maxInFlight: 1,
      maxBatch: 1000,
      send: async (items) => {
        const outcomes = await complete(options.pool, items);
        return items.map((c) => outcomes.get(c.id) ?? 'lost');
      },
    });
  }

  /** Records held right now. */
  get inFlight(): number {
    return this.#active.size;
  }

  /** Runs until `signal` aborts, then drains: in-flight handlers finish or are released. */
  async run(signal: AbortSignal): Promise<void> {
    const o = this.#o;
    await this.#retrying('register', () => registerWorker(o.pool, { id: this.id, engine: o.engine.name, concurrency: o.concurrency }), signal);
    this.#log.info({ engine: o.engine.name, handler: o.handler.name, concurrency: o.concurrency, batch: o.batch, leaseMs: o.leaseMs }, 'worker started');
    const heartbeat = setInterval(() => void this.#heartbeat(), heartbeatEveryMs(o.leaseMs));
    const rescue = setInterval(() => void this.#rescue(), o.rescueEveryMs);
    const onAbort = () => this.#poke();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      await o.engine.run(this.#feed(), signal);
    } finally {
      signal.removeEventListener('abort', onAbort);
      clearInterval(heartbeat);
      clearInterval(rescue);
      for (const timer of this.#retryTimers) clearTimeout(timer);
      this.#retryTimers.clear();
      await this.#drain();
      await unregisterWorker(o.pool, this.id).catch((err) => this.#warn(err, 'could not unregister'));
      this.#log.info({ ...this.stats }, 'worker stopped');
    }
  }

  /** What an engine sees of the worker: free slots, somewhere to put claimed records, wake-ups. */
  #feed(): Feed {
    return {
      owner: this.id,
      leaseMs: this.#o.leaseMs,
      batch: this.#o.batch,
      concurrency: this.#o.concurrency,
      claimSize: () => this.#claimSize(),
      execute: (claimed) => {
        for (const record of claimed) this.#execute(record);
      },
      reserve: (n, signal) => this.#reserve(n, signal),
      unreserve: (n) => {
        this.#reserved -= n;
        this.#poke();
      },
      waitForRoom: (n, signal) => this.#waitUntil(() => this.#free() >= n, signal),
      idle: (signal) => this.#idle(signal),
      pause: (ms, signal) => this.#pause(ms, signal),
      retry: (what, fn) => this.#retrying(what, fn),
      poke: () => this.#poke(),
      warn: (err, message) => this.#warn(err, message),
    };
  }

  /** Slots neither running a handler nor reserved by an engine's claim in progress. */
  #free(): number {
    return this.#o.concurrency - this.#active.size - this.#reserved;
  }

  /**
   * How many records to claim now. Slots free up one completion at a time; claiming each alone
   * would cost a statement per record (measured: 250 transactions per 1,000 records at batch 10
   * and 5x the Postgres CPU per record of batch 100), so wait until half a batch is free.
   */
  #claimSize(): number {
    const free = this.#free();
    const enough = Math.ceil(Math.min(this.#o.concurrency, this.#o.batch) / 2);
    return free >= enough || this.#active.size + this.#reserved === 0 ? Math.min(free, this.#o.batch) : 0;
  }

  /** Holds `n` slots for a claim about to happen; false if `signal` aborted first. */
  async #reserve(n: number, signal: AbortSignal): Promise<boolean> {
    const wanted = Math.min(n, this.#o.concurrency);
    await this.#waitUntil(() => this.#free() >= wanted, signal);
    if (signal.aborted) return false;
    this.#reserved += n;
    return true;
  }

  /** Resolves once `ready()` holds (checked whenever a slot frees up) or `signal` aborts. */
  async #waitUntil(ready: () => boolean, signal: AbortSignal): Promise<void> {
    while (!ready() && !signal.aborted) {
      await new Promise<void>((resolve) => {
        const done = () => {
          this.#roomWaiters.delete(done);
          signal.removeEventListener('abort', done);
          resolve();
        };
        this.#roomWaiters.add(done);
        signal.addEventListener('abort', done, { once: true });
      });
    }
  }

  /** Wakes the loop (a notification, a finished handler, a rescue, shutdown); several while busy count as one. */
  #poke(): void {
    this.#poked = true;
    this.#wakeUp?.();
    const waiters = [...this.#roomWaiters];
    this.#roomWaiters.clear();
    for (const resolve of waiters) resolve();
  }

  async #idle(signal: AbortSignal): Promise<void> {
    if (!this.#poked && !signal.aborted) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.#o.pollMs);
        this.#wakeUp = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wakeUp = undefined;
    }
    this.#poked = false;
  }

  /** Waits `ms`, or less if `signal` aborts; leaves no listener behind (outages can be long). */
  #pause(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  #execute(claimed: Claimed): void {
    const execution: Execution = { claimed, controller: new AbortController(), settling: false, lost: false };
    this.#active.set(claimed.id, execution);
    const timeout = setTimeout(
      () => execution.controller.abort(new HandlerTimeoutError(`handler timed out after ${this.#o.timeoutMs} ms`)),
      this.#o.timeoutMs,
    );
    void this.#runHandler(execution)
      .then((outcome) => {
        execution.settling = true;
        clearTimeout(timeout);
        return this.#settle(execution, outcome);
      })
      .catch((err) => this.#log.error({ err, recordId: claimed.id }, 'could not record the outcome; the lease will expire and the record be rescued'))
      .finally(() => {
        clearTimeout(timeout);
        this.#active.delete(claimed.id);
        this.#poke();
      });
  }

  async #runHandler(execution: Execution): Promise<HandlerOutcome> {
    const { claimed, controller } = execution;
    const recordLog = () => this.#recordLog(claimed);
    const record: HandlerRecord = { id: claimed.id, version: presentVersion(claimed.version), data: claimed.data, attempts: claimed.attempts };
    const ctx: HandlerContext = {
      signal: controller.signal,
      // A child logger per record costs more than a no-op handler: made only when used.
      get log() {
        return recordLog();
      },
      attempt: claimed.attempts,
      idempotencyKey: `${claimed.id}:${claimed.version}`,
      extendLease: async () => {
        const lost = await extendLeases(this.#o.pool, { leases: [claimed], leaseMs: this.#o.leaseMs });
        if (lost.length > 0) {
          this.#loseLease(execution);
          throw new LeaseLostError(`lease on ${claimed.id} was lost`);
        }
      },
    };
    if (!this.#o.handler.transactional) {
      try {
        return { ok: true, result: await untilAborted(() => this.#o.handler.run(record, ctx), controller.signal), committed: false };
      } catch (error) {
        return { ok: false, error };
      }
    }
    // The handler's queries and the completion commit together, or not at all.
    let client: pg.PoolClient;
    try {
      client = await this.#o.pool.connect();
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
      ctx.query = (text, params) => (open ? client.query(text, params) : Promise.reject(new Error('this execution has ended; its transaction is closed')));
      const result = await untilAborted(() => this.#o.handler.run(record, ctx), controller.signal);
      open = false;
      const outcome = (await complete(client, [{ ...claimed, result }])).get(claimed.id);
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

  async #settle(execution: Execution, outcome: HandlerOutcome): Promise<void> {
    const { claimed, controller } = execution;
    const log = () => this.#recordLog(claimed);
    if (execution.lost) {
      this.stats.lost += 1;
      log().warn('lease lost while the handler ran; its result is discarded');
      return;
    }
    if (outcome.ok && outcome.committed) {
      this.stats.processed += 1;
      return;
    }
    // Shutdown, or the database went away (or chose this transaction as a deadlock's victim) under a
    // transactional handler: not the record's fault, so give it back without spending an attempt
    // (infrastructure retries stay apart from job retries).
    if (!outcome.ok && (controller.signal.reason instanceof ShutdownError || (this.#o.handler.transactional && isInfrastructure(outcome.error)))) {
      const released = await this.#retrying('release', () => release(this.#o.pool, [claimed]));
      this.stats.released += released;
      if (released > 0) await this.#requeued(claimed, 0);
      return;
    }
    if (outcome.ok) {
      const result = await this.#retrying('complete', () => this.#completer.submit({ ...claimed, result: outcome.result }));
      if (result === 'processed') this.stats.processed += 1;
      else if (result === 'superseded') {
        this.stats.superseded += 1;
        await this.#requeued(claimed, 0);
        log().debug('a newer version arrived while processing; the record will be processed again');
      } else {
        this.stats.lost += 1;
        log().warn('completion refused: the lease was lost');
      }
      return;
    }
    const error = outcome.error;
    const permanent = error instanceof PermanentError || (error as Error)?.name === 'PermanentError';
    const message = errorMessage(error);
    const delay = backoffMs(claimed.attempts, this.#o.backoff, this.#o.random);
    const failed = await this.#retrying('fail', () =>
      fail(this.#o.pool, { ...claimed, error: message, permanent, maxAttempts: this.#o.maxAttempts, backoffMs: delay }),
    );
    if (failed === 'retry' || failed === 'superseded') await this.#requeued(claimed, failed === 'retry' ? delay : 0);
    if (failed === 'retry') this.#wakeAfter(delay);
    if (failed === 'failed') {
      this.stats.failed += 1;
      log().warn({ error: message, permanent }, 'record FAILED');
    } else if (failed === 'retry') {
      this.stats.retried += 1;
      log().info({ error: message }, 'handler failed; will retry');
    } else if (failed === 'lost') {
      this.stats.lost += 1;
    }
  }

  /**
   * A retry this worker scheduled falls due in `ms`: wake then rather than at the next poll (a
   * 200 ms backoff once ran after the 1 s poll). The record's due time was set by the database as
   * its now() plus `ms`, before this timer started, so the timer never fires early.
   */
  #wakeAfter(ms: number): void {
    const timer = setTimeout(() => {
      this.#retryTimers.delete(timer);
      this.#poke();
      this.#o.engine.wake?.();
    }, ms + 1);
    this.#retryTimers.add(timer);
  }

  /** Tells the engine a record is COMPLETED again; a failure here only delays it to the next sweep. */
  async #requeued(claimed: Pick<Claimed, 'id' | 'version'>, delayMs: number): Promise<void> {
    if (this.#o.engine.requeued === undefined) return;
    try {
      await this.#o.engine.requeued({ id: claimed.id, version: claimed.version, delayMs });
    } catch (err) {
      this.#warn(err, 'could not send the job of a record given back; the next sweep will');
    }
  }

  #recordLog(claimed: Claimed): Logger {
    return this.#log.child({ recordId: claimed.id, version: claimed.version, attempt: claimed.attempts });
  }

  #loseLease(execution: Execution): void {
    if (execution.lost || execution.settling) return;
    execution.lost = true;
    execution.controller.abort(new LeaseLostError(`lease on ${execution.claimed.id} was lost`));
  }

  async #heartbeat(): Promise<void> {
    const held = [...this.#active.values()].filter((e) => !e.settling && !e.lost);
    try {
      const lost = await extendLeases(this.#o.pool, { leases: held.map((e) => e.claimed), leaseMs: this.#o.leaseMs });
      for (const id of lost) {
        const execution = this.#active.get(id);
        if (execution === undefined || execution.settling) continue;
        this.#log.warn({ recordId: id }, 'lease lost (expired or taken over); aborting its handler');
        this.#loseLease(execution);
      }
      await touchWorker(this.#o.pool, this.id, this.#active.size);
    } catch (err) {
      this.#warn(err, 'heartbeat failed');
    }
  }

  async #rescue(): Promise<void> {
    try {
      const rescued = await rescueExpired(this.#o.pool, { maxExpirations: this.#o.maxExpirations });
      if (rescued.length === 0) return;
      this.stats.rescued += rescued.length;
      const poisoned = rescued.filter((r) => r.status === 'FAILED').map((r) => r.id);
      this.#log.info({ rescued: rescued.length, poisoned }, 'rescued records whose lease expired');
      await Promise.all(rescued.filter((r) => r.status === 'COMPLETED').map((r) => this.#requeued(r, 0)));
      this.#poke();
    } catch (err) {
      this.#warn(err, 'rescue failed');
    }
  }

  /** Shutdown: let handlers finish within the grace period, then abort and release the rest. */
  async #drain(): Promise<void> {
    if (this.#active.size === 0) return;
    this.#log.info({ inFlight: this.#active.size, graceMs: this.#o.graceMs }, 'draining in-flight handlers');
    const deadline = Date.now() + this.#o.graceMs;
    while (this.#active.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const execution of this.#active.values()) {
      if (!execution.settling) execution.controller.abort(new ShutdownError('worker shutting down'));
    }
    while (this.#active.size > 0) await new Promise((r) => setTimeout(r, 20));
  }

  /**
   * Runs a database step, retrying while the database is unavailable or the statement lost a
   * deadlock (bounded unless `signal`): a completion that met an upsert in a lock cycle is written
   * on the next try instead of waiting out its lease and running again.
   */
  async #retrying<T>(what: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (!isInfrastructure(err) || (signal === undefined && attempt >= 6) || signal?.aborted) throw err;
        this.#warn(err, `${what} failed; retrying`);
        await new Promise((r) => setTimeout(r, Math.min(5_000, 200 * 2 ** attempt)));
      }
    }
  }

  #warn(err: unknown, message: string): void {
    this.#log.warn({ err: { message: (err as Error)?.message, code: (err as { code?: string })?.code } }, message);
  }
}

/** A failure of the database, not of the record: retried as infrastructure, never counted as an attempt. */
function isInfrastructure(err: unknown): boolean {
  return isDatabaseUnavailable(err) || isTransientConflict(err);
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
