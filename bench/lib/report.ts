/**
 * The benchmark report. After every run (`npm run bench`, all benches or a selection) the harness
 * writes, in bench/results/ (git-ignored):
 * - report-<stamp>.md: the machine, the date and the command, then drain rate against worker count
 *   (the scaling bench), upsert throughput (upsert), wake-up latency (wakeup) and claim cost against
 *   backlog (claim); a section whose bench did not run says so and how to run it;
 * - drain-scaling-<stamp>.svg, when the scaling bench ran: its rates as a line chart (vega-lite);
 * - report.md and drain-scaling.svg: the same, under names that stay put (report.md links
 *   drain-scaling.svg, report-<stamp>.md its own chart). A run without the scaling bench leaves an
 *   older drain-scaling.svg in place; its report.md then does not link it.
 * <stamp> is the first bench's start, as in its JSON result's name.
 *
 * Everything comes from the result objects the harness writes as JSON (the run's settings and each
 * bench's BenchReport.data), so a report can also be rebuilt from result files, of one run or
 * several (their commands and dates are all listed):
 *
 *   node --import tsx bench/rebuild-report.ts bench/results/scaling-<stamp>.json [more.json ...]
 */
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, release, totalmem } from 'node:os';
import path from 'node:path';
import type { TopLevelSpec } from 'vega-lite';
import { plural, type DrainRow } from './record-drain.ts';
import { renderTable } from './table.ts';

/** The machine a result was measured on (BenchResult.machine). */
export interface Machine {
  /** Logical CPUs. */
  cpus: number;
  cpuModel?: string;
  node: string;
  platform: string;
  ramBytes?: number;
  /** PRETTY_NAME of /etc/os-release. */
  os?: string;
  /** The kernel's release (os.release()). */
  kernel?: string;
}

/** One bench's JSON result, as the harness writes it: the run's settings, then its BenchReport.data. */
export interface BenchResult {
  bench: string;
  startedAt: string;
  finishedAt: string;
  /** The command line of the run (older results lack it). */
  command?: string;
  code?: { commit: string; dirty: boolean } | undefined;
  machine: Machine;
  postgres: { origin: string } & Record<string, string>;
  options: { seconds: number; warmupSeconds: number; quick: boolean; scale: number };
  [field: string]: unknown;
}

/** One line of the scaling bench (an engine with its settings), for the report and the chart's legend. */
export interface ScalingLine {
  line: string;
  /** The legend's name: `rowfleet direct, default flags`, `pg-boss 12.38.0`, ... */
  label: string;
  /** rowfleet's own (its ratios against the peers are tabulated), or a peer. */
  rowfleet: boolean;
  /** Its command or options. */
  settings: string;
  /** What its drain time spans. */
  timing: string;
}

/** One drain of the scaling bench. */
export type ScalingDrain = Pick<DrainRow, 'scenario' | 'processes' | 'records' | 'seconds' | 'perSecond' | 'notes'> & { line: string; round: number };

/** The scaling bench's BenchReport.data. */
export interface ScalingData {
  /** Records (or jobs) per drain. */
  backlog: number;
  workerCounts: number[];
  /** Every line drained this many times at each worker count; the report shows medians. */
  rounds: number;
  /** In the order of the table's columns and the chart's legend. */
  lines: ScalingLine[];
  /** Every drain, in the order they ran. */
  scenarios: ScalingDrain[];
  /** How the runs were ordered, in words. */
  order: string;
}

/** What the report reads of the upsert bench's data. */
interface UpsertData {
  scenarios: { scenario: string; concurrency: number; measurement: { messagesPerSecond: number; p50Ms: number; p99Ms: number }; ratio?: number; target?: string; pass?: boolean }[];
}

/** What the report reads of the wakeup bench's data. */
interface WakeupData {
  /** How each engine was run, by engine name. */
  setup?: Record<string, string>;
  scenarios: { engine: string; rate: number; achievedRate: number; missing: number; commitToStart: { count: number; p50Ms: number; p99Ms: number } }[];
}

/** What the report reads of the claim bench's data. */
interface ClaimData {
  history: number;
  flatRatio: number;
  sizes: number[];
  scenarios: { state: string; backlog: number; batch: number; p50Ms: number; p99Ms: number; ratio?: number }[];
}

const SCALING_CHART_FILE = 'drain-scaling';
const COLORS = ['#1f5fa8', '#7fb2e5', '#4fa3d9', '#e8710a', '#c43c39'];
const SHAPES = ['circle', 'cross', 'square', 'triangle-up', 'diamond'];
const REPORT_FILE = 'report';

/** This machine, for the JSON results and the report's header. */
export function machineInfo(): Machine {
  return {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    ramBytes: totalmem(),
    os: osName(),
    kernel: release(),
  };
}

function osName(): string | undefined {
  try {
    const text = readFileSync('/etc/os-release', 'utf8');
    const value = /^PRETTY_NAME=(.*)$/m.exec(text)?.[1]?.trim();
    return value?.replace(/^(["'])(.*)\1$/, '$2');
  } catch {
    return undefined;
  }
}

/**
 * Writes the report of `results` (and the chart, when the scaling bench is among them) to `dir`,
 * stamped and under the stable names; returns the files written, stamped ones first.
 */
export async function writeReport(results: readonly BenchResult[], dir: string): Promise<string[]> {
  if (results.length === 0) return [];
  const stamp = [...results].sort(byStart)[0]!.startedAt.replace(/[:.]/g, '-');
  const scaling = results.findLast((result) => result.bench === 'scaling');
  const svg = scaling === undefined ? undefined : await renderDrainChart(scaling);
  const files: { name: string; text: string }[] = [
    { name: `${REPORT_FILE}-${stamp}.md`, text: renderReport(results, { chart: svg === undefined ? undefined : `${SCALING_CHART_FILE}-${stamp}.svg` }) },
    ...(svg === undefined ? [] : [{ name: `${SCALING_CHART_FILE}-${stamp}.svg`, text: svg }]),
    { name: `${REPORT_FILE}.md`, text: renderReport(results, { chart: svg === undefined ? undefined : `${SCALING_CHART_FILE}.svg` }) },
    ...(svg === undefined ? [] : [{ name: `${SCALING_CHART_FILE}.svg`, text: svg }]),
  ];
  await mkdir(dir, { recursive: true });
  for (const file of files) await writeFile(path.join(dir, file.name), file.text);
  return files.map((file) => path.join(dir, file.name));
}

/** The markdown report; `chart` is the chart's file name, relative to the report (none: not linked). */
export function renderReport(results: readonly BenchResult[], { chart }: { chart?: string | undefined } = {}): string {
  const latest = (name: string) => results.findLast((result) => result.bench === name);
  const sections = [
    section('Drain rate against worker count', 'scaling', latest('scaling'), (result) => drainSection(result as unknown as ScalingData, chart)),
    section('Upsert throughput', 'upsert', latest('upsert'), upsertSection),
    section('Wake-up latency', 'wakeup', latest('wakeup'), wakeupSection),
    section('Claim cost against backlog', 'claim', latest('claim'), claimSection),
  ];
  const reported = new Set(['scaling', 'upsert', 'wakeup', 'claim']);
  const others = [...new Set(results.map((result) => result.bench).filter((name) => !reported.has(name)))];
  return [
    '# rowfleet benchmark report',
    '',
    ...header(results),
    ...sections.flatMap((lines) => ['', ...lines]),
    ...(others.length > 0
      ? ['', `Also run, not summarized here: ${others.map((name) => `\`${name}\``).join(', ')} (their tables are in the run's output, their data in bench/results/<bench>-<stamp>.json).`]
      : []),
    '',
  ].join('\n');
}

function header(results: readonly BenchResult[]): string[] {
  const sorted = [...results].sort(byStart);
  const first = sorted[0]!;
  const { machine, postgres, code } = first;
  const ram = machine.ramBytes === undefined ? undefined : `${(machine.ramBytes / 2 ** 30).toFixed(1)} GiB RAM`;
  const cpu = `${machine.cpuModel ?? 'unknown CPU'}, ${machine.cpus} logical CPU${machine.cpus === 1 ? '' : 's'}`;
  const os = [machine.os ?? machine.platform, machine.kernel === undefined ? undefined : `kernel ${machine.kernel}`].filter(Boolean).join(', ');
  const origin = postgres.origin === 'embedded' ? 'embedded (a fresh server started for the run)' : 'DATABASE_URL';
  const commands = [...new Set(sorted.map((result) => result.command ?? '(not recorded)'))];
  // --quick only leaves rows out (each section shows its options); --scale shrinks what is measured.
  const scaled = sorted.filter((result) => result.options.scale !== 1);
  const lines = [
    `- **Date:** ${span(sorted)}`,
    `- **Machine:** ${[cpu, ram, os].filter(Boolean).join('; ')}`,
    `- **Node:** ${machine.node}`,
    `- **Postgres:** ${postgres.server_version ?? '?'}, ${origin}; fsync=${postgres.fsync ?? '?'}, synchronous_commit=${postgres.synchronous_commit ?? '?'}, shared_buffers=${postgres.shared_buffers ?? '?'}`,
    `- **Command${commands.length > 1 ? 's' : ''}:** ${commands.map((command) => `\`${command}\``).join(', ')}`,
    ...(code === undefined ? [] : [`- **Code:** commit ${code.commit.slice(0, 12)}${code.dirty ? ' (src/ or drizzle/ differed from it)' : ''}`]),
  ];
  if (new Set(sorted.map((result) => `${result.machine.cpuModel}|${result.machine.cpus}|${result.postgres.server_version}|${result.postgres.origin}`)).size > 1) {
    lines.push('- **Note:** these results come from more than one machine or server; the header shows the first.');
  }
  if (sorted.some((result) => result.postgres.fsync !== 'on' || result.postgres.synchronous_commit === 'off')) {
    lines.push('- **Warning:** durability was relaxed on this server; the numbers are not representative.');
  }
  if (scaled.length > 0) {
    const byOptions = Map.groupBy(scaled, options);
    const which = [...byOptions].map(([flags, group]) => `${group.map((result) => `\`${result.bench}\``).join(', ')} ran with ${flags}`).join('; ');
    lines.push(`- **Warning:** ${which}: a check of the benches, not a result.`);
  }
  return lines;
}

function section(title: string, bench: string, result: BenchResult | undefined, body: (result: BenchResult) => string[]): string[] {
  if (result === undefined) return [`## ${title}`, '', `not run in this report (\`npm run bench -- ${bench}\`)`];
  return [`## ${title}`, '', `From \`${bench}\`, ${span([result])}, ${options(result)}.`, '', ...body(result)];
}

/** The scaling bench's table and settings, as its own output prints them (no chart). */
export function drainSectionText(data: ScalingData): string {
  return drainSection(data, undefined).join('\n');
}

/** The median, the least and the most of a line's drains at one worker count, and whether one has a note. */
function cellOf(data: ScalingData, line: string, processes: number): { median: number; min: number; max: number; noted: boolean } | undefined {
  const drains = data.scenarios.filter((row) => row.line === line && row.processes === processes);
  if (drains.length === 0) return undefined;
  const rates = drains.map((row) => row.perSecond).sort((a, b) => a - b);
  const mid = Math.floor(rates.length / 2);
  const median = rates.length % 2 === 1 ? rates[mid]! : Math.round((rates[mid - 1]! + rates[mid]!) / 2);
  return { median, min: rates[0]!, max: rates.at(-1)!, noted: drains.some((row) => row.notes.length > 0) };
}

function drainSection(data: ScalingData, chart: string | undefined): string[] {
  const median = (line: string, processes: number) => cellOf(data, line, processes)?.median;
  // A rate with a note (a busy neighbour, autovacuum, a timeout) is marked, so that it travels with the table.
  const cell = (line: string, processes: number) => {
    const c = cellOf(data, line, processes);
    if (c === undefined) return '-';
    const range = data.rounds > 1 ? ` (${formatNumber(c.min)}–${formatNumber(c.max)})` : '';
    return `${formatNumber(c.median)}${range}${c.noted ? ' *' : ''}`;
  };
  const label = (line: string) => data.lines.find((l) => l.line === line)?.label ?? line;
  const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined || b === 0 ? '-' : `${(a / b).toFixed(2)}x`);
  const mine = data.lines.filter((l) => l.rowfleet);
  const peers = data.lines.filter((l) => !l.rowfleet);
  const rates = renderTable(
    `r${'r'.repeat(data.lines.length)}`,
    ['worker processes', ...data.lines.map((l) => `${l.label}, records/s`)],
    data.workerCounts.map((processes) => [String(processes), ...data.lines.map((l) => cell(l.line, processes))]),
  );
  const ratios = renderTable(
    `l${'r'.repeat(data.workerCounts.length)}`,
    ['median against median', ...data.workerCounts.map((n) => plural(n))],
    mine.flatMap((m) => peers.map((peer) => [`${m.label} / ${peer.label}`, ...data.workerCounts.map((n) => ratio(median(m.line, n), median(peer.line, n)))])),
  );
  const first = data.workerCounts[0];
  const last = data.workerCounts.at(-1);
  const growth =
    first === undefined || last === undefined || first === last
      ? []
      : [`From ${plural(first)} to ${plural(last)}: ${data.lines.map((l) => `${l.label} ${ratio(median(l.line, last), median(l.line, first))}`).join(', ')}.`];
  const notes = data.scenarios.flatMap((row) => row.notes.map((note) => `- ${label(row.line)}, ${plural(row.processes)}${data.rounds > 1 ? `, round ${row.round}` : ''}: ${note}`));
  const each = data.rounds > 1 ? `each line drained ${data.rounds} times at each worker count, the median shown with the least and the most in parentheses` : 'each line drained once at each worker count';
  return [
    `${formatNumber(data.backlog)} records (jobs) per drain, no-op handlers, drained by ${data.workerCounts.join(', ').replace(/, (\d+)$/, ' and $1')} worker processes, every line on the same Postgres in this one run; ${each}; ${data.order}. Higher is better.`,
    '',
    ...(chart === undefined ? [] : [`![Drain rate against worker count](${chart})`, '']),
    rates,
    '',
    ...(notes.length > 0 ? ['\\* a drain of that cell has a note below.', ''] : []),
    ratios,
    '',
    ...growth.flatMap((line) => [line, '']),
    'How each line ran:',
    '',
    ...data.lines.map((l) => `- **${l.label}:** ${l.settings}. Timed ${l.timing}.`),
    ...(notes.length > 0 ? ['', 'Notes (from the drains\' own readings; CPU "other" is every process outside the bench, its workers and Postgres):', '', ...notes] : []),
  ];
}

function upsertSection(result: BenchResult): string[] {
  const data = result as unknown as BenchResult & UpsertData;
  return [
    'Messages/s through rowfleet\'s versioned upsert (full audit) against the bare `INSERT ... ON CONFLICT DO UPDATE` it replaces, on the same Postgres; p50 / p99 are per call (one batch or one request).',
    '',
    renderTable(
      'lrrrlrl',
      ['scenario', 'concurrency', 'msgs/s', 'vs bare', 'target', 'p50 / p99 ms', 'result'],
      data.scenarios.map((row) => [
        row.scenario,
        String(row.concurrency),
        formatNumber(row.measurement.messagesPerSecond),
        row.ratio === undefined ? 'baseline' : `${row.ratio.toFixed(2)}x`,
        row.target ?? '',
        `${row.measurement.p50Ms} / ${row.measurement.p99Ms}`,
        row.pass === undefined ? '' : row.pass ? 'met' : 'missed',
      ]),
    ),
  ];
}

function wakeupSection(result: BenchResult): string[] {
  const data = result as unknown as BenchResult & WakeupData;
  const rates = [...new Set(data.scenarios.map((s) => s.rate))];
  const find = (engine: string, rate: number) => data.scenarios.find((s) => s.engine === engine && s.rate === rate);
  const cell = (value: number | undefined) => (value === undefined ? '-' : String(value));
  const missing = data.scenarios.filter((s) => s.missing > 0).map((s) => `- ${s.engine}, ${s.rate} msgs/s: ${s.missing} measured messages never reached their handler`);
  return [
    'From the moment the write that makes a record (job) due has returned, committed, to the moment its handler starts, one idle worker woken by NOTIFY, new work sent open-loop at a fixed rate. Lower is better.',
    '',
    renderTable(
      'rrrrrrr',
      ['msgs/s', 'rowfleet p50 ms', 'rowfleet p99 ms', 'graphile-worker p50 ms', 'graphile-worker p99 ms', 'p99 rowfleet / graphile', 'measured (rowfleet / graphile)'],
      rates.map((rate) => {
        const mine = find('rowfleet', rate);
        const peer = find('graphile-worker', rate);
        return [
          String(rate),
          cell(mine?.commitToStart.p50Ms),
          cell(mine?.commitToStart.p99Ms),
          cell(peer?.commitToStart.p50Ms),
          cell(peer?.commitToStart.p99Ms),
          mine === undefined || peer === undefined || peer.commitToStart.p99Ms === 0 ? '-' : `${(mine.commitToStart.p99Ms / peer.commitToStart.p99Ms).toFixed(2)}x`,
          `${cell(mine?.commitToStart.count)} / ${cell(peer?.commitToStart.count)}`,
        ];
      }),
    ),
    ...(data.setup === undefined ? [] : ['', ...Object.entries(data.setup).map(([engine, setup]) => `- **${engine}:** ${setup}.`)]),
    ...(missing.length > 0 ? ['', ...missing] : []),
  ];
}

function claimSection(result: BenchResult): string[] {
  const data = result as unknown as BenchResult & ClaimData;
  const states = [...new Set(data.scenarios.map((row) => row.state))];
  const batches = [...new Set(data.scenarios.map((row) => row.batch))].sort((a, b) => a - b);
  const find = (state: string, backlog: number, batch: number) => data.scenarios.find((row) => row.state === state && row.backlog === backlog && row.batch === batch);
  const rows = states.flatMap((state) =>
    data.sizes.flatMap((backlog) => {
      const cells = batches.map((batch) => find(state, backlog, batch));
      if (cells.every((row) => row === undefined)) return [];
      return [[
        state,
        formatNumber(backlog),
        ...cells.map((row) => (row === undefined ? '-' : `${row.p50Ms} (${row.p99Ms})`)),
        ...cells.map((row) => (row === undefined ? '-' : row.ratio === undefined ? 'baseline' : `${row.ratio.toFixed(2)}x`)),
      ]];
    }),
  );
  return [
    `One claimDue call (inside a rolled-back transaction) with growing backlogs of due records beside ${formatNumber(data.history)} PROCESSED records; fresh: bulk-loaded, never analyzed; analyzed: after VACUUM ANALYZE. The target: p50 within ${data.flatRatio}x of p50 at ${formatNumber(data.sizes[0])} in the same state.`,
    '',
    renderTable(
      `lr${'r'.repeat(batches.length * 2)}`,
      ['state', 'due backlog', ...batches.map((batch) => `batch ${batch}: p50 (p99) ms`), ...batches.map((batch) => `batch ${batch}: p50 vs ${formatNumber(data.sizes[0])}`)],
      rows,
    ),
  ];
}

/** The scaling bench's rates as an SVG line chart: records/s against worker processes, one line per engine. */
export async function renderDrainChart(result: BenchResult): Promise<string> {
  const data = result as unknown as BenchResult & ScalingData;
  // Loaded here, not with the harness: only a run with the scaling bench draws a chart.
  const [{ compile }, vega] = await Promise.all([import('vega-lite'), import('vega')]);
  const labels = data.lines.map((l) => l.label);
  const values = data.scenarios.map((row) => ({ line: data.lines.find((l) => l.line === row.line)?.label ?? row.line, processes: row.processes, perSecond: row.perSecond }));
  const { machine, postgres } = result;
  const ram = machine.ramBytes === undefined ? '' : `, ${Math.round(machine.ramBytes / 2 ** 30)} GiB RAM`;
  const scale = result.options.scale === 1 ? '' : ` · --scale ${result.options.scale}: a check, not a result`;
  const spec: TopLevelSpec = {
    width: 330,
    height: 230,
    padding: { left: 12, right: 12, top: 12, bottom: 12 },
    background: 'white',
    title: {
      text: 'Drain rate against worker count',
      subtitle: [
        `${formatNumber(data.backlog)} no-op records (jobs) per drain, all on one Postgres in one run, median of ${data.rounds} (bars: least to most)${scale}`,
        `${machine.cpuModel ?? 'unknown CPU'}, ${machine.cpus} CPUs${ram}, ${machine.os ?? machine.platform}`,
        `Node ${machine.node} · Postgres ${postgres.server_version ?? '?'} (${postgres.origin}), fsync ${postgres.fsync ?? '?'} · ${result.startedAt.slice(0, 10)}`,
      ],
      anchor: 'start',
      fontSize: 15,
      subtitleFontSize: 10.5,
      subtitleColor: '#555',
      offset: 12,
    },
    data: { values },
    // Every drain goes in; the line joins the medians, a bar spans the least to the most.
    encoding: {
      x: { field: 'processes', type: 'ordinal', title: 'worker processes', axis: { labelAngle: 0 } },
      color: {
        field: 'line',
        type: 'nominal',
        title: null,
        scale: { domain: labels, range: COLORS.slice(0, labels.length) },
        legend: { orient: 'right', labelFontSize: 11, labelLimit: 0, symbolStrokeWidth: 2.5 },
      },
    },
    layer: [
      {
        mark: { type: 'line', point: { filled: true, size: 64 }, strokeWidth: 2.5 },
        encoding: {
          y: { field: 'perSecond', aggregate: 'median', type: 'quantitative', title: 'records/s drained (median)', axis: { format: ',d' }, scale: { zero: true } },
          shape: { field: 'line', type: 'nominal', title: null, scale: { domain: labels, range: SHAPES.slice(0, labels.length) } },
        },
      },
      { mark: { type: 'rule', strokeWidth: 1.5, opacity: 0.6 }, encoding: { y: { field: 'perSecond', aggregate: 'min' }, y2: { field: 'perSecond', aggregate: 'max' } } },
    ],
    config: { font: 'Helvetica, Arial, sans-serif', view: { stroke: '#ddd' }, axis: { labelFontSize: 11, titleFontSize: 12, gridColor: '#eee' } },
  };
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

function byStart(a: BenchResult, b: BenchResult): number {
  return a.startedAt.localeCompare(b.startedAt);
}

/** `2026-12-02, 10:14–10:31 UTC` (the dates too when they differ). */
function span(results: readonly BenchResult[]): string {
  const start = results.map((r) => r.startedAt).sort()[0]!;
  const end = results.map((r) => r.finishedAt).sort().at(-1)!;
  const [startDay, startTime] = [start.slice(0, 10), start.slice(11, 16)];
  const [endDay, endTime] = [end.slice(0, 10), end.slice(11, 16)];
  return startDay === endDay ? `${startDay}, ${startTime}–${endTime} UTC` : `${startDay} ${startTime} – ${endDay} ${endTime} UTC`;
}

function options({ options: o }: BenchResult): string {
  return [`--seconds ${o.seconds}`, `--warmup ${o.warmupSeconds}`, ...(o.quick ? ['--quick'] : []), `--scale ${o.scale}`].join(' ');
}

function formatNumber(n: number | undefined): string {
  return n === undefined ? '-' : n.toLocaleString('en-US');
}
