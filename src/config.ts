/**
 * The one place that reads the environment. Environment (`DATABASE_URL`, `PORT`, `ROWFLEET_*`)
 * is overridden by command-line flags, validated, and frozen; everything else receives a Config.
 */
import path from 'node:path';
import { UsageError } from './errors.ts';
import { KIND_PATTERN, KIND_RULE } from './kind.ts';
import { durationProblem, parseDuration } from './duration.ts';

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
/** `auto`: readable lines on a terminal, JSON lines otherwise. */
export type LogFormat = 'auto' | 'json' | 'pretty';
const LOG_FORMATS: readonly LogFormat[] = ['auto', 'json', 'pretty'];
const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

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

/** How a worker finds work: `direct` claims due rows; `boss` consumes pg-boss jobs that point to rows. */
export const ENGINES = ['direct', 'boss'] as const;
export type EngineName = (typeof ENGINES)[number];

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

const DEFAULTS = {
  host: '127.0.0.1',
  port: 3000,
  maxBatch: 1000,
  maxBodyBytes: 1024 * 1024,
  maxDepth: 64,
  poolSize: 10,
  logLevel: 'info',
} as const;

/**
 * A setting: the flag if given, else the environment variable parsed, else the default. A value
 * given in code (a library option like `createWorker({ leaseMs: 50 })`, or a flag commander
 * parsed) meets the same checks as its variable: it is written back as the text the parser
 * reads and parsed once more, so an error names it (`leaseMs must be at least 100 ms`).
 */
function picker<C>(env: Env, flags: { readonly [K in keyof C]?: C[K] | undefined }) {
  return <K extends keyof C>(key: K, envName: string, parse: (raw: string, name: string) => C[K], fallback: C[K]): C[K] => {
    const fromFlag = flags[key];
    if (fromFlag !== undefined) {
      const text = asText(String(key), fromFlag);
      if (text !== undefined) parse(text, String(key));
      return fromFlag as C[K];
    }
    const raw = env[envName];
    return raw === undefined || raw === '' ? fallback : parse(raw, envName);
  };
}

/** A number given in code as its variable would spell it: `leaseMs` 50 is "50ms", `cronCheckSeconds` 5 is "5s". */
function asText(key: string, value: unknown): string | undefined {
  if (Array.isArray(value)) return value.join(',');
  if (typeof value !== 'number') return undefined;
  if (key.endsWith('Ms')) return `${value}ms`;
  if (key.endsWith('Seconds')) return `${value}s`;
  return String(value);
}

export function loadConfig(env: Env = process.env, overrides: ConfigOverrides = {}): Config {
  const pick = picker<Omit<Config, 'worker' | 'boss'>>(env, overrides);

  const databaseUrl = overrides.databaseUrl ?? nonEmpty(env.DATABASE_URL);
  const chosenHome = overrides.home ?? nonEmpty(env.ROWFLEET_HOME);
  if (databaseUrl !== undefined) checkDatabaseUrl(databaseUrl);

  const config: Config = {
    databaseUrl,
    home: path.resolve(chosenHome ?? '.rowfleet'),
    homeChosen: chosenHome !== undefined,
    host: pick('host', 'ROWFLEET_HOST', (raw) => raw, DEFAULTS.host),
    port: pick('port', 'PORT', (raw, name) => parseInteger(raw, name, 0, 65535), DEFAULTS.port),
    metricsPort: pick('metricsPort', 'ROWFLEET_METRICS_PORT', (raw, name) => parseInteger(raw, name, 0, 65535), undefined),
    apiTokens: overrides.apiTokens ?? parseTokens(env.ROWFLEET_API_TOKENS),
    rateLimitPerAddress: pick('rateLimitPerAddress', 'ROWFLEET_RATE_LIMIT', (raw, name) => parseInteger(raw, name, 0, 100_000_000), 100),
    rateLimitPerToken: pick('rateLimitPerToken', 'ROWFLEET_RATE_LIMIT_TOKEN', (raw, name) => parseInteger(raw, name, 0, 100_000_000), 0),
    maxBatch: pick('maxBatch', 'ROWFLEET_MAX_BATCH', (raw, name) => parseInteger(raw, name, 1, 100_000), DEFAULTS.maxBatch),
    maxBodyBytes: pick('maxBodyBytes', 'ROWFLEET_MAX_BODY', parseBytes, DEFAULTS.maxBodyBytes),
    maxDepth: pick('maxDepth', 'ROWFLEET_MAX_DEPTH', (raw, name) => parseInteger(raw, name, 1, 10_000), DEFAULTS.maxDepth),
    requestTimeoutMs: pick('requestTimeoutMs', 'ROWFLEET_REQUEST_TIMEOUT', durationParser(100), 30_000),
    poolSize: pick('poolSize', 'ROWFLEET_POOL_SIZE', (raw, name) => parseInteger(raw, name, 1, 1000), DEFAULTS.poolSize),
    logLevel: pick('logLevel', 'ROWFLEET_LOG_LEVEL', parseLogLevel, DEFAULTS.logLevel),
    logFormat: pick('logFormat', 'ROWFLEET_LOG_FORMAT', parseLogFormat, 'auto'),
    worker: loadWorkerConfig(env, overrides.worker ?? {}),
    boss: loadBossConfig(env, overrides.boss ?? {}),
  };
  return Object.freeze({
    ...config,
    apiTokens: Object.freeze([...config.apiTokens]),
    worker: Object.freeze(config.worker),
    boss: Object.freeze(config.boss),
  });
}

function loadBossConfig(env: Env, flags: NonNullable<ConfigOverrides['boss']>): BossConfig {
  const pick = picker<BossConfig>(env, flags);
  return {
    schema: pick('schema', 'ROWFLEET_BOSS_SCHEMA', parseSchemaName, 'pgboss'),
    queue: pick('queue', 'ROWFLEET_QUEUE', parseQueueName, 'rowfleet.process'),
    sweepCron: pick('sweepCron', 'ROWFLEET_SWEEP_CRON', parseCron, '* * * * *'),
    rescueCron: pick('rescueCron', 'ROWFLEET_RESCUE_CRON', parseCron, '* * * * *'),
    retentionCron: pick('retentionCron', 'ROWFLEET_RETENTION_CRON', parseCron, '17 * * * *'),
    eventRetentionMs: pick('eventRetentionMs', 'ROWFLEET_EVENT_RETENTION', parseRetention, null),
    enqueueOnUpsert: pick('enqueueOnUpsert', 'ROWFLEET_ENQUEUE_ON_UPSERT', parseBoolean, false),
    sweepBatch: pick('sweepBatch', 'ROWFLEET_SWEEP_BATCH', (raw, name) => parseInteger(raw, name, 1, 100_000), 5_000),
    cronCheckSeconds: pick('cronCheckSeconds', 'ROWFLEET_CRON_CHECK', parseCronCheck, 30),
  };
}

/** Seconds between checks for a due cron tick: 1s to 45s (pg-boss's bounds). */
export function parseCronCheck(raw: string, name: string): number {
  const ms = durationParser(1_000)(raw, name);
  if (ms > 45_000) throw new UsageError(`${name} must be at most 45s, got "${raw}"`);
  return Math.round(ms / 1000);
}

/** `30d`, `12h`, or `forever` (keep everything: null). */
export function parseRetention(raw: string, name: string): number | null {
  if (/^\s*(forever|keep|off)\s*$/i.test(raw)) return null;
  const ms = parseDuration(raw);
  if (ms === undefined) throw new UsageError(`${durationProblem(raw, name)}, or "forever"`);
  if (ms < 60_000) throw new UsageError(`${name} must be at least 1m (like 30d or 12h), or "forever", got "${raw}"`);
  return ms;
}

function parseBoolean(raw: string, name: string): boolean {
  const value = raw.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(value)) return true;
  if (['0', 'false', 'no', 'off'].includes(value)) return false;
  throw new UsageError(`${name} must be 1 or 0 (true or false), got "${raw}"`);
}

function parseSchemaName(raw: string, name: string): string {
  const value = raw.trim();
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(value)) throw new UsageError(`${name} must be a lower-case Postgres schema name like pgboss, got "${raw}"`);
  return value;
}

function parseQueueName(raw: string, name: string): string {
  const value = raw.trim();
  if (!/^[\w.\-/]{1,100}$/.test(value)) throw new UsageError(`${name} may contain letters, digits, _ . - and /, got "${raw}"`);
  return value;
}

/** Five fields (minute hour day month weekday), or six with seconds first; pg-boss checks the rest. */
export function parseCron(raw: string, name: string): string {
  const value = raw.trim().replace(/\s+/g, ' ');
  const fields = value.split(' ').length;
  if (value === '' || fields < 5 || fields > 6) throw new UsageError(`${name} must be a cron expression like "* * * * *" (minute hour day month weekday), got "${raw}"`);
  return value;
}

function loadWorkerConfig(env: Env, flags: NonNullable<ConfigOverrides['worker']>): WorkerConfig {
  const pick = picker<WorkerConfig>(env, flags);
  const int = (min: number, max: number) => (raw: string, name: string) => parseInteger(raw, name, min, max);
  const worker: WorkerConfig = {
    engine: pick('engine', 'ROWFLEET_ENGINE', parseEngine, 'direct'),
    handler: pick('handler', 'ROWFLEET_HANDLER', (raw) => raw.trim(), undefined),
    kinds: pick('kinds', 'ROWFLEET_KINDS', parseKindList, undefined),
    concurrency: pick('concurrency', 'ROWFLEET_CONCURRENCY', int(1, 10_000), 10),
    batch: pick('batch', 'ROWFLEET_BATCH', int(1, 10_000), 100),
    leaseMs: pick('leaseMs', 'ROWFLEET_LEASE', durationParser(100), 30_000),
    timeoutMs: pick('timeoutMs', 'ROWFLEET_TIMEOUT', durationParser(1), 5 * 60_000),
    maxAttempts: pick('maxAttempts', 'ROWFLEET_MAX_ATTEMPTS', int(1, 1000), 10),
    backoffBaseMs: pick('backoffBaseMs', 'ROWFLEET_BACKOFF_BASE', durationParser(0), 1_000),
    backoffCapMs: pick('backoffCapMs', 'ROWFLEET_BACKOFF_CAP', durationParser(0), 10 * 60_000),
    maxExpirations: pick('maxExpirations', 'ROWFLEET_MAX_EXPIRATIONS', int(0, 1000), 3),
    pollMs: pick('pollMs', 'ROWFLEET_POLL', durationParser(10), 1_000),
    graceMs: pick('graceMs', 'ROWFLEET_GRACE', durationParser(0), 30_000),
    sleepMs: pick('sleepMs', 'ROWFLEET_SLEEP', durationParser(0), 1_000),
    failRate: pick('failRate', 'ROWFLEET_FAIL_RATE', parseRate, 0.3),
  };
  if (worker.backoffCapMs < worker.backoffBaseMs) {
    throw new UsageError(`the backoff cap (${worker.backoffCapMs} ms) must not be below its base (${worker.backoffBaseMs} ms)`);
  }
  return worker;
}

/** `order,invoice`: kind names, each checked, without repeats. */
export function parseKindList(raw: string, name: string): string[] {
  const kinds = raw.split(',').map((k) => k.trim()).filter((k) => k !== '');
  if (kinds.length === 0) throw new UsageError(`${name} must list at least one kind, like order,invoice, got "${raw}"`);
  for (const kind of kinds) {
    if (!KIND_PATTERN.test(kind)) {
      throw new UsageError(`${name}: "${kind}" is not a kind name (${KIND_RULE})`);
    }
  }
  return [...new Set(kinds)];
}

/** A parser for durations like `500ms`, `30s`, `5m`, `1h`, at least `minMs`. */
export function durationParser(minMs: number): (raw: string, name: string) => number {
  return (raw, name) => {
    const ms = parseDuration(raw);
    if (ms === undefined) throw new UsageError(durationProblem(raw, name));
    if (ms < minMs) throw new UsageError(`${name} must be at least ${minMs} ms, got "${raw}"`);
    return ms;
  };
}

function parseEngine(raw: string, name: string): EngineName {
  const value = raw.trim() as EngineName;
  if (ENGINES.includes(value)) return value;
  throw new UsageError(`${name} must be ${ENGINES.join(' or ')}, got "${raw}"`);
}

export function parseRate(raw: string, name: string): number {
  const value = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(value) || value < 0 || value > 1) throw new UsageError(`${name} must be a number from 0 to 1, got "${raw}"`);
  return value;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}

function checkDatabaseUrl(url: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError('DATABASE_URL is not a valid URL; expected postgres://user:password@host:5432/database');
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new UsageError(`DATABASE_URL must start with postgres:// or postgresql://, not ${parsed.protocol}//`);
  }
}

export function parseInteger(raw: string, name: string, min: number, max: number): number {
  const trimmed = raw.trim();
  if (!/^-?\d+$/.test(trimmed)) throw new UsageError(`${name} must be a whole number, got "${raw}"`);
  const value = Number(trimmed);
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new UsageError(`${name} must be between ${min} and ${max}, got ${raw}`);
  }
  return value;
}

const BYTE_UNITS: Record<string, number> = { '': 1, b: 1, kb: 1024, k: 1024, mb: 1024 ** 2, m: 1024 ** 2, gb: 1024 ** 3, g: 1024 ** 3 };

/** `1048576`, `512kb`, `1mb`. */
export function parseBytes(raw: string, name: string): number {
  const match = /^\s*(\d+)\s*([a-z]*)\s*$/i.exec(raw);
  const unit = match ? BYTE_UNITS[match[2]!.toLowerCase()] : undefined;
  if (!match || unit === undefined) throw new UsageError(`${name} must be a size like 1048576, 512kb or 1mb, got "${raw}"`);
  const value = Number(match[1]) * unit;
  if (!Number.isSafeInteger(value) || value < 1) throw new UsageError(`${name} must be at least 1 byte, got "${raw}"`);
  return value;
}

function parseLogFormat(raw: string, name: string): LogFormat {
  const format = raw.trim().toLowerCase() as LogFormat;
  if (!LOG_FORMATS.includes(format)) throw new UsageError(`${name} must be one of ${LOG_FORMATS.join(', ')}, got "${raw}"`);
  return format;
}

function parseLogLevel(raw: string, name: string): LogLevel {
  const level = raw.trim().toLowerCase() as LogLevel;
  if (!LOG_LEVELS.includes(level)) throw new UsageError(`${name} must be one of ${LOG_LEVELS.join(', ')}, got "${raw}"`);
  return level;
}

export function parseTokens(raw: string | undefined): string[] {
  if (raw === undefined) return [];
  return raw
    .split(',')
    .map((token) => token.trim())
    .filter((token) => token !== '');
}
