#!/usr/bin/env node
/**
 * The `rowfleet` executable: the only place that reads process state and sets the exit code.
 * Exit codes: 0 success, 1 failure at run time, 2 usage or configuration error.
 *
 * Every known failure is one line on stderr saying what to do (UserError, and the database
 * conditions src/db/pool.ts names); anything else is a bug or unforeseen and keeps its stack.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Output } from './context.ts';

// Checked before anything else loads: static imports are evaluated before this body runs, so the
// rest of rowfleet (which may use what an older Node lacks) is imported dynamically below.
const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 12)) {
  process.stderr.write(`rowfleet: needs Node >= 22.12, this is ${process.version}; run \`source ${ensureNodeScript()}\` or install Node 22\n`);
  process.exit(2);
}

const [{ CommanderError }, { createProgram }, { UserError }, { explainConnectionFailure }] = await Promise.all([
  import('commander'),
  import('./program.ts'),
  import('../errors.ts'),
  import('../db/pool.ts'),
]);
const { watchParentIfNpm } = await import('./parent-watch.ts');

const shutdown = new AbortController();
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (shutdown.signal.aborted) {
      // Already stopping: after a first signal, or because stdout's reader, npm or the fleet went away.
      process.stderr.write(`rowfleet: ${signal} while stopping, exiting now\n`);
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
watchParentIfNpm(process.env, () => shutdown.abort('npm exited'));

// A reader that stops early (`rowfleet status | head -1`) has what it wanted: rowfleet stops
// writing there, says nothing, and a long-running command (`status --watch`) winds down as on
// SIGTERM. The exit code stays the command's own (0 unless its work failed), unlike a C tool
// killed by SIGPIPE (141): `replay --verify | head` still exits 1 when records differ, and a
// `set -o pipefail` script does not fail because `head` was satisfied.
const stdout = quietWhenClosed(process.stdout, () => shutdown.abort('stdout closed'));
const stderr = quietWhenClosed(process.stderr, () => {});

const program = createProgram({
  stdout,
  stderr,
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
    stderr.write(`rowfleet: ${oneLine(err.message)}\n`);
    return err.exitCode;
  }
  // Commands outside ctx.withPool (migrate, worker, fleet) meet these before any statement runs.
  const connection = explainConnectionFailure(err);
  if (connection !== undefined) {
    stderr.write(`rowfleet: ${oneLine(connection)}\n`);
    return 1;
  }
  // Not a user mistake but a bug or an unforeseen failure: the stack helps whoever reports it.
  stderr.write(`rowfleet: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  return 1;
}

/** A person's line is one line, whatever a message (or Postgres) put in it. */
function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}

/**
 * `stream` as the commands' Output, going quiet for good after EPIPE (the reader closed its end).
 * Node reports EPIPE as an 'error' event, again on every later write: without a listener it is an
 * uncaught exception with a stack. Any other stream error is unforeseen and still thrown.
 */
function quietWhenClosed(stream: NodeJS.WriteStream, onClosed: () => void): Output {
  let closed = false;
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    if (closed) return;
    closed = true;
    onClosed();
  });
  return { write: (text: string) => (closed ? false : stream.write(text)) };
}

/**
 * Where this package's scripts/ensure-node.sh is (node_modules/rowfleet/scripts/... in a project
 * that installed it), relative to the current folder when that is shorter, quoted for the shell.
 */
function ensureNodeScript(): string {
  const absolute = fileURLToPath(new URL('../../scripts/ensure-node.sh', import.meta.url));
  let relative = path.relative(process.cwd(), absolute);
  // `source name` without a slash searches PATH before the current folder.
  if (!relative.includes(path.sep)) relative = `.${path.sep}${relative}`;
  const shown = relative.length < absolute.length ? relative : absolute;
  return /^[\w@%+=:,./-]+$/.test(shown) ? shown : `'${shown.replaceAll("'", `'\\''`)}'`;
}
