import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CommanderError } from 'commander';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowfleet } from './helpers/cli.ts';
import { stopEmbedded } from '../src/db/embedded.ts';
import { UsageError } from '../src/errors.ts';
import { silentLogger } from '../src/log.ts';

describe('rowfleet db', () => {
  let home: string;
  let env: Record<string, string>;
  beforeAll(async () => {
    home = await fs.mkdtemp(path.join(os.tmpdir(), 'rowfleet-cli-db-'));
    env = { ROWFLEET_HOME: home, ROWFLEET_LOG_LEVEL: 'warn' };
  });
  afterAll(async () => {
    await stopEmbedded(home, silentLogger);
    await fs.rm(home, { recursive: true, force: true });
  });

  it('status --json says not running before the first start', async () => {
    const { stdout, error } = await rowfleet(env, 'db', 'status', '--json');
    expect(error).toBeUndefined();
    expect(JSON.parse(stdout)).toEqual({ running: false, dataDir: path.join(home, 'pg') });
  });

  it('start, url and status agree on one running server', async () => {
    const start = await rowfleet(env, 'db', 'start', '--json');
    expect(start.error).toBeUndefined();
    const started = JSON.parse(start.stdout) as { url: string; port: number; pid: number; started: boolean };
    expect(started.started).toBe(true);

    const again = await rowfleet(env, 'db', 'start');
    expect(again.stdout).toMatch(/^embedded Postgres is already running on 127\.0\.0\.1:\d+ /);

    const url = await rowfleet(env, 'db', 'url');
    expect(url.stdout).toBe(`${started.url}\n`);

    const status = await rowfleet(env, 'db', 'status', '--json');
    expect(JSON.parse(status.stdout)).toEqual({ running: true, url: started.url, port: started.port, pid: started.pid, dataDir: path.join(home, 'pg') });

    const client = new pg.Client({ connectionString: started.url });
    await client.connect();
    const { rows } = await client.query<{ db: string }>('SELECT current_database() AS db');
    await client.end();
    expect(rows).toEqual([{ db: 'rowfleet' }]);
  });

  it('stop stops it, and a second stop says it is not running and succeeds', async () => {
    expect((await rowfleet(env, 'db', 'stop')).stdout).toBe('embedded Postgres stopped\n');
    const second = await rowfleet(env, 'db', 'stop');
    expect(second.error).toBeUndefined();
    expect(second.stdout).toBe('embedded Postgres is not running\n');
    expect(JSON.parse((await rowfleet(env, 'db', 'status', '--json')).stdout)).toMatchObject({ running: false });
  });

  it('start and stop say what they did once, on stdout, with no log line repeating it', async () => {
    const loud = { ...env, ROWFLEET_LOG_LEVEL: 'info' };
    const start = await rowfleet(loud, 'db', 'start');
    expect(start.stdout).toMatch(/^embedded Postgres started on 127\.0\.0\.1:\d+ \(pid \d+, data in .+\)\n$/);
    expect(start.stderr).toBe('');
    const stop = await rowfleet(loud, 'db', 'stop');
    expect(stop.stdout).toBe('embedded Postgres stopped\n');
    expect(stop.stderr).toBe('');
  });

  it('refuses start and stop when DATABASE_URL is set, with a usage error', async () => {
    const withUrl = { ...env, DATABASE_URL: 'postgres://someone@db.invalid:5432/app' };
    for (const verb of ['start', 'stop']) {
      const { error } = await rowfleet(withUrl, 'db', verb);
      expect(error).toBeInstanceOf(UsageError);
      expect((error as UsageError).exitCode).toBe(2);
      expect((error as Error).message).toMatch(/DATABASE_URL is set.*embedded Postgres is not used/);
    }
    expect((await rowfleet(withUrl, 'db', 'url')).stdout).toBe('postgres://someone@db.invalid:5432/app\n');
  });

  it('reports unknown subcommands and options as commander errors instead of exiting', async () => {
    const unknown = await rowfleet(env, 'db', 'restart');
    expect(unknown.error).toBeInstanceOf(CommanderError);
    expect(unknown.stderr).toMatch(/unknown command 'restart'/);

    const badFlag = await rowfleet(env, 'db', 'status', '--jsn');
    expect(badFlag.error).toBeInstanceOf(CommanderError);
    expect((badFlag.error as CommanderError).exitCode).not.toBe(0);
    expect(badFlag.stderr).toMatch(/unknown option '--jsn'/);
  });

  it('has help with an example for each subcommand', async () => {
    for (const sub of ['start', 'stop', 'status', 'url']) {
      const { stdout, error } = await rowfleet(env, 'db', sub, '--help');
      expect((error as CommanderError).code).toBe('commander.helpDisplayed');
      expect(stdout).toMatch(/Example:\n {2}.*rowfleet db/);
    }
  });
});
