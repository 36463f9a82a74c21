/**
 * The one place that reads the environment. Environment (`DATABASE_URL`, `PORT`, `ROWFLEET_*`)
 * is overridden by command-line flags, validated, and frozen; everything else receives a Config.
 */
import path from 'node:path';
import { UsageError } from './errors.ts';

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

export interface Config {
  /** Postgres to use; undefined means the embedded Postgres in `<home>/pg`. */
  readonly databaseUrl: string | undefined;
  /** Folder for the embedded Postgres and local state (`.rowfleet` in the working directory). */
  readonly home: string;
  readonly host: string;
  readonly port: number;
  /** Bearer tokens accepted by the API; empty means the API is open. */
  readonly apiTokens: readonly string[];
  /** Largest `items` array in one POST /upsert. */
  readonly maxBatch: number;
  /** Largest request body, in bytes. */
  readonly maxBodyBytes: number;
  /** Deepest nesting of objects and arrays allowed in `data`. */
  readonly maxDepth: number;
  /** Connections this process may open to Postgres. */
  readonly poolSize: number;
  readonly logLevel: LogLevel;
}

/** Values given on the command line; they win over the environment. */
export type ConfigOverrides = Partial<{ -readonly [K in keyof Config]: Config[K] }>;

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

export function loadConfig(env: Env = process.env, overrides: ConfigOverrides = {}): Config {
  const pick = <T>(key: keyof Config, envName: string, parse: (raw: string, name: string) => T, fallback: T): T => {
    const fromFlag = overrides[key];
    if (fromFlag !== undefined) return fromFlag as T;
    const raw = env[envName];
    if (raw === undefined || raw === '') return fallback;
    return parse(raw, envName);
  };

  const databaseUrl = overrides.databaseUrl ?? nonEmpty(env.DATABASE_URL);
  if (databaseUrl !== undefined) checkDatabaseUrl(databaseUrl);

  const config: Config = {
    databaseUrl,
    home: path.resolve(overrides.home ?? nonEmpty(env.ROWFLEET_HOME) ?? '.rowfleet'),
    host: pick('host', 'ROWFLEET_HOST', (raw) => raw, DEFAULTS.host),
    port: pick('port', 'PORT', (raw, name) => parseInteger(raw, name, 0, 65535), DEFAULTS.port),
    apiTokens: overrides.apiTokens ?? parseTokens(env.ROWFLEET_API_TOKENS),
    maxBatch: pick('maxBatch', 'ROWFLEET_MAX_BATCH', (raw, name) => parseInteger(raw, name, 1, 100_000), DEFAULTS.maxBatch),
    maxBodyBytes: pick('maxBodyBytes', 'ROWFLEET_MAX_BODY', parseBytes, DEFAULTS.maxBodyBytes),
    maxDepth: pick('maxDepth', 'ROWFLEET_MAX_DEPTH', (raw, name) => parseInteger(raw, name, 1, 10_000), DEFAULTS.maxDepth),
    poolSize: pick('poolSize', 'ROWFLEET_POOL_SIZE', (raw, name) => parseInteger(raw, name, 1, 1000), DEFAULTS.poolSize),
    logLevel: pick('logLevel', 'ROWFLEET_LOG_LEVEL', parseLogLevel, DEFAULTS.logLevel),
  };
  return Object.freeze({ ...config, apiTokens: Object.freeze([...config.apiTokens]) });
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
