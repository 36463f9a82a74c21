/**
 * The rowfleet library.
 *
 *   import { upsert, close } from 'rowfleet';
 *   await upsert({ id: 'order-1', data: { total: 12 }, version: 3 });
 *
 * `upsert` uses a shared client configured from the environment (DATABASE_URL, else the embedded
 * Postgres of the working directory); `createClient` gives an explicit one.
 */
import type pg from 'pg';
import { loadConfig, type Config } from './config.ts';
import { resolveDatabaseUrl } from './db/connect.ts';
import { createPool } from './db/pool.ts';
import { silentLogger, type Logger } from './log.ts';
import { parseBatch, parseMessage, type MessageInput, type MessageLimits } from './records/message.ts';
import { getRecord, type RecordView } from './records/read.ts';
import { presentResult, upsertMessages, type UpsertResponse } from './records/upsert.ts';

export { MessageError, type Message, type MessageInput, type JsonObject, type JsonValue } from './records/message.ts';
export type { UpsertResponse } from './records/upsert.ts';
export type { RecordView, EventView } from './records/read.ts';
export { UserError, UsageError } from './errors.ts';

export interface ClientOptions {
  /** Postgres URL; default DATABASE_URL, else the embedded Postgres in `.rowfleet/`. */
  databaseUrl?: string;
  /** Use this pool instead of opening one (the client will not close it). */
  pool?: pg.Pool;
  /** Connections to open (default ROWFLEET_POOL_SIZE or 10). */
  poolSize?: number;
  /** Batch size and nesting limits (default ROWFLEET_MAX_BATCH / ROWFLEET_MAX_DEPTH). */
  limits?: Partial<MessageLimits>;
  log?: Logger;
}

export interface RowfleetClient {
  /** One message → one response; an array → one response per message, in order. */
  upsert(message: MessageInput): Promise<UpsertResponse>;
  upsert(messages: readonly MessageInput[]): Promise<UpsertResponse[]>;
  getRecord(id: string, options?: { history?: boolean }): Promise<RecordView | undefined>;
  close(): Promise<void>;
}

export function createClient(options: ClientOptions = {}): RowfleetClient {
  const config: Config = loadConfig(process.env, {
    ...(options.databaseUrl !== undefined && { databaseUrl: options.databaseUrl }),
    ...(options.poolSize !== undefined && { poolSize: options.poolSize }),
  });
  const limits: MessageLimits = { maxBatch: options.limits?.maxBatch ?? config.maxBatch, maxDepth: options.limits?.maxDepth ?? config.maxDepth };
  const log = options.log ?? silentLogger;
  let poolPromise: Promise<pg.Pool> | undefined;
  const pool = () =>
    (poolPromise ??= options.pool
      ? Promise.resolve(options.pool)
      : resolveDatabaseUrl(config, log).then((url) => createPool({ connectionString: url, max: config.poolSize, log })));

  async function upsert(input: MessageInput | readonly MessageInput[]): Promise<UpsertResponse | UpsertResponse[]> {
    // Validate everything before writing anything: a bad item refuses the whole batch.
    const messages = Array.isArray(input) ? parseBatch(input, limits) : [parseMessage(input, limits)];
    const results = (await upsertMessages(await pool(), messages)).map(presentResult);
    return Array.isArray(input) ? results : results[0]!;
  }

  return {
    upsert: upsert as RowfleetClient['upsert'],
    getRecord: async (id, opts) => getRecord(await pool(), id, opts),
    async close() {
      if (poolPromise === undefined || options.pool) return;
      const p = await poolPromise;
      poolPromise = undefined;
      await p.end();
    },
  };
}

let shared: RowfleetClient | undefined;

/** Upserts through a shared client configured from the environment. */
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
