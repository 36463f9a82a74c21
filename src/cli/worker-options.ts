/**
 * The options `rowfleet worker` and `rowfleet fleet` share, parsed with the config module's own
 * parsers so that a flag and its environment variable accept exactly the same values.
 */
import { Option, type Command } from 'commander';
import { durationParser, ENGINES, parseInteger, parseKindList, parseRate, type ConfigOverrides, type WorkerConfig } from '../config.ts';

/** Parsed flags, named as commander names them (`--lease` → `lease`). */
export interface WorkerFlags {
  engine?: WorkerConfig['engine'];
  handler?: string;
  kinds?: string[];
  concurrency?: number;
  batch?: number;
  lease?: number;
  timeout?: number;
  maxAttempts?: number;
  backoffBase?: number;
  backoffCap?: number;
  maxExpirations?: number;
  poll?: number;
  grace?: number;
  sleep?: number;
  failRate?: number;
}

const int = (name: string, min: number, max: number) => (raw: string) => parseInteger(raw, name, min, max);
const duration = (name: string, minMs: number) => (raw: string) => durationParser(minMs)(raw, name);

export function withWorkerOptions(command: Command): Command {
  return command
    .addOption(new Option('--engine <engine>', 'how work is found (default: $ROWFLEET_ENGINE or direct)').choices([...ENGINES]))
    .option('--handler <name|path>', 'required: a module default-exporting async (record, ctx) => result, or a built-in (noop, sleep, flaky, checksum) (default: $ROWFLEET_HANDLER)')
    .addOption(
      new Option('--kinds <kinds>', 'claim only records of these kinds, like order,invoice (default: $ROWFLEET_KINDS, or every kind the handler handles)').argParser((raw) =>
        parseKindList(raw, '--kinds'),
      ),
    )
    .addOption(new Option('--concurrency <n>', 'handlers running at once per process, all kinds together (default: 10)').argParser(int('--concurrency', 1, 10_000)))
    .addOption(new Option('--batch <n>', 'most records claimed per statement (default: 100)').argParser(int('--batch', 1, 10_000)))
    .addOption(new Option('--lease <duration>', 'lease per claim, extended by heartbeats every lease/3 (default: 30s)').argParser(duration('--lease', 100)))
    .addOption(new Option('--timeout <duration>', 'a handler running longer is aborted and fails (default: 5m)').argParser(duration('--timeout', 1)))
    .addOption(new Option('--max-attempts <n>', 'attempts before a record is FAILED (default: 10)').argParser(int('--max-attempts', 1, 1000)))
    .addOption(new Option('--backoff-base <duration>', 'first retry delay ceiling; doubles per attempt, full jitter (default: 1s)').argParser(duration('--backoff-base', 0)))
    .addOption(new Option('--backoff-cap <duration>', 'largest retry delay (default: 10m)').argParser(duration('--backoff-cap', 0)))
    .addOption(new Option('--max-expirations <n>', 'lease expirations after which a record runs alone in its process, and is poison (FAILED) if it expires so (default: 3)').argParser(int('--max-expirations', 0, 1000)))
    .addOption(new Option('--poll <duration>', 'claim at least this often without notifications (default: 1s)').argParser(duration('--poll', 10)))
    .addOption(new Option('--grace <duration>', 'on SIGTERM, how long in-flight handlers may finish before release (default: 30s)').argParser(duration('--grace', 0)))
    .addOption(new Option('--sleep <duration>', 'the sleep handler\'s duration when data.sleepMs is absent (default: 1s)').argParser(duration('--sleep', 0)))
    .addOption(new Option('--fail-rate <p>', 'the flaky handler\'s failure probability when data.failRate is absent (default: 0.3)').argParser((raw) => parseRate(raw, '--fail-rate')));
}

/** Flag name → WorkerConfig key, where they differ (durations are held in milliseconds). */
const RENAMED = { lease: 'leaseMs', timeout: 'timeoutMs', backoffBase: 'backoffBaseMs', backoffCap: 'backoffCapMs', poll: 'pollMs', grace: 'graceMs', sleep: 'sleepMs' } as const;

export function workerOverrides(flags: WorkerFlags): ConfigOverrides['worker'] {
  const worker: Record<string, unknown> = {};
  for (const [flag, value] of Object.entries(flags)) {
    if (value === undefined) continue;
    const key = (RENAMED as Record<string, string>)[flag] ?? flag;
    if (key in WORKER_KEYS) worker[key] = value;
  }
  return worker as ConfigOverrides['worker'];
}

const WORKER_KEYS: Record<keyof WorkerConfig, true> = {
  engine: true, handler: true, kinds: true, concurrency: true, batch: true, leaseMs: true, timeoutMs: true, maxAttempts: true,
  backoffBaseMs: true, backoffCapMs: true, maxExpirations: true, pollMs: true, graceMs: true, sleepMs: true, failRate: true,
};
