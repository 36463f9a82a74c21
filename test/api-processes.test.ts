/**
 * Two real `rowfleet api` processes write the same ids at once, through HTTP: no 5xx, no lost
 * update (each record holds its highest applied version), every message audited once, and both
 * shut down cleanly on SIGTERM.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';

const CLI = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('..', import.meta.url));

interface ApiProcess {
  child: ChildProcess;
  address: string;
}

/** Starts `rowfleet api --port 0` and resolves with the address it logs once listening. */
async function startApi(databaseUrl: string): Promise<ApiProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'api', '--port', '0'], {
    cwd: ROOT,
    env: { ...process.env, DATABASE_URL: databaseUrl, ROWFLEET_LOG_LEVEL: 'info', ROWFLEET_POOL_SIZE: '4' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const lines = createInterface({ input: child.stderr! });
  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('api did not start within 30s')), 30_000);
    child.once('exit', (code) => reject(new Error(`api exited with ${code} before listening`)));
    lines.on('line', (line) => {
      try {
        const entry = JSON.parse(line) as { address?: string };
        if (entry.address) {
          clearTimeout(timer);
          resolve(entry.address);
        }
      } catch {
        // not a JSON log line
      }
    });
  });
  return { child, address };
}

let db: TestDatabase;
const apis: ApiProcess[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  apis.push(...(await Promise.all([startApi(db.url), startApi(db.url)])));
});
afterAll(async () => {
  for (const { child } of apis) if (child.exitCode === null) child.kill('SIGKILL');
  await db?.drop();
});

describe('two API processes', () => {
  it('never lose an update or an audit row when writing the same ids concurrently', async () => {
    const ids = ['p-a', 'p-b', 'p-c', 'p-d'];
    const total = 400;
    // Deterministic mix: versions 1..60 in a scrambled order, some without a version, some
    // repeated messageIds sent to the other server.
    const requests = Array.from({ length: total }, (_, i) => {
      const id = ids[i % ids.length]!;
      const version = (i * 37) % 60 || undefined;
      const messageId = i % 10 === 0 ? `p-msg-${i % 40}` : undefined;
      return { id, data: { i, v: version ?? null }, ...(version !== undefined && { version }), ...(messageId !== undefined && { messageId }) };
    });

    const statuses: number[] = [];
    const responses: Array<{ applied: boolean; duplicate?: boolean; reason: string }> = [];
    let next = 0;
    const sendAll = async () => {
      while (next < requests.length) {
        const n = next++;
        const api = apis[n % 2]!;
        const response = await fetch(`${api.address}/upsert`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(requests[n]),
        });
        statuses.push(response.status);
        responses.push((await response.json()) as (typeof responses)[number]);
      }
    };
    await Promise.all(Array.from({ length: 16 }, sendAll));

    expect(statuses.filter((s) => s >= 500)).toEqual([]);
    const processed = responses.filter((r) => !r.duplicate && r.reason !== 'message_id_reused').length;
    const { rows: events } = await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM rowfleet.event_log`);
    expect(events[0]!.n).toBe(processed);

    // Each record holds the data of its highest applied version.
    const { rows } = await db.pool.query<{ id: string; version: string; data: unknown; logged: unknown }>(
      `SELECT r.id, r.version, r.data,
              (SELECT e.data FROM rowfleet.event_log e WHERE e.record_id = r.id AND e.applied ORDER BY e.version DESC LIMIT 1) AS logged
         FROM rowfleet.records r`,
    );
    expect(rows.map((r) => r.id).sort()).toEqual(ids);
    for (const row of rows) expect(row.data).toEqual(row.logged);
    // Applied versions increase with seq, per id.
    const { rows: regressions } = await db.pool.query(
      `SELECT record_id FROM (
         SELECT record_id, version, lag(version) OVER (PARTITION BY record_id ORDER BY seq) AS previous
           FROM rowfleet.event_log WHERE applied) s
        WHERE version <= previous`,
    );
    expect(regressions).toEqual([]);
  });

  it('shut down cleanly on SIGTERM', async () => {
    const exits = apis.map(({ child }) => once(child, 'exit'));
    for (const { child } of apis) child.kill('SIGTERM');
    const codes = (await Promise.all(exits)).map(([code]) => code);
    expect(codes).toEqual([0, 0]);
  });
});
