/**
 * The configuration reference in the README is generated from the settings' schema
 * (src/settings.ts, `npm run docs:config`): these fail when the two differ, when a default shown
 * is not what the schema makes of it, or when src/ reads a variable the schema does not describe.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { configReference, parseValue, REFERENCE_END, REFERENCE_START, SECTIONS, type Setting } from '../src/settings.ts';
import { ROOT } from './helpers/processes.ts';
import { rowfleet } from './helpers/cli.ts';
import { UsageError } from '../src/errors.ts';

const SETTINGS = SECTIONS.flatMap(({ settings }) => Object.values(settings) as Setting<unknown>[]);
/** Read by src/ but set by rowfleet itself for its own children, so not a setting. */
const INTERNAL = new Set(['ROWFLEET_FLEET_METRICS']);

function sourceFiles(folder: string): string[] {
  return fs.readdirSync(folder, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(folder, entry.name);
    if (entry.isDirectory()) return sourceFiles(full);
    return entry.name.endsWith('.ts') ? [full] : [];
  });
}

describe('the configuration reference', () => {
  it('is in the README as generated from src/settings.ts (run npm run docs:config after changing a setting)', () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const start = readme.indexOf(REFERENCE_START);
    const end = readme.indexOf(REFERENCE_END);
    expect(start, 'the README has the reference start marker').toBeGreaterThan(0);
    expect(end, 'the README has the reference end marker after it').toBeGreaterThan(start);
    expect(readme.slice(start + REFERENCE_START.length, end).trim()).toBe(configReference());
  });

  it('shows each default as the text its schema parses to that default', () => {
    for (const setting of SETTINGS) {
      const literal = /^`([^`]*)`/.exec(setting.shown);
      if (literal === null) {
        // "(embedded)", "(off)", "(required)": what the absence of a value means.
        expect([undefined, null, []], `${setting.env}'s default`).toContainEqual(setting.default);
        continue;
      }
      expect(parseValue(setting.value, literal[1]!, setting.env), `${setting.env} shown as ${setting.shown}`).toEqual(setting.default);
    }
  });

  it('describes every variable src/ reads, each once', () => {
    const names = SETTINGS.map((s) => s.env);
    expect(new Set(names).size).toBe(names.length);
    const read = new Set(sourceFiles(path.join(ROOT, 'src')).flatMap((file) => [...fs.readFileSync(file, 'utf8').matchAll(/\bROWFLEET_[A-Z_]+[A-Z]\b/g)].map((m) => m[0])));
    expect([...read].filter((name) => !INTERNAL.has(name) && !names.includes(name)).sort()).toEqual([]);
  });

  it('names the setting and the problem in one line for every bad value', () => {
    const bad: Record<string, string> = { PORT: 'x', ROWFLEET_LEASE: '30', ROWFLEET_ENQUEUE_ON_UPSERT: 'maybe', ROWFLEET_KINDS: ',', ROWFLEET_MAX_BODY: '1tb', ROWFLEET_SWEEP_CRON: '* *' };
    for (const [env, raw] of Object.entries(bad)) {
      const setting = SETTINGS.find((s) => s.env === env)!;
      expect(() => parseValue(setting.value, raw, env)).toThrow(new RegExp(`^${env} (must|needs)[^\\n]*$`));
    }
  });
});

describe('rowfleet config', () => {
  it('shows every setting with its value and source, secrets masked', async () => {
    const env = { DATABASE_URL: 'postgres://app:s3cret@db.internal:5432/app', ROWFLEET_LEASE: '2m', ROWFLEET_API_TOKENS: 'tok-one,tok-two' };
    const { stdout, error } = await rowfleet(env, 'config', '--json');
    expect(error).toBeUndefined();
    const rows = JSON.parse(stdout) as { variable: string; source: string; value: string; flag: string | null }[];
    expect(rows.map((row) => row.variable)).toEqual(SETTINGS.map((s) => s.env));
    const by = new Map(rows.map((row) => [row.variable, row]));
    expect(by.get('ROWFLEET_LEASE')).toMatchObject({ source: 'environment', value: '2m', flag: '--lease' });
    expect(by.get('ROWFLEET_BATCH')).toMatchObject({ source: 'default', value: '100' });
    expect(by.get('DATABASE_URL')!.value).toBe('postgres://app:***@db.internal:5432/app');
    expect(by.get('ROWFLEET_API_TOKENS')!.value).toBe('2 tokens (not shown)');
    expect(stdout).not.toMatch(/s3cret|tok-one|tok-two/);

    const human = await rowfleet(env, 'config');
    expect(human.stdout).toMatch(/^  ROWFLEET_LEASE +2m +\(environment\)$/m);
    expect(human.stdout).not.toMatch(/s3cret|tok-one/);
  });

  it('refuses a bad value with the one line every command gives, and prints nothing', async () => {
    const { stdout, error } = await rowfleet({ ROWFLEET_LEASE: '2' }, 'config');
    expect(error).toBeInstanceOf(UsageError);
    expect((error as Error).message).toBe('ROWFLEET_LEASE needs a unit: "2" could be 2ms or 2s; write it as 2s, 2ms, 2m or 2h');
    expect(stdout).toBe('');
  });
});
