/**
 * One pg-boss worker process for the drain baseline, until SIGTERM, in one of two modes:
 *
 * - work: `work()` on a queue with a no-op batch handler, the work options given as JSON.
 * - fetch: what rowfleet's boss engine does with pg-boss (src/worker/engine.ts), without the row
 *   claim: one loop of `fetch(queue, { batchSize })` then `complete(queue, ids)` with nothing in
 *   between, fetching again at once while full pages come back. A short page means the queue had
 *   no more to give (every job is inserted before the start); the loop then polls once a second, as
 *   a rowfleet worker with nothing due does. pg-boss runs as rowfleet's worker role runs it: no
 *   maintenance, no cron. The options JSON is `{ "batchSize": n }`.
 *
 * A process of its own, as rowfleet's workers are, so that both engines get the same number of
 * event loops when compared process for process. Started with an IPC channel, it waits at the
 * start gate (bench/lib/gate.ts) after connecting, before its first fetch.
 *
 *   DATABASE_URL=... node --import tsx bench/lib/boss-worker.ts <schema> <queue> <work|fetch> '<options JSON>'
 */
import { setTimeout as delay } from 'node:timers/promises';
import { PgBoss, type WorkOptions } from 'pg-boss';
import { passGate } from './gate.ts';

const MODES = ['work', 'fetch'];

/** After a short page: rowfleet's default poll (ROWFLEET_POLL). */
const IDLE_POLL_MS = 1_000;
const ERROR_PAUSE_MS = 100;

const [schema, queue, mode, optionsJson] = process.argv.slice(2);
if (schema === undefined || queue === undefined || !MODES.includes(mode ?? '') || optionsJson === undefined) {
  process.stderr.write('usage: boss-worker.ts <schema> <queue> <work|fetch> <options JSON>\n');
  process.exit(2);
}
const options = JSON.parse(optionsJson) as WorkOptions;
const boss = new PgBoss({
  connectionString: process.env.DATABASE_URL!,
  schema,
  migrate: false,
  ...(mode === 'fetch' && { supervise: false, schedule: false }),
});
boss.on('error', (err) => process.stderr.write(`[boss-worker ${process.pid}] ${err.message}\n`));
await boss.start();
if (process.send !== undefined) {
  await passGate();
  // The channel would keep this process alive after boss.stop().
  process.disconnect();
}
let stopping = false;
process.once('SIGTERM', () => {
  stopping = true;
  void boss.stop({ graceful: true, timeout: 5_000 });
});
if (mode === 'work') {
  await boss.work(queue, options, async () => {});
} else {
  const batchSize = options.batchSize ?? 1;
  while (!stopping) {
    try {
      const jobs = await boss.fetch(queue, { batchSize });
      if (jobs.length > 0) {
        await boss.complete(
          queue,
          jobs.map((job) => job.id),
        );
      }
      if (jobs.length < batchSize) await delay(IDLE_POLL_MS);
    } catch (err) {
      if (stopping) break;
      process.stderr.write(`[boss-worker ${process.pid}] ${(err as Error).message}\n`);
      await delay(ERROR_PAUSE_MS);
    }
  }
}
