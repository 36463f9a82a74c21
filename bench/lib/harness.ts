/**
 * What every bench shares: options, one Postgres for the run, progress on stderr, the final table on
 * stdout, and a JSON result file in bench/results/ (git-ignored). After the run, the report of the
 * benches that ran (bench/lib/report.ts): bench/results/report-<stamp>.md and, when the scaling
 * bench ran, its chart drain-scaling-<stamp>.svg, copied to report.md and drain-scaling.svg.
 * Benchmarks report, they do not fail a build: a missed target still exits 0; only a crash exits 1.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { UsageError } from '../../src/errors.ts';
import { startBenchPostgres, type BenchPostgres } from './postgres.ts';
import { machineInfo, writeReport, type BenchResult } from './report.ts';

export { renderTable } from './table.ts';

export interface Bench {
  name: string;
  summary: string;
  /**
   * How long the bench may run before the watchdog gives up on the whole run (default 10 min). A
   * budget, not an estimate: it only has to catch a hang.
   */
  budgetMinutes?: number;
  run(ctx: BenchContext): Promise<BenchReport>;
}

export interface BenchContext {
  postgres: BenchPostgres;
  /** Length of each measured window. */
  seconds: number;
  /** Length of the warm-up before each window. */
  warmupSeconds: number;
  /** `--quick`: benches with a matrix measure its headline rows only. */
  quick: boolean;
  /** `--scale F`: the factor record / job counts are multiplied by (1 for the real run). */
  scale: number;
  /** `n` records at this run's --scale, rounded, and never fewer than `min`. */
  scaled(n: number, min?: number): number;
  progress(line: string): void;
}

export interface BenchReport {
  /** Printed to stdout. */
  text: string;
  /** Written to the JSON result file, beside the run's settings. */
  data: Record<string, unknown>;
}

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const RESULTS_DIR = fileURLToPath(new URL('../results/', import.meta.url));
/**
 * A hung statement or server must not hold a CI machine: the run stops when one bench has run
 * longer than its budget (Bench.budgetMinutes, this by default).
 */
const DEFAULT_BUDGET_MINUTES = 10;

const USAGE = `usage: bench [names...] [--seconds N] [--warmup N] [--quick] [--scale F]
  --seconds N   measured window of each scenario (default 12)
  --warmup N    warm-up before each window (default 2)
  --quick       a smaller matrix, for benches that have one (headline rows only)
  --scale F     multiply the record / job counts of drain, drain-fresh, scaling, claim and autoscale
                by F (e.g. 0.02), to check them quickly; a scaled run's numbers are not results
                (upsert and wakeup are sized by --seconds; sweep is not scaled)
  writes bench/results/<bench>-<stamp>.json per bench, then the run's report: report-<stamp>.md,
  and drain-scaling-<stamp>.svg when scaling ran, copied to report.md and drain-scaling.svg`;

export async function runBenches(benches: readonly Bench[], argv: string[] = process.argv.slice(2)): Promise<void> {
  const { values, positionals } = parseOptions(argv);
  if (values.help) return void process.stdout.write(`${USAGE}\n  benches: ${benches.map((b) => b.name).join(', ')}\n`);
  const seconds = positiveNumber(values.seconds, '--seconds');
  const warmupSeconds = positiveNumber(values.warmup, '--warmup');
  const quick = values.quick === true;
  const scale = scaleFactor(values.scale);
  const unknown = positionals.filter((name) => !benches.some((bench) => bench.name === name));
  if (unknown.length > 0) throw new UsageError(`unknown bench ${unknown.join(', ')}; known: ${benches.map((b) => b.name).join(', ')}`);
  const selected = positionals.length === 0 ? benches : benches.filter((bench) => positionals.includes(bench.name));

  const progress = (line: string) => process.stderr.write(`[bench] ${line}\n`);
  const postgres = await startBenchPostgres(progress);
  let watchdog: NodeJS.Timeout | undefined;
  const arm = (bench: Bench) => {
    clearTimeout(watchdog);
    // Not shrunk with --scale: a scaled run's time goes to process startups, which do not scale.
    const minutes = bench.budgetMinutes ?? DEFAULT_BUDGET_MINUTES;
    watchdog = setTimeout(() => {
      progress(`${bench.name}: still running after ${minutes.toFixed(0)} min; giving up`);
      void postgres.stop().finally(() => process.exit(1));
    }, minutes * 60_000).unref();
  };
  // Ctrl-C: stop the embedded Postgres rather than leave it running detached.
  const onInterrupt = () => void postgres.stop().finally(() => process.exit(130));
  process.once('SIGINT', onInterrupt);
  const results: BenchResult[] = [];
  const command = commandLine(argv);
  try {
    const { settings } = postgres;
    progress(`postgres ${settings.server_version}, fsync=${settings.fsync}, synchronous_commit=${settings.synchronous_commit}, shared_buffers=${settings.shared_buffers}`);
    if (settings.fsync !== 'on' || settings.synchronous_commit === 'off') {
      progress('WARNING: durability is relaxed on this server; the numbers are not representative');
    }
    if (scale !== 1) progress(`--scale ${scale}: every count is multiplied by ${scale}; a check of the benches, not a result`);
    const scaled = (n: number, min = 1) => Math.max(min, Math.round(n * scale));
    for (const bench of selected) {
      const startedAt = new Date();
      arm(bench);
      progress(`${bench.name}: ${bench.summary}`);
      const report = await bench.run({ postgres, seconds, warmupSeconds, quick, scale, scaled, progress: (line) => progress(`${bench.name}: ${line}`) });
      process.stdout.write(`\n${report.text}\n`);
      const result: BenchResult = {
        bench: bench.name,
        startedAt: startedAt.toISOString(),
        finishedAt: new Date().toISOString(),
        command,
        code: codeVersion(),
        machine: machineInfo(),
        postgres: { origin: postgres.origin, ...settings },
        options: { seconds, warmupSeconds, quick, scale },
        ...report.data,
      };
      results.push(result);
      const file = await writeResult(bench.name, startedAt, result);
      progress(`${bench.name}: results in ${path.relative(process.cwd(), file)}`);
    }
    const written = await writeReport(results, RESULTS_DIR);
    progress(`report: ${written.map((file) => path.relative(process.cwd(), file)).join(', ')}`);
  } finally {
    clearTimeout(watchdog);
    process.off('SIGINT', onInterrupt);
    await postgres.stop();
  }
}

async function writeResult(name: string, startedAt: Date, data: BenchResult): Promise<string> {
  await mkdir(RESULTS_DIR, { recursive: true });
  const file = path.join(RESULTS_DIR, `${name}-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`);
  await writeFile(file, `${JSON.stringify(data, null, 2)}\n`);
  return file;
}

/**
 * The command that ran, for the report: `npm run bench -- <args>` when npm ran the bench script
 * (it passes the arguments through as given), otherwise node's own command line.
 */
function commandLine(argv: readonly string[]): string {
  const args = argv.map((arg) => (/^[\w./:=,@+-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`)).join(' ');
  if (process.env.npm_lifecycle_event === 'bench') return `npm run bench${args === '' ? '' : ` -- ${args}`}`;
  const script = process.argv[1] === undefined ? 'bench/run.ts' : path.relative(REPO, process.argv[1]);
  return ['node', ...process.execArgv, script, args].filter((part) => part !== '').join(' ');
}

/** Which code was measured: the commit, and whether the work tree differed from it. */
function codeVersion(): { commit: string; dirty: boolean } | undefined {
  try {
    const git = (...args: string[]) => execFileSync('git', args, { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return { commit: git('rev-parse', 'HEAD'), dirty: git('status', '--porcelain', '--', 'src', 'drizzle') !== '' };
  } catch {
    return undefined;
  }
}

function parseOptions(argv: string[]) {
  try {
    return parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        seconds: { type: 'string', default: '12' },
        warmup: { type: 'string', default: '2' },
        quick: { type: 'boolean' },
        scale: { type: 'string', default: '1' },
        help: { type: 'boolean' },
      },
    });
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\n${USAGE}`);
  }
}

function scaleFactor(raw: string | undefined): number {
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0 || value > 1) throw new UsageError(`--scale must be a number in (0, 1], got ${raw}`);
  return value;
}

function positiveNumber(raw: string | undefined, flag: string): number {
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new UsageError(`${flag} must be a positive number of seconds, got ${raw}`);
  return value;
}

/** Whether `moduleUrl` is the script node was started with (`node --import tsx bench/upsert.ts`). */
export function isMain(moduleUrl: string): boolean {
  return process.argv[1] !== undefined && moduleUrl === pathToFileURL(path.resolve(process.argv[1])).href;
}

/** Runs benches as a script's entry point: a usage error exits 2 with its message, a crash 1 with its stack. */
export function main(benches: readonly Bench[]): void {
  runBenches(benches).catch((err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`bench: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    process.stderr.write(`[bench] failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  });
}
