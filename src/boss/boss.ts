/**
 * pg-boss, configured per process role. pg-boss carries the cron and, for the boss engine, a queue
 * of record IDs; the row stays the single source of truth (a job is a pointer to a record, never a
 * copy of its state).
 *
 * pg-boss lives in its own schema (`pgboss` by default) and runs its statements through the
 * process's own pool (one connection budget per process). Each role switches on only what it needs:
 *
 *   role       migrate  supervise (maintenance)  cron
 *   migrate    yes      -                        -
 *   scheduler  -        yes                      yes
 *   worker     -        -                        -
 *   client     -        -                        -      (api with enqueue-on-upsert, `enqueue`)
 *
 * No role uses pg-boss's LISTEN/NOTIFY: boss-engine workers fetch in their own loop and are woken
 * like direct ones (src/records/wake.ts), so a job insert must not take Postgres's global
 * notification lock at commit either.
 */
import pg from 'pg';
import { PgBoss, type ConstructorOptions, type Db, type Queue } from 'pg-boss';
import type { BossConfig } from '../config.ts';
import type { Logger } from '../log.ts';
import { SchemaNotReadyError, UserError } from '../errors.ts';
import { DEFAULT_KIND, KIND_PATTERN } from '../kind.ts';
import { queueOfKind } from '../records/marks.ts';

export type BossRole = 'migrate' | 'scheduler' | 'worker' | 'client';

/** The clock process's queues: one job per cron tick, taken by one scheduler. */
export const CLOCK_QUEUES = { sweep: 'rowfleet.sweep', rescue: 'rowfleet.rescue', retention: 'rowfleet.retention' } as const;

/**
 * The process queue. `short` allows one queued job per singletonKey (the record ID), enforced by a
 * unique index over created jobs; retryLimit 0 keeps jobs out of the `retry` state, which that
 * index does not cover. Together: at most one pending job per record. Failures are retried on the
 * row, never by pg-boss. A job only lives between the sweep and the claim, so completed ones are
 * kept an hour for inspection, and one fetched but never finished (a worker killed between the
 * fetch and the claim) expires after 5 minutes; the sweep does not wait for that. Creating a job
 * sends no NOTIFY (see above): `rowfleet migrate` turns it off on a queue made by an older version.
 */
export function processQueueOptions(): Omit<Queue, 'name'> {
  return { policy: 'short', retryLimit: 0, expireInSeconds: 300, deleteAfterSeconds: 3600, retentionSeconds: 14 * 24 * 3600, notify: false };
}

const CLOCK_QUEUE_OPTIONS: Omit<Queue, 'name'> = { policy: 'standard', retryLimit: 0, expireInSeconds: 900, deleteAfterSeconds: 24 * 3600 };

/** A pg-boss database adapter over a pool or one client (a transaction). */
export function bossDb(db: pg.Pool | pg.PoolClient): Db {
  return { executeSql: (text, values) => db.query(text, values as unknown[] | undefined) };
}

/** The pool adapter. */
function poolDb(pool: pg.Pool): Db {
  return {
    ...bossDb(pool),
    poolCounts: () => ({ max: pool.options.max ?? 10, total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }),
  };
}

export interface CreateBossOptions {
  config: BossConfig;
  pool: pg.Pool;
  role: BossRole;
  log: Logger;
}

/** A started pg-boss for `role`. Its errors are logged (pg-boss retries on its own). */
export async function startBoss({ config, pool, role, log }: CreateBossOptions): Promise<PgBoss> {
  const options: ConstructorOptions = {
    db: poolDb(pool),
    schema: config.schema,
    migrate: role === 'migrate',
    createSchema: role === 'migrate',
    supervise: role === 'scheduler',
    schedule: role === 'scheduler',
    useListenNotify: false,
    cronMonitorIntervalSeconds: config.cronCheckSeconds,
    cronWorkerIntervalSeconds: Math.min(5, config.cronCheckSeconds),
    registerInstance: role !== 'migrate' && role !== 'client',
    instanceName: `rowfleet ${role}`,
    openTelemetry: { enabled: false },
  };
  const boss = new PgBoss(options);
  const bossLog = log.child({ component: 'pg-boss' });
  boss.on('error', (err) => bossLog.warn({ err: { message: err.message, code: (err as { code?: string }).code } }, 'pg-boss error'));
  boss.on('warning', (warning) => bossLog.warn({ data: warning.data }, warning.message));
  if (role !== 'migrate') await assertInstalled(pool, config.schema);
  await boss.start();
  return boss;
}

/**
 * Installs or upgrades pg-boss's schema and creates rowfleet's queues (`rowfleet migrate`).
 * Idempotent; pg-boss serializes concurrent migrations itself.
 */
export async function installBoss(options: Omit<CreateBossOptions, 'role'>): Promise<{ schema: string; version: number | null }> {
  const boss = await startBoss({ ...options, role: 'migrate' });
  try {
    await ensureQueue(boss, options.config.queue, processQueueOptions());
    for (const name of Object.values(CLOCK_QUEUES)) await ensureQueue(boss, name, CLOCK_QUEUE_OPTIONS);
    return { schema: options.config.schema, version: await boss.schemaVersion() };
  } finally {
    await boss.stop({ graceful: false, close: false });
  }
}

async function ensureQueue(boss: PgBoss, name: string, options: Omit<Queue, 'name'>): Promise<void> {
  const existing = await boss.getQueue(name);
  if (existing === null) return boss.createQueue(name, options);
  if (existing.policy !== options.policy) {
    throw new UserError(
      `pg-boss queue ${name} exists with policy ${existing.policy}, but rowfleet needs ${options.policy}; delete the queue (or pick another with ROWFLEET_QUEUE) and run rowfleet migrate again`,
    );
  }
  const { policy: _policy, ...updatable } = options;
  await boss.updateQueue(name, updatable);
}

/**
 * The process queues of the kinds (see queueOfKind): kind `default`'s is made by `rowfleet
 * migrate`, the others on first use by whoever sends or fetches a job of that kind. A worker that
 * serves every kind lists them (again at most every few seconds, so a new kind's first jobs may
 * wait that long).
 */
export class KindQueues {
  readonly #boss: PgBoss;
  readonly #db: pg.Pool;
  readonly #base: string;
  readonly #schema: string;
  readonly #known = new Set<string>();
  #listed: { at: number; kinds: string[] } | undefined;

  constructor(boss: PgBoss, db: pg.Pool, base: string, schema: string) {
    this.#boss = boss;
    this.#db = db;
    this.#base = base;
    this.#schema = schema;
  }

  /** The queue of `kind`, created if it is missing. */
  async ensure(kind: string): Promise<string> {
    const name = queueOfKind(this.#base, kind);
    if (this.#known.has(name)) return name;
    if ((await this.#boss.getQueue(name)) === null) {
      try {
        await this.#boss.createQueue(name, processQueueOptions());
      } catch (err) {
        // Another process made it meanwhile.
        if ((await this.#boss.getQueue(name)) === null) throw err;
      }
    }
    this.#known.add(name);
    return name;
  }

  /** The kinds that have a queue. */
  async list(maxAgeMs = 5_000): Promise<string[]> {
    const now = Date.now();
    if (this.#listed !== undefined && now - this.#listed.at < maxAgeMs) return this.#listed.kinds;
    const { rows } = await this.#db.query<{ name: string }>(`SELECT name FROM "${this.#schema}".queue WHERE name = $1 OR starts_with(name, $1 || '.') ORDER BY name`, [this.#base]);
    const kinds = rows.map((r) => (r.name === this.#base ? DEFAULT_KIND : r.name.slice(this.#base.length + 1))).filter((k) => KIND_PATTERN.test(k));
    for (const kind of kinds) this.#known.add(queueOfKind(this.#base, kind));
    this.#listed = { at: now, kinds };
    return kinds;
  }
}

/** Whether pg-boss's schema is installed; roles other than migrate never install it themselves. */
export async function bossInstalled(db: pg.Pool | pg.Client, schema: string): Promise<boolean> {
  const { rows } = await db.query<{ version: string | null }>(`SELECT to_regclass($1)::text AS version`, [`${schema}.version`]);
  return rows[0]?.version != null;
}

async function assertInstalled(pool: pg.Pool, schema: string): Promise<void> {
  if (!(await bossInstalled(pool, schema))) throw new SchemaNotReadyError({ kind: 'no-boss', schema });
}

/** Stops pg-boss without closing the pool it shares with the process. */
export async function stopBoss(boss: PgBoss, timeoutMs = 10_000): Promise<void> {
  await boss.stop({ graceful: true, close: false, timeout: timeoutMs });
}
