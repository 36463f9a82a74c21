/**
 * FaultProxy: a small TCP proxy that stands in for the network between workers and Postgres in
 * the fault suite. Clients connect to the proxy (on loopback) instead of Postgres; every
 * connection is forwarded byte for byte to the target until a test injects a fault:
 *
 *   - setLatency(ms)   every chunk, in both directions, arrives ms later (order kept per direction);
 *   - blackhole(match) matching connections, current and future, go silent both ways: bytes are
 *                      dropped but sockets stay open, so peers see a network partition, not a close;
 *   - heal()           ends every fault: blackholed connections are destroyed (as TCP connections
 *                      time out once a partition heals), latency is back to 0, refusing stops;
 *   - resetAll()       every current connection is reset (RST) on both sides; new ones work;
 *   - refuse(true)     new connections are accepted and closed at once, until refuse(false).
 *
 * The proxy never crashes its host process: errors on every socket (ECONNRESET, EPIPE, ...) are
 * swallowed, and a client whose target is unreachable is simply closed.
 *
 *   const proxy = await FaultProxy.start({ target: { host: '127.0.0.1', port: 5432 } });
 *   const client = new pg.Client({ connectionString: proxy.url(db.url) });
 *   await client.connect();
 *   proxy.blackhole();               // the client's next query hangs
 *   proxy.heal();                    // ... and now fails; new clients work
 *   await proxy.close();
 */
import net, { type AddressInfo, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';

/** One client connection through the proxy, as seen by `connectionsInfo()` and `blackhole()` predicates. */
export interface ConnectionInfo {
  /** 1, 2, 3, ... in order of acceptance. */
  id: number;
  /** The client's local port: matches e.g. a pg client's `connection.stream.localPort`. */
  clientPort: number;
  /** Date.now() when accepted. */
  openedAt: number;
  /** Whether it is blackholed. */
  blackholed: boolean;
  /** Set with `FaultProxy.tag(id, tag)`. */
  tag?: string;
}

export interface FaultProxyOptions {
  target: { host: string; port: number };
  /** A loopback address to listen on; default 127.0.0.1. */
  host?: string;
  /** Default 0: an ephemeral port. */
  port?: number;
}

export interface FaultProxyStats {
  /** Connections accepted and forwarded (refused ones not included). */
  accepted: number;
  /** Connections accepted while refusing, and closed at once. */
  refused: number;
  /** Connections destroyed by resetAll(). */
  reset: number;
  /** Connections that were blackholed (current ones at blackhole(), and future matching ones). */
  blackholed: number;
  /** Bytes forwarded client -> target. */
  bytesUp: number;
  /** Bytes forwarded target -> client. */
  bytesDown: number;
}

type Direction = 'up' | 'down';

/** One direction of a connection: chunks waiting out the latency, in order. `null` is the FIN. */
interface Lane {
  readonly direction: Direction;
  readonly queue: Array<{ at: number; chunk: Buffer | null }>;
  timer: NodeJS.Timeout | undefined;
  /** The source sent its FIN. */
  ended: boolean;
  /** The source is paused until the destination drains. */
  paused: boolean;
}

/** What a connection needs from its proxy. */
interface Host {
  latencyMs(): number;
  forwarded(direction: Direction, bytes: number): void;
  finished(connection: Connection): void;
}

const ignore = (): void => {};

class Connection {
  readonly id: number;
  readonly clientPort: number;
  readonly openedAt: number;
  readonly client: Socket;
  /** Undefined when blackholed from birth: a partitioned client never reaches the server. */
  upstream: Socket | undefined;
  tag: string | undefined;
  blackholed = false;
  clientClosed = false;
  /** Resolves once both sockets are closed. */
  readonly done: Promise<void>;

  readonly #host: Host;
  readonly #up: Lane = newLane('up');
  readonly #down: Lane = newLane('down');
  #upstreamClosed = false;
  #finished = false;
  #resolveDone!: () => void;

  constructor(id: number, client: Socket, host: Host) {
    this.id = id;
    this.client = client;
    this.clientPort = client.remotePort ?? 0;
    this.openedAt = Date.now();
    this.#host = host;
    this.done = new Promise((resolve) => (this.#resolveDone = resolve));
    client.on('error', ignore);
    client.on('data', (chunk: Buffer) => this.#receive(this.#up, chunk));
    client.on('end', () => this.#receive(this.#up, null));
    client.on('close', () => {
      this.clientClosed = true;
      this.#sideClosed(this.#up);
    });
  }

  info(): ConnectionInfo {
    const info: ConnectionInfo = { id: this.id, clientPort: this.clientPort, openedAt: this.openedAt, blackholed: this.blackholed };
    if (this.tag !== undefined) info.tag = this.tag;
    return info;
  }

  dial(target: { host: string; port: number }): void {
    const upstream = net.connect({ host: target.host, port: target.port, allowHalfOpen: true, noDelay: true });
    this.upstream = upstream;
    upstream.on('error', ignore);
    upstream.on('data', (chunk: Buffer) => this.#receive(this.#down, chunk));
    upstream.on('end', () => this.#receive(this.#down, null));
    // Unreachable target: 'error' then 'close' without 'end', which closes the client (#sideClosed).
    upstream.on('close', () => {
      this.#upstreamClosed = true;
      this.#sideClosed(this.#down);
    });
  }

  /** Silence both ways from now on: drop what is queued and whatever arrives. */
  blackhole(): void {
    this.blackholed = true;
    for (const lane of [this.#up, this.#down]) clearLane(lane);
    // Keep reading (and dropping), so peers see silence rather than back-pressure.
    this.client.resume();
    this.upstream?.resume();
  }

  /** Both sockets gone now: `reset` sends an RST where the platform can. */
  destroy(reset: boolean): void {
    for (const lane of [this.#up, this.#down]) clearLane(lane);
    for (const socket of [this.client, this.upstream]) {
      if (socket === undefined || socket.destroyed) continue;
      if (reset && typeof socket.resetAndDestroy === 'function') {
        try {
          socket.resetAndDestroy();
          continue;
        } catch {
          // Not a TCP handle after all: fall through to a plain destroy.
        }
      }
      socket.destroy();
    }
  }

  #receive(lane: Lane, chunk: Buffer | null): void {
    if (chunk === null) lane.ended = true;
    if (this.blackholed) return;
    const latency = this.#host.latencyMs();
    if (latency === 0 && lane.queue.length === 0) {
      this.#deliver(lane, chunk);
      return;
    }
    // Never before the chunk ahead of it, even when the latency was just lowered.
    const last = lane.queue.at(-1)?.at ?? 0;
    lane.queue.push({ at: Math.max(performance.now() + latency, last), chunk });
    if (lane.timer === undefined) this.#schedule(lane);
  }

  #schedule(lane: Lane): void {
    const head = lane.queue[0];
    if (head === undefined) return;
    lane.timer = setTimeout(() => {
      lane.timer = undefined;
      const now = performance.now();
      while (lane.queue[0] !== undefined && lane.queue[0].at <= now && !this.blackholed && !this.#finished) {
        this.#deliver(lane, lane.queue.shift()!.chunk);
      }
      this.#schedule(lane);
    }, Math.max(0, head.at - performance.now()));
  }

  #deliver(lane: Lane, chunk: Buffer | null): void {
    const [from, to] = lane.direction === 'up' ? [this.client, this.upstream] : [this.upstream, this.client];
    if (from === undefined || to === undefined) return;
    if (to.destroyed) {
      // The other side is gone: nobody is left to deliver to.
      this.destroy(false);
      return;
    }
    if (chunk === null) {
      to.end();
      return;
    }
    this.#host.forwarded(lane.direction, chunk.length);
    if (!to.write(chunk) && !lane.paused) {
      lane.paused = true;
      from.pause();
      to.once('drain', () => {
        lane.paused = false;
        from.resume();
      });
    }
  }

  /** The source of `lane` closed. */
  #sideClosed(lane: Lane): void {
    if (this.clientClosed && (this.#upstreamClosed || this.upstream === undefined)) {
      this.#finish();
      return;
    }
    // Partitioned: the other side learns nothing (heal() destroys it).
    if (this.blackholed) return;
    // A clean FIN travels the lane and ends the other side in order; anything else is abrupt.
    if (!lane.ended) this.destroy(false);
  }

  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    for (const lane of [this.#up, this.#down]) clearLane(lane);
    this.#host.finished(this);
    this.#resolveDone();
  }
}

function newLane(direction: Direction): Lane {
  return { direction, queue: [], timer: undefined, ended: false, paused: false };
}

function clearLane(lane: Lane): void {
  if (lane.timer !== undefined) clearTimeout(lane.timer);
  lane.timer = undefined;
  lane.queue.length = 0;
}

function isLoopback(host: string): boolean {
  return (net.isIPv4(host) && host.startsWith('127.')) || host === '::1';
}

export class FaultProxy {
  readonly port: number;
  readonly host: string;
  readonly target: { readonly host: string; readonly port: number };

  readonly #server: Server;
  readonly #live = new Set<Connection>();
  readonly #counters: FaultProxyStats = { accepted: 0, refused: 0, reset: 0, blackholed: 0, bytesUp: 0, bytesDown: 0 };
  readonly #host: Host;
  #matchers: Array<(c: ConnectionInfo) => boolean> = [];
  #latencyMs = 0;
  #refusing = false;
  #nextId = 1;
  #closing: Promise<void> | undefined;

  /** Listens on `options.host` (loopback only) and forwards every connection to `options.target`. */
  static async start(options: FaultProxyOptions): Promise<FaultProxy> {
    const host = options.host ?? '127.0.0.1';
    if (!isLoopback(host)) throw new Error(`FaultProxy listens on loopback only, not ${host}`);
    // noDelay: a proxy must not add Nagle's delay to the small messages of the Postgres protocol.
    const server = net.createServer({ allowHalfOpen: true, noDelay: true });
    return new Promise<FaultProxy>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host, port: options.port ?? 0, exclusive: true }, () => {
        server.off('error', reject);
        // Synchronously within the listen callback: no connection can arrive unhandled.
        resolve(new FaultProxy(server, host, (server.address() as AddressInfo).port, options.target));
      });
    });
  }

  private constructor(server: Server, host: string, port: number, target: { host: string; port: number }) {
    this.#server = server;
    this.host = host;
    this.port = port;
    this.target = { host: target.host, port: target.port };
    this.#host = {
      latencyMs: () => this.#latencyMs,
      forwarded: (direction, bytes) => {
        if (direction === 'up') this.#counters.bytesUp += bytes;
        else this.#counters.bytesDown += bytes;
      },
      finished: (connection) => this.#live.delete(connection),
    };
    server.on('error', ignore);
    server.on('connection', (socket) => this.#accept(socket));
  }

  /** `databaseUrl` with its host and port replaced by the proxy's. */
  url(databaseUrl: string): string {
    const url = new URL(databaseUrl);
    url.hostname = net.isIPv6(this.host) ? `[${this.host}]` : this.host;
    url.port = String(this.port);
    return url.toString();
  }

  /** Client connections currently open through the proxy. */
  connections(): number {
    return this.#open().length;
  }

  connectionsInfo(): ConnectionInfo[] {
    return this.#open().map((c) => c.info());
  }

  /** Labels a connection for `blackhole()` predicates; false when no such connection is open. */
  tag(id: number, tag: string): boolean {
    const connection = this.#open().find((c) => c.id === id);
    if (connection !== undefined) connection.tag = tag;
    return connection !== undefined;
  }

  /** Delays every chunk received from now on by `ms`, both ways; 0 turns it off. */
  setLatency(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`latency must be a finite number >= 0, not ${ms}`);
    this.#latencyMs = ms;
  }

  /** Partitions matching connections (all by default), those open now and those opened later, until heal(). */
  blackhole(match: (c: ConnectionInfo) => boolean = () => true): void {
    this.#matchers.push(match);
    for (const connection of this.#live) {
      if (!connection.blackholed && safeMatch(match, connection.info())) this.#blackhole(connection);
    }
  }

  /** Ends every fault: destroys blackholed connections, latency back to 0, stops refusing. */
  heal(): void {
    this.#matchers = [];
    this.#latencyMs = 0;
    this.#refusing = false;
    for (const connection of this.#live) if (connection.blackholed) connection.destroy(true);
  }

  /** Resets (RST) every current connection on both sides; new connections are not affected. */
  resetAll(): void {
    for (const connection of this.#live) {
      this.#counters.reset++;
      connection.destroy(true);
    }
  }

  /** While on, new connections are accepted and closed at once. */
  refuse(on: boolean): void {
    this.#refusing = on;
  }

  stats(): FaultProxyStats {
    return { ...this.#counters };
  }

  /** Stops listening and destroys every connection; resolves once all are closed. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
      const connections = [...this.#live];
      for (const connection of connections) connection.destroy(false);
      await Promise.all([closed, ...connections.map((c) => c.done)]);
    })();
    return this.#closing;
  }

  #open(): Connection[] {
    return [...this.#live].filter((c) => !c.clientClosed);
  }

  #accept(socket: Socket): void {
    socket.on('error', ignore);
    if (this.#refusing || this.#closing !== undefined) {
      if (this.#refusing) this.#counters.refused++;
      socket.destroy();
      return;
    }
    this.#counters.accepted++;
    const connection = new Connection(this.#nextId++, socket, this.#host);
    this.#live.add(connection);
    const info = connection.info();
    if (this.#matchers.some((match) => safeMatch(match, info))) this.#blackhole(connection);
    else connection.dial(this.target);
  }

  #blackhole(connection: Connection): void {
    this.#counters.blackholed++;
    connection.blackhole();
  }
}

/** A predicate that throws matches nothing: a test's bug must not crash the host process. */
function safeMatch(match: (c: ConnectionInfo) => boolean, info: ConnectionInfo): boolean {
  try {
    return match(info);
  } catch {
    return false;
  }
}
