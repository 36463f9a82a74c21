-- Metrics (issue 12).
--
-- 1. rowfleet.stats counts requeues and replays too, which no worker sees (requeue and replay
--    count themselves in their statements, src/records/requeue.ts and replay.ts).
-- 2. The claims return how long each record waited since it was due (queue_wait_ms, from the
--    statement's own clock, so no two machines' clocks are compared): the workers' queue wait
--    histogram. Restated from 0013 with that column only; a changed result type needs a DROP.
ALTER TABLE "rowfleet"."stats" ADD COLUMN "requeued" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "rowfleet"."stats" ADD COLUMN "replayed" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
DROP FUNCTION rowfleet.claim_due(text, text[], integer[], integer[], integer, integer, timestamptz);
--> statement-breakpoint
DROP FUNCTION rowfleet.claim_ids(text, text[], text, integer, timestamptz);
--> statement-breakpoint
CREATE FUNCTION rowfleet.claim_due(p_owner text, p_kinds text[], p_caps integer[], p_lease_ms integer[], p_limit integer, p_turn integer, p_now timestamptz)
RETURNS TABLE (kind text, id text, version bigint, data jsonb, attempts integer, lease_token uuid, priority integer, seq bigint, queue_wait_ms double precision) LANGUAGE plpgsql
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
         ORDER BY r.kind, r.priority DESC, r.run_after, r.id
         LIMIT v_want - v_share
         FOR UPDATE SKIP LOCKED
      )
      UPDATE rowfleet.records r
         SET status = 'PROCESSING', lease_owner = p_owner, lease_token = v_token,
             lease_expires_at = v_now + v_lease * interval '1 millisecond', attempts = r.attempts + 1, updated_at = v_now,
             enqueued_at = NULL
       WHERE r.ctid = ANY (ARRAY(SELECT due.tid FROM due))
      RETURNING r.kind, r.id,
                CASE WHEN r.next_seq IS NULL THEN r.version ELSE (SELECT e.version FROM rowfleet.event_log e WHERE e.kind = r.kind AND e.record_id = r.id AND e.seq = r.next_seq) END,
                CASE WHEN r.next_seq IS NULL THEN r.data ELSE (SELECT e.data FROM rowfleet.event_log e WHERE e.kind = r.kind AND e.record_id = r.id AND e.seq = r.next_seq) END,
                r.attempts, r.lease_token, r.priority, r.next_seq, extract(epoch FROM v_now - r.run_after)::float8 * 1000;
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
CREATE FUNCTION rowfleet.claim_ids(p_kind text, p_ids text[], p_owner text, p_lease_ms integer, p_now timestamptz)
RETURNS TABLE (kind text, id text, version bigint, data jsonb, attempts integer, lease_token uuid, priority integer, seq bigint, queue_wait_ms double precision) LANGUAGE plpgsql
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
     ORDER BY r.kind, r.id
     FOR UPDATE SKIP LOCKED
  )
  UPDATE rowfleet.records r
     SET status = 'PROCESSING', lease_owner = p_owner, lease_token = v_token,
         lease_expires_at = v_now + p_lease_ms * interval '1 millisecond', attempts = r.attempts + 1, updated_at = v_now,
         enqueued_at = NULL
   WHERE r.ctid = ANY (ARRAY(SELECT due.tid FROM due))
  RETURNING r.kind, r.id,
            CASE WHEN r.next_seq IS NULL THEN r.version ELSE (SELECT e.version FROM rowfleet.event_log e WHERE e.kind = r.kind AND e.record_id = r.id AND e.seq = r.next_seq) END,
            CASE WHEN r.next_seq IS NULL THEN r.data ELSE (SELECT e.data FROM rowfleet.event_log e WHERE e.kind = r.kind AND e.record_id = r.id AND e.seq = r.next_seq) END,
            r.attempts, r.lease_token, r.priority, r.next_seq, extract(epoch FROM v_now - r.run_after)::float8 * 1000;
END;
$fn$;
