/**
 * The `rowfleet` program factory. Commands are registered from one file each; the program never
 * calls process.exit (exitOverride), so tests run it in-process with injected output, and only
 * src/cli/main.ts turns the outcome into an exit code.
 */
import { Command } from 'commander';
import { createContext, type CliIO } from './context.ts';
import { registerDb } from './commands/db.ts';
import { registerMigrate, registerRoles } from './commands/migrate.ts';
import { registerApi } from './commands/api.ts';
import { registerUpsert } from './commands/upsert.ts';
import { registerDemo } from './commands/demo.ts';
import { registerWorker } from './commands/worker.ts';
import { registerFleet } from './commands/fleet.ts';
import { registerUp } from './commands/up.ts';
import { registerScheduler } from './commands/scheduler.ts';
import { registerEnqueue } from './commands/enqueue.ts';
import { registerRequeue } from './commands/requeue.ts';
import { registerDelete } from './commands/delete.ts';
import { registerStatus } from './commands/status.ts';
import { registerInspect } from './commands/inspect.ts';
import { registerReplay } from './commands/replay.ts';
import { registerKinds } from './commands/kinds.ts';
import { registerRecords } from './commands/records.ts';
import { registerConfig } from './commands/config.ts';

export function createProgram(io: CliIO): Command {
  const ctx = createContext(io);
  const program = new Command('rowfleet')
    .description('A Postgres-only worker fleet: versioned upserts by record ID, SKIP LOCKED workers, nothing lost.')
    .version(VERSION, '-V, --version')
    .showSuggestionAfterError()
    // Root options only before the command name: `upsert --version 3` is the message's version.
    .enablePositionalOptions()
    .configureOutput({
      writeOut: (text) => io.stdout.write(text),
      writeErr: (text) => io.stderr.write(text),
    })
    .exitOverride();

  for (const register of [registerMigrate, registerDb, registerApi, registerUpsert, registerDemo, registerWorker, registerFleet, registerUp, registerScheduler, registerEnqueue, registerRequeue, registerDelete, registerStatus, registerInspect, registerReplay, registerKinds, registerRecords, registerRoles, registerConfig]) {
    const command = register(ctx);
    // Subcommands too (`kinds set`): commander's defaults would exit the process on a bad flag.
    for (const c of [command, ...command.commands]) c.exitOverride().configureOutput({ writeOut: (t) => io.stdout.write(t), writeErr: (t) => io.stderr.write(t) });
    program.addCommand(command);
  }
  return program;
}

export const VERSION = '0.1.0';
