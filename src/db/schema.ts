/**
 * The `rowfleet` schema. drizzle-kit generates the migrations in `drizzle/` from this file
 * (`npm run db:generate`); the upsert function lives in a hand-written migration beside them.
 *
 * records: one row per record ID, the single source of truth for its data, version and state.
 * event_log: append-only, one row per message (applied or not) plus rare lifecycle events.
 */
import { sql, type SQL } from 'drizzle-orm';
import {
  bigint,
  boolean,
  check,
  customType,
  index,
  integer,
  jsonb,
  pgSchema,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from 'drizzle-orm/pg-core';
import { DEFAULT_KIND } from '../kind.ts';

export const rowfleet = pgSchema('rowfleet');

/**
 * The life of a record: every status and every transition, with the statement that makes it
 * (all in src/records/; the hot ones are functions, first in drizzle/0006_hot_path.sql, latest in 0011).
 *
 *   (new id) ──upsert──► COMPLETED ◄───────────────────────────────────────────────┐
 *                          │  ▲  upsert of a newer version: data, version, attempts 0  │
 *                          │  └─(any status but PROCESSING, which keeps its lease)──────┤
 *            claim_due /   │                                                            │
 *            claim_ids     ▼                                                            │
 *                     PROCESSING ──complete, same version──► PROCESSED ──upsert newer──┤
 *                     │  │  │  └─complete, a newer version arrived (superseded)────────┤
 *                     │  │  └──fail, attempts left: run_after = backoff ('retried')─────┤
 *                     │  └─────release (shutdown; the attempt given back)─────────────┤
 *                     │  rescue_expired, lease ran out ('rescued')─────────────────────┘
 *                     │
 *                     ├──fail, attempts exhausted or permanent ('failed')──► FAILED
 *                     └──rescue_expired, expired too often (poison, 'failed')──► FAILED
 *
 *   FAILED or PROCESSED ──requeue (filters, dry run; 'requeued')──► COMPLETED
 *   any status ──replay (rebuilt from event_log; 'replayed')──► COMPLETED (a lease is cleared)
 *   any status but DELETED ──delete (filters, dry run; 'deleted'; a lease is cleared)──► DELETED
 *   DELETED ──upsert newer than the tombstone's version──► COMPLETED (older or equal: refused)
 *
 * Rules the schema enforces: a lease (token, expiry) exists exactly while PROCESSING; only a
 * COMPLETED record carries the sweep's enqueued mark. Every transition out of PROCESSING but
 * rescue is guarded by the lease token and an unexpired lease.
 */
export const RECORD_STATUSES = ['COMPLETED', 'PROCESSING', 'PROCESSED', 'FAILED', 'DELETED'] as const;
export type RecordStatus = (typeof RECORD_STATUSES)[number];

/** Outcomes of a message. `duplicate` is only ever a response: a repeated messageId writes nothing. */
export const MESSAGE_REASONS = ['applied', 'stale', 'duplicate', 'conflict'] as const;
/**
 * Lifecycle events a worker or operator appends: a failed attempt that will be retried, a record
 * FAILED, a lease rescued, a requeue, a replay that rewrote the record, a delete.
 */
export const LIFECYCLE_REASONS = ['retried', 'failed', 'requeued', 'rescued', 'replayed', 'deleted'] as const;
export type EventReason = (typeof MESSAGE_REASONS)[number] | (typeof LIFECYCLE_REASONS)[number];

/**
 * Versions are Postgres bigints. JavaScript numbers lose precision above 2^53, so they travel as
 * decimal text and are shown as numbers only when exact (see presentVersion).
 */
/** `column in ('A', 'B')` from the list the types come from, so the two cannot drift apart. */
const oneOf = (column: SQL, values: readonly string[]) => sql`${column} in (${sql.raw(values.map((v) => `'${v}'`).join(', '))})`;

const bigintText = customType<{ data: string; driverData: string }>({ dataType: () => 'bigint' });
const timestamptz = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });

/** Server-assigned versions for messages that carry none: ingestion order, no clocks. */
export const versionSeq = rowfleet.sequence('version_seq', { startWith: 1, increment: 1 });


export const records = rowfleet.table(
  'records',
  {
    /** The type of the record (`order`, `invoice`): with `id`, its key. */
    kind: text('kind').notNull().default(DEFAULT_KIND),
    id: text('id').notNull(),
    version: bigintText('version').notNull(),
    data: jsonb('data').notNull(),
    status: text('status').$type<RecordStatus>().notNull().default('COMPLETED'),
    /** Claims of the current version so far; reset when a new version is applied. */
    attempts: integer('attempts').notNull().default(0),
    /**
     * Not claimable before this instant: the latest applied message's `runAt` (or its arrival, when
     * it had none or one in the past), or a retry's backoff.
     */
    runAfter: timestamptz('run_after').notNull().defaultNow(),
    /** Higher runs first among due records (-1000 to 1000): the latest applied message's. */
    priority: integer('priority').notNull().default(0),
    leaseOwner: text('lease_owner'),
    leaseToken: uuid('lease_token'),
    leaseExpiresAt: timestamptz('lease_expires_at'),
    /** Leases of the current version that expired without a completion (poison detection). */
    leaseExpirations: integer('lease_expirations').notNull().default(0),
    /**
     * The lease token of a claim that held this record alone in its worker process (a suspect,
     * see rowfleet.claim_alone): only an expiration under such a lease counts against the record
     * as poison, since nothing else in the process can have crashed it.
     */
    aloneToken: uuid('alone_token'),
    /**
     * Claims of this record ever: each claim adds one, and hands the new value to the handler as
     * `ctx.fencingToken`, for the systems it writes to to refuse an older holder's late writes.
     */
    fence: bigint('fence', { mode: 'bigint' }).notNull().default(sql`0`),
    lastError: text('last_error'),
    result: jsonb('result'),
    processedVersion: bigintText('processed_version'),
    /**
     * Mode `every` only: the event_log seq of the next message to hand to the handler (the one being
     * handled while PROCESSING, the one that failed while FAILED); null when no message waits
     * beyond what was processed, and always in mode `latest`.
     */
    nextSeq: bigint('next_seq', { mode: 'bigint' }),
    processedAt: timestamptz('processed_at'),
    /**
     * Set when the enqueue sweep sent a pg-boss job for this record (engine boss); cleared by the
     * claim and by every return to COMPLETED, so that the sweep finds new work without reading the
     * backlog that already has jobs. A hint, never the truth: the row's status is.
     */
    enqueuedAt: timestamptz('enqueued_at'),
    createdAt: timestamptz('created_at').notNull().defaultNow(),
    updatedAt: timestamptz('updated_at').notNull().defaultNow(),
  },
  (t) => [
    primaryKey({ name: 'records_pkey', columns: [t.kind, t.id] }),
    // Kind names are checked where they come in (src/kind.ts): a regular expression here is
    // evaluated on every update of every row, and cost a claim of 1000 about 3 ms (a quarter).
    check('records_kind_length', sql`length(${t.kind}) between 1 and 63`),
    check('records_status_check', oneOf(sql`${t.status}`, RECORD_STATUSES)),
    check('records_version_positive', sql`${t.version} > 0`),
    check('records_id_length', sql`length(${t.id}) between 1 and 256`),
    check('records_priority_range', sql`${t.priority} between -1000 and 1000`),
    // A lease exists exactly while the record is PROCESSING. The worker's guarded statements can
    // then test the token alone: a `status = 'PROCESSING'` conjunct would match the predicate of
    // records_lease_idx and let the planner scan every lease instead of looking the ids up.
    // Only a waiting record carries the sweep's mark; the claim clears it.
    check('records_marked_only_completed', sql`${t.enqueuedAt} is null or ${t.status} = 'COMPLETED'`),
    check('records_lease_iff_processing', sql`(${t.status} = 'PROCESSING') = (${t.leaseToken} is not null and ${t.leaseExpiresAt} is not null)`),
    // The claim reads due COMPLETED rows kind by kind, within a kind highest priority first, then
    // oldest due; the partial index keeps that O(batch) however many PROCESSED rows accumulate.
    // Within one (kind, priority) the due rows are a range of it, so records scheduled for later
    // are never read (see claim_due).
    index('records_due_idx').on(t.kind, sql`${t.priority} DESC`, t.runAfter, t.id).where(sql`${t.status} = 'COMPLETED'`),
    // The boss engine's check for lost jobs walks the records that carry the sweep's mark.
    index('records_marked_idx').on(t.runAfter, t.kind, t.id).where(sql`${t.status} = 'COMPLETED' and ${t.enqueuedAt} is not null`),
    // Rescue finds expired leases without scanning the table.
    index('records_lease_idx').on(t.leaseExpiresAt).where(sql`${t.status} = 'PROCESSING'`),
    // The sweep's new work: due rows without a job. Its cost follows new work, not the backlog.
    index('records_unenqueued_idx').on(t.runAfter, t.kind, t.id).where(sql`${t.status} = 'COMPLETED' and ${t.enqueuedAt} is null`),
    // On the key, not on a timestamp: an index on updated_at would make every upsert a non-HOT update.
    // Suspects: waiting records whose lease expired (claim_alone reads those expired too often).
    index('records_suspect_idx').on(t.kind, sql`${t.priority} DESC`, t.runAfter, t.id).where(sql`${t.status} = 'COMPLETED' and ${t.leaseExpirations} > 0`),
    index('records_failed_idx').on(t.kind, t.id).where(sql`${t.status} = 'FAILED'`),
    // Tombstones, counted by `status` without reading the table.
    index('records_deleted_idx').on(t.kind, t.id).where(sql`${t.status} = 'DELETED'`),
    // The oldest message still to be handled (mode every): the event_log retention keeps it and after.
    index('records_next_seq_idx').on(t.nextSeq).where(sql`${t.nextSeq} is not null`),
    check('records_next_seq_pending', sql`${t.nextSeq} is null or ${t.status} in ('COMPLETED', 'PROCESSING', 'FAILED')`),
  ],
);

export const eventLog = rowfleet.table(
  'event_log',
  {
    /** Global ingest order. */
    seq: bigint('seq', { mode: 'bigint' }).primaryKey().generatedAlwaysAsIdentity(),
    kind: text('kind').notNull().default(DEFAULT_KIND),
    recordId: text('record_id').notNull(),
    messageId: text('message_id'),
    version: bigintText('version'),
    /** True when the server assigned the version (the message carried none). */
    versionAssigned: boolean('version_assigned').notNull().default(false),
    data: jsonb('data'),
    applied: boolean('applied').notNull(),
    reason: text('reason').$type<EventReason>().notNull(),
    /** The record's version when the message was refused (stale, conflict). */
    currentVersion: bigintText('current_version'),
    /** The message's priority and runAt, when it carried them. */
    priority: integer('priority'),
    runAt: timestamptz('run_at'),
    /** Lifecycle details: the error of a failure, the filter of a requeue. */
    detail: jsonb('detail'),
    receivedAt: timestamptz('received_at').notNull().defaultNow(),
  },
  (t) => [
    // Partial: most messages carry no messageId and need no entry.
    uniqueIndex('event_log_message_id_key').on(t.messageId).where(sql`${t.messageId} is not null`),
    index('event_log_record_idx').on(t.kind, t.recordId, t.seq),
    check('event_log_reason_check', oneOf(sql`${t.reason}`, [...MESSAGE_REASONS, ...LIFECYCLE_REASONS])),
  ],
);

export type RecordRow = typeof records.$inferSelect;
export type EventRow = typeof eventLog.$inferSelect;

/**
 * Live worker processes, for status, the dashboard and autoscaling. Each worker upserts its row
 * when it starts and on every heartbeat, and deletes it on a clean exit; a row whose last_seen_at
 * is old belongs to a worker that died.
 */
export const workers = rowfleet.table('workers', {
  id: text('id').primaryKey(),
  host: text('host').notNull(),
  pid: integer('pid').notNull(),
  engine: text('engine').notNull(),
  concurrency: integer('concurrency').notNull(),
  /** Records this worker holds right now. */
  inFlight: integer('in_flight').notNull().default(0),
  /**
   * Set while the worker sleeps until new work (its last claim came back short); the first
   * producer to see it after a commit clears it and sends the one NOTIFY (see src/records/wake.ts).
   */
  waitingSince: timestamptz('waiting_since'),
  /** Mean handler duration of its recent records, for autoscaling; null before the first. */
  handlerMs: integer('handler_ms'),
  startedAt: timestamptz('started_at').notNull().defaultNow(),
  lastSeenAt: timestamptz('last_seen_at').notNull().defaultNow(),
});

/**
 * The enqueue sweep's place in its round of checks for lost jobs (rows marked enqueued whose job
 * is gone): one row per queue, so each sweep checks the next slice of the backlog.
 */
export const sweepState = rowfleet.table('sweep_state', {
  queue: text('queue').primaryKey(),
  cursorRunAfter: timestamptz('cursor_run_after'),
  cursorKind: text('cursor_kind'),
  cursorId: text('cursor_id'),
  updatedAt: timestamptz('updated_at').notNull().defaultNow(),
});

/**
 * Outcomes per minute: throughput and failure rates for `rowfleet status` without reading records
 * or event_log. Each state change counts itself in the statement that makes it (so `status` is
 * current the moment a record is PROCESSED), into the row of its own connection (`backend`, the
 * server pid), so that no two workers' completions wait on one row. Readers sum over backends.
 * Rows older than a day are removed.
 */
export const stats = rowfleet.table('stats', {
  minute: timestamptz('minute').notNull(),
  backend: integer('backend').notNull().default(0),
  processed: bigint('processed', { mode: 'number' }).notNull().default(0),
  failed: bigint('failed', { mode: 'number' }).notNull().default(0),
  retried: bigint('retried', { mode: 'number' }).notNull().default(0),
  superseded: bigint('superseded', { mode: 'number' }).notNull().default(0),
  rescued: bigint('rescued', { mode: 'number' }).notNull().default(0),
  /** Counted by requeue (CLI and POST /requeue) and replay, which no worker sees. */
  requeued: bigint('requeued', { mode: 'number' }).notNull().default(0),
  replayed: bigint('replayed', { mode: 'number' }).notNull().default(0),
}, (t) => [primaryKey({ columns: [t.minute, t.backend] })]);

/** How a kind's records are processed: its newest state (`latest`), or every message in order (`every`). */
export const KIND_MODES = ['latest', 'every'] as const;
export type KindMode = (typeof KIND_MODES)[number];

/**
 * Kinds' settings that every process must agree on (`rowfleet kinds set`): the mode, and policies
 * that override the handler map's and the workers' flags. A kind without a row is in mode `latest`
 * with the workers' policies. Workers re-read the table every 5 s.
 */
export const kinds = rowfleet.table(
  'kinds',
  {
    kind: text('kind').primaryKey(),
    mode: text('mode').$type<KindMode>().notNull().default('latest'),
    maxAttempts: integer('max_attempts'),
    backoffBaseMs: integer('backoff_base_ms'),
    backoffCapMs: integer('backoff_cap_ms'),
    leaseMs: integer('lease_ms'),
    timeoutMs: integer('timeout_ms'),
    /**
     * Recurring kinds: a cron expression (UTC). The scheduler upserts one record of the kind per
     * tick, its id the tick's time, so each tick makes one record however many schedulers run.
     */
    schedule: text('schedule'),
    updatedAt: timestamptz('updated_at').notNull().defaultNow(),
  },
  (t) => [
    check('kinds_kind_format', sql`${t.kind} ~ '^[a-z][a-z0-9_.-]{0,62}$'`),
    check('kinds_mode_check', oneOf(sql`${t.mode}`, KIND_MODES)),
  ],
);

/**
 * Clients waiting for results (`POST /upsert?wait=`, the library's `upsert(m, { wait })`): one
 * row per waiting client (not per waiter), kept until `expires_at`. While a row is live, the
 * statements that settle records (complete, fail, rescue) send one NOTIFY on `rowfleet_settled`;
 * while none is, they send nothing (see src/records/await.ts). A client that died leaves a row
 * that expires by itself.
 */
export const awaits = rowfleet.table('awaits', {
  client: uuid('client').primaryKey(),
  expiresAt: timestamptz('expires_at').notNull(),
});
