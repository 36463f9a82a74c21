/**
 * The fault suite's system under test: a Postgres of its own (embedded, restartable, in a
 * temporary home), one database per scenario migrated by `rowfleet migrate --runtime-role`, and
 * rowfleet's processes started as production starts them and connected as that least-privileged
 * role: two API processes, a fleet and a scheduler, optionally through a FaultProxy.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import { ensureEmbedded, stopEmbedded } from '../../src/db/embedded.ts';
import { silentLogger } from '../../src/log.ts';
import { isAlive, Processes, ROOT, type RowfleetProcess } from '../helpers/processes.ts';
import { databaseUrl, withAdmin } from '../helpers/database.ts';
import { FaultProxy } from './proxy.ts';

export const EFFECTS_HANDLER = path.join(ROOT, 'test/fixtures/effects-handler.js');
export const RUNTIME_ROLE = 'rowfleet_harness';
/** A canary API token: it must appear in no log line of any process (checked by grepping them all). */
export const CANARY_TOKEN = `canary-${Math.random().toString(36).slice(2)}-token`;

const EFFECT_TABLES = `
  CREATE TABLE harness_local (key text NOT NULL, fence bigint NOT NULL, pid integer NOT NULL);
  CREATE TABLE harness_fences (record_id text PRIMARY KEY, fence bigint NOT NULL);
  CREATE TABLE harness_effects (key text PRIMARY KEY, record_id text NOT NULL, fence bigint NOT NULL, pid integer NOT NULL);
  CREATE TABLE harness_attempts (key text NOT NULL, record_id text NOT NULL, version text NOT NULL, fence bigint NOT NULL, pid integer NOT NULL,
                                 started_ms bigint NOT NULL, ended_ms bigint NOT NULL, effect text NOT NULL)`;

/** The Postgres the suite owns; restartable (fast or immediate) without losing its port. */
export class Server {
  readonly home: string;
  adminUrl: string;
  port: number;
  pid: number;

  private constructor(home: string, url: string, port: number, pid: number) {
    this.home = home;
    this.adminUrl = url;
    this.port = port;
    this.pid = pid;
  }

  static async start(): Promise<Server> {
    const home = await fs.mkdtemp(path.join(os.tmpdir(), 'rowfleet-harness-pg-'));
    const s = await ensureEmbedded({ home, log: silentLogger });
    const server = new Server(home, s.url, s.port, s.pid);
    // Room for every scenario's processes; the exhaustion scenario lowers it for itself.
    await server.setting('max_connections', '200');
    await server.restart();
    return server;
  }

  url(database: string): string {
    return databaseUrl(this.adminUrl, database);
  }

  /**
   * ALTER SYSTEM, through `via` when given: with every connection slot taken, a new connection is
   * refused even to a superuser once the reserved slots are in use, so a pool already open is the way in.
   */
  async setting(name: string, value: string, via?: pg.Pool): Promise<void> {
    const statement = `ALTER SYSTEM SET ${name} = '${value}'`;
    if (via !== undefined) await via.query(statement);
    else await withAdmin(this.adminUrl, (admin) => admin.query(statement));
  }

  /** Stops (fast: clients are disconnected, a checkpoint is written) and starts again. */
  async restart(): Promise<void> {
    await stopEmbedded(this.home, silentLogger);
    await this.#startAgain();
  }

  /**
   * Immediate shutdown (SIGQUIT to the postmaster: no checkpoint, crash recovery at the next
   * start, as after a power cut of the server process), then a start `downMs` later.
   */
  async crashRestart(downMs: number): Promise<void> {
    process.kill(this.pid, 'SIGQUIT');
    const deadline = Date.now() + 30_000;
    while (isAlive(this.pid)) {
      if (Date.now() > deadline) throw new Error(`Postgres (pid ${this.pid}) did not stop within 30 s of SIGQUIT`);
      await delay(50);
    }
    await delay(downMs);
    await this.#startAgain();
  }

  async #startAgain(): Promise<void> {
    const s = await ensureEmbedded({ home: this.home, log: silentLogger });
    if (s.port !== this.port) throw new Error(`Postgres came back on port ${s.port}, not ${this.port}`);
    this.pid = s.pid;
    this.adminUrl = s.url;
  }

  async stop(): Promise<void> {
    await stopEmbedded(this.home, silentLogger).catch(() => {});
    await fs.rm(this.home, { recursive: true, force: true });
  }
}

export interface ClusterOptions {
  /** Flags for `rowfleet fleet` beyond the handler's. */
  fleetArgs?: string[];
  /**
   * A FaultProxy between workers and Postgres: `fleet`, the whole fleet's traffic; `worker`, that
   * of one more worker process (`rowfleet worker`) run beside a fleet connected directly.
   */
  proxy?: 'fleet' | 'worker';
  /** Extra environment for every process. */
  env?: Record<string, string>;
  apis?: number;
  schedulers?: number;
}

/** One scenario's database and processes. */
export class Cluster {
  readonly procs = new Processes();
  readonly server: Server;
  readonly database: string;
  /** Admin connections for the harness's own reads (never the runtime role's budget). */
  readonly admin: pg.Pool;
  readonly roleUrl: string;
  readonly proxy: FaultProxy | undefined;
  apis: RowfleetProcess[] = [];
  apiUrls: string[] = [];
  fleet: RowfleetProcess | undefined;
  /** The worker behind the proxy (`proxy: 'worker'`). */
  proxied: RowfleetProcess | undefined;
  schedulers: RowfleetProcess[] = [];
  readonly #options: ClusterOptions;

  private constructor(server: Server, database: string, roleUrl: string, proxy: FaultProxy | undefined, options: ClusterOptions) {
    this.server = server;
    this.database = database;
    this.roleUrl = roleUrl;
    this.proxy = proxy;
    this.#options = options;
    this.admin = new pg.Pool({ connectionString: server.url(database), max: 3, application_name: 'harness' });
    this.admin.on('error', () => {});
  }

  static async create(server: Server, name: string, options: ClusterOptions = {}): Promise<Cluster> {
    const database = `harness_${name.replace(/[^a-z0-9]+/g, '_')}`;
    await withAdmin(server.adminUrl, async (admin) => {
      await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
      await admin.query(`CREATE DATABASE ${database}`);
    });
    const adminUrl = server.url(database);
    const setup = new Processes();
    try {
      const migrate = setup.start(['migrate', '--runtime-role', RUNTIME_ROLE], { DATABASE_URL: adminUrl });
      const exit = await migrate.exited;
      if (exit.code !== 0) throw new Error(`rowfleet migrate --runtime-role failed (${exit.code}):\n${migrate.tail()}`);
    } finally {
      await setup.killAll();
    }
    const password = 'harness-role-password';
    await withAdmin(adminUrl, async (admin) => {
      await admin.query(`ALTER ROLE ${RUNTIME_ROLE} PASSWORD '${password}'`);
      await admin.query(EFFECT_TABLES);
      // The application's own table, which its transactional handler writes with the completion,
      // and the "other system"'s, which its handler writes through a pool of its own. That pool
      // connects as the runtime role too, not as a superuser: with every connection slot taken
      // (connection-exhaustion), only the slots reserved for superusers let the harness in.
      await admin.query(`GRANT INSERT ON harness_local TO ${RUNTIME_ROLE}`);
      await admin.query(`GRANT SELECT, INSERT, UPDATE ON harness_fences, harness_effects, harness_attempts TO ${RUNTIME_ROLE}`);
    });
    const url = new URL(adminUrl);
    url.username = RUNTIME_ROLE;
    url.password = password;
    const proxy = options.proxy !== undefined ? await FaultProxy.start({ target: { host: '127.0.0.1', port: server.port } }) : undefined;
    return new Cluster(server, database, url.toString(), proxy, options);
  }

  get adminUrl(): string {
    return this.server.url(this.database);
  }

  env(extra: Record<string, string> = {}): Record<string, string> {
    return {
      DATABASE_URL: this.roleUrl,
      ROWFLEET_API_TOKENS: CANARY_TOKEN,
      ROWFLEET_LOG_LEVEL: 'info',
      EFFECTS_DATABASE_URL: this.roleUrl,
      ...this.#options.env,
      ...extra,
    };
  }

  /** Starts the APIs, the scheduler(s) and the fleet, and waits until each says it is up. */
  async start(): Promise<void> {
    for (let i = 0; i < (this.#options.apis ?? 2); i++) await this.startApi(i);
    for (let i = 0; i < (this.#options.schedulers ?? 1); i++) this.schedulers.push(await this.startScheduler());
    await this.startFleet();
    if (this.#options.proxy === 'worker') {
      const worker = this.procs.start(['worker', ...this.#workerArgs()], this.env({ DATABASE_URL: this.proxy!.url(this.roleUrl) }));
      await worker.waitForLog((l) => l.msg === 'worker started', 60_000, 'the proxied worker to start');
      this.proxied = worker;
    }
  }

  #workerArgs(): string[] {
    // Attempts enough that no record is FAILED while the "other system" is out of reach (its errors
    // are the handler's, and spend attempts); a scenario's own flags come last and win.
    return ['--handler', EFFECTS_HANDLER, '--concurrency', '8', '--lease', '2s', '--poll', '250ms', '--max-attempts', '100',
      '--backoff-base', '100ms', '--backoff-cap', '1s', '--timeout', '5s', '--grace', '5s', ...(this.#options.fleetArgs ?? [])];
  }

  async startApi(slot: number): Promise<RowfleetProcess> {
    const port = this.apiUrls[slot] === undefined ? 0 : Number(new URL(this.apiUrls[slot]!).port);
    const api = this.procs.start(['api', '--port', String(port)], this.env());
    const line = await api.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('rowfleet api listening'), 60_000, 'the API to listen');
    this.apis[slot] = api;
    this.apiUrls[slot] = String(line.address).replace('0.0.0.0', '127.0.0.1');
    return api;
  }

  async startScheduler(): Promise<RowfleetProcess> {
    const scheduler = this.procs.start(['scheduler'], this.env());
    await scheduler.waitForLog((l) => /scheduler (started|running)/.test(l.msg), 60_000, 'the scheduler to start');
    return scheduler;
  }

  async startFleet(): Promise<RowfleetProcess> {
    const databaseUrl = this.#options.proxy === 'fleet' ? this.proxy!.url(this.roleUrl) : this.roleUrl;
    const fleet = this.procs.start(['fleet', '--workers', '3', ...this.#workerArgs()], this.env({ DATABASE_URL: databaseUrl }));
    await fleet.waitForLog((l) => l.msg === 'worker started', 60_000, 'a fleet worker to start');
    this.fleet = fleet;
    return fleet;
  }

  /** Every line any process of this cluster wrote. */
  allLines(): string[] {
    return this.procs.allLines();
  }

  async stop(): Promise<void> {
    const graceful = [this.fleet, this.proxied, ...this.schedulers, ...this.apis].filter((p): p is RowfleetProcess => p !== undefined && p.child.exitCode === null && p.child.signalCode === null);
    await Promise.all(graceful.map((p) => p.stop('SIGTERM', 30_000).catch(() => {})));
    await this.procs.killAll();
    await this.proxy?.close();
    await this.admin.end().catch(() => {});
  }
}
