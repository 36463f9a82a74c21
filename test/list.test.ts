/**
 * Listing records (GET /records, `rowfleet records list`): a page in key order (kind, id), filtered
 * by status, kinds and last error, with a cursor that walks every match exactly once; bad input is
 * a 400 / usage error naming the parameter.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TestDatabase } from './helpers/database.ts';
import { openSurfaces, type Surfaces } from './helpers/surfaces.ts';
import { rowfleet } from './helpers/cli.ts';
import { UsageError } from '../src/index.ts';

let surfaces: Surfaces;
let db: TestDatabase;
let env: Record<string, string>;
const get = (url: string) => surfaces.app.inject({ method: 'GET', url });

beforeAll(async () => {
  surfaces = await openSurfaces();
  ({ db, env } = surfaces);
  const items = [
    ...Array.from({ length: 7 }, (_, i) => ({ kind: 'l.order', id: `o-${i}`, data: { i } })),
    ...Array.from({ length: 4 }, (_, i) => ({ kind: 'l.invoice', id: `i-${i}`, data: { i } })),
    { kind: 'l.order', id: 'ok', data: {} },
  ];
  expect((await surfaces.app.inject({ method: 'POST', url: '/upsert', payload: { items } })).statusCode).toBe(200);
  await db.pool.query(
    `UPDATE rowfleet.records SET status = 'FAILED', attempts = 3,
            last_error = CASE WHEN id IN ('o-1', 'i-2') THEN 'TypeError: fetch failed; caused by: ECONNRESET' ELSE 'timeout after 30000 ms' END
      WHERE kind LIKE 'l.%' AND id <> 'ok'`,
  );
});
afterAll(async () => {
  await surfaces?.close();
});

interface Page {
  records: { kind: string; id: string; version: number; status: string; attempts: number; lastError: string | null; updatedAt: string }[];
  nextCursor: string | null;
}

async function walk(query: string): Promise<{ keys: string[]; pages: number }> {
  const keys: string[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const res = await get(`/records?${query}${cursor === null ? '' : `&cursor=${cursor}`}`);
    expect(res.statusCode, res.body).toBe(200);
    const page = res.json() as Page;
    keys.push(...page.records.map((r) => `${r.kind}/${r.id}`));
    cursor = page.nextCursor;
    pages += 1;
  } while (cursor !== null && pages < 20);
  return { keys, pages };
}

describe('GET /records', () => {
  it('pages through every match once, in key order, with its status, attempts and error', async () => {
    const failed = [...Array.from({ length: 4 }, (_, i) => `l.invoice/i-${i}`), ...Array.from({ length: 7 }, (_, i) => `l.order/o-${i}`)];
    expect(await walk('status=FAILED&kind=l.order,l.invoice&limit=3')).toEqual({ keys: failed, pages: 4 });
    const first = (await get('/records?status=FAILED&kind=l.invoice&limit=1')).json() as Page;
    expect(first.records).toEqual([
      { kind: 'l.invoice', id: 'i-0', version: expect.any(Number), status: 'FAILED', attempts: 3, lastError: 'timeout after 30000 ms', updatedAt: expect.any(String) },
    ]);
    expect(first.nextCursor).toEqual(expect.any(String));
    // The filters: kinds, an error pattern, any status but DELETED by default.
    expect((await walk('status=FAILED&kind=l.order&error=ECONN')).keys).toEqual(['l.order/o-1']);
    expect((await walk('kind=l.order&kind=l.invoice&error=fetch%20failed')).keys).toEqual(['l.invoice/i-2', 'l.order/o-1']);
    expect((await walk('status=COMPLETED&kind=l.order')).keys).toEqual(['l.order/ok']);
    expect((await walk('kind=l.order')).keys).toHaveLength(8);
    const last = (await get('/records?status=FAILED&kind=l.order&limit=1000')).json() as Page;
    expect([last.records.length, last.nextCursor]).toEqual([7, null]);
  });

  it('answers bad parameters with a 400 naming them', async () => {
    const cases: [string, string][] = [
      ['/records?status=NOPE', 'status'],
      ['/records?limit=0', 'limit'],
      ['/records?limit=1001', 'limit'],
      ['/records?limit=ten', 'limit'],
      ['/records?cursor=not-a-cursor', 'cursor'],
      ['/records?kind=BAD', 'kind'],
      ['/records?status=FAILED&status=COMPLETED', 'status'],
    ];
    for (const [url, field] of cases) {
      const res = await get(url);
      expect(res.statusCode, url).toBe(400);
      expect(res.json(), url).toMatchObject({ error: 'invalid_request', field });
    }
    // A pattern Postgres cannot compile is refused by it: still the caller's input.
    const regex = await get('/records?error=(');
    expect(regex.statusCode).toBe(400);
    expect(regex.json().message).toMatch(/regular expression/);
  });
});

describe('rowfleet records list', () => {
  it('prints the same page as the API, and the cursor of the next one', async () => {
    const cli = JSON.parse((await rowfleet(env, 'records', 'list', '--status', 'FAILED', '--kind', 'l.order', '--limit', '2', '--json')).stdout);
    expect(cli).toEqual((await get('/records?status=FAILED&kind=l.order&limit=2')).json());
    const next = JSON.parse((await rowfleet(env, 'records', 'list', '--status', 'FAILED', '--kind', 'l.order', '--limit', '2', '--cursor', cli.nextCursor, '--json')).stdout);
    expect(next.records.map((r: { id: string }) => r.id)).toEqual(['o-2', 'o-3']);
    const text = (await rowfleet(env, 'records', 'list', '--status', 'FAILED', '--kind', 'l.invoice', '--error', 'ECONN')).stdout;
    expect(text).toMatch(/^l\.invoice\/i-2 {2}v\d+ {2}FAILED {2}attempts 3 {2}\S+ {2}TypeError: fetch failed; caused by: ECONNRESET$/m);
    expect(text).not.toMatch(/more:/);
    expect((await rowfleet(env, 'records', 'list', '--status', 'FAILED', '--kind', 'l.order', '--limit', '1')).stdout).toMatch(/\nmore: --cursor \S+\n?$/);
    expect((await rowfleet(env, 'records', 'list', '--kind', 'l.nothing')).stdout.trim()).toBe('no records match');
  });

  it('refuses bad flags as usage errors naming them', async () => {
    for (const [args, pattern] of [
      [['--limit', '0'], /--limit/],
      [['--cursor', 'zzz'], /--cursor is not a cursor/],
      [['--kind', 'BAD'], /--kind/],
    ] as const) {
      const run = await rowfleet(env, 'records', 'list', ...args);
      expect(run.error, args.join(' ')).toBeInstanceOf(UsageError);
      expect((run.error as Error).message).toMatch(pattern);
    }
    const status = await rowfleet(env, 'records', 'list', '--status', 'nope');
    expect(status.error).toMatchObject({ code: 'commander.invalidArgument' });
    expect(status.stderr).toMatch(/--status.*nope/);
  });
});
