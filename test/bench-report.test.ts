/**
 * The benchmark report (bench/lib/report.ts) from made-up results, without Postgres: the markdown
 * has its header, the drain table's rows and ratios, the sections of the benches that ran and a
 * "not run" line for the others; the chart is an SVG naming every engine.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { renderDrainChart, renderReport, writeReport, type BenchResult, type ScalingData } from '../bench/lib/report.ts';

/** Per line, per worker count (1, 2, 4), three rounds: the medians are the middle values. */
const RATES = {
  direct: [[40_000, 38_000, 45_000], [60_000, 61_000, 59_000], [70_000, 69_000, 80_000]],
  'boss engine': [[20_000, 21_000, 19_000], [30_000, 30_000, 30_000], [35_000, 36_000, 34_000]],
  'pg-boss': [[25_000, 24_000, 26_000], [26_000, 26_000, 26_000], [27_000, 20_000, 28_000]],
  'graphile-worker': [[32_000, 33_000, 31_000], [50_000, 50_000, 50_000], [64_000, 64_000, 64_000]],
} as const;
const COUNTS = [1, 2, 4] as const;
function result(bench: string, data: Record<string, unknown>, scale = 1): BenchResult {
  return {
    bench,
    startedAt: '2026-12-02T10:14:05.000Z',
    finishedAt: '2026-12-02T10:31:40.000Z',
    command: `npm run bench -- ${bench}`,
    code: { commit: '0123456789abcdef0123456789abcdef01234567', dirty: false },
    machine: { cpus: 2, cpuModel: 'Test CPU @ 2.20GHz', node: 'v22.23.3', platform: 'linux-x64', ramBytes: 24 * 2 ** 30, os: 'Debian GNU/Linux 12 (bookworm)', kernel: '6.1.0' },
    postgres: { origin: 'embedded', server_version: '18.4', fsync: 'on', synchronous_commit: 'on', shared_buffers: '128MB' },
    options: { seconds: 12, warmupSeconds: 2, quick: false, scale },
    ...data,
  };
}

function scaling(scale = 1): BenchResult {
  const data: ScalingData = {
    backlog: 100_000,
    workerCounts: [...COUNTS],
    rounds: 3,
    lines: [
      { line: 'direct', label: 'rowfleet direct', rowfleet: true, settings: '`rowfleet worker --engine direct`', timing: 'from the commit' },
      { line: 'boss engine', label: 'rowfleet boss engine', rowfleet: true, settings: '`rowfleet worker --engine boss`', timing: "from the sweep's commit" },
      { line: 'pg-boss', label: 'pg-boss 12.38.0', rowfleet: false, settings: 'work()', timing: 'from the first start' },
      { line: 'graphile-worker', label: 'graphile-worker 0.18.0', rowfleet: false, settings: 'run()', timing: 'from the first start' },
    ],
    scenarios: Object.entries(RATES).flatMap(([line, byCount]) =>
      byCount.flatMap((rounds, i) =>
        rounds.map((perSecond, r) => ({
          line,
          round: r + 1,
          scenario: `${line}, ${COUNTS[i]}`,
          processes: COUNTS[i]!,
          records: 100_000,
          seconds: 100_000 / perSecond,
          perSecond,
          notes: line === 'pg-boss' && i === 2 && r === 1 ? ['autovacuum finished 1 time(s) meanwhile'] : [],
        })),
      ),
    ),
    order: 'rotated',
  };
  return result('scaling', { ...data }, scale);
}

const upsert = result('upsert', {
  scenarios: [
    { scenario: 'bare statement, batch 1000', concurrency: 4, measurement: { messagesPerSecond: 115_000, p50Ms: 30, p99Ms: 50 } },
    { scenario: 'rowfleet upsertMessages, batch 1000', concurrency: 4, measurement: { messagesPerSecond: 46_000, p50Ms: 80, p99Ms: 120 }, ratio: 0.4, target: '>= 0.50x bare', pass: false },
  ],
});

describe('bench report', () => {
  it('tabulates drain rates per worker count with ratios against both peers', () => {
    const markdown = renderReport([scaling(), upsert], { chart: 'drain-scaling.svg' });
    expect(markdown).toContain('# rowfleet benchmark report');
    expect(markdown).toContain('Test CPU @ 2.20GHz, 2 logical CPUs; 24.0 GiB RAM; Debian GNU/Linux 12 (bookworm)');
    expect(markdown).toContain('18.4, embedded');
    expect(markdown).toContain('fsync=on');
    expect(markdown).toContain('2026-12-02, 10:14–10:31 UTC');
    expect(markdown).toContain('`npm run bench -- scaling`');
    expect(markdown).toContain('![Drain rate against worker count](drain-scaling.svg)');
    const rows = markdown.split('\n').filter((line) => /^\| +[124] \|/.test(line));
    expect(rows).toHaveLength(3);
    // 1 process: medians direct 40,000, boss engine 20,000, pg-boss 25,000, graphile 32,000, with their ranges.
    expect(rows[0]!.split('|').map((cell) => cell.trim())).toEqual(['', '1', '40,000 (38,000–45,000)', '20,000 (19,000–21,000)', '25,000 (24,000–26,000)', '32,000 (31,000–33,000)', '']);
    // A cell with a noted drain is marked.
    expect(rows[2]).toContain('27,000 (20,000–28,000) *');
    // The ratios, median against median, per rowfleet line and peer.
    const ratio = (name: string) => markdown.split('\n').find((line) => line.startsWith(`| ${name} `))!.split('|').map((cell) => cell.trim()).slice(2, 5);
    expect(ratio('rowfleet direct / pg-boss 12.38.0')).toEqual(['1.60x', '2.31x', '2.59x']);
    expect(ratio('rowfleet direct / graphile-worker 0.18.0')).toEqual(['1.25x', '1.20x', '1.09x']);
    expect(ratio('rowfleet boss engine / pg-boss 12.38.0')).toEqual(['0.80x', '1.15x', '1.30x']);
    expect(markdown).toContain('pg-boss 12.38.0, 4 processes, round 2: autovacuum finished 1 time(s) meanwhile');
    expect(markdown).toContain('each line drained 3 times at each worker count');
    expect(markdown).toContain('| rowfleet upsertMessages, batch 1000 |');
    expect(markdown).toContain('not run in this report (`npm run bench -- wakeup`)');
    expect(markdown).toContain('not run in this report (`npm run bench -- claim`)');
  });

  it('says which sections did not run, and warns about a scaled run', () => {
    const markdown = renderReport([scaling(0.05)]);
    expect(markdown).not.toContain('![');
    expect(markdown).toContain('not run in this report (`npm run bench -- upsert`)');
    expect(markdown).toMatch(/Warning:.*--scale 0\.05/);
  });

  it('draws an SVG line chart naming every engine', async () => {
    const svg = await renderDrainChart(scaling());
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    for (const name of ['rowfleet direct', 'rowfleet boss engine', 'pg-boss 12.38.0', 'graphile-worker 0.18.0', 'Drain rate against worker count', 'worker processes', 'records/s drained']) {
      expect(svg).toContain(name);
    }
  });

  it('writes the stamped and the stable files', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rowfleet-report-'));
    try {
      const written = await writeReport([scaling()], dir);
      expect(written.map((file) => path.basename(file))).toEqual([
        'report-2026-12-02T10-14-05-000Z.md',
        'drain-scaling-2026-12-02T10-14-05-000Z.svg',
        'report.md',
        'drain-scaling.svg',
      ]);
      expect(await fs.readFile(path.join(dir, 'report.md'), 'utf8')).toContain('](drain-scaling.svg)');
      expect(await fs.readFile(path.join(dir, 'report-2026-12-02T10-14-05-000Z.md'), 'utf8')).toContain('](drain-scaling-2026-12-02T10-14-05-000Z.svg)');
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
