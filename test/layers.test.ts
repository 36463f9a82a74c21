/**
 * Imports run one way: cli/http (and the library's index.ts) → fleet/scheduler/ops → worker/boss
 * (the engines) → records → db → the leaf modules every layer uses. A module may import its own
 * folder, a peer of its layer, or anything below; never above. A reader can then learn the system
 * bottom up, and a change low down cannot have been shaped by what sits on top of it.
 *
 * And every statement that touches `rowfleet.records` lives in src/records/ (beside the functions
 * of drizzle/0006_hot_path.sql it calls), so the whole state machine can be read in one folder.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers/processes.ts';

const SRC = path.join(ROOT, 'src');

/** Top to bottom; the key is a folder under src/ or a file directly in it. */
const LAYERS: Record<string, number> = {
  cli: 0,
  http: 0,
  'index.ts': 0,
  fleet: 1,
  scheduler: 1,
  ops: 1,
  worker: 2,
  boss: 2,
  records: 3,
  db: 4,
  'config.ts': 5,
  'duration.ts': 5,
  'settings.ts': 5,
  'random.ts': 5,
  'errors.ts': 5,
  'kind.ts': 5,
  'log.ts': 5,
  'coalescer.ts': 5,
};

function sourceFiles(folder: string): string[] {
  return fs.readdirSync(folder, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(folder, entry.name);
    if (entry.isDirectory()) return sourceFiles(full);
    return entry.name.endsWith('.ts') ? [full] : [];
  });
}

/** The top-level folder or file of src/ that `file` belongs to. */
const unitOf = (file: string): string => path.relative(SRC, file).split(path.sep)[0]!;

/** Relative imports, static and dynamic, type-only included (they shape a module as much). */
function importsOf(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  return [...text.matchAll(/(?:from\s+|import\s*\(\s*)'(\.[^']+)'/g)].map((m) => path.resolve(path.dirname(file), m[1]!));
}

describe('module layers', () => {
  const files = sourceFiles(SRC);

  it('places every module of src/ in a layer', () => {
    expect([...new Set(files.map(unitOf))].filter((unit) => LAYERS[unit] === undefined)).toEqual([]);
  });

  it('keeps every statement on rowfleet.records in src/records/', () => {
    const outside = files.filter((file) => unitOf(file) !== 'records' && path.relative(SRC, file) !== path.join('db', 'schema.ts'));
    const touching = outside.filter((file) => /rowfleet\.(records\b|claim_|complete_records|fail_record|release_records|extend_leases|rescue_expired|mark_unenqueued|clear_marks|upsert_message)/.test(fs.readFileSync(file, 'utf8')));
    expect(touching.map((file) => path.relative(ROOT, file))).toEqual([]);
  });

  it('has no import that goes up a layer', () => {
    const upward: string[] = [];
    for (const file of files) {
      const from = unitOf(file);
      for (const target of importsOf(file)) {
        const to = unitOf(target);
        if (LAYERS[to]! < LAYERS[from]!) upward.push(`${path.relative(ROOT, file)} (${from}) imports ${path.relative(ROOT, target)} (${to})`);
      }
    }
    expect(upward).toEqual([]);
  });
});
