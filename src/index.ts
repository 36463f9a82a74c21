/**
 * The rowfleet library.
 *
 *   import { upsert, close } from 'rowfleet';
 *   await upsert({ id: 'order-1', data: { total: 12 }, version: 3 });
 *   await close();
 *
 * `upsert` uses a shared client configured from the environment (DATABASE_URL, else the embedded
 * Postgres of the working directory, migrated on first use); `createClient` gives an explicit one.
 *
 * Every type a consumer sees is declared in this file or in a module that imports nothing
 * (records/message.ts, errors.ts). The internal modules' declarations import pg, drizzle-orm,
 * pg-boss and pino, whose own .d.ts files need @types/pg and @types/node and do not pass a
 * consumer's `skipLibCheck: false` (test/consumer.test.ts type-checks an installed tarball):
 * so the public types below are structural copies, and the `Mirrors` checks at the end keep each
 * one equal to (or compatible with) the internal type it stands for.
 */
import type pg from 'pg';
import { loadConfig, type Config, type WorkerConfig } from './config.ts';
import { resolveDatabaseUrl } from './db/connect.ts';
import { ensureSchema, schemaState } from './boss/migrate.ts';
import { createPool } from './db/pool.ts';
import { SchemaNotReadyError } from './errors.ts';
import { silentLogger, type Logger } from './log.ts';
import { MessageError, parseBatch, parseKind, parseMessage, presentVersion, type MessageInput, type MessageLimits } from './records/message.ts';
import { getRecord, type RecordView as InternalRecordView, type EventView as InternalEventView } from './records/read.ts';
import { settleWakes } from './records/wake.ts';
import { deleteByKey } from './records/delete.ts';
import { DEFAULT_KIND, type RecordKey } from './records/key.ts';
import { listKinds, setKind, type KindChange } from './records/kinds.ts';
import { parseSchedule } from './scheduler/recurring.ts';
import { KIND_MODES } from './db/schema.ts';
import { parseDuration } from './duration.ts';
import { upsertMessages, type UpsertResponse as InternalUpsertResponse } from './records/upsert.ts';
import { coalescedCalls, UpsertCoalescer } from './records/coalescer.ts';
import { Awaiter, parseWait, presentAnswer, upsertAnswering, type Outcome as InternalOutcome } from './records/await.ts';
import {
  loadHandler,
  handlerFromExport,
  type KindOptions as InternalKindOptions,
  PermanentError as InternalPermanentError,
  type HandlerContext as InternalHandlerContext,
  type HandlerRecord as InternalHandlerRecord,
} from './worker/handler.ts';
import { runWorker } from './worker/run.ts';
import type { Worker, WorkerStats as InternalWorkerStats } from './worker/worker.ts';
import { openEnqueue } from './boss/enqueue.ts';
import { fleetSize, runFleet } from './fleet/run.ts';

export { MessageError, type Message, type MessageInput, type JsonObject, type JsonValue } from './records/message.ts';
export { UserError, UsageError } from './errors.ts';

/**
 * Where rowfleet logs: a pino logger fits (`pino()`, or Fastify's `app.log`); so does anything
 * with these methods, which are all rowfleet calls. Default: silent.
 */
export interface RowfleetLogger {
  debug: LogMethod;
  info: LogMethod;
  warn: LogMethod;
  error: LogMethod;
  child(bindings: Record<string, unknown>): RowfleetLogger;
}

export interface LogMethod {
  (fields: object, message?: string): void;
  (message: string): void;
}

/**
 * A pool of the `pg` package (pg 8), described by the members that tell a Pool from a Client, so
 * that rowfleet's types do not need @types/pg. rowfleet runs its statements and transactions on it.
 */
export interface PgPool {
  query(text: string, values?: unknown[]): Promise<unknown>;
  connect(): Promise<unknown>;
  readonly totalCount: number;
  readonly idleCount: number;
}

/** An upsert result, as the HTTP API returns it: versions are numbers when exact, decimal strings above 2^53. */
export type UpsertResponse =
  | { kind: string; id: string; applied: true; version: number | string; reason: 'applied'; duplicate?: true }
  | { kind: string; id: string; applied: false; version: number | string; currentVersion: number | string; reason: 'stale' | 'conflict'; duplicate?: true }
  | { kind: string; id: string; applied: false; reason: 'message_id_reused'; messageId: string; error: string };

/**
 * What became of an applied message when `upsert` was given `wait` (the same as `POST /upsert?wait=`):
 * `settled` once its version, or a newer one, is PROCESSED (with `result`) or FAILED (with `error`),
 * or the record was deleted; `settled: false` with the record's status when the wait ran out first.
 */
export interface UpsertOutcome {
  settled: boolean;
  status: 'COMPLETED' | 'PROCESSING' | 'PROCESSED' | 'FAILED' | 'DELETED' | null;
  processedVersion: number | string | null;
  result?: unknown;
  error?: string | null;
}

/** Options of one `upsert` call. */
export interface UpsertCallOptions {
  /**
   * Answer once each applied message is processed, failed or deleted, waiting at most this long after the
   * write: a duration (`'10s'`, `'500ms'`) or milliseconds, at most 5 minutes. Its answer carries
   * an `outcome`.
   */
  wait?: string | number;
}

/** A record as `getRecord` returns it (the same as `GET /records/:id`). */
export interface RecordView {
  kind: string;
  id: string;
  version: number | string;
  /** DELETED only in `rowfleet inspect`: getRecord returns undefined for a deleted record. */
  status: 'COMPLETED' | 'PROCESSING' | 'PROCESSED' | 'FAILED' | 'DELETED';
  data: unknown;
  attempts: number;
  priority: number;
  runAfter: string;
  lease: { owner: string | null; expiresAt: string | null } | null;
  lastError: string | null;
  result: unknown;
  processedVersion: number | string | null;
  processedAt: string | null;
  createdAt: string;
  updatedAt: string;
  /** With `{ history: true }`: the record's event_log entries in order. */
  history?: EventView[];
}

/** One event_log entry: a message (applied, stale, duplicate, conflict) or a lifecycle event. */
export interface EventView {
  seq: number | string;
  messageId: string | null;
  version: number | string | null;
  versionAssigned: boolean;
  applied: boolean;
  reason: 'applied' | 'stale' | 'duplicate' | 'conflict' | 'retried' | 'failed' | 'requeued' | 'rescued' | 'replayed' | 'deleted';
  currentVersion: number | string | null;
  priority: number | null;
  runAt: string | null;
  data: unknown;
  detail: unknown;
  receivedAt: string;
}

/** Thrown by a handler: the record goes straight to FAILED, without retries. */
export interface PermanentError extends Error {}
/** Thrown by a handler: the record goes straight to FAILED, without retries. */
export const PermanentError: new (message: string, options?: ErrorOptions) => PermanentError = InternalPermanentError;

export interface HandlerRecord {
  /** The record's kind (`default` when its messages named none). */
  kind: string;
  id: string;
  /** A number when exact, a decimal string above 2^53. */
  version: number | string;
  data: unknown;
  /** Claims of this version so far, this one included. */
  attempts: number;
  /** -1000..1000, higher first: the latest applied message's (0 when it carried none). */
  priority: number;
}

export interface HandlerContext {
  /** Aborted on shutdown, on a lost lease and past the timeout: stop work and throw. */
  signal: AbortSignal;
  log: RowfleetLogger;
  attempt: number;
  /** `<kind>:<id>:<version>`: the same for every execution of this version, for external effects. */
  idempotencyKey: string;
  /**
   * Grows with every claim of this record (1, 2, 3, …; a message handed on by a completion in mode
   * every keeps it). Pass it to the systems the handler writes to, and have them refuse a write
   * with a lower token than one they have seen: a holder paused past its lease is refused there too.
   */
  fencingToken: number;
  /** Extends the lease now (heartbeats do it anyway); throws if the lease was lost. */
  extendLease(): Promise<void>;
  /** Transactional handlers only: a query in the completion's transaction. */
  query?(text: string, params?: unknown[]): Promise<{ rows: Record<string, unknown>[]; rowCount: number | null }>;
}

/** What a handler returns is stored as the record's `result` (JSON). */
export type Handler = (record: HandlerRecord, ctx: HandlerContext) => Promise<unknown>;

/**
 * A kind's settings in a handler map; what is not given comes from the worker's. Durations are
 * milliseconds or text like `'30s'`.
 */
export interface KindOptions {
  /** Handlers of this kind running at once in one worker process (within its concurrency). */
  concurrency?: number;
  maxAttempts?: number;
  backoff?: { base?: number | string; cap?: number | string };
  lease?: number | string;
  timeout?: number | string;
  transactional?: boolean;
}

/** A handler module's default export as a map: kind → handler, or → `{ handler, ...options }`. */
export type HandlerMap = Record<string, Handler | (KindOptions & { handler: Handler })>;

/** Records this worker finished, by outcome, since it started. */
export interface WorkerStats {
  /** Completed: the record is PROCESSED at the version the handler saw. */
  processed: number;
  /** A newer version arrived while the handler ran: the record went back to COMPLETED. */
  superseded: number;
  /** The handler threw: retried after a backoff. */
  retried: number;
  /** Attempts exhausted or a PermanentError: FAILED. */
  failed: number;
  /** The lease was lost (rescued elsewhere): the completion was refused. */
  lost: number;
  /** Given back unfinished on shutdown, without spending an attempt. */
  released: number;
  /** Other workers' expired leases this worker rescued. */
  rescued: number;
  /** Mode every: messages handed to this worker by the completion of the record's message before, without a claim (counted in `processed` too). */
  chained: number;
}

export interface ClientOptions {
  /** Postgres URL; default DATABASE_URL, else the embedded Postgres in `.rowfleet/`. */
  databaseUrl?: string;
  /** Use this `pg` Pool instead of opening one (the client will not close it, nor migrate through it). */
  pool?: PgPool;
  /** Connections to open (default ROWFLEET_POOL_SIZE or 10). */
  poolSize?: number;
  /** Batch size and nesting limits (default ROWFLEET_MAX_BATCH / ROWFLEET_MAX_DEPTH). */
  limits?: { maxBatch?: number; maxDepth?: number };
  /** Send each applied record's pg-boss job in the upsert's transaction (default ROWFLEET_ENQUEUE_ON_UPSERT). */
  enqueueOnUpsert?: boolean;
  log?: RowfleetLogger;
}

export interface RowfleetClient {
  /** One message → one response; an array → one response per message, in order. */
  upsert(message: MessageInput, options?: UpsertCallOptions): Promise<UpsertResponse & { outcome?: UpsertOutcome }>;
  upsert(messages: readonly MessageInput[], options?: UpsertCallOptions): Promise<(UpsertResponse & { outcome?: UpsertOutcome })[]>;
  /** The record `kind/id` (kind `default` when not given); undefined when there is none, or it was deleted. */
  getRecord(id: string, options?: { kind?: string; history?: boolean }): Promise<RecordView | undefined>;
  /**
   * Deletes a record, leaving a tombstone at its version: a late message at that version or older
   * is refused, a newer one creates it again. undefined when there is no such record (or it is
   * deleted already). A record being processed loses its lease: its handler's completion is refused.
   */
  deleteRecord(id: string, options?: { kind?: string }): Promise<{ kind: string; id: string; version: number | string } | undefined>;
  /**
   * Sets a kind's mode and policies in the database, as `rowfleet kinds set` does: every worker,
   * API and scheduler applies them. A setting left out stays as it is; null clears it. Durations
   * are milliseconds or text like `'30s'`; `every` is a cron expression (UTC) for a recurring kind.
   */
  setKind(kind: string, settings: KindSettingsInput): Promise<KindInfo>;
  /** Every kind with records or settings, as `rowfleet kinds list --json` prints them. */
  listKinds(): Promise<KindInfo[]>;
  close(): Promise<void>;
}

/** `client.setKind`'s settings; null clears one. */
export interface KindSettingsInput {
  mode?: 'latest' | 'every';
  maxAttempts?: number | null;
  backoffBase?: number | string | null;
  backoffCap?: number | string | null;
  lease?: number | string | null;
  timeout?: number | string | null;
  every?: string | null;
}

/** A kind's stored settings (milliseconds); `configured` false for a kind only seen on records. */
export interface KindInfo {
  kind: string;
  mode: 'latest' | 'every';
  configured: boolean;
  maxAttempts?: number;
  backoffBaseMs?: number;
  backoffCapMs?: number;
  leaseMs?: number;
  timeoutMs?: number;
  schedule?: string;
  updatedAt: Date | null;
}

type Answer = UpsertResponse & { outcome?: UpsertOutcome };

/** `setKind`'s settings checked as `rowfleet kinds set` checks its flags; a bad one throws MessageError naming it. */
function kindChange(kind: unknown, s: KindSettingsInput): KindChange {
  const name = parseKind(kind);
  if (name === undefined) throw new MessageError('kind', 'is required');
  const known = new Set(['mode', 'maxAttempts', 'backoffBase', 'backoffCap', 'lease', 'timeout', 'every']);
  for (const key of Object.keys(s ?? {})) if (!known.has(key)) throw new MessageError(key, `is not a kind setting (expected ${[...known].join(', ')})`);
  if (s.mode !== undefined && !KIND_MODES.includes(s.mode)) throw new MessageError('mode', `must be ${KIND_MODES.join(' or ')}, got ${JSON.stringify(s.mode)}`);
  const ms = (field: string, minMs: number, v: number | string | null | undefined): number | null | undefined => {
    if (v === undefined || v === null) return v;
    const parsed = typeof v === 'number' ? v : parseDuration(v);
    if (parsed === undefined || !Number.isInteger(parsed) || parsed < minMs || parsed > 2_147_483_647) {
      throw new MessageError(field, `must be a duration like 30s or 500ms (or whole milliseconds), at least ${minMs} ms, got ${JSON.stringify(v)}`);
    }
    return parsed;
  };
  const attempts = s.maxAttempts;
  if (attempts !== undefined && attempts !== null && (!Number.isInteger(attempts) || attempts < 1 || attempts > 1000)) {
    throw new MessageError('maxAttempts', `must be a whole number from 1 to 1000, got ${JSON.stringify(attempts)}`);
  }
  let schedule: string | null | undefined = s.every;
  if (typeof schedule === 'string') {
    try {
      schedule = parseSchedule(schedule, 'every');
    } catch (err) {
      throw new MessageError('every', (err as Error).message.replace(/^every /, ''));
    }
  }
  const change: KindChange = {
    mode: s.mode,
    maxAttempts: attempts,
    backoffBaseMs: ms('backoffBase', 0, s.backoffBase),
    backoffCapMs: ms('backoffCap', 0, s.backoffCap),
    leaseMs: ms('lease', 100, s.lease),
    timeoutMs: ms('timeout', 1, s.timeout),
    schedule,
  };
  if (typeof change.backoffBaseMs === 'number' && typeof change.backoffCapMs === 'number' && change.backoffCapMs < change.backoffBaseMs) {
    throw new MessageError('backoffCap', `(${change.backoffCapMs} ms) must not be below backoffBase (${change.backoffBaseMs} ms)`);
  }
  return change;
}

/** A record's key from a library call's id and kind option, checked as a message's are. */
function recordKey(id: unknown, kind: unknown): RecordKey {
  if (typeof id !== 'string' || id === '') throw new MessageError('id', 'must be a non-empty string');
  return { kind: parseKind(kind) ?? DEFAULT_KIND, id };
}

interface Opened {
  pool: pg.Pool;
  enqueue: Awaited<ReturnType<typeof openEnqueue>>;
  /** Single messages from concurrent callers share calls, as POST /upsert's do. */
  singles: UpsertCoalescer;
  /** Answers calls that wait for results (it listens only once one does). */
  awaiter: Awaiter;
}

/**
 * A client with its own connections, opened on first use. Opening checks the schema once: the
 * embedded Postgres (no DATABASE_URL) is migrated there, as `rowfleet api` does; any other
 * database must be current already, or every call rejects with a UserError saying to run
 * `rowfleet migrate`. A failed open is not kept: the next call tries again.
 */
export function createClient(options: ClientOptions = {}): RowfleetClient {
  const config: Config = loadConfig(process.env, {
    ...(options.databaseUrl !== undefined && { databaseUrl: options.databaseUrl }),
    ...(options.poolSize !== undefined && { poolSize: options.poolSize }),
    ...(options.enqueueOnUpsert !== undefined && { boss: { enqueueOnUpsert: options.enqueueOnUpsert } }),
  });
  const limits: MessageLimits = { maxBatch: options.limits?.maxBatch ?? config.maxBatch, maxDepth: options.limits?.maxDepth ?? config.maxDepth };
  const log = (options.log ?? silentLogger) as Logger;
  const boss = config.boss.enqueueOnUpsert ? config.boss : undefined;

  const opening = async (pool: pg.Pool, poolSize: number, listenUrl: string): Promise<Opened> => {
    const enqueue = await openEnqueue(config, pool, log);
    const singles = new UpsertCoalescer(pool, { maxInFlight: coalescedCalls(poolSize), maxBatch: limits.maxBatch, enqueue: enqueue?.enqueue });
    return { pool, enqueue, singles, awaiter: new Awaiter(pool, { listenUrl, log }) };
  };
  async function connect(): Promise<Opened> {
    if (options.pool !== undefined) {
      const pool = options.pool as pg.Pool;
      await requireMigrated(pool);
      return opening(pool, pool.options.max ?? config.poolSize, pool.options.connectionString ?? '');
    }
    const url = await resolveDatabaseUrl(config, log);
    await ensureSchema(url, config.databaseUrl === undefined, boss);
    const pool = createPool({ connectionString: url, max: config.poolSize, log });
    try {
      return await opening(pool, config.poolSize, url);
    } catch (err) {
      await pool.end();
      throw err;
    }
  }
  let opened: Promise<Opened> | undefined;
  const open = () =>
    (opened ??= connect().catch((err: unknown) => {
      opened = undefined;
      throw err;
    }));

  async function upsert(input: MessageInput | readonly MessageInput[], callOptions: UpsertCallOptions = {}): Promise<Answer | Answer[]> {
    // Validate everything before writing anything: a bad item refuses the whole batch.
    const batch = Array.isArray(input);
    const messages = batch ? parseBatch(input, limits) : [parseMessage(input, limits)];
    const waitMs = callOptions.wait === undefined ? undefined : parseWait(callOptions.wait);
    const { pool, enqueue, singles, awaiter } = await open();
    const send = () => (batch ? upsertMessages(pool, messages, { enqueue: enqueue?.enqueue }) : singles.upsert(messages[0]!).then((r) => [r]));
    const answers = (await upsertAnswering(send, waitMs === undefined ? undefined : { awaiter, ms: waitMs })).map(presentAnswer);
    return batch ? answers : answers[0]!;
  }

  return {
    upsert: upsert as RowfleetClient['upsert'],
    getRecord: async (id, opts = {}) => getRecord((await open()).pool, recordKey(id, opts.kind), opts),
    async deleteRecord(id, opts = {}) {
      const key = recordKey(id, opts.kind);
      const deleted = await deleteByKey((await open()).pool, key);
      return deleted === undefined ? undefined : { ...key, version: presentVersion(deleted.version) };
    },
    async setKind(kind, settings) {
      const change = kindChange(kind, settings);
      return (await setKind((await open()).pool, kind, change)).settings as KindInfo;
    },
    listKinds: async () => (await listKinds((await open()).pool)) as KindInfo[],
    async close() {
      const current = opened;
      opened = undefined;
      if (current === undefined) return;
      // An open that failed left nothing to close.
      const { pool, enqueue, awaiter } = await current.catch(() => ({ pool: undefined, enqueue: undefined, awaiter: undefined }));
      await awaiter?.close();
      await enqueue?.close();
      if (pool !== undefined) await settleWakes(pool);
      if (pool !== undefined && options.pool === undefined) await pool.end();
    },
  };
}

/** A given pool is never migrated through: the schema must be current, as for a DATABASE_URL. */
async function requireMigrated(pool: pg.Pool): Promise<void> {
  const state = await schemaState(pool);
  if (state !== undefined) throw new SchemaNotReadyError(state);
}

let shared: RowfleetClient | undefined;

/** Upserts through a shared client configured from the environment (see createClient). */
export function upsert(message: MessageInput, options?: UpsertCallOptions): Promise<Answer>;
export function upsert(messages: readonly MessageInput[], options?: UpsertCallOptions): Promise<Answer[]>;
export function upsert(input: MessageInput | readonly MessageInput[], options?: UpsertCallOptions): Promise<Answer | Answer[]> {
  shared ??= createClient();
  return shared.upsert(input as MessageInput, options);
}

/** Closes the shared client's connections (call before exiting a script that used `upsert`). */
export async function close(): Promise<void> {
  const client = shared;
  shared = undefined;
  await client?.close();
}

/**
 * The settings `createWorker` and `createFleet` share with `rowfleet worker`: the same defaults
 * and the same environment variables, but durations are milliseconds (`leaseMs: 30_000` is
 * `--lease 30s`) and names are camelCase with `Ms` on durations:
 *
 * | option | flag | variable | default |
 * | --- | --- | --- | --- |
 * | `engine` | `--engine` | `ROWFLEET_ENGINE` | `'direct'` |
 * | `concurrency` | `--concurrency` | `ROWFLEET_CONCURRENCY` | 10 |
 * | `batch` | `--batch` | `ROWFLEET_BATCH` | 100 |
 * | `leaseMs` | `--lease` | `ROWFLEET_LEASE` | 30_000 |
 * | `timeoutMs` | `--timeout` | `ROWFLEET_TIMEOUT` | 300_000 |
 * | `maxAttempts` | `--max-attempts` | `ROWFLEET_MAX_ATTEMPTS` | 10 |
 * | `backoffBaseMs` | `--backoff-base` | `ROWFLEET_BACKOFF_BASE` | 1_000 |
 * | `backoffCapMs` | `--backoff-cap` | `ROWFLEET_BACKOFF_CAP` | 600_000 |
 * | `maxExpirations` | `--max-expirations` | `ROWFLEET_MAX_EXPIRATIONS` | 3 |
 * | `pollMs` | `--poll` | `ROWFLEET_POLL` | 1_000 |
 * | `graceMs` | `--grace` | `ROWFLEET_GRACE` | 30_000 |
 * | `sleepMs` | `--sleep` | `ROWFLEET_SLEEP` | 1_000 |
 * | `failRate` | `--fail-rate` | `ROWFLEET_FAIL_RATE` | 0.3 |
 */
export interface WorkerSettings {
  /** `--engine`: `direct` claims due rows; `boss` consumes pg-boss jobs that point to rows. */
  engine?: 'direct' | 'boss';
  /** `--concurrency`: handlers running at once. */
  concurrency?: number;
  /** `--kinds`: claim only records of these kinds (default: every kind the handler has a handler for). */
  kinds?: readonly string[];
  /** `--batch`: most records claimed in one statement. */
  batch?: number;
  /** `--lease`, in ms: lease per claim, extended by heartbeats every lease/3. */
  leaseMs?: number;
  /** `--timeout`, in ms: a handler running longer is aborted, and the attempt fails. */
  timeoutMs?: number;
  /** `--max-attempts`: attempts before a record is FAILED. */
  maxAttempts?: number;
  /** `--backoff-base`, in ms: the first retry delay's ceiling; doubles per attempt, full jitter. */
  backoffBaseMs?: number;
  /** `--backoff-cap`, in ms: the largest retry delay. */
  backoffCapMs?: number;
  /** `--max-expirations`: lease expirations after which a record runs alone in its process, and is poison (FAILED) if it expires so. */
  maxExpirations?: number;
  /** `--poll`, in ms: claim at least this often when no notification arrives. */
  pollMs?: number;
  /** `--grace`, in ms: on stop, how long in-flight handlers may finish before they are released. */
  graceMs?: number;
  /** `--sleep`, in ms: the built-in `sleep` handler's duration when `data.sleepMs` is absent. */
  sleepMs?: number;
  /** `--fail-rate`: the built-in `flaky` handler's failure probability when `data.failRate` is absent. */
  failRate?: number;
}

/** `createWorker`'s options: the worker settings (see WorkerSettings for their flags), and a handler. */
export interface CreateWorkerOptions extends WorkerSettings {
  /**
   * Required, there is no default: the handler function (every kind), a map of kinds to handlers
   * (only those kinds), or a built-in name (`noop`, `sleep`, `flaky`, `checksum`) or module path,
   * as for `rowfleet worker --handler`.
   */
  handler: Handler | HandlerMap | string;
  /** With a handler function or map: run them in the completion's transaction (`ctx.query`). */
  transactional?: boolean;
  /** `--database-url` / DATABASE_URL; unset: the embedded Postgres, migrated at start. */
  databaseUrl?: string;
  log?: RowfleetLogger;
}

export interface RowfleetWorker {
  readonly id: string;
  /** Outcomes so far, updated as records finish (the same object before, during and after the run). */
  readonly stats: WorkerStats;
  /**
   * Runs until `stop()`; resolves once drained. Rejects with a UserError when a DATABASE_URL's
   * schema is behind (run `rowfleet migrate`); the embedded Postgres is migrated here.
   */
  start(): Promise<void>;
  /** Stops claiming, lets in-flight handlers finish within the grace period, releases the rest. */
  stop(): Promise<void>;
}

const STAT_NAMES = ['processed', 'superseded', 'retried', 'failed', 'lost', 'released', 'rescued', 'chained'] as const;

/** A read-only view of the running Worker's stats: zeros until it exists, then its live counts. */
function liveStats(current: () => WorkerStats | undefined): WorkerStats {
  const view = {};
  for (const name of STAT_NAMES) Object.defineProperty(view, name, { enumerable: true, get: () => current()?.[name] ?? 0 });
  return Object.freeze(view) as WorkerStats;
}

/**
 * A worker in this process, with the same defaults and environment as `rowfleet worker`:
 *
 *   const worker = createWorker({ handler: async (record) => ({ seen: record.id }), concurrency: 5 });
 *   void worker.start();
 *   ...
 *   await worker.stop();
 */
export function createWorker(options: CreateWorkerOptions): RowfleetWorker {
  const { handler, transactional = false, databaseUrl, log: givenLog, ...settings } = options;
  const log = (givenLog ?? silentLogger) as Logger;
  const config = loadConfig(process.env, {
    ...(databaseUrl !== undefined && { databaseUrl }),
    worker: typeof handler === 'string' ? { ...settings, handler } : settings,
  });
  const stop = new AbortController();
  let running: Promise<void> | undefined;
  let worker: Worker | undefined;
  const id = `${process.pid}:${Math.random().toString(36).slice(2, 8)}`;

  const run = async () => {
    const loaded =
      typeof handler === 'string'
        ? await loadHandler(handler, process.cwd(), config.worker)
        : handlerFromExport(handler, typeof handler === 'function' ? handler.name || 'handler' : 'handler map', transactional, 'createWorker handler');
    await runWorker({ config, handler: loaded, log, signal: stop.signal, id, onWorker: (w) => (worker = w) });
  };

  return {
    id,
    stats: liveStats(() => worker?.stats),
    start: () => (running ??= run()),
    async stop() {
      stop.abort();
      await running;
    },
  };
}

/** `createFleet`'s options; each worker setting applies to every worker process, as in `rowfleet fleet`. */
export interface CreateFleetOptions extends WorkerSettings {
  /** Required, there is no default: a built-in name or a module path (the workers are separate processes). */
  handler: string;
  /** `--workers`: worker processes (default: the CPU count, or `min` when autoscaling). */
  workers?: number;
  /** `--min`, `--max`: autoscaling bounds (both or neither). */
  min?: number;
  max?: number;
  /** `--scale-every`, in ms: how often to look at the backlog (default 5_000). */
  scaleEveryMs?: number;
  /** `--target-wait`, in ms: size the fleet to start every due record within this (default 5_000). */
  targetWaitMs?: number;
  /** `--database-url` / DATABASE_URL; unset: the embedded Postgres, migrated at start. */
  databaseUrl?: string;
  log?: RowfleetLogger;
}

export interface RowfleetFleet {
  /** Runs until `stop()`. Rejects with a UserError when a DATABASE_URL's schema is behind (run `rowfleet migrate`). */
  start(): Promise<void>;
  /** Drains every worker process and resolves when all have exited. */
  stop(): Promise<void>;
}

/** Worker processes supervised from this process, as `rowfleet fleet` runs them. */
export function createFleet(options: CreateFleetOptions): RowfleetFleet {
  const { workers, min, max, scaleEveryMs, targetWaitMs, databaseUrl, log: givenLog, ...worker } = options;
  const log = (givenLog ?? silentLogger) as Logger;
  const config = loadConfig(process.env, { ...(databaseUrl !== undefined && { databaseUrl }), worker });
  const size = fleetSize({ workers, min, max, scaleEvery: scaleEveryMs, targetWait: targetWaitMs });
  const stop = new AbortController();
  let running: Promise<void> | undefined;
  return {
    start: () => (running ??= runFleet({ config, size, log, env: process.env, output: process.stderr, signal: stop.signal })),
    async stop() {
      stop.abort();
      await running;
    },
  };
}

// Compile-time checks (not emitted): each public copy above against the internal type it stands for.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Fits<A, B> = [A] extends [B] ? true : false;
type Holds<T extends true> = T;
type Mirrors = [
  Holds<Same<UpsertResponse, InternalUpsertResponse>>,
  Holds<Same<UpsertOutcome, InternalOutcome>>,
  Holds<Same<RecordView, InternalRecordView>>,
  Holds<Same<EventView, InternalEventView>>,
  Holds<Same<HandlerRecord, InternalHandlerRecord>>,
  Holds<Same<KindOptions, InternalKindOptions>>,
  Holds<Same<WorkerStats, InternalWorkerStats>>,
  Holds<Same<(typeof STAT_NAMES)[number], keyof WorkerStats>>,
  // Handlers written against the public context accept what the worker passes.
  Holds<Fits<InternalHandlerContext, HandlerContext>>,
  Holds<Same<keyof InternalHandlerContext, keyof HandlerContext>>,
  Holds<Fits<Logger, RowfleetLogger>>,
  Holds<Fits<pg.Pool, PgPool>>,
  Holds<Fits<pg.Client, PgPool> extends true ? false : true>,
  Holds<Same<WorkerSettings, Partial<Omit<WorkerConfig, 'handler'>>>>,
  Holds<Same<NonNullable<ClientOptions['limits']>, Partial<MessageLimits>>>,
];
