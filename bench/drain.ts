/**
 * How fast a fleet empties a backlog: records per second drained by `rowfleet worker --handler
 * noop` with each engine, beside two peers draining no-op jobs on the same Postgres in the same
 * run: pg-boss 12 and graphile-worker 0.18. And what the boss engine's row claim costs on top of
 * pg-boss's own fetch and complete.
 *
 * Parts (all by default; BENCH_DRAIN_PARTS=direct,engine,boss,peers picks some):
 * - direct: `--engine direct` for 1, 2 and 4 worker processes and claim batches of 10 / 100 / 1000,
 *   100,000 records.
 * - engine: `--engine boss` (the worker's own loop claims its free slots, at most --batch, once half
 *   a batch is free: the engine fetches that many `{id, version}` jobs with pg-boss fetch(), claims
 *   their records by ID (rowfleet.claim_ids), clears the marks of those it could not claim and
 *   completes the jobs, fetching again while full pages come back; each record is completed with a
 *   versioned compare-and-set), for 1 and 2 processes, batch 1000 (and 100 in the full run).
 * - boss: pg-boss alone, in its own schema: batchSize 1000 with localConcurrency 2, the fastest
 *   settings seen on this machine, plus burstWhenBatchFull, in one, two and four processes; without
 *   the burst and with its defaults, over a short window, for reference. And for each boss-engine
 *   scenario, pg-boss alone as the boss engine runs it: one loop per process of
 *   `fetch(queue, { batchSize: batch })` then `complete(queue, ids)` with nothing between, fetching
 *   again at once while full pages come back (bench/lib/boss-worker.ts, fetch mode), on the same
 *   `{id, version}` jobs with their singletonKey in a queue with rowfleet's process-queue options
 *   (policy short). The boss engine's rate against that one is the cost of the row claim and the
 *   row completion.
 * - peers (issue 10): rowfleet direct against graphile-worker (issue 10's settings, concurrentJobs 10,
 *   localQueue.size 500, completeJobBatchDelay 0, prepared statements on: GRAPHILE_DRAIN_SETTINGS in
 *   bench/lib/graphile.ts; not those of graphile-worker's performance documentation, which the
 *   scaling bench, bench/scaling.ts, runs at 1, 2 and 4 processes) and against
 *   pg-boss (batchSize 1000, localConcurrency 2, burstWhenBatchFull), at 1 and 2 processes, for
 *   50,000 and 100,000 records. rowfleet direct is the faster of batch 100 and batch 1000 (2 x batch
 *   handlers) at that size and process count; rows the other parts measured already are reused.
 * Targets: the direct engine's best rate >= 1.5x pg-boss's best (all parts); peers: direct >= 1.2x
 * graphile-worker and >= 1.6x pg-boss at the same process count and backlog.
 *
 * What is timed. Direct: the workers start on an empty table and are left to register (process
 * startup is not part of a drain); the backlog is then committed in one INSERT with a NOTIFY, and
 * the drain runs from that commit to the last completion (max(processed_at)). Boss engine: the
 * backlog is written first (the workers see no job, so no work), the workers start and register,
 * then the enqueue sweep sends the jobs in one transaction (its NOTIFY wakes the workers); the drain
 * runs from the sweep's commit to the last completion, as direct's runs from the INSERT's. The
 * sweep itself is timed apart: before the drain (one transaction), and once alone at the
 * configured ROWFLEET_SWEEP_BATCH, as `rowfleet` runs it. pg-boss and graphile-worker: their jobs
 * are inserted first, their worker processes start, connect and wait at a start gate opened for
 * all at once (bench/lib/gate.ts); the drain runs from the first job started to the last completed
 * (pg-boss: started_on / completed_on; graphile-worker, which deletes its completed jobs: times its
 * no-op task notes), so the peers pay neither startup nor a poll interval.
 *
 *   npm run bench -- drain [--quick] [--scale 0.02]
 */
import { describeSweep, withBossEngine } from './lib/boss-engine.ts';
import { BOSS_BEST, BOSS_BEST_LABEL, drainBoss, type BossVariant } from './lib/boss-peer.ts';
import { describeGraphileSettings, drainGraphile, GRAPHILE_DRAIN_SETTINGS } from './lib/graphile.ts';
import { isMain, main, renderTable, type Bench, type BenchContext } from './lib/harness.ts';
import { CONCURRENCY_PER_BATCH, drainDirect, microsPerRecord, type DrainRow, type SweepTiming } from './lib/record-drain.ts';

const BACKLOG = 100_000;
const WORKER_COUNTS = [1, 2, 4] as const;
const BATCH_SIZES = [10, 100, 1000] as const;
/** `--quick`: the batch that matters most in production, and the largest, at every process count. */
const QUICK_BATCH_SIZES = [100, 1000] as const;
const TARGET_RATIO = 1.5;

/** The peers part: backlogs, process counts, and the direct batches whose faster one is compared. */
const PEER_BACKLOGS = [50_000, 100_000] as const;
const PEER_PROCESSES = [1, 2] as const;
const PEER_DIRECT_BATCHES = [100, 1000] as const;
const PEER_TARGETS = { graphile: 1.2, boss: 1.6 } as const;

const PARTS = ['direct', 'engine', 'boss', 'peers'] as const;
type Part = (typeof PARTS)[number];

interface BossEngineScenario {
  processes: number;
  batch: number;
  /** Left out of `--quick`. */
  full?: boolean;
}

/**
 * Batch 1000 at 1 and 2 processes; the full run adds batch 100. Each scenario is run twice (the
 * engine, then pg-boss alone with its fetch loop), so the matrix is kept small.
 */
const BOSS_ENGINE_SCENARIOS: readonly BossEngineScenario[] = [
  { processes: 1, batch: 1000 },
  { processes: 2, batch: 1000 },
  { processes: 1, batch: 100, full: true },
  { processes: 2, batch: 100, full: true },
];

function bossVariants(backlog: number): BossVariant[] {
  return [
    ...WORKER_COUNTS.map((processes) => ({ label: BOSS_BEST_LABEL, processes, backlog, options: BOSS_BEST })),
    { label: 'pg-boss, batchSize 1000, localConcurrency 2, no burst (2 s poll)', processes: 1, backlog, options: { batchSize: 1000, localConcurrency: 2 }, windowed: true, full: true },
    { label: 'pg-boss, default work() options', processes: 1, backlog, options: {}, windowed: true, full: true },
  ];
}

export const drainBench: Bench = {
  name: 'drain',
  summary: `records/s draining a backlog: direct engine (1/2/4 processes x batch 10/100/1000) and boss engine vs pg-boss 12 and graphile-worker 0.18`,
  budgetMinutes: 25,
  async run(ctx) {
    const parts = selectedParts();
    const backlog = ctx.scaled(BACKLOG, 100);
    const db = await ctx.postgres.createDatabase('rowfleet_bench_drain');
    try {
      const rows: DrainRow[] = [];
      if (parts.has('direct')) {
        for (const batch of ctx.quick ? QUICK_BATCH_SIZES : BATCH_SIZES) {
          for (const processes of WORKER_COUNTS) rows.push(await drainDirect(ctx, db.url, { processes, batch, backlog }));
        }
      }
      const engineScenarios = parts.has('engine') ? BOSS_ENGINE_SCENARIOS.filter((s) => !(ctx.quick && s.full)) : [];
      let sweepAlone: SweepTiming | undefined;
      if (engineScenarios.length > 0) {
        const engine = await drainBossEngine(ctx, db.url, backlog, engineScenarios);
        rows.push(...engine.rows);
        sweepAlone = engine.sweepAlone;
      }
      const variants = [
        ...(parts.has('boss') ? bossVariants(backlog).filter((v) => !(ctx.quick && v.full)) : []),
        ...engineScenarios.map((s) => bossAloneAsEngine(s, backlog)),
      ];
      if (variants.length > 0) rows.push(...(await drainBoss(ctx, db.url, variants)));
      const peers = parts.has('peers') ? await drainPeers(ctx, db.url, rows) : [];

      const bossBest = best(rows.filter((row) => row.engine === 'pg-boss' && row.backlog === backlog));
      const directBest = best(rows.filter((row) => row.engine === 'direct' && row.backlog === backlog));
      for (const row of rows) row.ratio = bossBest !== undefined && bossBest.perSecond > 0 ? row.perSecond / bossBest.perSecond : undefined;
      const verdict: Verdict | undefined =
        bossBest === undefined || directBest === undefined
          ? undefined
          : {
              target: `direct best >= ${TARGET_RATIO}x pg-boss best`,
              directBest: { scenario: directBest.scenario, perSecond: directBest.perSecond },
              bossBest: { scenario: bossBest.scenario, processes: bossBest.processes, perSecond: bossBest.perSecond },
              ratio: directBest.ratio ?? 0,
              pass: (directBest.ratio ?? 0) >= TARGET_RATIO,
            };
      const claimCosts = claimCostsOf(rows);
      return {
        text: report(ctx, backlog, rows, verdict, peers, claimCosts, sweepAlone),
        data: { backlog, parts: [...parts], verdict, peers, peerTargets: PEER_TARGETS, claimCosts, sweepAlone, scenarios: rows },
      };
    } finally {
      await db.drop();
    }
  },
};

function selectedParts(): Set<Part> {
  const raw = process.env.BENCH_DRAIN_PARTS?.trim();
  if (!raw) return new Set(PARTS);
  const names = raw.split(',').map((name) => name.trim());
  const unknown = names.filter((name) => !(PARTS as readonly string[]).includes(name));
  if (unknown.length > 0) throw new Error(`BENCH_DRAIN_PARTS: unknown part ${unknown.join(', ')}; known: ${PARTS.join(', ')}`);
  return new Set(names as Part[]);
}

/** One line of the peers table: one backlog and process count. */
interface PeerComparison {
  backlog: number;
  processes: number;
  direct: { scenario: string; batch: number; perSecond: number };
  graphile: { perSecond: number };
  boss: { perSecond: number };
  vsGraphile: number;
  vsBoss: number;
  graphileMet: boolean;
  bossMet: boolean;
}

/**
 * rowfleet direct, graphile-worker and pg-boss at each backlog and process count, one after the
 * other so that a neighbour's load lands on all three alike. Rows already measured at the same
 * backlog and settings (the direct and boss parts at the main backlog) are reused, not run again.
 */
async function drainPeers(ctx: BenchContext, url: string, rows: DrainRow[]): Promise<PeerComparison[]> {
  const comparisons: PeerComparison[] = [];
  for (const fullBacklog of PEER_BACKLOGS) {
    const backlog = ctx.scaled(fullBacklog, 100);
    for (const processes of PEER_PROCESSES) {
      const direct: DrainRow[] = [];
      for (const batch of PEER_DIRECT_BATCHES) {
        const done = rows.find((r) => r.engine === 'direct' && r.backlog === backlog && r.processes === processes && r.batch === batch);
        direct.push(done ?? push(rows, await drainDirect(ctx, url, { processes, batch, backlog })));
      }
      const graphile = push(rows, await drainGraphile(ctx, url, { processes, backlog }));
      const boss =
        rows.find((r) => r.engine === 'pg-boss' && r.backlog === backlog && r.processes === processes && r.options === BOSS_BEST && r.match === undefined) ??
        push(rows, (await drainBoss(ctx, url, [{ label: BOSS_BEST_LABEL, processes, backlog, options: BOSS_BEST }]))[0]!);
      const fastest = best(direct)!;
      const vsGraphile = graphile.perSecond > 0 ? fastest.perSecond / graphile.perSecond : 0;
      const vsBoss = boss.perSecond > 0 ? fastest.perSecond / boss.perSecond : 0;
      comparisons.push({
        backlog,
        processes,
        direct: { scenario: fastest.scenario, batch: fastest.batch, perSecond: fastest.perSecond },
        graphile: { perSecond: graphile.perSecond },
        boss: { perSecond: boss.perSecond },
        vsGraphile,
        vsBoss,
        graphileMet: vsGraphile >= PEER_TARGETS.graphile,
        bossMet: vsBoss >= PEER_TARGETS.boss,
      });
    }
  }
  return comparisons;
}

function push(rows: DrainRow[], row: DrainRow): DrainRow {
  rows.push(row);
  return row;
}

/** The boss-engine scenarios, and the sweep timed alone (bench/lib/boss-engine.ts). */
async function drainBossEngine(ctx: BenchContext, url: string, backlog: number, scenarios: readonly BossEngineScenario[]): Promise<{ rows: DrainRow[]; sweepAlone: SweepTiming }> {
  return withBossEngine(ctx, url, backlog, async (engine) => {
    const rows: DrainRow[] = [];
    for (const { processes, batch } of scenarios) rows.push(await engine.drain({ processes, batch, match: engineMatch(processes, batch) }));
    return { rows, sweepAlone: engine.sweepAlone };
  });
}

/** Pairs a boss-engine row with its pg-boss-alone baseline. */
function engineMatch(processes: number, batch: number): string {
  return `${processes} x batch ${batch}`;
}

/**
 * pg-boss alone doing the boss engine's share of a scenario (src/worker/engine.ts): one loop per
 * process of fetch(batchSize = the batch) and complete(ids), fetching again at once after a full
 * page, on the same jobs in a queue with the same options; no row claim, no row completion.
 */
function bossAloneAsEngine({ processes, batch, full }: BossEngineScenario, backlog: number): BossVariant {
  return {
    label: `pg-boss as the boss engine runs it, fetch ${batch} + complete loop`,
    processes,
    backlog,
    options: { batchSize: batch },
    fetchLoop: true,
    recordJobs: true,
    match: engineMatch(processes, batch),
    ...(full !== undefined && { full }),
  };
}

function best(rows: readonly DrainRow[]): DrainRow | undefined {
  return rows.length === 0 ? undefined : rows.reduce((a, b) => (b.perSecond > a.perSecond ? b : a));
}

interface Verdict {
  target: string;
  directBest: { scenario: string; perSecond: number };
  bossBest: { scenario: string; processes: number; perSecond: number };
  ratio: number;
  pass: boolean;
}

/** What the boss engine's row claim and row completion add to pg-boss's own fetch and complete. */
interface ClaimCost {
  scenario: string;
  /** Records/s, boss engine. */
  engine: number;
  /** Jobs/s, pg-boss alone running the engine's fetch and complete loop on the same jobs. */
  alone: number;
  engineVsAlone: number;
  engineVsBossBest: number;
  /** Records/s, direct engine with the same processes and batch (when measured). */
  direct?: number;
  engineVsDirect?: number;
  /** Wall time per record: 1/engine - 1/alone, in µs (equally, ms per 1,000 records). */
  addedMicros: number;
  /** CPU per record, workers and Postgres together, in µs. */
  cpuMicros: { engine: number; alone: number };
}

function claimCostsOf(rows: readonly DrainRow[]): ClaimCost[] {
  return rows
    .filter((row) => row.engine === 'boss engine' && row.perSecond > 0)
    .flatMap((row) => {
      const alone = rows.find((other) => other.engine === 'pg-boss' && other.match === row.match);
      if (alone === undefined || alone.perSecond === 0) return [];
      const direct = rows.find((other) => other.engine === 'direct' && other.backlog === row.backlog && other.processes === row.processes && other.batch === row.batch);
      return [{
        scenario: row.scenario,
        engine: row.perSecond,
        alone: alone.perSecond,
        engineVsAlone: row.perSecond / alone.perSecond,
        engineVsBossBest: row.ratio ?? 0,
        ...(direct !== undefined && direct.perSecond > 0 && { direct: direct.perSecond, engineVsDirect: row.perSecond / direct.perSecond }),
        addedMicros: 1e6 / row.perSecond - 1e6 / alone.perSecond,
        cpuMicros: { engine: cpuMicrosPerRecord(row), alone: cpuMicrosPerRecord(alone) },
      }];
    });
}

function cpuMicrosPerRecord(row: DrainRow): number {
  return Math.round((((row.cpu.workers ?? 0) + (row.cpu.postgres ?? 0)) / 100) * (1e6 / row.perSecond));
}

const met = (ok: boolean) => (ok ? 'met' : 'missed');
const rate = (n: number) => n.toLocaleString('en-US');

function report(
  ctx: BenchContext,
  backlog: number,
  rows: readonly DrainRow[],
  verdict: Verdict | undefined,
  peers: readonly PeerComparison[],
  claimCosts: readonly ClaimCost[],
  sweepAlone: SweepTiming | undefined,
): string {
  const { settings } = ctx.postgres;
  const table = renderTable(
    'lrrrrrrrrrl',
    ['scenario', 'backlog', 'procs', 'batch', 'conc.', 'records/s', 'vs pg-boss best', 'seconds', 'txns/1k records', 'CPU µs/record workers / pg', 'CPU % bench / workers / pg / irq / other / idle'],
    rows.map((row) => [
      row.scenario,
      rate(row.backlog),
      String(row.processes),
      String(row.batch),
      String(row.concurrency ?? 1),
      rate(row.perSecond),
      row.ratio === undefined ? '' : `${row.ratio.toFixed(2)}x`,
      row.seconds.toFixed(2),
      row.commitsPer1k === undefined ? '-' : String(row.commitsPer1k),
      ['workers', 'postgres'].map((group) => microsPerRecord(row, group)).join(' / '),
      ['bench', 'workers', 'postgres', 'irq', 'other', 'idle'].map((group) => row.cpu[group] ?? '-').join(' / '),
    ]),
  );
  const sections: string[] = [];
  if (verdict !== undefined) {
    sections.push(
      renderTable('lllrl', ['target', 'direct best', 'pg-boss best', 'ratio', 'result'], [[
        verdict.target,
        `${rate(verdict.directBest.perSecond)}/s (${verdict.directBest.scenario})`,
        `${rate(verdict.bossBest.perSecond)}/s (${verdict.bossBest.scenario})`,
        `${verdict.ratio.toFixed(2)}x`,
        met(verdict.pass),
      ]]),
    );
  }
  if (peers.length > 0) {
    sections.push(
      [
        `peers: rowfleet direct (the faster of batch ${PEER_DIRECT_BATCHES.join(' / ')}) against graphile-worker 0.18 (${describeGraphileSettings(GRAPHILE_DRAIN_SETTINGS)}) and pg-boss (batchSize 1000, localConcurrency 2, burstWhenBatchFull), same process count and backlog`,
        '',
        renderTable(
          'rrlrrrlrl',
          ['backlog', 'procs', 'rowfleet direct', 'graphile-worker', 'pg-boss', `vs graphile (target >= ${PEER_TARGETS.graphile}x)`, 'result', `vs pg-boss (target >= ${PEER_TARGETS.boss}x)`, 'result'],
          peers.map((p) => [
            rate(p.backlog),
            String(p.processes),
            `${rate(p.direct.perSecond)}/s (batch ${p.direct.batch})`,
            `${rate(p.graphile.perSecond)}/s`,
            `${rate(p.boss.perSecond)}/s`,
            `${p.vsGraphile.toFixed(2)}x`,
            met(p.graphileMet),
            `${p.vsBoss.toFixed(2)}x`,
            met(p.bossMet),
          ]),
        ),
      ].join('\n'),
    );
  }
  if (claimCosts.length > 0) {
    sections.push(
      [
        "the cost of the row claim: the boss engine against pg-boss alone running the engine's fetch and complete loop on the same jobs (same run, same Postgres);",
        'row claim adds = 1/engine rate - 1/pg-boss-alone rate (wall time per record, all processes together); CPU: workers + Postgres per record',
        '',
        renderTable(
          'lrrrrrrrr',
          ['boss engine', 'records/s', 'pg-boss alone, same fetch loop', 'engine / alone', 'engine / pg-boss best', 'direct, same procs & batch', 'engine / direct', 'row claim adds, µs/record (ms/1k)', 'CPU µs/record engine / alone / added'],
          claimCosts.map((cost) => [
            cost.scenario,
            rate(cost.engine),
            `${rate(cost.alone)}/s`,
            `${cost.engineVsAlone.toFixed(2)}x`,
            `${cost.engineVsBossBest.toFixed(2)}x`,
            cost.direct === undefined ? '-' : `${rate(cost.direct)}/s`,
            cost.engineVsDirect === undefined ? '-' : `${cost.engineVsDirect.toFixed(2)}x`,
            cost.addedMicros.toFixed(1),
            `${cost.cpuMicros.engine} / ${cost.cpuMicros.alone} / ${cost.cpuMicros.engine - cost.cpuMicros.alone}`,
          ]),
        ),
      ].join('\n'),
    );
  }
  const sweeps = rows.flatMap((row) => (row.sweep === undefined ? [] : [row.sweep]));
  const lines = [
    ...(sweepAlone !== undefined ? [`sweep alone (ROWFLEET_SWEEP_BATCH, no worker running): ${describeSweep(sweepAlone)}`] : []),
    ...(sweeps.length > 0 ? [`sweep before each boss-engine drain (not in its time): ${sweepRange(sweeps)}`] : []),
    ...rows.flatMap((row) => row.notes.map((note) => `note: ${row.scenario}: ${note}`)),
  ];
  const header = [
    `drain bench: postgres ${settings.server_version} (${ctx.postgres.origin}), fsync=${settings.fsync}, synchronous_commit=${settings.synchronous_commit}; backlog ${rate(backlog)} records / jobs (peers: ${PEER_BACKLOGS.map((n) => rate(ctx.scaled(n, 100))).join(' and ')}), no-op handlers`,
    `direct: \`rowfleet worker --engine direct --handler noop --batch B --concurrency ${CONCURRENCY_PER_BATCH}xB\` per process, timed from the backlog commit to the last completion;`,
    `boss engine: \`rowfleet worker --engine boss --handler noop --batch B --concurrency ${CONCURRENCY_PER_BATCH}xB\` per process (pg-boss fetch() of the free slots, at most B, then claim_ids and complete()), timed from the sweep's commit to the last completion;`,
    'pg-boss: work() in its own processes (conc. = localConcurrency), started together, timed from the first job started to the last completed; windowed rows: jobs completed in the first seconds;',
    "  \"as the boss engine runs it\": one loop per process of fetch(batchSize B) and complete(ids), again at once after a full page, on the boss engine's {id, version} jobs and queue options: the boss engine without the row claim;",
    'graphile-worker: run() in its own processes (batch = localQueue.size, conc. = concurrentJobs), started together, timed from the first task started to the last returned;',
    "txns/1k records: transactions the workers committed per 1,000 records (pg_stat_database; ~ +-1 s of the bench's polling); CPU: % of one core",
  ].join('\n');
  return [header, '', table, ...sections.flatMap((section) => ['', section]), ...(lines.length > 0 ? ['', ...lines] : [])].join('\n');
}

function sweepRange(sweeps: readonly SweepTiming[]): string {
  const ms = sweeps.map((s) => s.ms);
  const rates = sweeps.map((s) => (s.jobs * 1000) / s.ms);
  const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
  const jobs = sweeps[0]!.jobs;
  return `${jobs.toLocaleString('en-US')} jobs in one transaction, ${fmt(Math.min(...ms))}-${fmt(Math.max(...ms))} ms = ${fmt(Math.min(...rates))}-${fmt(Math.max(...rates))} jobs/s`;
}

if (isMain(import.meta.url)) main([drainBench]);
