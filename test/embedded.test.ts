import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { embeddedStatus, ensureEmbedded, relocatedHome, stopEmbedded, type EmbeddedServer } from '../src/db/embedded.ts';
import { UserError } from '../src/errors.ts';
import { silentLogger } from '../src/log.ts';

const EMBEDDED_MODULE = fileURLToPath(new URL('../src/db/embedded.ts', import.meta.url));

/** A pino logger whose lines land in `lines`, to count what ensureEmbedded reported. */
function capturingLogger(): { log: pino.Logger; lines: Array<{ msg: string; port?: number }> } {
  const lines: Array<{ msg: string; port?: number }> = [];
  const log = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line)) });
  return { log, lines };
}

/** ensureEmbedded in another Node process, as a second rowfleet process would call it. */
function ensureInChildProcess(home: string): Promise<{ server: EmbeddedServer; logLines: string[] }> {
  const script = `
    import { pino } from 'pino';
    const { ensureEmbedded } = await import(${JSON.stringify(EMBEDDED_MODULE)});
    const server = await ensureEmbedded({ home: ${JSON.stringify(home)}, log: pino({ level: 'info' }, process.stdout) });
    process.stdout.write(JSON.stringify({ server }) + '\\n');
  `;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--experimental-strip-types', '--no-warnings', '--input-type=module', '-e', script], {
      cwd: fileURLToPath(new URL('..', import.meta.url)),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`child exited with ${code}: ${stderr}`));
      const lines = stdout.trim().split('\n');
      const last = JSON.parse(lines.pop()!) as { server: EmbeddedServer };
      resolve({ server: last.server, logLines: lines });
    });
  });
}

/** A pid that certainly belonged to a process that has exited. */
function deadPid(): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
    child.on('error', reject);
    child.on('exit', () => resolve(child.pid!));
  });
}

async function query<T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

describe('embedded Postgres', () => {
  let home: string;
  beforeAll(async () => {
    home = await fs.mkdtemp(path.join(os.tmpdir(), 'rowfleet-embedded-'));
  });
  afterAll(async () => {
    await stopEmbedded(home, silentLogger);
    await fs.rm(home, { recursive: true, force: true });
  });

  it('is started once when two processes ask for it at the same moment', async () => {
    const { log, lines } = capturingLogger();
    const [here, there] = await Promise.all([ensureEmbedded({ home, log }), ensureInChildProcess(home)]);

    expect(there.server).toEqual(here);
    expect(here.url).toMatch(/^postgres:\/\/postgres:[^@]+@127\.0\.0\.1:\d+\/rowfleet$/);
    expect(here.dataDir).toBe(path.join(home, 'pg'));
    const started = [...lines.map((l) => l.msg), ...there.logLines.map((l) => (JSON.parse(l) as { msg: string }).msg)].filter((msg) => msg === 'embedded Postgres started');
    expect(started).toHaveLength(1);

    const [row] = await query<{ db: string }>(here.url, 'SELECT current_database() AS db');
    expect(row?.db).toBe('rowfleet');
  });

  it('keeps the password in a file only its owner can read', async () => {
    const { mode } = await fs.stat(path.join(home, 'server.json'));
    expect(mode & 0o777).toBe(0o600);
  });

  it('is found running by later calls, which start nothing', async () => {
    const { log, lines } = capturingLogger();
    const first = await embeddedStatus(home);
    const again = await ensureEmbedded({ home, log });
    expect(first).toEqual({ running: true, url: again.url, port: again.port, pid: again.pid, dataDir: again.dataDir });
    expect(lines).toEqual([]);
  });

  it('keeps its data across stop and start, even past a lock left by a dead process', async () => {
    const before = await ensureEmbedded({ home, log: silentLogger });
    await query(before.url, 'CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)');

    expect(await stopEmbedded(home, silentLogger)).toEqual({ stopped: true });
    expect(await embeddedStatus(home)).toEqual({ running: false, dataDir: path.join(home, 'pg') });
    expect(await stopEmbedded(home, silentLogger)).toEqual({ stopped: false });

    await fs.writeFile(path.join(home, 'pg.lock'), `${await deadPid()}\n`);
    const { log, lines } = capturingLogger();
    const after = await ensureEmbedded({ home, log });
    expect(after.pid).not.toBe(before.pid);
    expect(lines.map((l) => l.msg)).toEqual(['embedded Postgres started']);
    expect(await query<{ n: number }>(after.url, 'SELECT n FROM kept')).toEqual([{ n: 42 }]);
  });

  it.runIf(process.getuid?.() === 0)('as root, says in one line when the postgres user cannot reach the home folder', async () => {
    const privateParent = await fs.mkdtemp(path.join(os.tmpdir(), 'rowfleet-private-'));
    try {
      const attempt = ensureEmbedded({ home: path.join(privateParent, 'home'), log: silentLogger });
      await expect(attempt).rejects.toBeInstanceOf(UserError);
      await expect(attempt).rejects.toThrow(/cannot reach .*ROWFLEET_HOME=.*DATABASE_URL/);
      await expect(attempt).rejects.not.toThrow(/\n/);
    } finally {
      await fs.rm(privateParent, { recursive: true, force: true });
    }
  });

  describe.runIf(process.getuid?.() === 0)('as root, with the default home in a private folder', () => {
    let privateParent: string;
    let privateHome: string;
    let elsewhere: string;
    beforeAll(async () => {
      privateParent = await fs.mkdtemp(path.join(os.tmpdir(), 'rowfleet-private-'));
      privateHome = path.join(privateParent, 'checkout', '.rowfleet');
      elsewhere = relocatedHome(privateHome);
    });
    afterAll(async () => {
      await stopEmbedded(privateHome, silentLogger, { relocate: true });
      await fs.rm(elsewhere, { recursive: true, force: true });
      await fs.rm(privateParent, { recursive: true, force: true });
    });

    it('keeps the data in a folder of its own under /var/tmp, says so once, and finds it again', async () => {
      expect(elsewhere).toMatch(/^\/var\/tmp\/rowfleet-checkout-[0-9a-f]{10}$/);
      const { log, lines } = capturingLogger();
      const first = await ensureEmbedded({ home: privateHome, log, relocate: true });
      expect(first.dataDir).toBe(path.join(elsewhere, 'pg'));
      const said = lines.filter((l) => l.msg.includes('cannot reach'));
      expect(said).toHaveLength(1);
      expect(said[0]!.msg).toContain(elsewhere);
      expect(await fs.readFile(path.join(privateHome, 'README'), 'utf8')).toContain(elsewhere);
      expect(await query<{ one: number }>(first.url, 'SELECT 1 AS one')).toEqual([{ one: 1 }]);

      // Another process of the same checkout, and status and stop, find the same server.
      const { server } = await ensureInChildProcessRelocating(privateHome);
      expect(server.pid).toBe(first.pid);
      expect(await embeddedStatus(privateHome, { relocate: true })).toMatchObject({ running: true, pid: first.pid, dataDir: first.dataDir });
      expect(await stopEmbedded(privateHome, silentLogger, { relocate: true })).toEqual({ stopped: true });

      // Started again: same place, and nothing more said about it.
      const { log: quiet, lines: later } = capturingLogger();
      const again = await ensureEmbedded({ home: privateHome, log: quiet, relocate: true });
      expect(again.dataDir).toBe(first.dataDir);
      expect(later.map((l) => l.msg)).toEqual(['embedded Postgres started']);
    });

    it('refuses a folder under /var/tmp that someone else could have planted', async () => {
      const planted = path.join(privateParent, 'planted', '.rowfleet');
      const target = relocatedHome(planted);
      await fs.mkdir(target, { mode: 0o777 });
      await fs.chmod(target, 0o777);
      await fs.writeFile(path.join(target, 'server.json'), '{"password": "x", "port": 1}');
      try {
        const attempt = ensureEmbedded({ home: planted, log: silentLogger, relocate: true });
        await expect(attempt).rejects.toBeInstanceOf(UserError);
        await expect(attempt).rejects.toThrow(/is not a folder of ours that only we can write/);
      } finally {
        await fs.rm(target, { recursive: true, force: true });
      }
    });
  });
});

/** ensureEmbedded with relocation in another Node process, as another command of the checkout would call it. */
async function ensureInChildProcessRelocating(home: string): Promise<{ server: EmbeddedServer }> {
  const { stdout } = await new Promise<{ stdout: string }>((resolve, reject) => {
    const script = `
      import { silentLogger } from ${JSON.stringify(fileURLToPath(new URL('../src/log.ts', import.meta.url)))};
      const { ensureEmbedded } = await import(${JSON.stringify(EMBEDDED_MODULE)});
      const server = await ensureEmbedded({ home: ${JSON.stringify(home)}, log: silentLogger, relocate: true });
      process.stdout.write(JSON.stringify({ server }) + '\\n');
    `;
    const child = spawn(process.execPath, ['--experimental-strip-types', '--no-warnings', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve({ stdout: out }) : reject(new Error(`child exited with ${code}: ${err}`))));
  });
  return JSON.parse(stdout.trim().split('\n').pop()!) as { server: EmbeddedServer };
}
