/**
 * Issue 9: every rowfleet command fails with one line a person can act on, no stack trace, and a
 * meaningful exit code, run as the real binary (`node --import tsx src/cli/main.ts`) through each
 * condition a person meets first: a database `rowfleet migrate` has not prepared, a database or
 * role that does not exist, a wrong password, the API's port taken, a reader that closes the pipe
 * early, a Node that is too old.
 *
 * Logs stay at the default level (info), as in production: a person at a terminal reads pretty
 * logs, but here stderr is a pipe, so every log entry is a JSON line and the one line meant for a
 * person is told apart from them as the only line that is not one. That also shows what machines
 * get: the structured entry the CLI logs for a classified failure carries the same message.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { inject } from 'vitest';
import { createEmptyDatabase, createTestDatabase, databaseUrl, withAdmin, type TestDatabase } from './helpers/database.ts';
import { rowfleet } from './helpers/cli.ts';
import { CLI, ROOT } from './helpers/processes.ts';
import { SchemaNotReadyError, UserError } from '../src/errors.ts';

/** Long-running commands (api, worker, fleet, scheduler) must exit on their own well before this. */
const SPAWN_TIMEOUT_MS = 30_000;
/** Spawns at once: two cores, and each `tsx` start is about a CPU-second. */
const PARALLEL = 3;

let adminUrl: string;
let home: string;
let fresh: TestDatabase;
let migrated: TestDatabase;

beforeAll(async () => {
  adminUrl = inject('databaseUrl');
  // No spawn may fall back to (and start) an embedded Postgres in the checkout's .rowfleet.
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'rowfleet-cli-errors-'));
  [fresh, migrated] = await Promise.all([createEmptyDatabase(), createTestDatabase()]);
});

afterAll(async () => {
  killAll();
  await Promise.all([fresh?.drop(), migrated?.drop()]);
  if (home !== undefined) fs.rmSync(home, { recursive: true, force: true });
});

interface Run {
  args: readonly string[];
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** stderr lines that are not JSON log entries: what a person reads. */
  personLines: string[];
  logs: Array<Record<string, unknown> & { level: number; msg: string }>;
  ms: number;
}

interface SpawnOptions {
  env?: Record<string, string>;
  cwd?: string;
  /**
   * How the reader of stdout behaves: reads all of it (default), closes its end before rowfleet
   * writes anything, or closes after the first `bytes` bytes (`head -c`) or first line (`head -1`).
   */
  reader?: { closeAfter: 'start' } | { closeAfter: 'line' } | { closeAfter: 'bytes'; bytes: number };
  timeoutMs?: number;
}

const running = new Set<number>();
let slots = PARALLEL;
const queue: Array<() => void> = [];

/** Runs `rowfleet <args>`, at most PARALLEL at once, SIGKILLed by PID after the timeout. */
async function run(args: readonly string[], options: SpawnOptions = {}): Promise<Run> {
  if (slots === 0) await new Promise<void>((resolve) => queue.push(resolve));
  else slots -= 1;
  try {
    return await spawnOnce(args, options);
  } finally {
    const next = queue.shift();
    if (next) next();
    else slots += 1;
  }
}

function spawnOnce(args: readonly string[], { env = {}, cwd = ROOT, reader, timeoutMs = SPAWN_TIMEOUT_MS }: SpawnOptions): Promise<Run> {
  const started = Date.now();
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
    cwd,
    env: { ...process.env, DATABASE_URL: '', ROWFLEET_LOG_LEVEL: 'info', ROWFLEET_HOME: home, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const pid = child.pid!;
  running.add(pid);
  let stdout = '';
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  if (reader?.closeAfter === 'start') {
    // Closing our end of the pipe: rowfleet's first write meets EPIPE.
    child.stdout.destroy();
  } else {
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      stdout += text;
      const enough = reader?.closeAfter === 'line' ? stdout.includes('\n') : reader?.closeAfter === 'bytes' && stdout.length >= reader.bytes;
      if (enough) child.stdout.destroy();
    });
  }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      process.kill(pid, 'SIGKILL');
      reject(new Error(`rowfleet ${args.join(' ')} did not exit within ${timeoutMs} ms; stderr:\n${stderr}`));
    }, timeoutMs);
    // 'close': both pipes have been read to the end (or were closed by us).
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      running.delete(pid);
      const lines = stderr.split('\n').filter((line) => line.trim() !== '');
      const logs = lines.map(logEntry).filter((entry) => entry !== undefined);
      resolve({ args, code, signal, stdout, stderr, personLines: lines.filter((line) => logEntry(line) === undefined), logs, ms: Date.now() - started });
    });
  });
}

function killAll(): void {
  for (const pid of running) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** A pino JSON line, or undefined for anything else. */
function logEntry(line: string): (Record<string, unknown> & { level: number; msg: string }) | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    const entry = JSON.parse(line) as Record<string, unknown>;
    return typeof entry.level === 'number' && typeof entry.msg === 'string' ? (entry as Record<string, unknown> & { level: number; msg: string }) : undefined;
  } catch {
    return undefined;
  }
}

const STACK_LINE = /^\s+at /m;

/** The one-line contract: the exit code, exactly one line for a person matching `line`, no stack, no secret. */
function expectOneLine(r: Run, exitCode: number, line: RegExp, secret?: string): void {
  const what = `rowfleet ${r.args.join(' ')}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
  expect(r.signal, what).toBeNull();
  expect(r.code, what).toBe(exitCode);
  expect(r.personLines, what).toHaveLength(1);
  expect(r.personLines[0], what).toMatch(line);
  expect(r.stderr, what).not.toMatch(STACK_LINE);
  expect(r.stdout, what).not.toMatch(STACK_LINE);
  if (secret !== undefined) expect(`${r.stdout}${r.stderr}`, what).not.toContain(secret);
  // A structured entry for a failure, when one is logged, says what the person reads.
  for (const entry of r.logs.filter((e) => e.level >= 50)) expect(`rowfleet: ${entry.msg}`, what).toBe(r.personLines[0]);
}

/** Every database command, as a person would first type it; long-running ones included. */
function databaseCommands(extra: readonly string[] = []): string[][] {
  return [
    ['migrate'],
    ['api', '--port', '0'],
    ['worker', '--handler', 'noop'],
    ['fleet', '--workers', '1', '--handler', 'noop'],
    ['scheduler'],
    ['enqueue'],
    ['requeue', '--all'],
    ['status'],
    ['inspect', 'order-1'],
    ['replay', '--verify'],
    ['upsert', 'order-1', '{"total": 12}'],
    ['kinds', 'list'],
    ['demo'],
  ].map((args) => [...args, ...extra]);
}

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const passwordOf = (url: string) => decodeURIComponent(new URL(url).password);

describe('before `rowfleet migrate`', () => {
  // migrate creates the schema, and demo migrates on purpose: the condition does not apply to them.
  const commands = databaseCommands().filter(([command]) => command !== 'migrate' && command !== 'demo');

  it('every command says to run `rowfleet migrate`, exits 1 and writes nothing', async () => {
    const runs = await Promise.all(commands.map((args) => run(args, { env: { DATABASE_URL: fresh.url } })));
    // api, worker, fleet, scheduler and enqueue check the schema as they start (ensureSchema in
    // src/db/migrate.ts); the others find out from their first statement. Both say the same.
    const line = /^rowfleet: the database has no rowfleet schema; run `rowfleet migrate` first$/;
    for (const r of runs) expectOneLine(r, 1, line, passwordOf(fresh.url));
    // Those that met a missing schema tell machines what it was (status's first statement reads
    // rowfleet.records: 42P01, no such table; a rowfleet function would be 3F000, no such schema).
    const status = runs.find((r) => r.args[0] === 'status')!;
    expect(status.personLines[0]).toBe('rowfleet: the database has no rowfleet schema; run `rowfleet migrate` first');
    expect(status.logs.find((e) => e.level === 50)).toMatchObject({ code: '42P01', schema: { kind: 'missing' } });

    const { rows } = await fresh.pool.query<{ name: string }>(
      `SELECT n.nspname AS name FROM pg_namespace n WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
       UNION ALL SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'`,
    );
    expect(rows.map((r) => r.name)).toEqual(['public']);
  });

  it('a schema behind this rowfleet is named as such; a missing table in a current schema is a bug, with its stack', async () => {
    const db = await createTestDatabase();
    try {
      // What an upgrade without `rowfleet migrate` looks like to `status`: the newest migration's table is absent.
      await db.pool.query(`DROP TABLE rowfleet.stats`);
      const bug = await run(['status'], { env: { DATABASE_URL: db.url } });
      expect(bug.code).toBe(1);
      expect(bug.stderr).toMatch(/^rowfleet: unexpected error: error: relation "rowfleet\.stats" does not exist$/m);
      expect(bug.stderr).toMatch(STACK_LINE);

      await db.pool.query(`DELETE FROM rowfleet.migrations WHERE id = (SELECT max(id) FROM rowfleet.migrations)`);
      const behind = await rowfleet({ DATABASE_URL: db.url, ROWFLEET_LOG_LEVEL: 'silent' }, 'status');
      expect(behind.error).toBeInstanceOf(SchemaNotReadyError);
      expect((behind.error as Error).message).toBe("the database's rowfleet schema is 1 migration(s) behind this rowfleet; run `rowfleet migrate` first");
    } finally {
      await db.drop();
    }
  });
});

describe('a database, role or password Postgres refuses', () => {
  const missingDb = `rowfleet_no_such_db_${randomBytes(3).toString('hex')}`;
  const missingRole = `rowfleet_no_such_role_${randomBytes(3).toString('hex')}`;
  const fakePassword = `not-the-password-${randomBytes(6).toString('hex')}`;

  it('an unknown database: one line naming it, exit 1, no database created', async () => {
    const url = databaseUrl(adminUrl, missingDb);
    const runs = await Promise.all([
      ...databaseCommands().map((args) => run(args, { env: { DATABASE_URL: url } })),
      // The flag, not only the environment.
      run(['status', '--database-url', url]),
    ]);
    const line = new RegExp(`^rowfleet: Postgres refused the connection: database "${missingDb}" does not exist; create that database, or correct the database name in DATABASE_URL \\(or --database-url\\)$`);
    for (const r of runs) expectOneLine(r, 1, line, passwordOf(adminUrl));
    await withAdmin(adminUrl, async (admin) => {
      expect((await admin.query(`SELECT 1 FROM pg_database WHERE datname = $1`, [missingDb])).rows).toEqual([]);
    });
  });

  it('db start / stop / url / status do not connect: with DATABASE_URL set they refuse (2) or just report (0)', async () => {
    const url = databaseUrl(adminUrl, missingDb);
    const [start, stop, printed, status] = await Promise.all([['db', 'start'], ['db', 'stop'], ['db', 'url'], ['db', 'status']].map((args) => run(args, { env: { DATABASE_URL: url } })));
    for (const r of [start!, stop!]) expectOneLine(r, 2, /^rowfleet: DATABASE_URL is set, so the embedded Postgres is not used; unset it to (start|stop) the embedded one$/);
    expect(printed!.code).toBe(0);
    expect(printed!.stdout.trim()).toBe(url);
    expect(status!.code).toBe(0);
    expect(status!.stdout).toContain('(not in use: DATABASE_URL is set)');
  });

  it('an unknown role: one line naming it and never the password, exit 1, no role created', async () => {
    const parsed = new URL(adminUrl);
    parsed.username = missingRole;
    parsed.password = fakePassword;
    const url = parsed.toString();
    const runs = await Promise.all(databaseCommands().map((args) => run(args, { env: { DATABASE_URL: url } })));
    // With password authentication (the embedded server's), Postgres does not tell a missing role
    // from a wrong password (28P01); with trust it says the role does not exist (28000).
    const line = new RegExp(
      `^rowfleet: Postgres refused the connection: (password authentication failed for user "${missingRole}"; check the user name and password|role "${missingRole}" does not exist; check the user name)`,
    );
    for (const r of runs) expectOneLine(r, 1, line, fakePassword);
    await withAdmin(adminUrl, async (admin) => {
      expect((await admin.query(`SELECT 1 FROM pg_roles WHERE rolname = $1`, [missingRole])).rows).toEqual([]);
    });
  });

  it('a wrong password: one line naming the role and never the password, exit 1', async () => {
    const parsed = new URL(migrated.url);
    parsed.password = fakePassword;
    const url = parsed.toString();
    const runs = await Promise.all([['migrate'], ['status'], ['worker', '--handler', 'noop']].map((args) => run(args, { env: { DATABASE_URL: url } })));
    const line = new RegExp(`^rowfleet: Postgres refused the connection: password authentication failed for user "${escape(decodeURIComponent(parsed.username))}"; check the user name and password in DATABASE_URL \\(or --database-url\\)$`);
    for (const r of runs) expectOneLine(r, 1, line, fakePassword);
  });
});

describe('a role without privileges on rowfleet\'s schema', () => {
  const role = `rowfleet_noperm_${randomBytes(3).toString('hex')}`;
  const password = `pw-${randomBytes(6).toString('hex')}`;
  afterAll(async () => {
    await withAdmin(adminUrl, (admin) => admin.query(`DROP ROLE IF EXISTS ${role}`));
  });

  it('every command: one line saying what the role lacks, exit 1, nothing written', async () => {
    await withAdmin(adminUrl, (admin) => admin.query(`CREATE ROLE ${role} LOGIN PASSWORD '${password}'`));
    const parsed = new URL(migrated.url);
    parsed.username = role;
    parsed.password = password;
    const before = (await migrated.pool.query(`SELECT count(*)::int AS n FROM rowfleet.event_log`)).rows[0].n;
    const runs = await Promise.all(
      [['migrate'], ['status'], ['inspect', 'order-1'], ['requeue', '--all'], ['upsert', 'order-1', '{"total": 12}'], ['worker', '--handler', 'noop'], ['api', '--port', '0']].map((args) =>
        run(args, { env: { DATABASE_URL: parsed.toString() } }),
      ),
    );
    const line = /^rowfleet: Postgres refused: permission denied for (schema|table|database) \S+; the role in DATABASE_URL \(or --database-url\) lacks privileges on the rowfleet and pgboss schemas/;
    for (const r of runs) expectOneLine(r, 1, line, password);
    expect((await migrated.pool.query(`SELECT count(*)::int AS n FROM rowfleet.event_log`)).rows[0].n).toBe(before);
  });
});

describe('rowfleet api on a port already in use', () => {
  it('says which host:port and what to do, exits 1, writes nothing', async () => {
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const { port } = holder.address() as net.AddressInfo;
    try {
      const before = await counts(migrated);
      const r = await run(['api', '--port', String(port)], { env: { DATABASE_URL: migrated.url } });
      expectOneLine(r, 1, new RegExp(`^rowfleet: cannot listen on 127\\.0\\.0\\.1:${port}: the port is in use \\(another rowfleet api\\?\\); choose another with --port or PORT, or stop what holds it$`));
      expect(r.logs.find((e) => e.level === 50)).toMatchObject({ code: 'EADDRINUSE', host: '127.0.0.1', port });
      expect(await counts(migrated)).toEqual(before);
    } finally {
      await new Promise((resolve) => holder.close(resolve));
    }
  });
});

/** Rows in the tables a command could write to. */
async function counts(db: TestDatabase): Promise<Record<string, number>> {
  const { rows } = await db.pool.query(
    `SELECT (SELECT count(*) FROM rowfleet.records)::int AS records, (SELECT count(*) FROM rowfleet.event_log)::int AS events,
            (SELECT count(*) FROM rowfleet.workers)::int AS workers, (SELECT count(*) FROM pgboss.job)::int AS jobs`,
  );
  return rows[0];
}

describe('output piped to a reader that closes early', () => {
  const AHEAD = 'epipe-ahead';
  beforeAll(async () => {
    const env = { DATABASE_URL: migrated.url, ROWFLEET_LOG_LEVEL: 'silent' };
    // More than a pipe holds (64 KiB): `head` closes while rowfleet still has output to write.
    await migrated.pool.query(
      `INSERT INTO rowfleet.records (id, version, data, status, last_error)
       SELECT 'epipe-failed-' || lpad(n::text, 5, '0'), 1, '{}', 'FAILED', repeat('remote said no; ', 10) FROM generate_series(1, 3000) n`,
    );
    await migrated.pool.query(`INSERT INTO rowfleet.records (id, version, data) VALUES ('epipe-big', 1, jsonb_build_object('blob', repeat('x', 300000)))`);
    expect((await rowfleet(env, 'upsert', AHEAD, '{"n": 1}', '--version', '1')).error).toBeUndefined();
    await migrated.pool.query(`UPDATE rowfleet.records SET version = 9 WHERE id = $1`, [AHEAD]);
  });

  it('stops writing quietly and exits with the command\'s own code, changing nothing it would not', async () => {
    const env = { DATABASE_URL: migrated.url };
    const [status, inspect, requeue, help, watch, verify] = await Promise.all([
      run(['status'], { env, reader: { closeAfter: 'start' } }),
      run(['inspect', 'epipe-big', '--json'], { env, reader: { closeAfter: 'bytes', bytes: 10 } }),
      run(['requeue', '--all', '--dry-run'], { env, reader: { closeAfter: 'line' } }),
      run(['--help'], { reader: { closeAfter: 'start' } }),
      // Would redraw every 2 s forever: the closed pipe ends it, as SIGTERM would.
      run(['status', '--watch'], { env, reader: { closeAfter: 'line' } }),
      run(['replay', '--verify', '--id', AHEAD], { env, reader: { closeAfter: 'start' } }),
    ]);
    for (const r of [status!, inspect!, requeue!, help!, watch!]) {
      const what = `rowfleet ${r.args.join(' ')}\nstderr:\n${r.stderr}`;
      expect(r.signal, what).toBeNull();
      expect(r.code, what).toBe(0);
      expect(r.personLines, what).toEqual([]);
      expect(r.logs.filter((e) => e.level >= 40), what).toEqual([]);
    }
    expect(inspect!.stdout.slice(0, 10)).toBe('{"record":');
    expect(requeue!.stdout).toMatch(/^default\tepipe-failed-00001\tFAILED\tv1\t/);
    expect(watch!.stdout).toMatch(/^records /);
    // A failure is still a failure, and still says so on stderr.
    expectOneLine(verify!, 1, /^rowfleet: 1 record\(s\) hold a newer version than their messages replay to; replay never rewrites them/);
    const { rows } = await migrated.pool.query(`SELECT count(*)::int AS n FROM rowfleet.records WHERE status = 'FAILED'`);
    expect(rows[0].n).toBe(3000);
  });
});

describe('replay --verify with records ahead of their messages', () => {
  const env = () => ({ DATABASE_URL: migrated.url, ROWFLEET_LOG_LEVEL: 'silent' });
  beforeAll(async () => {
    for (const id of ['rv-ahead', 'rv-behind']) {
      expect((await rowfleet(env(), 'upsert', id, '{"n": 1}', '--version', '1')).error).toBeUndefined();
      expect((await rowfleet(env(), 'upsert', id, '{"n": 2}', '--version', '2')).error).toBeUndefined();
    }
    await migrated.pool.query(`UPDATE rowfleet.records SET version = 9 WHERE id = 'rv-ahead'`);
    await migrated.pool.query(`UPDATE rowfleet.records SET version = 1, data = '{"n": 1}' WHERE id = 'rv-behind'`);
  });

  it('only ahead: does not tell the user to run replay, which would change nothing', async () => {
    const run = await rowfleet(env(), 'replay', '--verify', '--id', 'rv-ahead');
    expect(run.error).toBeInstanceOf(UserError);
    expect((run.error as UserError).exitCode).toBe(1);
    expect((run.error as Error).message).toBe(
      '1 record(s) hold a newer version than their messages replay to; replay never rewrites them (it never lowers a version), so running it changes nothing: ' +
        'their latest messages were likely deleted by the event_log retention, or records was written outside rowfleet; look at them with `rowfleet inspect <id> --kind <kind>`',
    );
    // And indeed replay leaves it as it is.
    expect((await rowfleet(env(), 'replay', '--dry-run', '--id', 'rv-ahead', '--json')).stdout).toContain('"differ":1');
  });

  it('with --to-seq, says that records are ahead of it by design', async () => {
    const { rows } = await migrated.pool.query(`SELECT min(seq)::text AS seq FROM rowfleet.event_log WHERE record_id = 'rv-ahead'`);
    const run = await rowfleet(env(), 'replay', '--verify', '--id', 'rv-ahead', '--to-seq', rows[0].seq);
    expect((run.error as Error).message).toContain(`records with messages after --to-seq ${rows[0].seq} are ahead of it by design`);
  });

  it('ahead and behind: names the replay that rebuilds the others, with the same filters', async () => {
    const run = await rowfleet(env(), 'replay', '--verify', '--id', 'rv-ahead', '--id', 'rv-behind');
    expect((run.error as Error).message).toBe(
      '1 record(s) differ from their messages; run `rowfleet replay --id rv-ahead --id rv-behind` to rebuild them; ' +
        '1 more are ahead of their messages, which replay never rewrites: look at them with `rowfleet inspect <id> --kind <kind>`',
    );
  });
});

describe('on a Node older than 22.12', () => {
  const oldNode = '/usr/bin/node';
  const version = fs.existsSync(oldNode) ? spawnSync(oldNode, ['--version'], { encoding: 'utf8' }).stdout.trim() : '';
  const [major = 99, minor = 99] = version.replace(/^v/, '').split('.').map(Number);
  const isOld = version !== '' && (major < 22 || (major === 22 && minor < 12));
  const dist = path.join(ROOT, 'dist/cli/main.js');
  const script = path.join(ROOT, 'scripts/ensure-node.sh');

  it.skipIf(!isOld)(`${oldNode} (${version || 'absent'}) gets one line with the real path of scripts/ensure-node.sh, exit 2`, async () => {
    // The built entry point is what an older Node runs (it cannot load TypeScript); only main.js
    // itself matters, since the check runs before it imports anything of rowfleet's.
    if (!fs.existsSync(dist) || fs.statSync(dist).mtimeMs < fs.statSync(path.join(ROOT, 'src/cli/main.ts')).mtimeMs) {
      spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: ROOT, timeout: 120_000 });
    }
    expect(fs.statSync(dist).mtimeMs).toBeGreaterThanOrEqual(fs.statSync(path.join(ROOT, 'src/cli/main.ts')).mtimeMs);
    const elsewhere = fs.mkdtempSync(path.join(os.tmpdir(), 'rowfleet-old-node-'));
    try {
      for (const cwd of [ROOT, path.join(ROOT, 'src'), elsewhere]) {
        const r = spawnSync(oldNode, [dist, 'status'], { cwd, encoding: 'utf8', timeout: 30_000, env: { ...process.env, DATABASE_URL: migrated.url } });
        expect(r.status, r.stderr).toBe(2);
        const lines = r.stderr.split('\n').filter((l) => l !== '');
        expect(lines, r.stderr).toHaveLength(1);
        const match = new RegExp(`^rowfleet: needs Node >= 22\\.12, this is ${escape(version)}; run \`source (\\S+)\` or install Node 22$`).exec(lines[0]!);
        expect(match, lines[0]).not.toBeNull();
        const shown = match![1]!;
        expect(path.resolve(cwd, shown)).toBe(script);
        expect(shown.length).toBeLessThanOrEqual(script.length);
      }
      expect(spawnSync(oldNode, [dist, 'status'], { cwd: ROOT, encoding: 'utf8' }).stderr).toContain('run `source scripts/ensure-node.sh`');
    } finally {
      fs.rmSync(elsewhere, { recursive: true, force: true });
    }
  });
});
