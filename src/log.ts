/**
 * pino loggers: JSON lines when stderr is not a terminal (for machines), pretty one-liners when it
 * is (for people). Logs go to stderr so that command output on stdout stays machine-readable.
 */
import { pino, type Logger } from 'pino';
import pretty from 'pino-pretty';
import type { LogLevel } from './config.ts';

export type { Logger };

export interface LoggerOptions {
  level: LogLevel;
  name?: string;
  /** Force JSON or pretty output; by default pretty only on a terminal. */
  json?: boolean;
}

export function createLogger({ level, name = 'rowfleet', json }: LoggerOptions): Logger {
  const asJson = json ?? !process.stderr.isTTY;
  const options = {
    name,
    level,
    // Tokens and bodies never reach the logs, even when a caller logs a whole request.
    redact: { paths: ['req.headers.authorization', 'headers.authorization', 'password', '*.password'], censor: '[redacted]' },
  };
  if (asJson) return pino(options, pino.destination({ fd: 2, sync: false }));
  return pino(options, pretty({ destination: 2, sync: true, ignore: 'pid,hostname', translateTime: 'HH:MM:ss.l' }));
}

/** For tests and library users who did not ask for logs. */
export const silentLogger: Logger = pino({ level: 'silent' });
