/**
 * The fault-injection proxy (test/harness/proxy.ts) against a real Postgres: pg clients connect
 * through it and see pass-through, latency, resets, a partition (blackhole) and its healing,
 * refused connections, and close() taking every proxied backend away.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FaultProxy } from './harness/proxy.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';
import { waitFor } from './helpers/wait.ts';

/** What pg reports when the socket under a client is reset, closed or unusable. */
const CONNECTION_ERROR = /ECONNRESET|EPIPE|Connection terminated|not queryable/;

let db: TestDatabase;
let proxy: FaultProxy;
let target: { host: string; port: number };
const clients = new Set<pg.Client>();

beforeAll(async () => {
  db = await createTestDatabase();
  const url = new URL(db.url);
  target = { host: url.hostname, port: Number(url.port || 5432) };
  proxy = await FaultProxy.start({ target });
});
afterEach(async () => {
  proxy?.heal();
  await Promise.all([...clients].map(release));
  await waitFor(() => proxy.connections() === 0, 5_000, 'the proxy to have no open connection');
});
afterAll(async () => {
  proxy?.heal();
  await Promise.all([...clients].map(release));
  await proxy?.close();
  await db?.drop();
});

/** A connected client through `via` (the shared proxy by default), released after the test. */
async function connect(via: FaultProxy = proxy, config: pg.ClientConfig = {}): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: via.url(db.url), connectionTimeoutMillis: 5_000, ...config });
  // Faults make idle clients emit 'error'; the tests look at what their queries do instead.
  client.on('error', () => {});
  clients.add(client);
  await client.connect();
  return client;
}

/** Ends `client`; one whose connection is dead or silent is destroyed instead of awaited forever. */
async function release(client: pg.Client): Promise<void> {
  clients.delete(client);
  const ended = client.end().then(
    () => true,
    () => true,
  );
  if (!(await Promise.race([ended, delay(1_000).then(() => false)]))) client.connection.stream.destroy();
}

function localPort(client: pg.Client): number {
  return (client.connection.stream as net.Socket).localPort!;
}

/** 'answered', 'failed' or 'silent' (no outcome within `ms`), and the pending outcome itself. */
function outcomeWithin(promise: Promise<unknown>, ms: number): Promise<'answered' | 'failed' | 'silent'> {
  return Promise.race([
    promise.then(
      () => 'answered' as const,
      () => 'failed' as const,
    ),
    delay(ms).then(() => 'silent' as const),
  ]);
}

/** Backends on the test server whose application_name is `name`, as seen from the direct pool. */
async function backends(name: string): Promise<number> {
  const { rows } = await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1`, [name]);
  return rows[0]!.n;
}

describe('FaultProxy', () => {
  it('passes queries through and counts the open connections', async () => {
    const direct = new URL(db.url);
    const proxied = new URL(proxy.url(db.url));
    expect(proxied.host).toBe(`127.0.0.1:${proxy.port}`);
    expect([proxied.protocol, proxied.username, proxied.password, proxied.pathname]).toEqual([direct.protocol, direct.username, direct.password, direct.pathname]);
    const before = proxy.stats();
    const a = await connect();
    const b = await connect();
    expect((await a.query<{ one: number }>('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    expect((await b.query<{ db: string }>('SELECT current_database() AS db')).rows[0]!.db).toBe(direct.pathname.slice(1));
    expect(proxy.connections()).toBe(2);
    expect(proxy.connectionsInfo().map((c) => c.clientPort).sort()).toEqual([localPort(a), localPort(b)].sort());

    await release(a);
    await waitFor(() => proxy.connections() === 1, 5_000, 'one connection left');
    const after = proxy.stats();
    expect(after.accepted - before.accepted).toBe(2);
    expect(after.bytesUp).toBeGreaterThan(before.bytesUp);
    expect(after.bytesDown).toBeGreaterThan(before.bytesDown);
  });

  it('delays every round trip by the latency, and not once it is off', async () => {
    const client = await connect();
    proxy.setLatency(200);
    const started = performance.now();
    expect((await client.query<{ one: number }>('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    // 200 ms each way: a lower bound, whatever the machine's speed.
    expect(performance.now() - started).toBeGreaterThanOrEqual(150);

    proxy.setLatency(0);
    expect((await client.query<{ one: number }>('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('keeps the order of the chunks when the latency is lowered mid-flight', async () => {
    // Pipelined: the second query is on the wire before the first is answered. Were it forwarded
    // ahead of the first (0 ms < the 250 ms the first still waits), Postgres would answer it
    // first and pg would hand each query the other's rows.
    const client = await connect(proxy, { pipeline: true });
    proxy.setLatency(300);
    const first = client.query('SELECT 1 AS n');
    await delay(50);
    proxy.setLatency(0);
    const second = client.query('SELECT 2 AS n');
    expect((await first).rows).toEqual([{ n: 1 }]);
    expect((await second).rows).toEqual([{ n: 2 }]);
  });

  it('resetAll() breaks every open connection, and new ones work', async () => {
    const old = await connect();
    await old.query('SELECT 1');
    const resets = proxy.stats().reset;
    proxy.resetAll();
    await expect(old.query('SELECT 1')).rejects.toThrow(CONNECTION_ERROR);
    expect(proxy.stats().reset).toBe(resets + 1);

    const fresh = await connect();
    expect((await fresh.query<{ one: number }>('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('blackhole() silences current and new connections until heal(), which fails them; new ones then work', async () => {
    const old = await connect();
    await old.query('SELECT 1');
    proxy.blackhole();
    const query = old.query('SELECT 1');
    expect(await outcomeWithin(query, 500)).toBe('silent');

    // A connection opened during the partition is silent too: its start-up never answers.
    const during = new pg.Client({ connectionString: proxy.url(db.url) });
    during.on('error', () => {});
    clients.add(during);
    const connecting = during.connect();
    expect(await outcomeWithin(connecting, 500)).toBe('silent');
    expect(proxy.connectionsInfo().every((c) => c.blackholed)).toBe(true);
    expect(proxy.stats().blackholed).toBeGreaterThanOrEqual(2);

    proxy.heal();
    await expect(query).rejects.toThrow(CONNECTION_ERROR);
    await expect(connecting).rejects.toThrow();
    const fresh = await connect();
    expect((await fresh.query<{ one: number }>('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    expect(proxy.connectionsInfo().some((c) => c.blackholed)).toBe(false);
  });

  it('blackhole(match) silences only the matching connections', async () => {
    const partitioned = await connect();
    const healthy = await connect();
    const port = localPort(partitioned);
    proxy.blackhole((c) => c.clientPort === port);

    const silent = partitioned.query('SELECT 1');
    expect(await outcomeWithin(silent, 500)).toBe('silent');
    expect((await healthy.query<{ one: number }>('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);

    proxy.heal();
    await expect(silent).rejects.toThrow(CONNECTION_ERROR);
    expect((await healthy.query<{ one: number }>('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('refuse(true) closes new connections at once; refuse(false) lets them through again', async () => {
    proxy.refuse(true);
    await expect(connect()).rejects.toThrow();
    expect(proxy.stats().refused).toBeGreaterThanOrEqual(1);

    proxy.refuse(false);
    const client = await connect();
    expect((await client.query<{ one: number }>('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('closes the client when the target is unreachable, and survives it', async () => {
    // A port that was free a moment ago: nothing listens on it.
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));

    const nowhere = await FaultProxy.start({ target: { host: '127.0.0.1', port } });
    try {
      await expect(connect(nowhere)).rejects.toThrow();
      await waitFor(() => nowhere.connections() === 0, 5_000, 'the refused client to be closed');
    } finally {
      await nowhere.close();
    }
  });

  it('refuses to listen anywhere but loopback', async () => {
    await expect(FaultProxy.start({ target, host: '0.0.0.0' })).rejects.toThrow(/loopback/);
  });

  it('close() stops listening and takes every proxied backend away', async () => {
    const name = `fault_proxy_close_${process.pid}`;
    const own = await FaultProxy.start({ target });
    try {
      const a = await connect(own, { application_name: name });
      const b = await connect(own, { application_name: name });
      await Promise.all([a.query('SELECT 1'), b.query('SELECT 1')]);
      expect(await backends(name)).toBe(2);
      expect(own.connections()).toBe(2);

      await own.close();
      await own.close(); // idempotent
      expect(own.connections()).toBe(0);
      await waitFor(async () => (await backends(name)) === 0, 5_000, 'the proxied backends to go away');
      await expect(connect(own, { application_name: name })).rejects.toThrow(/ECONNREFUSED/);
    } finally {
      await own.close();
    }
  });
});
