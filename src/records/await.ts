/**
 * Waiting for a result: `POST /upsert?wait=10s` and the library's `upsert(m, { wait })` answer once
 * the applied version is PROCESSED or FAILED, or when the wait runs out, with the record's state.
 *
 * No loop per waiter, and no polling: a client that has waiters keeps one row in rowfleet.awaits
 * and one LISTEN connection on `rowfleet_settled` (drizzle/0008_await_results.sql). Each statement
 * that settles records notifies that channel while such a row is live; the client then reads the
 * records of all its waiters in one statement (one read at a time, again if notified meanwhile).
 *
 * Order, so that no settlement is missed: the row is committed and the LISTEN established before
 * the upsert is sent, so the settling statement, which runs after the upsert committed, sees the
 * row and notifies a listener. A notification that arrives before the waiter is registered is
 * covered by the read that every registration schedules.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'drizzle-orm';
import type pg from 'pg';
import { listen, type Listener } from '../db/listen.ts';
import { query } from '../db/sql.ts';
import { durationProblem, parseDuration } from '../duration.ts';
import type { Logger } from '../log.ts';
import { MessageError, presentVersion } from './message.ts';
import { presentResult, type UpsertResponse, type UpsertResult } from './upsert.ts';
import { keyColumns, keyOf, type RecordKey } from './key.ts';

const SETTLED_CHANNEL = 'rowfleet_settled';

/** The longest wait a caller may ask for: a request held longer belongs to a queue of its own. */
export const MAX_WAIT_MS = 5 * 60_000;

/** What became of an applied message by the time the answer was sent. */
export interface Outcome {
  /** PROCESSED at this version or a newer one, FAILED, or DELETED; false when the wait ran out first. */
  settled: boolean;
  /** The record's status when answered; null if it could not be read, or there is no such row (not settled). */
  status: 'COMPLETED' | 'PROCESSING' | 'PROCESSED' | 'FAILED' | 'DELETED' | null;
  /** The version whose result is stored (may be newer than the message's: conflation). */
  processedVersion: number | string | null;
  /** The handler's result, when PROCESSED. */
  result?: unknown;
  /** The last error, when FAILED. */
  error?: string | null;
}

export interface Target extends RecordKey {
  /** The applied version, as a decimal string. */
  version: string;
}

interface StateRow {
  kind: string;
  id: string;
  status: Exclude<Outcome['status'], null>;
  version: string;
  processed_version: string | null;
  result: unknown;
  last_error: string | null;
}

interface Waiter {
  target: Target;
  resolve(outcome: Outcome): void;
  timer: NodeJS.Timeout;
}

/** How long past a wait's end the client's row stays live (a slow answer, clocks a little apart). */
const ROW_MARGIN_MS = 5_000;
/**
 * The least a write of the row covers: waits arriving within it need no write of their own, and
 * settling statements notify for at most this long after the last wait.
 */
const ROW_COVERS_MS = 60_000;
/** How long to wait for the LISTEN to be established before sending the upsert anyway. */
const LISTEN_READY_MS = 5_000;

/**
 * A wait as a caller gives it: a duration (`10s`, `500ms`) or milliseconds (the library), at most
 * MAX_WAIT_MS. `field` names it in the error: `wait` for the query parameter and the option.
 */
export function parseWait(raw: unknown, field = 'wait'): number {
  const ms = typeof raw === 'number' ? raw : typeof raw === 'string' ? parseDuration(raw) : undefined;
  if (ms === undefined) {
    throw new MessageError(field, typeof raw === 'string' ? durationProblem(raw) : 'must be a duration such as "10s", or milliseconds');
  }
  if (!Number.isInteger(ms) || ms < 0 || ms > MAX_WAIT_MS) throw new MessageError(field, `must be between 0ms and 5m, got ${typeof raw === 'string' ? raw : `${raw} ms`}`);
  return ms;
}

export interface Answer {
  result: UpsertResult;
  outcome?: Outcome;
}

/**
 * Writes through `send` and, with `wait`, waits up to `wait.ms` (after the write) for every
 * applied message's version to settle. Messages that were not applied (stale, a conflict) are
 * answered at once.
 */
export async function upsertAnswering(send: () => Promise<UpsertResult[]>, wait?: { awaiter: Awaiter; ms: number }): Promise<Answer[]> {
  if (wait === undefined) return (await send()).map((result) => ({ result }));
  await wait.awaiter.prepare(wait.ms);
  const results = await send();
  const applied = results.flatMap((result, i) => (result.applied ? [{ i, target: { kind: result.kind, id: result.id, version: result.version } }] : []));
  const outcomes = await wait.awaiter.wait(
    applied.map((a) => a.target),
    wait.ms,
  );
  const byIndex = new Map(applied.map((a, k) => [a.i, outcomes[k]!]));
  return results.map((result, i) => {
    const outcome = byIndex.get(i);
    return outcome === undefined ? { result } : { result, outcome };
  });
}

/** An answer as the HTTP API and the library return it. */
export function presentAnswer({ result, outcome }: Answer): UpsertResponse & { outcome?: Outcome } {
  return outcome === undefined ? presentResult(result) : { ...presentResult(result), outcome };
}

export class Awaiter {
  readonly #pool: pg.Pool;
  readonly #listenUrl: string;
  readonly #log: Logger;
  readonly #client = randomUUID();
  readonly #waiters = new Set<Waiter>();
  #listener: Listener | undefined;
  #listening: Promise<void> | undefined;
  /** The first wait has waited for the LISTEN (or given up on it after LISTEN_READY_MS). */
  #listened = false;
  /** Until when (this process's clock) the row is known to be live. */
  #rowUntil = 0;
  #reading = false;
  #readAgain = false;
  #closed = false;

  constructor(pool: pg.Pool, options: { listenUrl: string; log: Logger }) {
    this.#pool = pool;
    this.#listenUrl = options.listenUrl;
    this.#log = options.log;
  }

  /**
   * Before the upsert: make sure a settlement from now on reaches this client for `waitMs`. An
   * error here (the database unavailable) is the caller's: nothing was written yet.
   */
  async prepare(waitMs: number): Promise<void> {
    if (this.#closed) throw new Error('the client is closed');
    this.#listening ??= new Promise<void>((ready) => {
      this.#listener = listen(this.#listenUrl, SETTLED_CHANNEL, () => this.#read(), this.#log, () => {
        ready();
        this.#read();
      });
    }).finally(() => (this.#listened = true));
    // One write per client while its row covers the waits: a stream of waiters writes about once a minute.
    const started = Date.now();
    if (started + waitMs + ROW_MARGIN_MS > this.#rowUntil) {
      const ms = Math.max(waitMs + ROW_MARGIN_MS, ROW_COVERS_MS);
      await query(
        this.#pool,
        sql`INSERT INTO rowfleet.awaits (client, expires_at) VALUES (${this.#client}::uuid, now() + ${ms}::int * interval '1 millisecond')
            ON CONFLICT (client) DO UPDATE SET expires_at = greatest(rowfleet.awaits.expires_at, excluded.expires_at)`,
        'rowfleet_await_register',
      );
      // Counted from before the write, so that the row is live at least until then.
      this.#rowUntil = Math.max(this.#rowUntil, started + ms);
    }
    // The first wait waits (a little) for the LISTEN. Later ones do not, even while it reconnects
    // after a drop: its reconnection reads every waiter's record. A listener that cannot connect is
    // no reason to refuse the write: the answer then comes after it connects, or when the wait runs out.
    if (this.#listened) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.#listening, new Promise<void>((resolve) => (timer = setTimeout(resolve, LISTEN_READY_MS)))]);
    clearTimeout(timer);
    this.#listened = true;
  }

  /** After the upsert: resolves when each target's version has settled, or with its state when `waitMs` ran out. */
  wait(targets: readonly Target[], waitMs: number): Promise<Outcome[]> {
    const outcomes = Promise.all(
      targets.map(
        (target) =>
          new Promise<Outcome>((resolve) => {
            const waiter: Waiter = { target, resolve, timer: setTimeout(() => void this.#timeOut(waiter), waitMs) };
            this.#waiters.add(waiter);
          }),
      ),
    );
    // Settled already (a fast worker, or a duplicate of a message processed long ago), or
    // notified before these waiters were registered: one read answers them.
    this.#read();
    return outcomes;
  }

  /** Schedules the read that answers every waiter whose record has settled. */
  #read(): void {
    if (this.#reading) {
      this.#readAgain = true;
      return;
    }
    if (this.#waiters.size === 0) return;
    this.#reading = true;
    void this.#readOnce().finally(() => {
      this.#reading = false;
      if (this.#readAgain) {
        this.#readAgain = false;
        this.#read();
      }
    });
  }

  async #readOnce(): Promise<void> {
    // Only the waiters registered now: one registered during the read asks for the next one.
    await this.#answerFrom([...this.#waiters], false);
  }

  async #timeOut(waiter: Waiter): Promise<void> {
    if (this.#waiters.has(waiter)) await this.#answerFrom([waiter], true);
  }

  /**
   * Reads the records of `waiters` in one statement and answers those that settled, or with
   * `all` every one with its state (a timeout, a shutdown). A failed read answers nobody but
   * `all`'s, with an unknown state: the next notification or a waiter's own timeout answers the rest.
   */
  async #answerFrom(waiters: readonly Waiter[], all: boolean): Promise<void> {
    let byId: Map<string, StateRow> | undefined;
    try {
      const targets = new Map(waiters.map((w) => [keyOf(w.target), w.target]));
      const rows = await readStates(this.#pool, [...targets.values()]);
      byId = new Map(rows.map((row) => [keyOf(row), row]));
    } catch (err) {
      this.#log.warn({ err: { message: (err as Error).message } }, 'could not read the records of waiting requests');
      if (!all) return;
    }
    for (const waiter of waiters) {
      const outcome = byId === undefined ? unknownOutcome() : outcomeOf(waiter.target, byId.get(keyOf(waiter.target)));
      if (all || outcome.settled) this.#answer(waiter, outcome);
    }
  }

  #answer(waiter: Waiter, outcome: Outcome): void {
    if (!this.#waiters.delete(waiter)) return;
    clearTimeout(waiter.timer);
    waiter.resolve(outcome);
  }

  /** Answers every waiter with the state it has now, stops listening and removes the client's row. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#waiters.size > 0) await this.#answerFrom([...this.#waiters], true);
    await this.#listener?.close();
    if (this.#listening !== undefined) {
      await query(this.#pool, sql`DELETE FROM rowfleet.awaits WHERE client = ${this.#client}::uuid`).catch(() => undefined);
    }
  }
}

function readStates(pool: pg.Pool, keys: readonly RecordKey[]): Promise<StateRow[]> {
  const { kinds, ids } = keyColumns(keys);
  return query<StateRow>(
    pool,
    sql`SELECT r.kind, r.id, r.status, r.version, r.processed_version, r.result, r.last_error
          FROM unnest(${sql.param(kinds)}::text[], ${sql.param(ids)}::text[]) AS k(kind, id)
          JOIN rowfleet.records r ON r.kind = k.kind AND r.id = k.id`,
    'rowfleet_await_states',
  );
}

/** Settled: PROCESSED at the version or a newer one, FAILED at it or a newer one, or DELETED. */
export function outcomeOf(target: Target, row: StateRow | undefined): Outcome {
  // No row at all (records emptied by hand): nothing will settle it; the wait runs out.
  if (row === undefined) return { settled: false, status: null, processedVersion: null };
  const version = BigInt(target.version);
  const processedVersion = row.processed_version === null ? null : presentVersion(row.processed_version);
  if (row.status === 'PROCESSED' && row.processed_version !== null && BigInt(row.processed_version) >= version) {
    return { settled: true, status: 'PROCESSED', processedVersion, result: row.result };
  }
  if (row.status === 'FAILED' && BigInt(row.version) >= version) {
    return { settled: true, status: 'FAILED', processedVersion, error: row.last_error };
  }
  // Deleted: it will not be processed (a newer version would create it again, and be its own wait).
  if (row.status === 'DELETED') return { settled: true, status: 'DELETED', processedVersion };
  return { settled: false, status: row.status, processedVersion };
}

/** When even the record could not be read (the database went away during the wait). */
function unknownOutcome(): Outcome {
  return { settled: false, status: null, processedVersion: null };
}
