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
-- Each settling function of 0006 keeps its body (and its pinned plans) under a new name; the old
-- name settles, then tells waiting clients.
ALTER FUNCTION rowfleet.complete_records(text[], bigint[], uuid[], jsonb[], timestamptz) RENAME TO complete_records_core;
--> statement-breakpoint
CREATE FUNCTION rowfleet.complete_records(p_ids text[], p_versions bigint[], p_tokens uuid[], p_results jsonb[], p_now timestamptz)
RETURNS TABLE (id text, processed boolean) LANGUAGE plpgsql AS $fn$
BEGIN
  RETURN QUERY SELECT * FROM rowfleet.complete_records_core(p_ids, p_versions, p_tokens, p_results, p_now);
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
