/**
 * The rowfleet library.
 *
 *   import { upsert, close } from 'rowfleet';
 *   await upsert({ id: 'order-1', data: { total: 12 }, version: 3 });
 *
 * `upsert` uses a shared client configured from the environment (DATABASE_URL, else the embedded
 * Postgres of the working directory, migrated on first use); `createClient` gives an explicit one.
 */
import type pg from 'pg';
import { loadConfig, type Config, type WorkerConfig } from './config.ts';
import { resolveDatabaseUrl } from './db/connect.ts';
import { ensureSchema, pendingMigrations } from './db/migrate.ts';
import { createPool } from './db/pool.ts';
import { UserError } from './errors.ts';
import { silentLogger, type Logger } from './log.ts';
import { parseBatch, parseMessage, type MessageInput, type MessageLimits } from './records/message.ts';
import { getRecord, type RecordView } from './records/read.ts';
import { presentResult, upsertMessages, type UpsertResponse } from './records/upsert.ts';
import { loadHandler, type Handler } from './worker/handler.ts';
import { runWorker } from './worker/run.ts';
import { openEnqueue } from './boss/enqueue.ts';
import { runFleet } from './fleet/run.ts';
import { fleetSize } from './cli/commands/fleet.ts';
import type { Worker, WorkerStats } from './worker/worker.ts';

export { MessageError, type Message, type MessageInput, type JsonObject, type JsonValue } from './records/message.ts';
export type { UpsertResponse } from './records/upsert.ts';
export type { RecordView, EventView } from './records/read.ts';
export { UserError, UsageError } from './errors.ts';
export { PermanentError, type Handler, type HandlerContext, type HandlerRecord } from './worker/handler.ts';
export type { WorkerStats } from './worker/worker.ts';

export interface ClientOptions {
  /** Postgres URL; default DATABASE_URL, else the embedded Postgres in `.rowfleet/`. */
  databaseUrl?: string;
  /** Use this `pg` Pool instead of opening one (the client will not close it, nor migrate through it). */
  pool?: pg.Pool;
  /** Connections to open (default ROWFLEET_POOL_SIZE or 10). */
  poolSize?: number;
  /** Batch size and nesting limits (default ROWFLEET_MAX_BATCH / ROWFLEET_MAX_DEPTH). */
  limits?: Partial<MessageLimits>;
  /** Send each applied record's pg-boss job in the upsert's transaction (default ROWFLEET_ENQUEUE_ON_UPSERT). */
  enqueueOnUpsert?: boolean;
  log?: Logger;
}

export interface RowfleetClient {
  /** One message → one response; an array → one response per message, in order. */
  upsert(message: MessageInput): Promise<UpsertResponse>;
  upsert(messages: readonly MessageInput[]): Promise<UpsertResponse[]>;
  getRecord(id: string, options?: { history?: boolean }): Promise<RecordView | undefined>;
  close(): Promise<void>;
}

interface Opened {
  pool: pg.Pool;
  enqueue: Awaited<ReturnType<typeof openEnqueue>>;
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
  const log = options.log ?? silentLogger;
  const boss = config.boss.enqueueOnUpsert ? config.boss : undefined;

  async function connect(): Promise<Opened> {
    if (options.pool !== undefined) {
      const pool = options.pool;
      await requireMigrated(pool);
      // pg-boss (enqueue on upsert) opens its own LISTEN connection, so it needs the URL anyway.
      const url = boss !== undefined ? await resolveDatabaseUrl(config, log) : '';
      return { pool, enqueue: await openEnqueue(config, pool, url, log) };
    }
    const url = await resolveDatabaseUrl(config, log);
    await ensureSchema(url, config.databaseUrl === undefined, boss);
    const pool = createPool({ connectionString: url, max: config.poolSize, log });
    try {
      return { pool, enqueue: await openEnqueue(config, pool, url, log) };
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

  async function upsert(input: MessageInput | readonly MessageInput[]): Promise<UpsertResponse | UpsertResponse[]> {
    // Validate everything before writing anything: a bad item refuses the whole batch.
    const messages = Array.isArray(input) ? parseBatch(input, limits) : [parseMessage(input, limits)];
    const { pool, enqueue } = await open();
    const results = (await upsertMessages(pool, messages, { enqueue: enqueue?.enqueue })).map(presentResult);
    return Array.isArray(input) ? results : results[0]!;
  }

  return {
    upsert: upsert as RowfleetClient['upsert'],
    getRecord: async (id, opts) => getRecord((await open()).pool, id, opts),
    async close() {
      const current = opened;
      opened = undefined;
      if (current === undefined) return;
      // An open that failed left nothing to close.
      const { pool, enqueue } = await current.catch(() => ({ pool: undefined, enqueue: undefined }));
      await enqueue?.close();
      if (pool !== undefined && options.pool === undefined) await pool.end();
    },
  };
}

/** A given pool is never migrated through: the schema must be current, as for a DATABASE_URL. */
async function requireMigrated(pool: pg.Pool): Promise<void> {
  const pending = await pendingMigrations(pool);
  if (pending > 0) throw new UserError(`the database schema is ${pending} migration(s) behind; run \`rowfleet migrate\` first`);
}

let shared: RowfleetClient | undefined;

/** Upserts through a shared client configured from the environment (see createClient). */
export function upsert(message: MessageInput): Promise<UpsertResponse>;
export function upsert(messages: readonly MessageInput[]): Promise<UpsertResponse[]>;
export function upsert(input: MessageInput | readonly MessageInput[]): Promise<UpsertResponse | UpsertResponse[]> {
  shared ??= createClient();
  return shared.upsert(input as MessageInput);
}

/** Closes the shared client's connections (call before exiting a script that used `upsert`). */
export async function close(): Promise<void> {
  const client = shared;
  shared = undefined;
  await client?.close();
}

export interface CreateWorkerOptions extends Partial<Omit<WorkerConfig, 'handler'>> {
  /** The handler function, or a built-in name / module path as for `rowfleet worker --handler`. */
  handler: Handler | string;
  /** With a handler function: run it in the completion's transaction (`ctx.query`). */
  transactional?: boolean;
  databaseUrl?: string;
  log?: Logger;
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

const STAT_NAMES = ['processed', 'superseded', 'retried', 'failed', 'lost', 'released', 'rescued'] as const satisfies readonly (keyof WorkerStats)[];

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
  const { handler, transactional = false, databaseUrl, log = silentLogger, ...settings } = options;
  const config = loadConfig(process.env, {
    ...(databaseUrl !== undefined && { databaseUrl }),
    worker: typeof handler === 'string' ? { ...settings, handler } : settings,
  });
  const stop = new AbortController();
  let running: Promise<void> | undefined;
  let worker: Worker | undefined;
  const id = `${process.pid}:${Math.random().toString(36).slice(2, 8)}`;

  const run = async () => {
    const loaded = typeof handler === 'string' ? await loadHandler(handler, process.cwd(), config.worker) : { name: handler.name || 'handler', run: handler, transactional };
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

export interface CreateFleetOptions extends Partial<Omit<WorkerConfig, 'handler'>> {
  /** A built-in name or a module path: the workers are separate processes. */
  handler: string;
  /** Worker processes (default: the CPU count, or `min` when autoscaling). */
  workers?: number;
  /** Autoscaling bounds (both or neither). */
  min?: number;
  max?: number;
  scaleEveryMs?: number;
  targetWaitMs?: number;
  databaseUrl?: string;
  log?: Logger;
}

export interface RowfleetFleet {
  /** Runs until `stop()`. Rejects with a UserError when a DATABASE_URL's schema is behind (run `rowfleet migrate`). */
  start(): Promise<void>;
  /** Drains every worker process and resolves when all have exited. */
  stop(): Promise<void>;
}

/** Worker processes supervised from this process, as `rowfleet fleet` runs them. */
export function createFleet(options: CreateFleetOptions): RowfleetFleet {
  const { workers, min, max, scaleEveryMs, targetWaitMs, databaseUrl, log = silentLogger, ...worker } = options;
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
