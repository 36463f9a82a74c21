#!/usr/bin/env node
/**
 * The `rowfleet` executable: the only place that reads process state and sets the exit code.
 * Exit codes: 0 success, 1 failure at run time, 2 usage or configuration error.
 */
import { CommanderError } from 'commander';
import { createProgram } from './program.ts';
import { UserError } from '../errors.ts';
import { isDatabaseUnavailable } from '../db/pool.ts';

const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 12)) {
  process.stderr.write(`rowfleet: needs Node >= 22.12, this is ${process.version}; run \`source scripts/ensure-node.sh\` or install Node 22\n`);
  process.exit(2);
}

const shutdown = new AbortController();
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (shutdown.signal.aborted) {
      process.stderr.write(`rowfleet: second ${signal}, exiting now\n`);
      process.exit(130);
    }
    shutdown.abort(signal);
  });
}

// Started by `rowfleet fleet`: when the fleet goes away (even by SIGKILL) its channel closes, and
// this worker drains and exits rather than run on unsupervised. The channel alone must not keep
// the process alive.
if (process.channel !== undefined) {
  process.channel.unref();
  process.once('disconnect', () => shutdown.abort('fleet exited'));
}

const program = createProgram({
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  isTTY: process.stdout.isTTY === true,
  shutdownSignal: shutdown.signal,
});

try {
  await program.parseAsync(process.argv);
} catch (err) {
  process.exitCode = exitCodeFor(err);
}

function exitCodeFor(err: unknown): number {
  if (err instanceof CommanderError) {
    // commander has already printed its message (or the help / version).
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0;
    return err.exitCode === 0 ? 0 : 2;
  }
  if (err instanceof UserError) {
    process.stderr.write(`rowfleet: ${err.message}\n`);
    return err.exitCode;
  }
  if (isDatabaseUnavailable(err)) {
    process.stderr.write(`rowfleet: cannot reach Postgres (${(err as Error).message}); check DATABASE_URL, or run \`rowfleet db start\` for the embedded one\n`);
    return 1;
  }
  // Not a user mistake but a bug or an unforeseen failure: the stack helps whoever reports it.
  process.stderr.write(`rowfleet: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  return 1;
}
