/**
 * The options `rowfleet worker`, `fleet` and `up` share: one per worker setting that has a flag
 * (src/settings.ts), parsed by the setting's own schema.
 */
import type { Command } from 'commander';
import type { ConfigOverrides, WorkerConfig } from '../config.ts';
import { WORKER, type Setting } from '../settings.ts';
import { settingOption } from './setting-option.ts';

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

export function withWorkerOptions(command: Command): Command {
  for (const setting of Object.values(WORKER) as Setting<unknown>[]) command.addOption(settingOption(setting));
  return command;
}

/** Commander's name of each worker flag (`--backoff-base` → `backoffBase`) → its WorkerConfig key (`backoffBaseMs`). */
const KEY_OF_FLAG = new Map(
  (Object.entries(WORKER) as [keyof WorkerConfig, Setting<unknown>][]).map(([key, setting]) => [settingOption(setting).attributeName(), key]),
);

export function workerOverrides(flags: WorkerFlags): ConfigOverrides['worker'] {
  const worker: Record<string, unknown> = {};
  for (const [flag, value] of Object.entries(flags)) {
    const key = KEY_OF_FLAG.get(flag);
    if (value !== undefined && key !== undefined) worker[key] = value;
  }
  return worker as ConfigOverrides['worker'];
}
