/**
 * pino loggers: JSON lines when stderr is not a terminal (for machines), one readable line per
 * event when it is (for people). Logs go to stderr so that command output on stdout stays
 * machine-readable. A fleet's workers write to a pipe, not a terminal: the fleet hands them its
 * own format (ROWFLEET_LOG_FORMAT), so one terminal never mixes readable lines with JSON.
 */
import { pino, type Logger } from 'pino';
import pretty from 'pino-pretty';
import type { LogFormat, LogLevel } from './config.ts';

export type { Logger };

export interface LoggerOptions {
  level: LogLevel;
  name?: string;
  /** `auto` (the default) is pretty on a terminal and JSON elsewhere. */
  format?: LogFormat;
  /** Forces JSON (true) or pretty (false) whatever `format` says: tests capture JSON. */
  json?: boolean;
}

/** What `format` means for this process: json or pretty. */
export function resolveLogFormat(format: LogFormat = 'auto', json?: boolean): 'json' | 'pretty' {
  if (json !== undefined) return json ? 'json' : 'pretty';
  if (format !== 'auto') return format;
  return process.stderr.isTTY ? 'pretty' : 'json';
}

export function createLogger({ level, name = 'rowfleet', format, json }: LoggerOptions): Logger {
  const asJson = resolveLogFormat(format, json) === 'json';
  const options = {
    name,
    level,
    // Tokens and bodies never reach the logs, even when a caller logs a whole request.
    redact: { paths: ['req.headers.authorization', 'headers.authorization', 'password', '*.password'], censor: '[redacted]' },
  };
  if (asJson) return pino(options, pino.destination({ fd: 2, sync: false }));
  // singleLine: an event's fields on its own line, not a block of one line per field.
  return pino(options, pretty({ destination: 2, sync: true, singleLine: true, ignore: 'pid,hostname', translateTime: 'HH:MM:ss.l' }));
}

/** For tests and library users who did not ask for logs. */
export const silentLogger: Logger = pino({ level: 'silent' });
