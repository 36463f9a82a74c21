/**
 * What a handler is, and how `--handler <name|module path>` becomes one.
 *
 * A handler module default-exports `async (record, ctx) => result`, one function for every kind;
 * or an object mapping kinds to functions or to `{ handler, concurrency?, maxAttempts?, backoff?,
 * lease?, timeout?, transactional? }`, and a worker then claims only those kinds. The result is
 * stored on the record (jsonb). `export const transactional = true` makes `ctx.query` run in the
 * transaction that also performs the versioned completion: the handler's writes commit exactly
 * when it does.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../log.ts';
import { UsageError } from '../errors.ts';
import { parseDuration } from '../duration.ts';
import { KIND_PATTERN, KIND_RULE } from '../kind.ts';

/** Thrown by a handler: the record goes straight to FAILED, without retries. */
export class PermanentError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'PermanentError';
  }
}

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
  log: Logger;
  attempt: number;
  /** `<kind>:<id>:<version>`: the same for every execution of this version, for external effects. */
  idempotencyKey: string;
  /**
   * Grows with every claim of this record (1, 2, 3, …; a message handed on by a completion in
   * mode every keeps it). Pass it to the systems the handler writes to, and have them refuse a
   * write carrying a lower token than one they have seen: a holder paused past its lease, whose
   * record was claimed again elsewhere, is then refused there too.
   */
  fencingToken: number;
  /** Extends the lease now (heartbeats do it anyway); throws if the lease was lost. */
  extendLease(): Promise<void>;
  /** Transactional handlers only: a query in the completion's transaction. */
  query?(text: string, params?: unknown[]): Promise<{ rows: Record<string, unknown>[]; rowCount: number | null }>;
}

export type Handler = (record: HandlerRecord, ctx: HandlerContext) => Promise<unknown>;

/**
 * A kind's own settings in a handler map; what is not given comes from the worker's settings.
 * Durations are milliseconds or text like `30s`.
 */
export interface KindOptions {
  /** Handlers of this kind running at once in one worker process (within the worker's concurrency). */
  concurrency?: number;
  maxAttempts?: number;
  backoff?: { base?: number | string; cap?: number | string };
  lease?: number | string;
  timeout?: number | string;
  transactional?: boolean;
}

/** An entry of a handler map: a function, or one with its kind's settings. */
export type KindEntry = Handler | (KindOptions & { handler: Handler });

/** A handler module's default export. */
export type HandlerExport = Handler | Record<string, KindEntry>;

/** The settings a kind runs with: its own, then the worker's. */
export interface KindPolicy {
  /** Undefined: bounded only by the worker's concurrency. */
  concurrency: number | undefined;
  maxAttempts: number;
  backoff: { baseMs: number; capMs: number };
  leaseMs: number;
  timeoutMs: number;
}

/** Settings given for a kind, checked, in milliseconds; what is left out comes from the next layer. */
export interface KindOverrides {
  concurrency?: number | undefined;
  maxAttempts?: number | undefined;
  backoffBaseMs?: number | undefined;
  backoffCapMs?: number | undefined;
  leaseMs?: number | undefined;
  timeoutMs?: number | undefined;
}

export interface KindHandler {
  run: Handler;
  transactional: boolean;
  /** The settings the map gave this kind. */
  options: KindOverrides;
}

export interface LoadedHandler {
  name: string;
  /** One handler for every kind (a function), or undefined for a map. */
  any?: KindHandler | undefined;
  /** A map's handlers, by kind. */
  kinds: ReadonlyMap<string, KindHandler>;
}

/** Whether any of the handlers runs in the completion's transaction (it then holds a connection). */
export function anyTransactional(handler: LoadedHandler): boolean {
  return handler.any?.transactional === true || [...handler.kinds.values()].some((k) => k.transactional);
}

/** The handler for a kind, or undefined when this worker has none. */
export function handlerFor(handler: LoadedHandler, kind: string): KindHandler | undefined {
  return handler.kinds.get(kind) ?? handler.any;
}

/**
 * The kinds a worker claims: those of its map, narrowed by `--kinds`; undefined: every kind (a
 * single function without `--kinds`). A kind in `--kinds` that the map has no handler for is a
 * usage error: the worker must never claim what it cannot run.
 */
export function servedKinds(handler: LoadedHandler, only: readonly string[] | undefined): string[] | undefined {
  if (handler.any !== undefined) return only === undefined ? undefined : [...only];
  const mapped = [...handler.kinds.keys()];
  if (only === undefined) return mapped;
  const missing = only.filter((k) => !handler.kinds.has(k));
  if (missing.length > 0) {
    throw new UsageError(`--kinds names ${missing.join(', ')}, but the handler ${handler.name} has no handler for ${missing.length === 1 ? 'it' : 'them'} (it handles ${mapped.join(', ')})`);
  }
  return [...only];
}

/** A handler function, or a map of kinds to handlers, checked: `source` names it in errors. */
export function handlerFromExport(exported: unknown, name: string, transactional: boolean, source = name): LoadedHandler {
  if (typeof exported === 'function') return { name, any: { run: exported as Handler, transactional, options: {} }, kinds: new Map() };
  const shape = 'an async function (record, ctx) => result, or an object mapping kinds to such functions or to { handler, concurrency?, maxAttempts?, backoff?, lease?, timeout? }';
  if (typeof exported !== 'object' || exported === null || Array.isArray(exported)) throw new UsageError(`${source} must default-export ${shape}`);
  const entries = Object.entries(exported as Record<string, unknown>);
  if (entries.length === 0) throw new UsageError(`${source}: the handler map is empty; map at least one kind to a handler`);
  const kinds = new Map<string, KindHandler>();
  for (const [kind, entry] of entries) {
    const at = `${source}: kind "${kind}"`;
    if (!KIND_PATTERN.test(kind)) throw new UsageError(`${at} is not a kind name (${KIND_RULE})`);
    kinds.set(kind, kindHandler(entry, at, transactional));
  }
  return { name, kinds };
}

const KIND_OPTION_NAMES = new Set(['handler', 'concurrency', 'maxAttempts', 'backoff', 'lease', 'timeout', 'transactional']);

function kindHandler(entry: unknown, at: string, transactional: boolean): KindHandler {
  if (typeof entry === 'function') return { run: entry as Handler, transactional, options: {} };
  if (typeof entry !== 'object' || entry === null || typeof (entry as { handler?: unknown }).handler !== 'function') {
    throw new UsageError(`${at} must map to a handler function or to { handler: async (record, ctx) => result, ...options }`);
  }
  const o = entry as KindOptions & { handler: Handler } & Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!KIND_OPTION_NAMES.has(key)) throw new UsageError(`${at}: ${key} is not a kind option (expected ${[...KIND_OPTION_NAMES].join(', ')})`);
  }
  const options: KindOverrides = {};
  if (o.concurrency !== undefined) options.concurrency = wholeNumber(o.concurrency, `${at}: concurrency`, 1, 10_000);
  if (o.maxAttempts !== undefined) options.maxAttempts = wholeNumber(o.maxAttempts, `${at}: maxAttempts`, 1, 1000);
  if (o.lease !== undefined) options.leaseMs = milliseconds(o.lease, `${at}: lease`, 100);
  if (o.timeout !== undefined) options.timeoutMs = milliseconds(o.timeout, `${at}: timeout`, 1);
  if (o.backoff !== undefined) {
    if (typeof o.backoff !== 'object' || o.backoff === null) throw new UsageError(`${at}: backoff must be { base?, cap? } (durations like 1s)`);
    const base = o.backoff.base === undefined ? undefined : milliseconds(o.backoff.base, `${at}: backoff.base`, 0);
    const cap = o.backoff.cap === undefined ? undefined : milliseconds(o.backoff.cap, `${at}: backoff.cap`, 0);
    if (base !== undefined && cap !== undefined && cap < base) throw new UsageError(`${at}: backoff.cap (${cap} ms) must not be below backoff.base (${base} ms)`);
    if (base !== undefined) options.backoffBaseMs = base;
    if (cap !== undefined) options.backoffCapMs = cap;
  }
  if (o.transactional !== undefined && typeof o.transactional !== 'boolean') throw new UsageError(`${at}: transactional must be true or false`);
  return { run: o.handler, transactional: o.transactional ?? transactional, options };
}

/**
 * A kind's settings: each one from the first layer that gives it (`rowfleet kinds set`'s, then
 * the handler map's), else the worker's. A backoff given in part takes the rest from below.
 */
export function kindPolicy(layers: readonly (KindOverrides | undefined)[], worker: Omit<KindPolicy, 'concurrency'>): KindPolicy {
  const first = <K extends keyof KindOverrides>(key: K): KindOverrides[K] => layers.find((l) => l?.[key] !== undefined)?.[key];
  const baseMs = first('backoffBaseMs') ?? worker.backoff.baseMs;
  return {
    concurrency: first('concurrency'),
    maxAttempts: first('maxAttempts') ?? worker.maxAttempts,
    backoff: { baseMs, capMs: Math.max(baseMs, first('backoffCapMs') ?? worker.backoff.capMs) },
    leaseMs: first('leaseMs') ?? worker.leaseMs,
    timeoutMs: first('timeoutMs') ?? worker.timeoutMs,
  };
}

function wholeNumber(value: unknown, name: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new UsageError(`${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

function milliseconds(value: unknown, name: string, minMs: number): number {
  const ms = typeof value === 'number' ? value : typeof value === 'string' ? parseDuration(value) : undefined;
  if (ms === undefined || !Number.isFinite(ms) || ms < minMs) {
    throw new UsageError(`${name} must be a duration like 30s or 500ms (or milliseconds), at least ${minMs} ms, got ${JSON.stringify(value)}`);
  }
  return ms;
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
  if (builtin !== undefined) return handlerFromExport(builtin, spec, false);
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
  if (module.default === undefined) {
    throw new UsageError(`--handler ${spec}: ${file} has no default export; default-export an async function (record, ctx) => result, or a map of kinds to handlers`);
  }
  return handlerFromExport(module.default, spec, module.transactional === true, `--handler ${spec}`);
}
