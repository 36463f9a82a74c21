/**
 * Rebuilds the benchmark report (bench/lib/report.ts) from JSON result files, of one run or of
 * several, beside the first of them: report-<stamp>.md, report.md and, when a scaling result is
 * among them, drain-scaling-<stamp>.svg and drain-scaling.svg (<stamp>: the earliest bench's start).
 *
 *   node --import tsx bench/rebuild-report.ts bench/results/scaling-<stamp>.json [bench/results/upsert-<stamp>.json ...]
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { writeReport, type BenchResult } from './lib/report.ts';

const files = process.argv.slice(2);
if (files.length === 0) {
  process.stderr.write('usage: node --import tsx bench/rebuild-report.ts <bench/results/<bench>-<stamp>.json>...\n');
  process.exit(2);
}
const results = await Promise.all(files.map(async (file) => JSON.parse(await readFile(file, 'utf8')) as BenchResult));
const written = await writeReport(results, path.dirname(path.resolve(files[0]!)));
process.stderr.write(`[bench] report: ${written.map((file) => path.relative(process.cwd(), file)).join(', ')}\n`);
