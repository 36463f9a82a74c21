/**
 * Drain rate against worker count: records per second drained from the same backlog (100,000
 * records or jobs, no-op handlers) by 1, 2 and 4 worker processes, for each line:
 * - rowfleet direct, default flags: `rowfleet worker --engine direct --handler noop`, as a user
 *   first runs it (--batch 100, --concurrency 10);
 * - rowfleet direct, --batch 1000: the same with `--batch 1000 --concurrency 2000` (the drain bench's
 *   largest batch, two batches of handlers per process);
 * - rowfleet boss engine: `--engine boss --batch 1000 --concurrency 2000`, its jobs sent by the
 *   enqueue sweep (bench/lib/boss-engine.ts);
 * - pg-boss 12 alone: work() with batchSize 1000, localConcurrency 2, burstWhenBatchFull (the
 *   fastest settings seen on this machine: BOSS_BEST, bench/lib/boss-peer.ts), plain jobs;
 * - graphile-worker 0.18: run() with the configuration of its own performance documentation,
 *   concurrentJobs 24, maxPoolSize 25, localQueue.size 500, completeJobBatchDelay 0,
 *   failJobBatchDelay 0 (GRAPHILE_PERFORMANCE_SETTINGS, bench/lib/graphile.ts);
 * all on one Postgres, in one run. Every line drains ROUNDS times at each worker count (once with
 * --quick); within a round and a worker count the lines run one after the other, in an order rotated
 * by one each time, so that drift of the shared machine lands on all of them alike. The report shows
 * each cell's median with its least and most.
 *
 * The direct lines drain in a database of their own whose tables are never analyzed (as a user's
 * freshly written tables are); the boss engine's session analyzes its tables with a sent backlog
 * in them (bench/lib/boss-engine.ts explains why pg-boss's fetch needs it), in another database,
 * with the peers in their own schemas beside it.
 *
 * What is timed is what the drain bench times (its header): rowfleet from the commit that makes the
 * backlog visible to the last completion, its workers started and registered before; the peers
 * from their first job started to their last completed, their processes started together at a
 * gate. No targets: the run's report (bench/lib/report.ts) draws the medians as
 * bench/results/drain-scaling.svg and tabulates them with the ratios against both peers.
 *
 *   npm run bench -- scaling [--quick] [--scale 0.05]
 */
import { readFileSync } from 'node:fs';
import { withBossEngine } from './lib/boss-engine.ts';
import { BOSS_BEST, BOSS_BEST_LABEL, drainBoss } from './lib/boss-peer.ts';
import { describeGraphileSettings, drainGraphile, GRAPHILE_PERFORMANCE_SETTINGS } from './lib/graphile.ts';
import { isMain, main, type Bench } from './lib/harness.ts';
import { CONCURRENCY_PER_BATCH, drainDirect, type DrainRow } from './lib/record-drain.ts';
import { drainSectionText, type ScalingData, type ScalingDrain, type ScalingLine } from './lib/report.ts';

const BACKLOG = 100_000;
const WORKER_COUNTS = [1, 2, 4] as const;
const ROUNDS = 3;
/** The tuned rowfleet lines' --batch; --concurrency is CONCURRENCY_PER_BATCH times it. */
const BATCH = 1000;

type Line = 'direct' | 'direct, batch 1000' | 'boss engine' | 'pg-boss' | 'graphile-worker';
/** The table's columns, the chart's legend, and the order of the drains at the first worker count. */
const LINES: readonly Line[] = ['direct', 'direct, batch 1000', 'boss engine', 'pg-boss', 'graphile-worker'];

export const scalingBench: Bench = {
  name: 'scaling',
  summary: `records/s draining ${BACKLOG.toLocaleString('en-US')} records with ${WORKER_COUNTS.join(' / ')} worker processes: rowfleet direct (default flags and --batch ${BATCH}) and boss engine vs pg-boss 12 and graphile-worker 0.18`,
  budgetMinutes: 40,
  async run(ctx) {
    const backlog = ctx.scaled(BACKLOG, 100);
    const rounds = ctx.quick ? 1 : ROUNDS;
    const fresh = await ctx.postgres.createDatabase('rowfleet_bench_scaling_fresh');
    const db = await ctx.postgres.createDatabase('rowfleet_bench_scaling');
    try {
      const drains = await withBossEngine(ctx, db.url, backlog, async (bossEngine) => {
        const drain: Record<Line, (processes: number) => Promise<DrainRow>> = {
          direct: (processes) => drainDirect(ctx, fresh.url, { processes, backlog }),
          'direct, batch 1000': (processes) => drainDirect(ctx, fresh.url, { processes, batch: BATCH, backlog }),
          'boss engine': (processes) => bossEngine.drain({ processes, batch: BATCH }),
          'pg-boss': async (processes) => (await drainBoss(ctx, db.url, [{ label: BOSS_BEST_LABEL, processes, backlog, options: BOSS_BEST }]))[0]!,
          'graphile-worker': (processes) => drainGraphile(ctx, db.url, { processes, backlog, settings: GRAPHILE_PERFORMANCE_SETTINGS }),
        };
        const drains: ScalingDrain[] = [];
        let turn = 0;
        for (let round = 1; round <= rounds; round++) {
          for (const processes of WORKER_COUNTS) {
            for (const line of rotate(LINES, turn++)) {
              ctx.progress(`round ${round} of ${rounds}: ${line}, ${processes} process${processes > 1 ? 'es' : ''}`);
              const { scenario, records, seconds, perSecond, notes } = await drain[line](processes);
              drains.push({ line, round, scenario, processes, records, seconds, perSecond, notes });
            }
          }
        }
        return drains;
      });
      const data: ScalingData = {
        backlog,
        workerCounts: [...WORKER_COUNTS],
        rounds,
        lines: lines(),
        scenarios: drains,
        order: 'within a round and a worker count the lines ran one after the other, in an order rotated by one each time',
      };
      const { settings } = ctx.postgres;
      const header = `scaling bench: postgres ${settings.server_version} (${ctx.postgres.origin}), fsync=${settings.fsync}, synchronous_commit=${settings.synchronous_commit}`;
      return { text: `${header}\n\n${drainSectionText(data)}`, data: { ...data } };
    } finally {
      await db.drop();
      await fresh.drop();
    }
  },
};

function lines(): ScalingLine[] {
  const tuned = `--handler noop --batch ${BATCH} --concurrency ${CONCURRENCY_PER_BATCH * BATCH}`;
  const peerTiming = 'from the first job started to the last completed, its processes started together at a gate';
  const directTiming = 'from the commit of the backlog (one INSERT and a NOTIFY) to the last completion, the workers started and registered before, on tables never analyzed';
  return [
    { line: 'direct', label: 'rowfleet direct, default flags', rowfleet: true, settings: '`rowfleet worker --engine direct --handler noop` per process (--batch 100, --concurrency 10)', timing: directTiming },
    { line: 'direct, batch 1000', label: `rowfleet direct, --batch ${BATCH}`, rowfleet: true, settings: `\`rowfleet worker --engine direct ${tuned}\` per process`, timing: directTiming },
    {
      line: 'boss engine',
      label: `rowfleet boss engine, --batch ${BATCH}`,
      rowfleet: true,
      settings: `\`rowfleet worker --engine boss ${tuned}\` per process; the jobs sent by the enqueue sweep in one transaction`,
      timing: "from the sweep's commit to the last completion, the workers started and registered before",
    },
    {
      line: 'pg-boss',
      label: `pg-boss ${installedVersion('pg-boss')}`,
      rowfleet: false,
      settings: `work() with ${Object.entries(BOSS_BEST).map(([name, value]) => `${name} ${value}`).join(', ')} (the fastest settings seen on this machine), no-op handler, in processes of its own`,
      timing: peerTiming,
    },
    {
      line: 'graphile-worker',
      label: `graphile-worker ${installedVersion('graphile-worker')}`,
      rowfleet: false,
      settings: `run() with the configuration of graphile-worker's performance documentation: ${describeGraphileSettings(GRAPHILE_PERFORMANCE_SETTINGS)} (preparedStatements at its default, true), no-op task, in processes of its own`,
      timing: `${peerTiming} (graphile-worker deletes completed jobs: each process notes its first start and last end)`,
    },
  ];
}

/** `items` rotated left by `by`: [a, b, c] by 1 is [b, c, a]. */
function rotate<T>(items: readonly T[], by: number): T[] {
  const k = by % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

function installedVersion(name: string): string {
  const { version } = JSON.parse(readFileSync(new URL(`../node_modules/${name}/package.json`, import.meta.url), 'utf8')) as { version: string };
  return version;
}

if (isMain(import.meta.url)) main([scalingBench]);
