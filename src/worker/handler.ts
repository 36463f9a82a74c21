/**
 * What a handler is, and how `--handler <name|module path>` becomes one.
 *
 * A handler module default-exports `async (record, ctx) => result`; the result is stored on the
 * record (jsonb). `export const transactional = true` makes `ctx.query` run in the transaction
 * that also performs the versioned completion: the handler's writes commit exactly when it does.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../log.ts';
import { UsageError } from '../errors.ts';

/** Thrown by a handler: the record goes straight to FAILED, without retries. */
export class PermanentError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'PermanentError';
  }
}

export interface HandlerRecord {
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
  log: Logger;
  attempt: number;
  /** `<id>:<version>`: the same for every execution of this version, for external effects. */
  idempotencyKey: string;
  /** Extends the lease now (heartbeats do it anyway); throws if the lease was lost. */
  extendLease(): Promise<void>;
  /** Transactional handlers only: a query in the completion's transaction. */
  query?(text: string, params?: unknown[]): Promise<{ rows: Record<string, unknown>[]; rowCount: number | null }>;
}

export type Handler = (record: HandlerRecord, ctx: HandlerContext) => Promise<unknown>;

export interface LoadedHandler {
  name: string;
  run: Handler;
  transactional: boolean;
}

export interface BuiltinOptions {
  /** `sleep`: how long, when the record's data has no `sleepMs`. */
  sleepMs: number;
  /** `flaky`: probability of failing, when the record's data has no `failRate`. */
  failRate: number;
}

const numberIn = (data: unknown, key: string): number | undefined => {
  const value = typeof data === 'object' && data !== null ? (data as Record<string, unknown>)[key] : undefined;
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
};

export function builtinHandlers(options: BuiltinOptions): Record<string, Handler> {
  return {
    noop: async () => null,
    // The motivating case: a job that takes a while (15 s in production).
    sleep: async (record, ctx) => {
      const ms = numberIn(record.data, 'sleepMs') ?? options.sleepMs;
      await sleep(ms, undefined, { signal: ctx.signal });
      return { sleptMs: ms };
    },
    flaky: async (record) => {
      const rate = numberIn(record.data, 'failRate') ?? options.failRate;
      if (Math.random() < rate) throw new Error(`flaky handler failed (rate ${rate})`);
      return { ok: true };
    },
    // Real work: a digest of the record's canonical data, as a downstream sync would compute it.
    checksum: async (record) => {
      const json = canonicalJson(record.data);
      return { sha256: createHash('sha256').update(json).digest('hex'), bytes: Buffer.byteLength(json) };
    },
  };
}

/** JSON with object keys sorted, so equal data always has the same digest. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`);
    return `{${entries.join(',')}}`;
  }
  return JSON.stringify(value);
}

/**
 * The handler setting, which has no default: a worker that silently marked real records PROCESSED
 * with a null result (as a `noop` default did) loses work without a word.
 */
export function requireHandler(spec: string | undefined): string {
  if (spec !== undefined && spec !== '') return spec;
  throw new UsageError(
    `no handler: give --handler ./handler.js (a module default-exporting async (record, ctx) => result) or a built-in (${Object.keys(builtinHandlers({ sleepMs: 0, failRate: 0 })).join(', ')}), or set ROWFLEET_HANDLER`,
  );
}

/** A built-in by name, or a module path resolved from `cwd`. */
export async function loadHandler(setting: string | undefined, cwd: string, options: BuiltinOptions): Promise<LoadedHandler> {
  const spec = requireHandler(setting);
  const builtin = builtinHandlers(options)[spec];
  if (builtin !== undefined) return { name: spec, run: builtin, transactional: false };
  if (!spec.includes('/') && !spec.includes('.')) {
    throw new UsageError(`--handler ${spec} is not a built-in (${Object.keys(builtinHandlers(options)).join(', ')}) or a module path like ./handler.js`);
  }
  const file = path.resolve(cwd, spec);
  let module: { default?: unknown; transactional?: unknown };
  try {
    module = (await import(pathToFileURL(file).href)) as typeof module;
  } catch (err) {
    throw new UsageError(`--handler ${spec}: cannot load ${file}: ${(err as Error).message.split('\n')[0]}`);
  }
  if (typeof module.default !== 'function') {
    throw new UsageError(`--handler ${spec}: ${file} must default-export an async function (record, ctx) => result`);
  }
  return { name: spec, run: module.default as Handler, transactional: module.transactional === true };
}
