/**
 * Node child processes a bench starts (rowfleet workers, pg-boss and graphile-worker workers): run
 * from the repository with tsx, stderr shown, killed if the bench itself exits, and stopped by
 * their own PID. With `ipc`, the child gets a message channel (process.send), which the start gate
 * (bench/lib/gate.ts) and the graphile-worker peer's progress reports use.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

export interface Child {
  process: ChildProcess;
  pid: number;
  exited: Promise<number | null>;
}

/** `node --import tsx <args>` in the repository, with `env` added to this process's environment. */
export function spawnTsx(args: readonly string[], env: Record<string, string>, { ipc = false }: { ipc?: boolean } = {}): Child {
  const child = spawn(process.execPath, ['--import', 'tsx', ...args], {
    cwd: REPO,
    env: { ...process.env, ...env },
    stdio: ipc ? ['ignore', 'ignore', 'inherit', 'ipc'] : ['ignore', 'ignore', 'inherit'],
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  // If the bench dies (watchdog, crash, Ctrl-C), its children must not outlive it.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  void exited.then(() => process.off('exit', killOnExit));
  return { process: child, pid: child.pid!, exited };
}

/** SIGTERM (a graceful stop), then SIGKILL if it has not exited after `graceMs`. */
export async function stopChild({ process: child, exited }: Child, graceMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}
