/**
 * The one schema of rowfleet's settings. Each setting has its environment variable, its flag where
 * it has one, its default, what it means, and a zod schema that turns the text a person writes
 * (`30s`, `1mb`, `order,invoice`) into its value, or into one line saying what is wrong with it.
 *
 * config.ts loads a Config from them, the worker's flags are built from them, and the README's
 * configuration reference is generated from them (`npm run docs:config`; test/config-reference
 * fails when the README differs), so a default, a bound or a meaning is written down only here.
 */
import { z } from 'zod';
import { UsageError } from './errors.ts';
import { KIND_PATTERN, KIND_RULE } from './kind.ts';
import { durationProblem, parseDuration } from './duration.ts';

/** A value's schema: from the text of a variable or a flag to the value. */
export type Value<T> = z.ZodType<T, string>;

/**
 * `raw` parsed by `value`, or a UsageError naming the setting as the person wrote it (`--lease`,
 * `ROWFLEET_LEASE`, `leaseMs`) followed by the first problem: `--lease must be at least 100 ms, got "50ms"`.
 */
export function parseValue<T>(value: Value<T>, raw: string, name: string): T {
  const result = value.safeParse(raw);
  if (result.success) return result.data;
  const message = result.error.issues[0]!.message;
  throw new UsageError(message.startsWith(':') ? `${name}${message}` : `${name} ${message}`);
}

const quoted = (input: unknown): string => `"${String(input)}"`;

/** A whole number from `min` to `max`. */
export function integer(min: number, max: number): Value<number> {
  return z
    .string()
    .refine((raw) => /^-?\d+$/.test(raw.trim()), { error: (iss) => `must be a whole number, got ${quoted(iss.input)}` })
    .transform(Number)
    .refine((n) => Number.isSafeInteger(n) && n >= min && n <= max, { error: (iss) => `must be between ${min} and ${max}, got ${String(iss.input)}` });
}

/**
 * A duration with its unit (`500ms`, `30s`, `5m`, `1h`, `2d`), in milliseconds, from `minMs` (to
 * `maxMs`). A bare number is refused: `--timeout 30` could mean 30 ms or 30 s.
 */
export function duration(minMs: number, maxMs = Number.POSITIVE_INFINITY, display = (ms: number) => `${ms} ms`): Value<number> {
  return z.string().transform((raw, ctx) => {
    const ms = parseDuration(raw);
    if (ms === undefined) {
      ctx.issues.push({ code: 'custom', input: raw, message: durationProblem(raw) });
      return z.NEVER;
    }
    if (ms < minMs) ctx.issues.push({ code: 'custom', input: raw, message: `must be at least ${display(minMs)}, got ${quoted(raw)}` });
    else if (ms > maxMs) ctx.issues.push({ code: 'custom', input: raw, message: `must be at most ${display(maxMs)}, got ${quoted(raw)}` });
    return ms;
  });
}

/** One of `choices`, in any case. */
export function oneOf<const T extends readonly [string, ...string[]]>(choices: T): Value<T[number]> {
  const list = choices.length === 2 ? `${choices[0]} or ${choices[1]}` : `one of ${choices.join(', ')}`;
  return z
    .string()
    .trim()
    .toLowerCase()
    .pipe(z.enum(choices, { error: (iss) => `must be ${list}, got ${quoted(iss.input)}` })) as unknown as Value<T[number]>;
}

/** A probability: a number from 0 to 1. */
export const rate: Value<number> = z
  .string()
  .refine((raw) => raw.trim() !== '' && Number.isFinite(Number(raw)) && Number(raw) >= 0 && Number(raw) <= 1, {
    error: (iss) => `must be a number from 0 to 1, got ${quoted(iss.input)}`,
  })
  .transform(Number);

const BYTE_UNITS: Record<string, number> = { '': 1, b: 1, kb: 1024, k: 1024, mb: 1024 ** 2, m: 1024 ** 2, gb: 1024 ** 3, g: 1024 ** 3 };

/** A size: `1048576`, `512kb`, `1mb`, `1gb`. */
export const bytes: Value<number> = z.string().transform((raw, ctx) => {
  const match = /^\s*(\d+)\s*([a-z]*)\s*$/i.exec(raw);
  const unit = match ? BYTE_UNITS[match[2]!.toLowerCase()] : undefined;
  const value = match && unit !== undefined ? Number(match[1]) * unit : NaN;
  if (!Number.isSafeInteger(value) || value < 1) {
    ctx.issues.push({ code: 'custom', input: raw, message: `must be a size of at least 1 byte like 1048576, 512kb or 1mb, got ${quoted(raw)}` });
    return z.NEVER;
  }
  return value;
});

/** `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`. */
export const flag: Value<boolean> = z.stringbool({
  truthy: ['1', 'true', 'yes', 'on'],
  falsy: ['0', 'false', 'no', 'off'],
  case: 'insensitive',
  error: (iss) => `must be 1 or 0 (true or false), got ${quoted(iss.input)}`,
});

/** Five fields (minute hour day month weekday), or six with seconds first; pg-boss checks the rest. */
export const cron: Value<string> = z
  .string()
  .transform((raw) => raw.trim().replace(/\s+/g, ' '))
  .refine((value) => value !== '' && value.split(' ').length >= 5 && value.split(' ').length <= 6, {
    error: (iss) => `must be a cron expression like "* * * * *" (minute hour day month weekday), got ${quoted(iss.input)}`,
  });

/** `30d`, `12h`, or `forever` (keep everything: null). */
export const retention: Value<number | null> = z.string().transform((raw, ctx) => {
  if (/^\s*(forever|keep|off)\s*$/i.test(raw)) return null;
  const ms = parseDuration(raw);
  if (ms === undefined) ctx.issues.push({ code: 'custom', input: raw, message: `${durationProblem(raw)}, or "forever"` });
  else if (ms < 60_000) ctx.issues.push({ code: 'custom', input: raw, message: `must be at least 1m (like 30d or 12h), or "forever", got ${quoted(raw)}` });
  return ms ?? null;
});

/** Kind names, like `order,invoice`, each checked, without repeats. */
export const kindList: Value<string[]> = z
  .string()
  .transform((raw) => raw.split(',').map((kind) => kind.trim()).filter((kind) => kind !== ''))
  .pipe(
    z
      .array(z.string().regex(KIND_PATTERN, { error: (iss) => `: ${quoted(iss.input)} is not a kind name (${KIND_RULE})` }))
      .min(1, { error: 'must list at least one kind, like order,invoice' }),
  )
  .transform((kinds) => [...new Set(kinds)]);

/** Comma-separated, blanks dropped. */
export const tokenList: Value<string[]> = z.string().transform((raw) => raw.split(',').map((token) => token.trim()).filter((token) => token !== ''));

const text: Value<string> = z.string().trim();

const schemaName: Value<string> = z
  .string()
  .trim()
  .regex(/^[a-z_][a-z0-9_]{0,62}$/, { error: (iss) => `must be a lower-case Postgres schema name like pgboss, got ${quoted(iss.input)}` });

const queueName: Value<string> = z
  .string()
  .trim()
  .regex(/^[\w.\-/]{1,100}$/, { error: (iss) => `may contain letters, digits, _ . - and /, got ${quoted(iss.input)}` });

/** postgres:// or postgresql://; the problem is named without repeating the URL (it may hold a password). */
const databaseUrl: Value<string> = z
  .string()
  .trim()
  .superRefine((url, ctx) => {
    let protocol: string;
    try {
      protocol = new URL(url).protocol;
    } catch {
      ctx.addIssue({ code: 'custom', message: 'is not a valid URL; expected postgres://user:password@host:5432/database' });
      return;
    }
    if (protocol !== 'postgres:' && protocol !== 'postgresql:') {
      ctx.addIssue({ code: 'custom', message: `must start with postgres:// or postgresql://, not ${protocol}//` });
    }
  });

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
/** `auto`: readable lines on a terminal, JSON lines otherwise. */
export const LOG_FORMATS = ['auto', 'json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];
/** How a worker finds work: `direct` claims due rows; `boss` consumes pg-boss jobs that point to rows. */
export const ENGINES = ['direct', 'boss'] as const;
export type EngineName = (typeof ENGINES)[number];

export const PORT = integer(0, 65535);

export interface Setting<T> {
  /** The environment variable. */
  readonly env: string;
  /** The command-line flag with its placeholder, where there is one: `--lease <duration>`. */
  readonly flag?: string;
  readonly value: Value<T>;
  readonly default: T;
  /** The default as the reference shows it: the text that parses to it, or what its absence means. */
  readonly shown: string;
  readonly doc: string;
}

function setting<T>(s: Setting<T>): Setting<T> {
  return s;
}

/** Read by every process; `home` and `databaseUrl` are resolved by config.ts. */
export const GENERAL = {
  databaseUrl: setting<string | undefined>({
    env: 'DATABASE_URL',
    flag: '--database-url <url>',
    value: databaseUrl,
    default: undefined,
    shown: '(embedded)',
    doc: 'Postgres to use. Unset: the embedded Postgres in `$ROWFLEET_HOME/pg`, started on demand',
  }),
  home: setting<string | undefined>({
    env: 'ROWFLEET_HOME',
    value: text,
    default: undefined,
    shown: '(`.rowfleet` in the working directory)',
    doc: 'where the embedded Postgres keeps its data and connection file; a folder chosen is used as is, the default one may be moved where Postgres can reach it (see [The embedded Postgres](#the-embedded-postgres))',
  }),
  poolSize: setting({ env: 'ROWFLEET_POOL_SIZE', value: integer(1, 1000), default: 10, shown: '`10`', doc: 'Postgres connections this process may open (see [Connections](#configuration))' }),
  logLevel: setting<LogLevel>({ env: 'ROWFLEET_LOG_LEVEL', flag: '--log-level <level>', value: oneOf(LOG_LEVELS), default: 'info', shown: '`info`', doc: '`trace`, `debug`, `info`, `warn`, `error`, `fatal` or `silent`' }),
  logFormat: setting<LogFormat>({ env: 'ROWFLEET_LOG_FORMAT', value: oneOf(LOG_FORMATS), default: 'auto', shown: '`auto`', doc: '`json`, `pretty`, or `auto` (pretty on a terminal, JSON lines otherwise)' }),
  host: setting({ env: 'ROWFLEET_HOST', flag: '--host <host>', value: text, default: '127.0.0.1', shown: '`127.0.0.1`', doc: 'the address the API, and a worker\'s metrics, listen on' }),
  metricsPort: setting<number | undefined>({
    env: 'ROWFLEET_METRICS_PORT',
    flag: '--metrics-port <port>',
    value: PORT,
    default: undefined,
    shown: '(off)',
    doc: 'where a worker, or a fleet for all its workers, serves `GET /metrics` (`0` picks a free port)',
  }),
} as const;

/** `rowfleet api` (and `up`). */
export const API = {
  port: setting({ env: 'PORT', flag: '--port <port>', value: PORT, default: 3000, shown: '`3000`', doc: 'where `rowfleet api` listens (`0` picks a free port)' }),
  apiTokens: setting<string[]>({
    env: 'ROWFLEET_API_TOKENS',
    value: tokenList,
    default: [],
    shown: '(open)',
    doc: 'comma-separated bearer tokens the API accepts (the dashboard asks for one)',
  }),
  rateLimitPerAddress: setting({
    env: 'ROWFLEET_RATE_LIMIT',
    value: integer(0, 100_000_000),
    default: 100,
    shown: '`100`',
    doc: 'with tokens set: requests a minute from one client address without a valid token (`0`: no limit)',
  }),
  rateLimitPerToken: setting({ env: 'ROWFLEET_RATE_LIMIT_TOKEN', value: integer(0, 100_000_000), default: 0, shown: '`0` (off)', doc: 'with tokens set: requests a minute with one token' }),
  maxBatch: setting({ env: 'ROWFLEET_MAX_BATCH', value: integer(1, 100_000), default: 1000, shown: '`1000`', doc: 'most items in one `POST /upsert`' }),
  maxBodyBytes: setting({ env: 'ROWFLEET_MAX_BODY', value: bytes, default: 1024 * 1024, shown: '`1mb`', doc: 'largest request body (`512kb`, `2mb`, or bytes)' }),
  maxDepth: setting({ env: 'ROWFLEET_MAX_DEPTH', value: integer(1, 10_000), default: 64, shown: '`64`', doc: 'deepest nesting of objects and arrays in `data`' }),
  requestTimeoutMs: setting({
    env: 'ROWFLEET_REQUEST_TIMEOUT',
    value: duration(100),
    default: 30_000,
    shown: '`30s`',
    doc: 'a request\'s headers and body must arrive within this, else 408 and the connection closed',
  }),
} as const;

/** `rowfleet worker`, `fleet` and `up`: flags win over the variables. */
export const WORKER = {
  handler: setting<string | undefined>({
    env: 'ROWFLEET_HANDLER',
    flag: '--handler <name|path>',
    value: text,
    default: undefined,
    shown: '(required)',
    doc: 'a module default-exporting `async (record, ctx) => result`, or a built-in: `noop`, `sleep`, `flaky`, `checksum`',
  }),
  engine: setting<EngineName>({ env: 'ROWFLEET_ENGINE', flag: '--engine <engine>', value: oneOf(ENGINES), default: 'direct', shown: '`direct`', doc: 'how work is found: `direct` claims due rows, `boss` consumes pg-boss jobs' }),
  kinds: setting<string[] | undefined>({
    env: 'ROWFLEET_KINDS',
    flag: '--kinds <kinds>',
    value: kindList,
    default: undefined,
    shown: '(all the handler handles)',
    doc: 'claim only records of these kinds, like `order,invoice`',
  }),
  concurrency: setting({ env: 'ROWFLEET_CONCURRENCY', flag: '--concurrency <n>', value: integer(1, 10_000), default: 10, shown: '`10`', doc: 'handlers running at once per process, all kinds together (a record whose outcome is being written holds no slot)' }),
  batch: setting({ env: 'ROWFLEET_BATCH', flag: '--batch <n>', value: integer(1, 10_000), default: 100, shown: '`100`', doc: 'most records claimed per statement' }),
  leaseMs: setting({ env: 'ROWFLEET_LEASE', flag: '--lease <duration>', value: duration(100), default: 30_000, shown: '`30s`', doc: 'lease per claim, extended by heartbeats every lease/3' }),
  timeoutMs: setting({ env: 'ROWFLEET_TIMEOUT', flag: '--timeout <duration>', value: duration(1), default: 5 * 60_000, shown: '`5m`', doc: 'a handler running longer is aborted and fails' }),
  maxAttempts: setting({ env: 'ROWFLEET_MAX_ATTEMPTS', flag: '--max-attempts <n>', value: integer(1, 1000), default: 10, shown: '`10`', doc: 'attempts before a record is `FAILED`' }),
  backoffBaseMs: setting({
    env: 'ROWFLEET_BACKOFF_BASE',
    flag: '--backoff-base <duration>',
    value: duration(0),
    default: 1_000,
    shown: '`1s`',
    doc: 'first retry delay ceiling; doubles per attempt, with full jitter',
  }),
  backoffCapMs: setting({ env: 'ROWFLEET_BACKOFF_CAP', flag: '--backoff-cap <duration>', value: duration(0), default: 10 * 60_000, shown: '`10m`', doc: 'largest retry delay (at least the base)' }),
  maxExpirations: setting({
    env: 'ROWFLEET_MAX_EXPIRATIONS',
    flag: '--max-expirations <n>',
    value: integer(0, 1000),
    default: 3,
    shown: '`3`',
    doc: 'lease expirations after which a record runs alone in its process, and is poison (`FAILED`) if it expires so',
  }),
  pollMs: setting({ env: 'ROWFLEET_POLL', flag: '--poll <duration>', value: duration(10), default: 1_000, shown: '`1s`', doc: 'claim at least this often without notifications' }),
  graceMs: setting({
    env: 'ROWFLEET_GRACE',
    flag: '--grace <duration>',
    value: duration(0),
    default: 30_000,
    shown: '`30s`',
    doc: 'on SIGTERM, how long running handlers may finish before their records are released',
  }),
  sleepMs: setting({ env: 'ROWFLEET_SLEEP', flag: '--sleep <duration>', value: duration(0), default: 1_000, shown: '`1s`', doc: 'the `sleep` handler\'s duration when `data.sleepMs` is absent' }),
  failRate: setting({ env: 'ROWFLEET_FAIL_RATE', flag: '--fail-rate <p>', value: rate, default: 0.3, shown: '`0.3`', doc: 'the `flaky` handler\'s failure probability when `data.failRate` is absent' }),
} as const;

/** pg-boss, the enqueue sweep and the scheduler. */
export const BOSS = {
  schema: setting({ env: 'ROWFLEET_BOSS_SCHEMA', value: schemaName, default: 'pgboss', shown: '`pgboss`', doc: 'the Postgres schema pg-boss lives in' }),
  queue: setting({ env: 'ROWFLEET_QUEUE', value: queueName, default: 'rowfleet.process', shown: '`rowfleet.process`', doc: 'the queue of `{id, version}` jobs the boss engine consumes (kind `default`; other kinds add `.<kind>`)' }),
  enqueueOnUpsert: setting({ env: 'ROWFLEET_ENQUEUE_ON_UPSERT', value: flag, default: false, shown: '`0`', doc: 'send a record\'s job in the upsert\'s own transaction, instead of waiting for the sweep' }),
  sweepCron: setting({ env: 'ROWFLEET_SWEEP_CRON', flag: '--sweep-cron <cron>', value: cron, default: '* * * * *', shown: '`* * * * *`', doc: 'when the scheduler sends jobs for due records' }),
  sweepBatch: setting({ env: 'ROWFLEET_SWEEP_BATCH', value: integer(1, 100_000), default: 5_000, shown: '`5000`', doc: 'records the sweep marks and sends per transaction' }),
  rescueCron: setting({ env: 'ROWFLEET_RESCUE_CRON', flag: '--rescue-cron <cron>', value: cron, default: '* * * * *', shown: '`* * * * *`', doc: 'when the scheduler rescues expired leases (poison to `FAILED`)' }),
  eventRetentionMs: setting<number | null>({
    env: 'ROWFLEET_EVENT_RETENTION',
    flag: '--event-retention <age>',
    value: retention,
    default: null,
    shown: '`forever`',
    doc: 'delete `event_log` rows older than this (`30d`, `12h`)',
  }),
  retentionCron: setting({ env: 'ROWFLEET_RETENTION_CRON', flag: '--retention-cron <cron>', value: cron, default: '17 * * * *', shown: '`17 * * * *`', doc: 'when the scheduler applies the retention' }),
  cronCheckSeconds: setting({
    env: 'ROWFLEET_CRON_CHECK',
    flag: '--cron-check <duration>',
    value: duration(1_000, 45_000, (ms) => `${ms / 1000}s`).transform((ms) => Math.round(ms / 1000)),
    default: 30,
    shown: '`30s`',
    doc: 'how often a scheduler checks whether a cron tick is due, `1s` to `45s`',
  }),
} as const;

/** The sections of the reference, in order. */
export const SECTIONS = [
  { title: 'Every process', settings: GENERAL },
  { title: 'The API (`rowfleet api`, `up`)', settings: API },
  { title: 'Workers (`rowfleet worker`, `fleet`, `up`)', settings: WORKER },
  { title: 'pg-boss and the scheduler (`rowfleet scheduler`, `up`, the boss engine)', settings: BOSS },
] as const;

/** The configuration reference in markdown, as the README holds it between its markers. */
export function configReference(): string {
  const lines: string[] = [];
  for (const { title, settings } of SECTIONS) {
    lines.push(`**${title}**`, '', '| variable | flag | default | meaning |', '| --- | --- | --- | --- |');
    for (const s of Object.values(settings) as Setting<unknown>[]) {
      const flagText = s.flag === undefined ? '' : `\`${s.flag.replaceAll('|', '\\|')}\``;
      lines.push(`| \`${s.env}\` | ${flagText} | ${s.shown} | ${s.doc} |`);
    }
    lines.push('');
  }
  return lines.join('\n').trimEnd();
}

export const REFERENCE_START = '<!-- config-reference:start (generated from src/settings.ts by npm run docs:config) -->';
export const REFERENCE_END = '<!-- config-reference:end -->';
