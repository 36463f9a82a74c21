/**
 * `rowfleet status`: what the fleet is doing, from a handful of cheap queries: record counts
 * (src/records/counts.ts; PROCESSED is estimated once the table is over 16 MiB, and `estimated` says so),
 * throughput from rowfleet.stats, which every state change counts itself into, and the workers.
 */
import type pg from 'pg';
import { sql } from 'drizzle-orm';
import { query } from '../db/sql.ts';
import { RECORD_STATUSES, type RecordStatus } from '../db/schema.ts';
import { countRecords, workersWithHoldings } from '../records/counts.ts';

/** A worker not heard from for this long is reported as not alive (heartbeats come every lease/3). */
export const ALIVE_WITHIN_SECONDS = 60;
/**
 * PROCESSED is counted by a scan of the table up to this size (some 70,000 records of small data,
 * 30 ms or so), estimated above it: `status`, GET /stats, /metrics and the dashboard's every poll read it.
 */
export const EXACT_COUNT_UP_TO_BYTES = 16 * 1024 * 1024;

export interface WorkerStatus {
  id: string;
  host: string;
  pid: number;
  engine: string;
  concurrency: number;
  /** Records it holds under a lease right now. */
  inFlight: number;
  startedAt: string;
  lastSeenAt: string;
  alive: boolean;
}

/** One kind: its records by status (PROCESSED null above the exact-count limit), its due backlog. */
export interface KindStatus {
  kind: string;
  counts: Record<RecordStatus, number | null>;
  due: number;
  oldestDueAgeSeconds: number;
}

export interface Status {
  /** The kinds asked for (`--kind`); every kind when absent. */
  kindFilter?: string[];
  /** Every kind with records (or those asked for), by name. */
  kinds: KindStatus[];
  counts: Record<RecordStatus, number>;
  /** Counts read from statistics rather than counted. */
  estimated: RecordStatus[];
  /** COMPLETED records due now. */
  due: number;
  /** How long the oldest due record has waited; 0 when nothing is due. */
  oldestDueAgeSeconds: number;
  /** Records PROCESSED per second, averaged over the last 1, 5 and 15 minutes. */
  throughput: { '1m': number; '5m': number; '15m': number };
  /** Outcomes in the last hour; requeued and replayed count what the CLI and POST /requeue did. */
  lastHour: { processed: number; failed: number; retried: number; rescued: number; requeued: number; replayed: number };
  workers: WorkerStatus[];
  at: string;
}

export async function readStatus(pool: pg.Pool, options: { kinds?: readonly string[] | undefined } = {}): Promise<Status> {
  const r = await countRecords(pool, EXACT_COUNT_UP_TO_BYTES, options.kinds);
  const [window] = await query<{ m1: number; m5: number; m15: number } & Status['lastHour']>(
    pool,
    sql`SELECT coalesce(sum(processed) FILTER (WHERE minute > now() - interval '1 minute'), 0)::float8 AS m1,
               coalesce(sum(processed) FILTER (WHERE minute > now() - interval '5 minutes'), 0)::float8 AS m5,
               coalesce(sum(processed) FILTER (WHERE minute > now() - interval '15 minutes'), 0)::float8 AS m15,
               coalesce(sum(processed), 0)::float8 AS processed, coalesce(sum(failed), 0)::float8 AS failed,
               coalesce(sum(retried), 0)::float8 AS retried, coalesce(sum(rescued), 0)::float8 AS rescued,
               coalesce(sum(requeued), 0)::float8 AS requeued, coalesce(sum(replayed), 0)::float8 AS replayed
          FROM rowfleet.stats WHERE minute > now() - interval '1 hour'`,
  );
  const w = window!;
  const workers = await workersWithHoldings(pool, ALIVE_WITHIN_SECONDS);
  const perSecond = (n: number, minutes: number) => Math.round((n / (minutes * 60)) * 100) / 100;
  const counts = Object.fromEntries(RECORD_STATUSES.map((s) => [s, 0])) as Record<RecordStatus, number>;
  Object.assign(counts, { COMPLETED: r.completed, PROCESSING: r.processing, PROCESSED: r.processed, FAILED: r.failed, DELETED: r.deleted });
  const age = (seconds: number | null) => (seconds === null ? 0 : Math.round(seconds * 10) / 10);
  return {
    ...(options.kinds !== undefined && { kindFilter: [...options.kinds] }),
    kinds: r.kinds.map((k) => ({
      kind: k.kind,
      counts: { COMPLETED: k.completed, PROCESSING: k.processing, PROCESSED: k.processed, FAILED: k.failed, DELETED: k.deleted },
      due: k.due,
      oldestDueAgeSeconds: age(k.oldest),
    })),
    counts,
    estimated: r.processedEstimated ? ['PROCESSED'] : [],
    due: r.due,
    oldestDueAgeSeconds: age(r.oldest),
    throughput: { '1m': perSecond(w.m1, 1), '5m': perSecond(w.m5, 5), '15m': perSecond(w.m15, 15) },
    lastHour: { processed: w.processed, failed: w.failed, retried: w.retried, rescued: w.rescued, requeued: w.requeued, replayed: w.replayed },
    workers: workers.map((x) => ({
      id: x.id,
      host: x.host,
      pid: x.pid,
      engine: x.engine,
      concurrency: x.concurrency,
      inFlight: x.in_flight,
      startedAt: x.started_at.toISOString(),
      lastSeenAt: x.last_seen_at.toISOString(),
      alive: x.alive,
    })),
    at: r.at.toISOString(),
  };
}

export interface MinuteCounts {
  /** The minute's start. */
  at: string;
  processed: number;
  failed: number;
  retried: number;
  rescued: number;
  requeued: number;
  replayed: number;
}

/** The most minutes of history there are: rowfleet.stats keeps a day. */
export const MAX_THROUGHPUT_MINUTES = 1440;

/**
 * Outcomes per minute over the last `minutes` (this one included), oldest first, minutes without
 * any as zeros: the dashboard's throughput chart. rowfleet.stats has a row per minute and backend.
 */
export async function readThroughput(pool: pg.Pool, minutes: number): Promise<MinuteCounts[]> {
  const rows = await query<{ at: Date } & Omit<MinuteCounts, 'at'>>(
    pool,
    sql`SELECT m.at, coalesce(sum(s.processed), 0)::float8 AS processed, coalesce(sum(s.failed), 0)::float8 AS failed,
               coalesce(sum(s.retried), 0)::float8 AS retried, coalesce(sum(s.rescued), 0)::float8 AS rescued,
               coalesce(sum(s.requeued), 0)::float8 AS requeued, coalesce(sum(s.replayed), 0)::float8 AS replayed
          FROM generate_series(date_trunc('minute', now()) - (${minutes}::int - 1) * interval '1 minute', date_trunc('minute', now()), interval '1 minute') AS m(at)
          LEFT JOIN rowfleet.stats s ON s.minute = m.at
         GROUP BY m.at ORDER BY m.at`,
  );
  return rows.map(({ at, ...counts }) => ({ at: at.toISOString(), ...counts }));
}

/** The status as a table for a terminal. */
export function renderStatus(s: Status): string {
  const n = (x: number) => x.toLocaleString('en-US');
  const lines = [
    `records    ${RECORD_STATUSES.map((st) => `${st} ${s.estimated.includes(st) ? '≈' : ''}${n(s.counts[st])}`).join('   ')}`,
    `due        ${n(s.due)}${s.due > 0 ? `   oldest waiting ${formatAge(s.oldestDueAgeSeconds)}` : ''}`,
    `throughput ${s.throughput['1m']}/s (1m)   ${s.throughput['5m']}/s (5m)   ${s.throughput['15m']}/s (15m)`,
    ...kindLines(s),
    `last hour  processed ${n(s.lastHour.processed)}   retried ${n(s.lastHour.retried)}   failed ${n(s.lastHour.failed)}   rescued ${n(s.lastHour.rescued)}   requeued ${n(s.lastHour.requeued)}   replayed ${n(s.lastHour.replayed)}`,
    '',
  ];
  const alive = s.workers.filter((w) => w.alive);
  lines.push(`workers    ${alive.length} alive${s.workers.length > alive.length ? `, ${s.workers.length - alive.length} silent (no heartbeat for ${ALIVE_WITHIN_SECONDS}s)` : ''}`);
  if (s.workers.length > 0) {
    const rows = s.workers.map((w) => [w.id, w.engine, `${w.inFlight}/${w.concurrency}`, w.alive ? 'alive' : 'silent', formatAge((Date.parse(s.at) - Date.parse(w.lastSeenAt)) / 1000) + ' ago']);
    const widths = [0, 1, 2, 3, 4].map((i) => Math.max(...[['worker', 'engine', 'in flight', 'state', 'last seen'][i]!, ...rows.map((r) => r[i]!)].map((c) => c.length)));
    const fmt = (cells: string[]) => `  ${cells.map((c, i) => c.padEnd(widths[i]!)).join('  ')}`.trimEnd();
    lines.push(fmt(['worker', 'engine', 'in flight', 'state', 'last seen']), ...rows.map(fmt));
  }
  return lines.join('\n');
}

/** A line per kind, when there is more than one kind or a filter asked for some. */
function kindLines(s: Status): string[] {
  if (s.kinds.length === 0 || (s.kinds.length === 1 && s.kinds[0]!.kind === 'default' && s.kindFilter === undefined)) return [];
  const n = (x: number | null) => (x === null ? '?' : x.toLocaleString('en-US'));
  const width = Math.max(...s.kinds.map((k) => k.kind.length));
  return [
    `kinds${s.kindFilter === undefined ? '' : ` (${s.kindFilter.join(', ')})`}`,
    ...s.kinds.map(
      (k) =>
        `  ${k.kind.padEnd(width)}  ${RECORD_STATUSES.map((st) => `${st} ${n(k.counts[st])}`).join('  ')}   due ${n(k.due)}${k.due > 0 ? ` (oldest ${formatAge(k.oldestDueAgeSeconds)})` : ''}`,
    ),
  ];
}

function formatAge(seconds: number): string {
  if (seconds < 60) return `${Math.round(seconds)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${String(Math.round(seconds % 60)).padStart(2, '0')}s`;
  return `${Math.floor(seconds / 3600)}h${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')}m`;
}
