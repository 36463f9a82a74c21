/**
 * Slow clients (issue 13): headers or a body trickled in are answered 408 and closed once the
 * request has not arrived within ROWFLEET_REQUEST_TIMEOUT, nothing is written, and the server
 * answers others meanwhile.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { buildServer } from '../src/http/server.ts';
import { loadConfig } from '../src/config.ts';
import { silentLogger } from '../src/log.ts';

let db: TestDatabase;
let app: FastifyInstance;
let port: number;

beforeAll(async () => {
  db = await createTestDatabase();
  app = buildServer({ config: loadConfig({ ROWFLEET_REQUEST_TIMEOUT: '500ms' }, { databaseUrl: db.url }), pool: db.pool, log: silentLogger });
  await app.listen({ port: 0, host: '127.0.0.1' });
  port = (app.server.address() as net.AddressInfo).port;
});
afterAll(async () => {
  await app?.close();
  await db?.drop();
});

/** Opens a connection, writes `first`, then `trickle` a byte at a time every 100 ms until the server closes; resolves with what it answered. */
function slowClient(first: string, trickle: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let answer = '';
    let at = 0;
    const timer = setInterval(() => {
      if (at < trickle.length) socket.write(trickle[at++]!);
    }, 100);
    socket.on('connect', () => socket.write(first));
    socket.on('data', (chunk) => (answer += chunk.toString()));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearInterval(timer);
      resolve(answer);
    });
    // Far past the timeout: the server never closed.
    setTimeout(() => reject(new Error(`still open after 20 s; answered so far: ${answer}`)), 20_000).unref();
  });
}

describe('slow clients', () => {
  it('answers trickled headers and a trickled body with 408 and closes, writes nothing, and serves others meanwhile', async () => {
    const headers = slowClient('POST /upsert HTTP/1.1\r\nHost: x\r\n', 'X-Slow: ' + 'a'.repeat(200));
    const body = '{"id": "slow", "data": {}}';
    const trickledBody = slowClient(`POST /upsert HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`, body + ' '.repeat(200));
    // Meanwhile: an ordinary request is answered.
    const health = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(health.status).toBe(200);
    const [a, b] = await Promise.all([headers, trickledBody]);
    expect(a).toMatch(/^HTTP\/1\.1 408 /);
    expect(b).toMatch(/^HTTP\/1\.1 408 /);
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM rowfleet.records WHERE id = 'slow'`);
    expect(rows[0].n).toBe(0);
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
  });

  it('times the request, not the answer: a ?wait= longer than the timeout is answered', async () => {
    const res = await fetch(`http://127.0.0.1:${port}/upsert?wait=2s`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ id: 'waits', data: {} }) });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ applied: true, outcome: { settled: false, status: 'COMPLETED' } });
  });

  it('refuses a bad ROWFLEET_REQUEST_TIMEOUT by name', () => {
    expect(() => loadConfig({ ROWFLEET_REQUEST_TIMEOUT: '30' })).toThrow(/ROWFLEET_REQUEST_TIMEOUT/);
    expect(() => loadConfig({ ROWFLEET_REQUEST_TIMEOUT: '10ms' })).toThrow(/ROWFLEET_REQUEST_TIMEOUT/);
  });
});
