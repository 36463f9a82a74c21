/**
 * Commands run in-process through the program factory, plus the real binary for exit codes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { rowfleet } from './helpers/cli.ts';
import { UsageError, UserError } from '../src/errors.ts';

let db: TestDatabase;
let env: Record<string, string>;
beforeAll(async () => {
  db = await createTestDatabase();
  env = { DATABASE_URL: db.url, ROWFLEET_LOG_LEVEL: 'warn' };
});
afterAll(async () => {
  await db?.drop();
});

describe('rowfleet upsert', () => {
  it('prints the response as JSON', async () => {
    const run = await rowfleet(env, 'upsert', 'cli-1', '{"n": 1}', '--version', '4', '--message-id', 'cli-evt');
    expect(run.error).toBeUndefined();
    expect(JSON.parse(run.stdout)).toEqual({ kind: 'default', id: 'cli-1', applied: true, version: 4, reason: 'applied' });
    const again = await rowfleet(env, 'upsert', 'cli-1', '{"n": 1}', '--version', '4', '--message-id', 'cli-evt');
    expect(JSON.parse(again.stdout)).toMatchObject({ duplicate: true });
    const stale = await rowfleet(env, 'upsert', 'cli-1', '{"n": 0}', '--version', '3');
    expect(JSON.parse(stale.stdout)).toMatchObject({ applied: false, reason: 'stale', currentVersion: 4 });
  });

  it('fails with exit code 1 on a conflict, still printing the response', async () => {
    const run = await rowfleet(env, 'upsert', 'cli-1', '{"n": 99}', '--version', '4');
    expect(JSON.parse(run.stdout)).toMatchObject({ reason: 'conflict' });
    expect(run.error).toBeInstanceOf(UserError);
    expect((run.error as UserError).exitCode).toBe(1);
  });

  it('refuses bad input with a usage error naming it, writing nothing', async () => {
    for (const args of [
      ['cli-2', '{not json'],
      ['cli-2', '[1]'],
      ['cli-2', '{}', '--version', 'x'],
      ['', '{}'],
    ]) {
      const run = await rowfleet(env, 'upsert', ...args);
      expect(run.error, args.join(' ')).toBeInstanceOf(UsageError);
    }
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM rowfleet.records WHERE id IN ('cli-2', '')`);
    expect(rows[0].n).toBe(0);
  });
});

describe('rowfleet worker', () => {
  it.each([
    [['--concurrency', '0'], /--concurrency must be between 1 and 10000/],
    [['--lease', 'soon'], /--lease must be a duration with a unit \(ms, s, m, h or d\) like 500ms, 30s, 5m or 1h, got "soon"/],
    [['--handler', 'noop', '--timeout', '30'], /--timeout needs a unit: "30" could be 30ms or 30s; write it as 30s/],
    [[], /no handler: give --handler \.\/handler\.js .* or a built-in \(noop, sleep, flaky, checksum\), or set ROWFLEET_HANDLER/],
    [['--fail-rate', '2'], /--fail-rate must be a number from 0 to 1/],
    [['--handler', 'nope'], /--handler nope is not a built-in \(noop, sleep, flaky, checksum\)/],
    [['--handler', './missing-handler.js'], /--handler \.\/missing-handler\.js: cannot load/],
    [['--backoff-base', '10s', '--backoff-cap', '1s'], /backoff cap \(1000 ms\) must not be below its base/],
  ])('refuses %j with a usage error naming it, before touching the database', async (args, message) => {
    const run = await rowfleet({ ...env, DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none' }, 'worker', ...args);
    expect(run.error).toBeInstanceOf(UsageError);
    expect((run.error as Error).message).toMatch(message);
  });

  it('refuses a bad ROWFLEET_* variable the same way', async () => {
    const run = await rowfleet({ ...env, ROWFLEET_MAX_ATTEMPTS: 'many' }, 'worker');
    expect((run.error as Error).message).toBe('ROWFLEET_MAX_ATTEMPTS must be a whole number, got "many"');
    const bare = await rowfleet({ ...env, ROWFLEET_POLL: '250' }, 'worker', '--handler', 'noop');
    expect(bare.error).toBeInstanceOf(UsageError);
    expect((bare.error as Error).message).toMatch(/^ROWFLEET_POLL needs a unit: "250" could be 250ms or 250s/);
  });

  it('fleet refuses to start without a handler, before touching the database', async () => {
    const run = await rowfleet({ ...env, DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none' }, 'fleet', '--workers', '1');
    expect(run.error).toBeInstanceOf(UsageError);
    expect((run.error as Error).message).toMatch(/^no handler: give --handler/);
  });
});

describe('rowfleet migrate', () => {
  it('reports an up-to-date schema as JSON', async () => {
    const run = await rowfleet(env, 'migrate', '--json');
    expect(run.error).toBeUndefined();
    expect(JSON.parse(run.stdout)).toMatchObject({ applied: 0, boss: { schema: 'pgboss', version: expect.any(Number) } });
  });

  it('installs pg-boss in the configured schema, with the process queue', async () => {
    const fresh = await createTestDatabase();
    try {
      const run = await rowfleet({ ...env, DATABASE_URL: fresh.url, ROWFLEET_BOSS_SCHEMA: 'jobs_boss', ROWFLEET_QUEUE: 'orders.process' }, 'migrate');
      expect(run.error).toBeUndefined();
      expect(run.stdout).toContain('pg-boss schema "jobs_boss" is at version');
      const { rows } = await fresh.pool.query(`SELECT name, policy FROM jobs_boss.queue WHERE name = 'orders.process'`);
      expect(rows).toEqual([{ name: 'orders.process', policy: 'short' }]);
    } finally {
      await fresh.drop();
    }
  });
});

describe('rowfleet enqueue', () => {
  it('sends one job per due record; run twice, the second sends 0', async () => {
    await rowfleet(env, 'enqueue'); // what earlier tests left due
    for (const id of ['enq-1', 'enq-2', 'enq-3']) await rowfleet(env, 'upsert', id, '{"n": 1}');
    const first = await rowfleet(env, 'enqueue', '--json', '--limit', '2');
    expect(first.error).toBeUndefined();
    expect(JSON.parse(first.stdout)).toEqual({ enqueued: 2 });
    expect(JSON.parse((await rowfleet(env, 'enqueue', '--json')).stdout)).toEqual({ enqueued: 1 });
    const again = await rowfleet(env, 'enqueue');
    expect(again.stdout.trim()).toBe('enqueued 0 job(s) on rowfleet.process');
  });

  it('refuses bad settings with a usage error naming them', async () => {
    for (const [extra, message] of [
      [{ ROWFLEET_QUEUE: 'no spaces please' }, 'ROWFLEET_QUEUE may contain letters, digits, _ . - and /, got "no spaces please"'],
      [{ ROWFLEET_BOSS_SCHEMA: 'Bad-Schema' }, 'ROWFLEET_BOSS_SCHEMA must be a lower-case Postgres schema name like pgboss, got "Bad-Schema"'],
      [{ ROWFLEET_SWEEP_CRON: 'every minute' }, 'ROWFLEET_SWEEP_CRON must be a cron expression like "* * * * *" (minute hour day month weekday), got "every minute"'],
      [{ ROWFLEET_ENQUEUE_ON_UPSERT: 'maybe' }, 'ROWFLEET_ENQUEUE_ON_UPSERT must be 1 or 0 (true or false), got "maybe"'],
      [{ ROWFLEET_CRON_CHECK: '2m' }, 'ROWFLEET_CRON_CHECK must be at most 45s, got "2m"'],
    ] as const) {
      const run = await rowfleet({ ...env, ...extra }, 'enqueue');
      expect(run.error).toBeInstanceOf(UsageError);
      expect((run.error as Error).message).toBe(message);
    }
    const limit = await rowfleet(env, 'enqueue', '--limit', '0');
    expect(limit.error).toBeInstanceOf(UsageError);
    expect((limit.error as Error).message).toBe('--limit must be between 1 and 100000000, got 0');
  });
});

describe('rowfleet scheduler', () => {
  it('refuses an invalid cron expression before it starts', async () => {
    const run = await rowfleet(env, 'scheduler', '--sweep-cron', '61 * * * *');
    expect(run.error).toBeInstanceOf(UsageError);
    expect((run.error as Error).message).toMatch(/^ROWFLEET_SWEEP_CRON "61 \* \* \* \*" is not a valid cron expression/);
  });

  it('refuses a bad retention', async () => {
    const run = await rowfleet(env, 'scheduler', '--event-retention', 'soon');
    expect((run.error as Error).message).toBe('--event-retention must be a duration with a unit (ms, s, m, h or d) like 500ms, 30s, 5m or 1h, got "soon", or "forever"');
    const short = await rowfleet(env, 'scheduler', '--event-retention', '30s');
    expect((short.error as Error).message).toBe('--event-retention must be at least 1m (like 30d or 12h), or "forever", got "30s"');
  });
});

describe('rowfleet demo', () => {
  it('tells the story: out-of-order and repeated messages, flaky and poison records, a worker killed; the report and a passing integrity check', { timeout: 120_000 }, async () => {
    const run = await rowfleet(env, 'demo');
    expect(run.error, run.stderr).toBeUndefined();
    const number = (label: string) => Number(new RegExp(`^  ${label}\\s+(\\d+)`, 'm').exec(run.stdout)?.[1]);
    // 40 orders × 3 versions and 30 of a hot key, a fifth sent twice: 175 messages.
    expect(number('messages')).toBe(175);
    expect(number('applied') + number('stale refused') + number('duplicates absorbed')).toBe(175);
    expect(number('stale refused')).toBeGreaterThan(0);
    expect(number('duplicates absorbed')).toBe(25);
    expect(number('conflated')).toBeGreaterThan(0);
    expect(number('processed')).toBe(40);
    expect(number('retried')).toBeGreaterThan(0);
    expect(number('rescued')).toBeGreaterThan(0);
    expect(number('failed')).toBe(1);
    expect(run.stdout).toMatch(/killed worker \d+/);
    expect(run.stdout).toMatch(/Requeue it once it is fixed: {2}npx rowfleet requeue --kind order --id demo-\S+-13/);
    for (const invariant of ['I1 newest wins', 'I2 every message audited once', 'I3 one holder', 'I4 nothing lost', 'I5 effectively once']) {
      expect(run.stdout).toMatch(new RegExp(`^  ok {4}${invariant}`, 'm'));
    }
  });
});

describe('the rowfleet binary', () => {
  const main = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
  const run = (args: string[], extraEnv: Record<string, string>) =>
    spawnSync(process.execPath, ['--import', 'tsx', main, ...args], { env: { ...process.env, ...extraEnv }, encoding: 'utf8', timeout: 60_000 });

  it('exits 2 with one clear line for invalid configuration', () => {
    const result = run(['migrate'], { DATABASE_URL: db.url, ROWFLEET_POOL_SIZE: 'lots' });
    expect(result.status).toBe(2);
    expect(result.stderr.trim().split('\n')).toEqual(['rowfleet: ROWFLEET_POOL_SIZE must be a whole number, got "lots"']);
  });

  it('exits 2 for an unknown command or option', () => {
    expect(run(['frobnicate'], {}).status).toBe(2);
    expect(run(['migrate', '--bogus'], { DATABASE_URL: db.url }).status).toBe(2);
  });

  it('exits 0 for --help and --version', () => {
    const help = run(['--help'], {});
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('upsert');
    expect(run(['--version'], {}).status).toBe(0);
  });

  it('exits 1 with one line when Postgres cannot be reached', () => {
    const result = run(['migrate'], { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none' });
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/^rowfleet: cannot reach Postgres .*; check DATABASE_URL/);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
  });
});
