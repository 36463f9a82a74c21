import { Option, type Command } from 'commander';
/**
 * What every command receives: injected output and environment (so tests run commands
 * in-process), and the one way to turn flags into a Config, a logger and a database.
 */
import { loadConfig, type Config, type ConfigOverrides, type Env } from '../config.ts';
import { createLogger, type Logger } from '../log.ts';
import { resolveDatabaseUrl } from '../db/connect.ts';
import { createPool, type Pool } from '../db/pool.ts';

export interface Output {
  write(text: string): unknown;
}

export interface CliIO {
  stdout: Output;
  stderr: Output;
  env: Env;
  /** Whether stdout is a terminal: tables and progress for people, JSON otherwise. */
  isTTY?: boolean;
  /** Resolves when the process is asked to stop (SIGINT / SIGTERM); long-running commands await it. */
  shutdownSignal?: AbortSignal;
  /** Forces JSON logs (tests), instead of deciding by whether stderr is a terminal. */
  jsonLogs?: boolean;
}

export interface CommandContext {
  io: CliIO;
  config(overrides?: ConfigOverrides): Config;
  logger(config: Config, name?: string): Logger;
  /** Prints a value: JSON with `json`, otherwise the text `human(value)` returns. */
  print<T>(value: T, json: boolean, human?: (value: T) => string): void;
  /** Resolves the database (embedded when no DATABASE_URL), opens a pool, runs `fn`, closes it. */
  withPool<T>(config: Config, log: Logger, fn: (pool: Pool, url: string) => Promise<T>): Promise<T>;
}

export function createContext(io: CliIO): CommandContext {
  return {
    io,
    config: (overrides = {}) => loadConfig(io.env, overrides),
    logger: (config, name) => createLogger({ level: config.logLevel, name, json: io.jsonLogs }),
    print(value, json, human) {
      io.stdout.write(json || human === undefined ? `${JSON.stringify(value, null, json ? 0 : 2)}\n` : `${human(value)}\n`);
    },
    async withPool(config, log, fn) {
      const url = await resolveDatabaseUrl(config, log);
      const pool = createPool({ connectionString: url, max: config.poolSize, log });
      try {
        return await fn(pool, url);
      } finally {
        await pool.end();
      }
    },
  };
}

/** Options every database command shares. */
export interface DatabaseFlags {
  databaseUrl?: string;
  logLevel?: Config['logLevel'];
}

export function overridesFrom(flags: DatabaseFlags): ConfigOverrides {
  const overrides: ConfigOverrides = {};
  if (flags.databaseUrl !== undefined) overrides.databaseUrl = flags.databaseUrl;
  if (flags.logLevel !== undefined) overrides.logLevel = flags.logLevel;
  return overrides;
}

/** `--database-url` and `--log-level`, shared by every command that talks to Postgres. */
export function withDatabaseOptions(command: Command): Command {
  return command
    .addOption(new Option('--database-url <url>', 'Postgres to use (default: $DATABASE_URL, else the embedded Postgres in .rowfleet/)'))
    .addOption(new Option('--log-level <level>', 'log level').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']));
}
