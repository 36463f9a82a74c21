import type { Command } from 'commander';
/**
 * What every command receives: injected output and environment (so tests run commands
 * in-process), and the one way to turn flags into a Config, a logger and a database.
 */
import { GENERAL } from '../settings.ts';
import { settingOption } from './setting-option.ts';
import { loadConfig, type Config, type ConfigOverrides, type Env } from '../config.ts';
import { createLogger, resolveLogFormat, type Logger } from '../log.ts';
import { resolveDatabaseUrl } from '../db/connect.ts';
import { createPool, explainConnectionFailure, isMissingObject, sqlStateOf, type Pool } from '../db/pool.ts';
import { schemaState } from '../boss/migrate.ts';
import { settleWakes } from '../records/wake.ts';
import { SchemaNotReadyError, UserError, type SchemaState } from '../errors.ts';

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
  /**
   * Forces JSON logs (true: tests capture them) or pretty ones; unset (the binary), ROWFLEET_LOG_FORMAT
   * decides, by default by whether stderr is a terminal.
   */
  jsonLogs?: boolean;
}

export interface CommandContext {
  io: CliIO;
  config(overrides?: ConfigOverrides): Config;
  logger(config: Config, name?: string): Logger;
  /** Prints a value: JSON with `json`, otherwise the text `human(value)` returns. */
  print<T>(value: T, json: boolean, human?: (value: T) => string): void;
  /**
   * Resolves the database (embedded when no DATABASE_URL), opens a pool, runs `fn`, closes it.
   * Known database conditions come out as one-line UserErrors: Postgres unreachable or refusing the
   * connection, and a schema that `rowfleet migrate` has not created or upgraded.
   */
  withPool<T>(config: Config, log: Logger, fn: (pool: Pool, url: string) => Promise<T>): Promise<T>;
  /**
   * Logs a failure meant for a person as one structured entry for machines (JSON logs only: on a
   * terminal the person already reads the one line main.ts prints), and returns it to throw.
   */
  failure(log: Logger, error: UserError, fields?: Record<string, unknown>): UserError;
}

export function createContext(io: CliIO): CommandContext {
  /** Loggers writing readable lines: a person on that terminal reads main.ts's line already. */
  const readable = new WeakSet<Logger>();
  const failure = (log: Logger, error: UserError, fields: Record<string, unknown> = {}): UserError => {
    if (!readable.has(log)) log.error({ ...fields, exitCode: error.exitCode }, error.message);
    return error;
  };
  return {
    io,
    config: (overrides = {}) => loadConfig(io.env, overrides),
    logger: (config, name) => {
      const log = createLogger({ level: config.logLevel, format: config.logFormat, name, json: io.jsonLogs });
      if (resolveLogFormat(config.logFormat, io.jsonLogs) === 'pretty') readable.add(log);
      return log;
    },
    print(value, json, human) {
      io.stdout.write(json || human === undefined ? `${JSON.stringify(value, null, json ? 0 : 2)}\n` : `${human(value)}\n`);
    },
    async withPool(config, log, fn) {
      const url = await resolveDatabaseUrl(config, log);
      const pool = createPool({ connectionString: url, max: config.poolSize, log });
      try {
        return await fn(pool, url);
      } catch (err) {
        const known = await explainDatabaseFailure(err, pool, config.boss.schema);
        if (known === undefined) throw err;
        const cause = sqlStateOf(err);
        throw failure(log, known, { code: cause?.code, cause: cause?.error.message, ...(known instanceof SchemaNotReadyError && { schema: known.state }) });
      } finally {
        // A command that just wrote may still be waking workers (records/wake.ts).
        await settleWakes(pool);
        await pool.end();
      }
    },
    failure,
  };
}

/**
 * A UserError for the database conditions a person can fix, or undefined (then the error is a bug
 * or unforeseen, and keeps its stack). A missing table or schema costs one more look at the schema,
 * on this error path only: every command's happy path stays one round trip shorter than a check
 * before each command would make it.
 */
async function explainDatabaseFailure(err: unknown, pool: Pool, bossSchema: string): Promise<UserError | undefined> {
  if (err instanceof UserError) return undefined;
  const connection = explainConnectionFailure(err);
  if (connection !== undefined) return new UserError(connection, 1, { cause: err });
  if (!isMissingObject(err)) return undefined;
  let state: SchemaState | undefined;
  try {
    state = await missingFrom(pool, bossSchema, sqlStateOf(err)!.error.message);
  } catch {
    return undefined; // the look failed too: report the original error as it is
  }
  return state === undefined ? undefined : new SchemaNotReadyError(state, { cause: err });
}

/** Why a statement found no table: rowfleet's schema missing or behind, or pg-boss not installed (if the error names it). */
function missingFrom(pool: Pool, bossSchema: string, message: string): Promise<SchemaState | undefined> {
  // Names stay as they are in every server language: relation "pgboss.job", schema "pgboss".
  const namesBoss = message.includes(`"${bossSchema}.`) || message.includes(`"${bossSchema}"`);
  return schemaState(pool, namesBoss ? bossSchema : undefined);
}

/** Options every database command shares. */
export interface DatabaseFlags {
  databaseUrl?: string;
  logLevel?: Config['logLevel'];
  /** Only where withMetricsOption added it. */
  metricsPort?: number;
}

export function overridesFrom(flags: DatabaseFlags): ConfigOverrides {
  const overrides: ConfigOverrides = {};
  if (flags.databaseUrl !== undefined) overrides.databaseUrl = flags.databaseUrl;
  if (flags.logLevel !== undefined) overrides.logLevel = flags.logLevel;
  if (flags.metricsPort !== undefined) overrides.metricsPort = flags.metricsPort;
  return overrides;
}

/** `--metrics-port`, for the processes that serve their metrics (worker, fleet). */
export function withMetricsOption(command: Command, what: string): Command {
  return command.addOption(settingOption(GENERAL.metricsPort, `serve ${what} on GET /metrics at this port on $ROWFLEET_HOST`));
}

/** `--database-url` and `--log-level`, shared by every command that talks to Postgres. */
export function withDatabaseOptions(command: Command): Command {
  return command
    .addOption(settingOption(GENERAL.databaseUrl, 'Postgres to use'))
    .addOption(settingOption(GENERAL.logLevel, 'log level'));
}
