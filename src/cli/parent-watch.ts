/**
 * npm (`npx rowfleet ...`, `npm run ...`) stands between a supervisor and rowfleet and does not
 * pass a SIGTERM on: it exits at once and leaves rowfleet running with parent 1, a fleet with all
 * its workers. A process npm started therefore watches its parent, and winds down as on SIGTERM
 * once npm is gone. A process started any other way is left alone: `nohup rowfleet worker &` is
 * meant to outlive its shell.
 */

/** Checking the parent costs a syscall; a second is well inside any supervisor's stop timeout. */
const EVERY_MS = 1_000;

export function watchParentIfNpm(env: Readonly<Record<string, string | undefined>>, onGone: () => void): void {
  // npm sets npm_command (exec, run-script, test, start, ...) for every process it runs.
  if (env.npm_command === undefined || env.npm_command === '') return;
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(timer);
    onGone();
  }, EVERY_MS);
  // Never the reason a finished command stays alive.
  timer.unref();
}
