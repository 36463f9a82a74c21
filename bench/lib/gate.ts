/**
 * A start gate for peer worker processes (pg-boss, graphile-worker) that drain a backlog already
 * in their tables: each child loads its modules and connects, says `ready` and waits; the bench
 * opens the gate for all of them at once. Without it, a second process started beside the first
 * (a second or more of tsx and module loading, on cores the first is already busy on) joins late,
 * and a two-process drain measures one process for its first second. rowfleet's workers need no
 * gate: they start on an empty table and the backlog is committed once all have registered.
 *
 * The channel is the child's IPC channel (spawnTsx with `ipc: true`).
 */
import type { Child } from './child.ts';

const READY_TIMEOUT_MS = 60_000;

/** Child side: report ready, resolve when the bench opens the gate. */
export function passGate(): Promise<void> {
  if (process.send === undefined) throw new Error('gate: this process has no IPC channel (spawnTsx with ipc: true)');
  const opened = new Promise<void>((resolve) => {
    const onMessage = (message: unknown) => {
      if ((message as { type?: string } | null)?.type !== 'go') return;
      process.off('message', onMessage);
      resolve();
    };
    process.on('message', onMessage);
  });
  process.send({ type: 'ready' });
  return opened;
}

/** Bench side: wait until every child is ready (or one exits), then open the gate for all. */
export async function openGate(children: readonly Child[], what: string): Promise<void> {
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`${what} (pid ${child.pid}) was not ready within ${READY_TIMEOUT_MS / 1000}s`)), READY_TIMEOUT_MS);
          const onMessage = (message: unknown) => {
            if ((message as { type?: string } | null)?.type !== 'ready') return;
            clearTimeout(timer);
            child.process.off('message', onMessage);
            resolve();
          };
          child.process.on('message', onMessage);
          void child.exited.then((code) => {
            clearTimeout(timer);
            reject(new Error(`${what} (pid ${child.pid}) exited with code ${code} before it was ready`));
          });
        }),
    ),
  );
  for (const child of children) child.process.send({ type: 'go' });
}
