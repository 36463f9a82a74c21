-- The event_log retention as a function (issue 13, least privilege): the runtime role
-- (`rowfleet migrate --runtime-role NAME`) may not delete from event_log, append-only for it; it
-- deletes what the retention allows through this function, which runs with its owner's rights
-- (SECURITY DEFINER: whoever ran the migrations). The statement is src/records/retention.ts's,
-- moved here unchanged: the oldest 10,000 rows, deleted when older than the retention and before
-- the oldest message a record in mode every still waits on.
CREATE FUNCTION rowfleet.apply_retention(p_retention_ms bigint)
RETURNS TABLE (deleted integer, newer integer) LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
  WITH head AS (
    SELECT seq, received_at FROM rowfleet.event_log ORDER BY seq LIMIT 10000
  ),
  pending AS (
    SELECT coalesce((SELECT r.next_seq FROM rowfleet.records r WHERE r.next_seq IS NOT NULL ORDER BY r.next_seq LIMIT 1), 9223372036854775807) AS seq
  ),
  gone AS (
    DELETE FROM rowfleet.event_log e
     WHERE e.seq IN (SELECT h.seq FROM head h, pending p WHERE h.received_at < now() - p_retention_ms * interval '1 millisecond' AND h.seq < p.seq)
    RETURNING 1
  )
  SELECT (SELECT count(*) FROM gone)::int,
         (SELECT count(*) FROM head h, pending p WHERE h.received_at >= now() - p_retention_ms * interval '1 millisecond' OR h.seq >= p.seq)::int;
$fn$;
--> statement-breakpoint
REVOKE ALL ON FUNCTION rowfleet.apply_retention(bigint) FROM PUBLIC;
