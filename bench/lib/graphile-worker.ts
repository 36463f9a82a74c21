/**
 * One graphile-worker 0.18 process, the peer beside rowfleet's workers: `run()` with a task list of
 * one task, in its own schema, until SIGTERM. A process of its own, as rowfleet's workers are, so
 * that the engines get the same number of event loops when compared process for process.
 *
 *   DATABASE_URL=... node --import tsx bench/lib/graphile-worker.ts '<GraphileWorkerSpec JSON>'
 *
 * - mode `drain`: the task `noop` does nothing but note, in memory, when this process started its
 *   first job and ended its last; the totals go to the bench over the IPC channel every 100 ms and
 *   once more at shutdown. The process waits at the start gate (bench/lib/gate.ts) before run().
 * - mode `wakeup`: the task `wake` appends `<payload.id> <epoch ms>` to `startsFile` the moment it is
 *   called, like rowfleet's bench/lib/wakeup-handler.ts; no gate (the bench waits for its LISTEN).
 *
 * The option names are those of the installed 0.18.0's GraphileConfig.WorkerOptions (`preset.worker`):
 * `concurrentJobs`, `localQueue: { size }`, `completeJobBatchDelay`, `failJobBatchDelay`, `maxPoolSize`,
 * and `preparedStatements`, left at its default (true). Its per-job "Completed task" info line is switched off as its docs advise for
 * throughput (NO_LOG_SUCCESS, set by the bench), and its logger prints warnings and errors only, as
 * rowfleet's workers run at log level warn.
 */
import { appendFileSync } from 'node:fs';
import { Logger, run, type Runner, type TaskList } from 'graphile-worker';
import { passGate } from './gate.ts';

export interface GraphileWorkerSpec {
  mode: 'drain' | 'wakeup';
  schema: string;
  concurrentJobs: number;
  /** `localQueue.size`; graphile-worker's default (-1, no local queue) when absent. */
  localQueueSize?: number;
  /** graphile-worker's default (-1, no batching) when absent. */
  completeJobBatchDelay?: number;
  /** graphile-worker's default (-1, no batching) when absent. */
  failJobBatchDelay?: number;
  /** graphile-worker's default (10) when absent. */
  maxPoolSize?: number;
  /** mode `wakeup`: where the start times go. */
  startsFile?: string;
}

/** What a drain process reports: jobs run, first start and last end (epoch ms, this host's clock). */
export interface GraphileProgress {
  type: 'progress';
  final: boolean;
  count: number;
  firstStartMs: number | null;
  lastEndMs: number | null;
}

const REPORT_MS = 100;

const now = () => performance.timeOrigin + performance.now();

const logger = new Logger(() => (level, message) => {
  if (level === 'error' || level === 'warning') process.stderr.write(`[graphile-worker ${process.pid}] ${level}: ${message}\n`);
});

async function main(): Promise<void> {
  const raw = process.argv[2];
  if (raw === undefined) {
    process.stderr.write("usage: graphile-worker.ts '<spec JSON>'\n");
    process.exit(2);
  }
  const spec = JSON.parse(raw) as GraphileWorkerSpec;
  const progress: GraphileProgress = { type: 'progress', final: false, count: 0, firstStartMs: null, lastEndMs: null };
  const taskList: TaskList =
    spec.mode === 'drain'
      ? {
          noop: async () => {
            progress.firstStartMs ??= now();
            progress.count += 1;
            progress.lastEndMs = now();
          },
        }
      : { wake: wakeTask(spec.startsFile) };

  if (spec.mode === 'drain') await passGate();
  const runner: Runner = await run({
    noHandleSignals: true,
    taskList,
    preset: {
      worker: {
        connectionString: process.env.DATABASE_URL!,
        schema: spec.schema,
        concurrentJobs: spec.concurrentJobs,
        ...(spec.localQueueSize !== undefined && { localQueue: { size: spec.localQueueSize } }),
        ...(spec.completeJobBatchDelay !== undefined && { completeJobBatchDelay: spec.completeJobBatchDelay }),
        ...(spec.failJobBatchDelay !== undefined && { failJobBatchDelay: spec.failJobBatchDelay }),
        ...(spec.maxPoolSize !== undefined && { maxPoolSize: spec.maxPoolSize }),
        logger,
      },
    },
  });

  let reported = -1;
  const report = (final: boolean) =>
    new Promise<void>((resolve) => {
      if (process.send === undefined || !process.connected || (!final && progress.count === reported)) return resolve();
      reported = progress.count;
      process.send({ ...progress, final }, undefined, {}, () => resolve());
    });
  const timer = spec.mode === 'drain' ? setInterval(() => void report(false), REPORT_MS) : undefined;

  process.once('SIGTERM', () => {
    void (async () => {
      clearInterval(timer);
      try {
        await runner.stop();
      } catch (err) {
        process.stderr.write(`[graphile-worker ${process.pid}] stop: ${(err as Error).message}\n`);
      }
      // Sent (its callback has run) before the process exits.
      await report(true);
      process.exit(0);
    })();
  });
  await runner.promise;
}

function wakeTask(file: string | undefined) {
  if (file === undefined || file === '') throw new Error('graphile-worker.ts: mode wakeup needs startsFile');
  return async (payload: unknown) => {
    const startedAt = now();
    // Synchronous, as rowfleet's wake-up handler: microseconds a job, nothing lost on SIGTERM.
    appendFileSync(file, `${(payload as { id: string }).id} ${startedAt.toFixed(3)}\n`);
  };
}

await main();
