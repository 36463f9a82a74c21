/**
 * The one place that reads the environment. Environment (`DATABASE_URL`, `PORT`, `ROWFLEET_*`)
 * is overridden by command-line flags and library options, validated against the settings'
 * schema (src/settings.ts), and frozen; everything else receives a Config.
 */
import path from 'node:path';
import { UsageError } from './errors.ts';
import { API, BOSS, duration, GENERAL, integer, kindList, parseValue, WORKER, type EngineName, type LogFormat, type LogLevel, type Setting } from './settings.ts';

export { ENGINES, type EngineName, type LogFormat, type LogLevel } from './settings.ts';

export interface Config {
  /** Postgres to use; undefined means the embedded Postgres in `<home>/pg`. */
  readonly databaseUrl: string | undefined;
  /** Folder for the embedded Postgres and local state (`.rowfleet` in the working directory). */
  readonly home: string;
  /** Whether `home` was chosen (ROWFLEET_HOME, a flag): then it is used as is, never relocated. */
  readonly homeChosen: boolean;
  readonly host: string;
  readonly port: number;
  /** Where a worker (or a fleet, for all its workers) serves GET /metrics, on `host`; off when undefined. */
  readonly metricsPort: number | undefined;
  /** Bearer tokens accepted by the API; empty means the API is open. */
  readonly apiTokens: readonly string[];
  /** With tokens set: requests a minute per client address without a valid token (0: no limit). */
  readonly rateLimitPerAddress: number;
  /** With tokens set: requests a minute per valid token (0: no limit). */
  readonly rateLimitPerToken: number;
  /** Largest `items` array in one POST /upsert. */
  readonly maxBatch: number;
  /** Largest request body, in bytes. */
  readonly maxBodyBytes: number;
  /** Deepest nesting of objects and arrays allowed in `data`. */
  readonly maxDepth: number;
  /** A request's headers and body must have arrived within this (slow clients are answered 408). */
  readonly requestTimeoutMs: number;
  /** Connections this process may open to Postgres. */
  readonly poolSize: number;
  readonly logLevel: LogLevel;
  readonly logFormat: LogFormat;
  readonly worker: WorkerConfig;
  readonly boss: BossConfig;
}

/** pg-boss, the sweep and the scheduler: environment ROWFLEET_<NAME>. */
export interface BossConfig {
  /** The Postgres schema pg-boss lives in. */
  readonly schema: string;
  /** The queue of `{id, version}` jobs the boss engine consumes. */
  readonly queue: string;
  /** When the scheduler runs the enqueue sweep (pg-boss cron: minute resolution). */
  readonly sweepCron: string;
  /** When the scheduler rescues expired leases. */
  readonly rescueCron: string;
  /** When the scheduler applies the event_log retention. */
  readonly retentionCron: string;
  /** Delete event_log rows older than this; null keeps everything. */
  readonly eventRetentionMs: number | null;
  /** Send the record's job in the upsert's own transaction, instead of waiting for the sweep. */
  readonly enqueueOnUpsert: boolean;
  /** Records the sweep marks and sends per transaction. */
  readonly sweepBatch: number;
  /** How often a scheduler checks whether a cron occurrence is due (pg-boss cronMonitorIntervalSeconds). */
  readonly cronCheckSeconds: number;
}

/** `rowfleet worker` and `rowfleet fleet`: environment ROWFLEET_<NAME>, flags --<name>. */
export interface WorkerConfig {
  readonly engine: EngineName;
  /** Built-in handler name or module path; required by `rowfleet worker` and `fleet` (no default). */
  readonly handler: string | undefined;
  /** The kinds to serve (`--kinds a,b`); undefined: every kind the handler has a handler for. */
  readonly kinds: readonly string[] | undefined;
  readonly concurrency: number;
  readonly batch: number;
  readonly leaseMs: number;
  readonly timeoutMs: number;
  readonly maxAttempts: number;
  readonly backoffBaseMs: number;
  readonly backoffCapMs: number;
  /** Lease expirations after which a record runs alone in its process, and is poison (FAILED) if it expires so. */
  readonly maxExpirations: number;
  readonly pollMs: number;
  readonly graceMs: number;
  /** The `sleep` handler's duration when data.sleepMs is absent. */
  readonly sleepMs: number;
  /** The `flaky` handler's failure probability when data.failRate is absent. */
  readonly failRate: number;
}

/** Values given on the command line; they win over the environment. */
export type ConfigOverrides = Partial<{ -readonly [K in Exclude<keyof Config, 'worker' | 'boss'>]: Config[K] }> & {
  worker?: Partial<{ -readonly [K in keyof WorkerConfig]: WorkerConfig[K] }>;
  boss?: Partial<{ -readonly [K in keyof BossConfig]: BossConfig[K] }>;
};

export type Env = Readonly<Record<string, string | undefined>>;

/**
 * The settings of one part of Config, by key: the value given in code or by a flag if there is
 * one, else its environment variable parsed, else its default. A value given in code (a library
 * option like `createWorker({ leaseMs: 50 })`, or a flag commander parsed) meets the same schema
 * as its variable: it is written back as the text the schema reads and parsed once more, so an
 * error names it (`leaseMs must be at least 100 ms`) and `logLevel: 'INFO'` becomes `info`.
 */
function resolve<C>(settings: { readonly [K in keyof C]: Setting<C[K]> }, env: Env, given: { readonly [K in keyof C]?: C[K] | undefined }): C {
  const out = {} as C;
  for (const key of Object.keys(settings) as (keyof C & string)[]) {
    const setting = settings[key];
    const fromCode = given[key];
    if (fromCode !== undefined) {
      const text = asText(key, fromCode);
      out[key] = text === undefined ? (fromCode as C[typeof key]) : parseValue(setting.value, text, key);
      continue;
    }
    const raw = env[setting.env];
    out[key] = raw === undefined || raw.trim() === '' ? setting.default : parseValue(setting.value, raw, setting.env);
  }
  return out;
}

/** A number given in code as its variable would spell it: `leaseMs` 50 is "50ms", `cronCheckSeconds` 5 is "5s". */
function asText(key: string, value: unknown): string | undefined {
  if (Array.isArray(value)) return value.join(',');
  if (typeof value === 'string') return value;
  if (typeof value !== 'number') return undefined;
  if (key.endsWith('Ms')) return `${value}ms`;
  if (key.endsWith('Seconds')) return `${value}s`;
  return String(value);
}

type TopConfig = Omit<Config, 'worker' | 'boss' | 'home' | 'homeChosen'> & { home: string | undefined };

export function loadConfig(env: Env = process.env, overrides: ConfigOverrides = {}): Config {
  const top = resolve<TopConfig>({ ...GENERAL, ...API }, env, overrides);
  const worker = resolve<WorkerConfig>(WORKER, env, overrides.worker ?? {});
  if (worker.backoffCapMs < worker.backoffBaseMs) {
    throw new UsageError(`the backoff cap (${worker.backoffCapMs} ms) must not be below its base (${worker.backoffBaseMs} ms)`);
  }
  const { home, ...rest } = top;
  return Object.freeze({
    ...rest,
    home: path.resolve(home ?? '.rowfleet'),
    homeChosen: home !== undefined,
    apiTokens: Object.freeze([...top.apiTokens]),
    worker: Object.freeze(worker),
    boss: Object.freeze(resolve<BossConfig>(BOSS, env, overrides.boss ?? {})),
  });
}

/** A whole number from `min` to `max`, for flags that are not settings (`--limit`, `--workers`). */
export function parseInteger(raw: string, name: string, min: number, max: number): number {
  return parseValue(integer(min, max), raw, name);
}

/** A parser for durations like `500ms`, `30s`, `5m`, `1h`, at least `minMs`. */
export function durationParser(minMs: number): (raw: string, name: string) => number {
  const value = duration(minMs);
  return (raw, name) => parseValue(value, raw, name);
}

/** `order,invoice`: kind names, each checked, without repeats. */
export function parseKindList(raw: string, name: string): string[] {
  return parseValue(kindList, raw, name);
}
