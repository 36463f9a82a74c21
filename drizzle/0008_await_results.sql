-- Waiting for a result (POST /upsert?wait=, the library's upsert(m, { wait })): a waiting client
-- keeps a row in rowfleet.awaits and LISTENs on rowfleet_settled. The statements that settle
-- records notify that channel once per statement, and only while some client's row is live: with
-- nobody waiting they cost one probe of an empty table, and no NOTIFY, whose global lock at commit
-- would serialize the workers' commits (see 0006_hot_path.sql on wake-ups). The client re-reads
-- its own waiters' records in one statement per notification: no polling, no payload to fit.
CREATE TABLE "rowfleet"."awaits" (
	"client" uuid PRIMARY KEY NOT NULL,
	"expires_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE FUNCTION rowfleet.notify_settled() RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
  IF EXISTS (SELECT 1 FROM rowfleet.awaits a WHERE a.expires_at > now()) THEN
    PERFORM pg_notify('rowfleet_settled', '');
  END IF;
END;
$fn$;
--> statement-breakpoint
-- The completion is restated from 0006 with the notification at its end (it is the hot one: a
-- wrapper's copy of its rows measured about 1 µs more per drained record). The rare ones, failure
-- and rescue, keep their bodies (and pinned plans) under a new name, and the old name calls them,
-- then tells waiting clients.
CREATE OR REPLACE FUNCTION rowfleet.complete_records(p_ids text[], p_versions bigint[], p_tokens uuid[], p_results jsonb[], p_now timestamptz)
RETURNS TABLE (id text, processed boolean) LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
SET enable_hashjoin = off SET enable_mergejoin = off
AS $fn$
#variable_conflict use_column
DECLARE
  v_now timestamptz := coalesce(p_now, now());
BEGIN
  RETURN QUERY
  WITH updated AS (
    UPDATE rowfleet.records r
       SET status = CASE WHEN r.version = d.version THEN 'PROCESSED' ELSE 'COMPLETED' END,
           result = CASE WHEN r.version = d.version THEN d.result ELSE r.result END,
           processed_version = CASE WHEN r.version = d.version THEN d.version ELSE r.processed_version END,
           processed_at = CASE WHEN r.version = d.version THEN v_now ELSE r.processed_at END,
           last_error = CASE WHEN r.version = d.version THEN NULL ELSE r.last_error END,
           attempts = CASE WHEN r.version = d.version THEN r.attempts ELSE 0 END,
           lease_expirations = 0,
           run_after = v_now,
           lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = v_now
      FROM (SELECT d.id, d.version, d.token, d.result
              FROM unnest(p_ids, p_versions, p_tokens, p_results) AS d(id, version, token, result) ORDER BY d.id) d
     WHERE r.id = d.id AND r.lease_token = d.token AND r.lease_expires_at > v_now
    RETURNING r.id, r.status = 'PROCESSED' AS processed
  ),
  counted AS (
    INSERT INTO rowfleet.stats AS s (minute, backend, processed, superseded)
    SELECT date_trunc('minute', v_now), pg_backend_pid(), count(*) FILTER (WHERE u.processed), count(*) FILTER (WHERE NOT u.processed)
      FROM updated u HAVING count(*) > 0
    ON CONFLICT (minute, backend) DO UPDATE SET processed = s.processed + excluded.processed, superseded = s.superseded + excluded.superseded
  )
  SELECT u.id, u.processed FROM updated u;
  -- Superseded completions notify too: the waiter re-reads and keeps waiting.
  IF FOUND THEN
    PERFORM rowfleet.notify_settled();
  END IF;
END;
$fn$;
--> statement-breakpoint
ALTER FUNCTION rowfleet.fail_record(text, uuid, bigint, text, boolean, integer, integer, timestamptz) RENAME TO fail_record_core;
--> statement-breakpoint
CREATE FUNCTION rowfleet.fail_record(p_id text, p_token uuid, p_version bigint, p_error text, p_permanent boolean,
                                     p_max_attempts integer, p_backoff_ms integer, p_now timestamptz)
RETURNS SETOF text LANGUAGE plpgsql AS $fn$
DECLARE
  v_outcome text;
BEGIN
  FOR v_outcome IN SELECT o FROM rowfleet.fail_record_core(p_id, p_token, p_version, p_error, p_permanent, p_max_attempts, p_backoff_ms, p_now) AS o LOOP
    -- A retry settles nothing.
    IF v_outcome = 'failed' THEN
      PERFORM rowfleet.notify_settled();
    END IF;
    RETURN NEXT v_outcome;
  END LOOP;
END;
$fn$;
--> statement-breakpoint
ALTER FUNCTION rowfleet.rescue_expired(integer, integer, timestamptz) RENAME TO rescue_expired_core;
--> statement-breakpoint
CREATE FUNCTION rowfleet.rescue_expired(p_max_expirations integer, p_limit integer, p_now timestamptz)
RETURNS TABLE (id text, version bigint, owner text, status text) LANGUAGE plpgsql AS $fn$
BEGIN
  RETURN QUERY SELECT * FROM rowfleet.rescue_expired_core(p_max_expirations, p_limit, p_now);
  -- Poison (FAILED) settles a record; a rescue back to COMPLETED is rare enough to notify as well.
  IF FOUND THEN
    PERFORM rowfleet.notify_settled();
  END IF;
END;
$fn$;
