import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { embeddedStatus, ensureEmbedded, stopEmbedded, type EmbeddedServer } from '../src/db/embedded.ts';
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
});
