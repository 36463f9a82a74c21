ALTER TABLE "rowfleet"."records" ADD COLUMN "alone_token" uuid;--> statement-breakpoint
ALTER TABLE "rowfleet"."records" ADD COLUMN "fence" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
CREATE INDEX "records_suspect_idx" ON "rowfleet"."records" USING btree ("kind","priority" DESC,"run_after","id") WHERE "rowfleet"."records"."status" = 'COMPLETED' and "rowfleet"."records"."lease_expirations" > 0;--> statement-breakpoint
-- Poison without victims, and fencing tokens (issue 13).
--
-- 1. A worker process that dies takes every lease it held with it, and the rescue cannot tell
--    which of its records killed it. Until 0015 every one of them was counted an expiration, so
--    the records that shared a process with a poison record (claimed with it, in id order, again
--    and again) became FAILED as poison with it. Now an expiration makes a record FAILED only
--    when its lease was held alone in its process (alone_token = lease_token: the lease of
--    claim_alone, below). A record that has expired p_max_expirations times (at least once) is a
--    suspect: the claims leave it, and a worker with nothing in flight takes it with claim_alone
--    and claims nothing more until it is settled. A suspect that completes is cleared (the
--    completion resets lease_expirations); one that kills its process again is the culprit.
--    The claims gain p_max_expirations; the old ones stay for workers of the version before
--    during a rolling upgrade (they do not spare suspects, and their leases are never "alone").
-- 2. Every claim adds one to the record's fence and returns it: the handler's ctx.fencingToken,
--    which grows with every claim of a record, for the systems it writes to to refuse the writes
--    of an older holder (one paused past its lease). A message handed on by a completion (mode
--    every) keeps its holder's fence: the holder is the same and its lease never lapsed.
--> statement-breakpoint
CREATE FUNCTION rowfleet.claim_due(p_owner text, p_kinds text[], p_caps integer[], p_lease_ms integer[], p_limit integer, p_turn integer, p_max_expirations integer, p_now timestamptz)
RETURNS TABLE (kind text, id text, version bigint, data jsonb, attempts integer, lease_token uuid, priority integer, seq bigint, queue_wait_ms double precision, fence bigint) LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off
AS $fn$
#variable_conflict use_column
DECLARE
  v_now timestamptz := coalesce(p_now, now());
  v_token uuid := gen_random_uuid();
  v_kinds text[] := p_kinds;
  v_left integer := p_limit;
  v_kind text;
  v_n integer;
  v_k integer;
  v_want integer;
  v_lease integer;
  v_share integer;
  v_priority integer;
  v_taken integer;
  v_got integer[];
  v_full boolean[];
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  IF v_kinds IS NULL THEN
    -- Every kind with waiting records: one descent of records_due_idx per kind (a loose index scan).
    -- Ordered by the whole index, which records_pkey (kind, id) cannot give: on an analyzed table
    -- the planner would otherwise walk the primary key through a kind's PROCESSED history.
    v_kinds := '{}';
    SELECT r.kind INTO v_kind FROM rowfleet.records r WHERE r.status = 'COMPLETED' ORDER BY r.kind, r.priority DESC, r.run_after, r.id LIMIT 1;
    WHILE v_kind IS NOT NULL LOOP
      v_kinds := v_kinds || v_kind;
      SELECT r.kind INTO v_kind FROM rowfleet.records r
       WHERE r.status = 'COMPLETED' AND r.kind > v_kind ORDER BY r.kind, r.priority DESC, r.run_after, r.id LIMIT 1;
    END LOOP;
  END IF;
  v_n := cardinality(v_kinds);
  IF v_n = 0 OR v_left <= 0 THEN
    RETURN;
  END IF;
  v_got := array_fill(0, ARRAY[v_n]);
  v_full := array_fill(false, ARRAY[v_n]);
  -- Offers 0 .. n-1 are the first round, n .. 2n-1 the second.
  FOR v_i IN 0 .. 2 * v_n - 1 LOOP
    EXIT WHEN v_left <= 0;
    v_k := (v_i + coalesce(p_turn, 0)) % v_n + 1;
    IF v_i < v_n THEN
      -- An equal share of what is left among the kinds not yet offered theirs.
      v_want := least(coalesce(p_caps[v_k], v_left), (v_left + (v_n - v_i) - 1) / (v_n - v_i));
    ELSIF v_full[v_k] THEN
      v_want := least(coalesce(p_caps[v_k] - v_got[v_k], v_left), v_left);
    ELSE
      v_want := 0;
    END IF;
    CONTINUE WHEN v_want <= 0;
    v_kind := v_kinds[v_k];
    -- The worker merged `kinds set`'s leases into the ones it names; claiming every kind, it names
    -- none, so a lease stored for the kind applies here.
    v_lease := CASE WHEN p_kinds IS NULL THEN coalesce((SELECT k.lease_ms FROM rowfleet.kinds k WHERE k.kind = v_kind), p_lease_ms[1])
                    ELSE coalesce(p_lease_ms[v_k], p_lease_ms[1]) END;
    v_share := 0;
    SELECT r.priority INTO v_priority FROM rowfleet.records r
     WHERE r.status = 'COMPLETED' AND r.kind = v_kind ORDER BY r.kind, r.priority DESC LIMIT 1;
    WHILE v_priority IS NOT NULL AND v_share < v_want LOOP
      -- As in 0007: the CTE binds SKIP LOCKED and LIMIT before the update, which finds the locked
      -- rows by address.
      RETURN QUERY
      WITH due AS (
        SELECT r.ctid AS tid FROM rowfleet.records r
         WHERE r.status = 'COMPLETED' AND r.kind = v_kind AND r.priority = v_priority AND r.run_after <= v_now
           AND (r.lease_expirations = 0 OR r.lease_expirations < p_max_expirations)
         ORDER BY r.kind, r.priority DESC, r.run_after, r.id
         LIMIT v_want - v_share
         FOR UPDATE SKIP LOCKED
      )
      UPDATE rowfleet.records r
         SET status = 'PROCESSING', lease_owner = p_owner, lease_token = v_token,
             lease_expires_at = v_now + v_lease * interval '1 millisecond', attempts = r.attempts + 1, updated_at = v_now,
             enqueued_at = NULL, fence = r.fence + 1
       WHERE r.ctid = ANY (ARRAY(SELECT due.tid FROM due))
      RETURNING r.kind, r.id,
                CASE WHEN r.next_seq IS NULL THEN r.version ELSE (SELECT e.version FROM rowfleet.event_log e WHERE e.kind = r.kind AND e.record_id = r.id AND e.seq = r.next_seq) END,
                CASE WHEN r.next_seq IS NULL THEN r.data ELSE (SELECT e.data FROM rowfleet.event_log e WHERE e.kind = r.kind AND e.record_id = r.id AND e.seq = r.next_seq) END,
                r.attempts, r.lease_token, r.priority, r.next_seq, extract(epoch FROM v_now - r.run_after)::float8 * 1000, r.fence;
      GET DIAGNOSTICS v_taken = ROW_COUNT;
      v_share := v_share + v_taken;
      -- A share filled needs no lower priority (0013: the look-up ran anyway, one descent per claim).
      EXIT WHEN v_share >= v_want;
      SELECT r.priority INTO v_priority FROM rowfleet.records r
       WHERE r.status = 'COMPLETED' AND r.kind = v_kind AND r.priority < v_priority ORDER BY r.kind, r.priority DESC LIMIT 1;
    END LOOP;
    v_left := v_left - v_share;
    IF v_i < v_n THEN
      v_got[v_k] := v_share;
      v_full[v_k] := v_share = v_want;
    END IF;
  END LOOP;
END;
$fn$;
--> statement-breakpoint
CREATE FUNCTION rowfleet.claim_ids(p_kind text, p_ids text[], p_owner text, p_lease_ms integer, p_max_expirations integer, p_now timestamptz)
RETURNS TABLE (kind text, id text, version bigint, data jsonb, attempts integer, lease_token uuid, priority integer, seq bigint, queue_wait_ms double precision, fence bigint) LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off
AS $fn$
#variable_conflict use_column
DECLARE
  v_now timestamptz := coalesce(p_now, now());
  v_token uuid := gen_random_uuid();
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  -- ORDER BY the primary key with sorting off: records_pkey, in its order.
  RETURN QUERY
  WITH due AS (
    SELECT r.ctid AS tid FROM rowfleet.records r
     WHERE r.kind = p_kind AND r.id = ANY (p_ids) AND r.status = 'COMPLETED' AND r.run_after <= v_now
       AND (r.lease_expirations = 0 OR r.lease_expirations < p_max_expirations)
     ORDER BY r.kind, r.id
     FOR UPDATE SKIP LOCKED
  )
  UPDATE rowfleet.records r
     SET status = 'PROCESSING', lease_owner = p_owner, lease_token = v_token,
         lease_expires_at = v_now + p_lease_ms * interval '1 millisecond', attempts = r.attempts + 1, updated_at = v_now,
         enqueued_at = NULL, fence = r.fence + 1
   WHERE r.ctid = ANY (ARRAY(SELECT due.tid FROM due))
  RETURNING r.kind, r.id,
            CASE WHEN r.next_seq IS NULL THEN r.version ELSE (SELECT e.version FROM rowfleet.event_log e WHERE e.kind = r.kind AND e.record_id = r.id AND e.seq = r.next_seq) END,
            CASE WHEN r.next_seq IS NULL THEN r.data ELSE (SELECT e.data FROM rowfleet.event_log e WHERE e.kind = r.kind AND e.record_id = r.id AND e.seq = r.next_seq) END,
            r.attempts, r.lease_token, r.priority, r.next_seq, extract(epoch FROM v_now - r.run_after)::float8 * 1000, r.fence;
END;
$fn$;
--> statement-breakpoint
-- A suspect for a worker with nothing in flight: one waiting record that expired at least
-- p_max_expirations times (and at least once), under a lease marked alone, in the order of
-- records_suspect_idx (kind, then highest priority, then oldest due), which holds only the
-- waiting records whose lease expired since their last completion: no sort, and no read of the backlog.
CREATE FUNCTION rowfleet.claim_alone(p_owner text, p_kinds text[], p_lease_ms integer[], p_max_expirations integer, p_now timestamptz)
RETURNS TABLE (kind text, id text, version bigint, data jsonb, attempts integer, lease_token uuid, priority integer, seq bigint, queue_wait_ms double precision, fence bigint) LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off
AS $fn$
#variable_conflict use_column
DECLARE
  v_now timestamptz := coalesce(p_now, now());
  v_token uuid := gen_random_uuid();
BEGIN
  RETURN QUERY
  WITH due AS (
    SELECT r.ctid AS tid FROM rowfleet.records r
     WHERE r.status = 'COMPLETED' AND r.lease_expirations > 0 AND r.lease_expirations >= p_max_expirations
       AND r.run_after <= v_now AND (p_kinds IS NULL OR r.kind = ANY (p_kinds))
     ORDER BY r.kind, r.priority DESC, r.run_after, r.id
     LIMIT 1
     FOR UPDATE SKIP LOCKED
  )
  UPDATE rowfleet.records r
     SET status = 'PROCESSING', lease_owner = p_owner, lease_token = v_token, alone_token = v_token,
         lease_expires_at = v_now + coalesce(p_lease_ms[array_position(p_kinds, r.kind)],
                                             CASE WHEN p_kinds IS NULL THEN (SELECT k.lease_ms FROM rowfleet.kinds k WHERE k.kind = r.kind) END,
                                             p_lease_ms[1]) * interval '1 millisecond',
         attempts = r.attempts + 1, updated_at = v_now, enqueued_at = NULL, fence = r.fence + 1
   WHERE r.ctid = ANY (ARRAY(SELECT due.tid FROM due))
  RETURNING r.kind, r.id,
            CASE WHEN r.next_seq IS NULL THEN r.version ELSE (SELECT e.version FROM rowfleet.event_log e WHERE e.kind = r.kind AND e.record_id = r.id AND e.seq = r.next_seq) END,
            CASE WHEN r.next_seq IS NULL THEN r.data ELSE (SELECT e.data FROM rowfleet.event_log e WHERE e.kind = r.kind AND e.record_id = r.id AND e.seq = r.next_seq) END,
            r.attempts, r.lease_token, r.priority, r.next_seq, extract(epoch FROM v_now - r.run_after)::float8 * 1000, r.fence;
END;
$fn$;
--> statement-breakpoint
-- Whether a suspect waits for claim_alone: the worker asks on its rescue timer, and stops
-- claiming until it has nothing in flight when one does.
CREATE FUNCTION rowfleet.suspects_waiting(p_kinds text[], p_max_expirations integer, p_now timestamptz)
RETURNS boolean LANGUAGE sql STABLE
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
AS $fn$
  SELECT EXISTS (SELECT 1 FROM rowfleet.records r
                  WHERE r.status = 'COMPLETED' AND r.lease_expirations > 0 AND r.lease_expirations >= p_max_expirations
                    AND r.run_after <= coalesce(p_now, now()) AND (p_kinds IS NULL OR r.kind = ANY (p_kinds)));
$fn$;
--> statement-breakpoint
-- The rescue, restated from 0013: FAILED as poison only when the lease was held alone; the
-- rescued event says whether it was.
CREATE OR REPLACE FUNCTION rowfleet.rescue_expired_core(p_max_expirations integer, p_limit integer, p_now timestamptz)
RETURNS TABLE (kind text, id text, version bigint, owner text, status text) LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off
SET enable_hashjoin = off SET enable_mergejoin = off
AS $fn$
#variable_conflict use_column
DECLARE
  v_now timestamptz := coalesce(p_now, now());
BEGIN
  RETURN QUERY
  WITH expired AS (
    SELECT r.ctid AS tid, r.lease_owner, r.alone_token IS NOT NULL AND r.alone_token = r.lease_token AS alone FROM rowfleet.records r
     WHERE r.status = 'PROCESSING' AND r.lease_expires_at <= v_now
     ORDER BY r.lease_expires_at
     LIMIT p_limit
     FOR UPDATE SKIP LOCKED
  ),
  updated AS (
    UPDATE rowfleet.records r
       SET lease_expirations = r.lease_expirations + 1,
           status = CASE WHEN r.lease_expirations + 1 > p_max_expirations AND e.alone THEN 'FAILED' ELSE 'COMPLETED' END,
           last_error = CASE
                          WHEN r.lease_expirations + 1 > p_max_expirations AND e.alone
                          THEN 'poison: the lease expired ' || (r.lease_expirations + 1) || ' times without a completion'
                          ELSE r.last_error
                        END,
           run_after = greatest(r.run_after, v_now),
           lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, alone_token = NULL, updated_at = v_now
      FROM expired e
     WHERE r.ctid = e.tid
    RETURNING r.kind, r.id, r.version, r.status, r.lease_expirations, e.lease_owner AS owner, e.alone
  ),
  logged AS (
    INSERT INTO rowfleet.event_log (kind, record_id, version, applied, reason, detail)
    SELECT u.kind, u.id, u.version, false, CASE WHEN u.status = 'FAILED' THEN 'failed' ELSE 'rescued' END,
           jsonb_build_object('owner', u.owner, 'leaseExpirations', u.lease_expirations, 'alone', u.alone)
      FROM updated u
  ),
  counted AS (
    INSERT INTO rowfleet.stats AS s (minute, backend, rescued, failed)
    SELECT date_trunc('minute', v_now), pg_backend_pid(), count(*), count(*) FILTER (WHERE u.status = 'FAILED')
      FROM updated u HAVING count(*) > 0
    ON CONFLICT (minute, backend) DO UPDATE SET rescued = s.rescued + excluded.rescued, failed = s.failed + excluded.failed
  )
  SELECT u.kind, u.id, u.version, u.owner, u.status FROM updated u;
END;
$fn$;
