-- Migration 0013: two changes.
--
-- 1. Mode every, chained: a completion may hand its record's next message straight back to the
--    worker that completed the previous one, in the same statement, instead of putting the record
--    back in line for a claim. Measured on a drain of 50,000 messages over 5,000 records (2 worker
--    processes, 2 cores): the claim and the completion each cost about twice mode latest's per
--    record (a record went COMPLETED -> PROCESSING -> COMPLETED once per message, each a non-HOT
--    update with its index entries); a chained message costs one update, not two, and no claim.
--
-- 2. Plans that hold on statistics taken during a bulk load. An autoanalyze that runs while a
--    bulk load's transaction is still open sees none of its rows and records 0 tuples over the
--    pages they fill; until the next autoanalyze, every index scan costs the planner the same, and
--    the generic plans cached then read records_pkey whole once per call (completions,
--    heartbeats, releases, rescues, the sweep's marks, the batched upsert) and, in mode every,
--    every later message of every record (the every bench met it in about one run of four: drains
--    5x slower until the next autoanalyze, ~20 s). Statements that update a batch of records now
--    lock them by key first and update them by address (rowfleet.lock_records, or the addresses
--    a statement's own lock kept), and event_log is read one record's messages at a time.
--    test/plans.test.ts has the state.
--
-- Claims restated from 0012 with two changes: a kind's share, once filled, does not look up the
-- next lower priority; and the message a record in mode every waits on is
-- looked up by its record and seq, not by seq alone. On statistics that say event_log is empty
-- (see 2. above), Postgres 18 chose a skip scan of event_log_record_idx over its distinct records
-- for `seq = x`; with the record's key, whichever index it picks finds the one row.
CREATE OR REPLACE FUNCTION rowfleet.claim_due(p_owner text, p_kinds text[], p_caps integer[], p_lease_ms integer[], p_limit integer, p_turn integer, p_now timestamptz)
RETURNS TABLE (kind text, id text, version bigint, data jsonb, attempts integer, lease_token uuid, priority integer, seq bigint) LANGUAGE plpgsql
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
                r.attempts, r.lease_token, r.priority, r.next_seq;
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
CREATE OR REPLACE FUNCTION rowfleet.claim_ids(p_kind text, p_ids text[], p_owner text, p_lease_ms integer, p_now timestamptz)
RETURNS TABLE (kind text, id text, version bigint, data jsonb, attempts integer, lease_token uuid, priority integer, seq bigint) LANGUAGE plpgsql
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
            r.attempts, r.lease_token, r.priority, r.next_seq;
END;
$fn$;
--> statement-breakpoint
-- The records with these keys, locked in key order (the lock order of 0006), one probe of
-- records_pkey each; their addresses in the order given (NULL for a key with no record). A
-- statement of its own, before the update: the update's snapshot, taken after the locks, sees the
-- versions locked, so that it finds them at these addresses.
CREATE FUNCTION rowfleet.lock_records(p_kinds text[], p_ids text[])
RETURNS tid[] LANGUAGE sql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
SET enable_hashjoin = off SET enable_mergejoin = off
AS $fn$
  SELECT array_agg(l.tid ORDER BY d.o)
    FROM (SELECT u.kind, u.id, u.o FROM unnest(p_kinds, p_ids) WITH ORDINALITY AS u(kind, id, o) ORDER BY u.kind, u.id) d
    LEFT JOIN LATERAL (SELECT r.ctid AS tid FROM rowfleet.records r WHERE r.kind = d.kind AND r.id = d.id FOR UPDATE) l ON true;
$fn$;
--> statement-breakpoint
DROP FUNCTION rowfleet.complete_records(text[], text[], bigint[], uuid[], jsonb[], bigint[], timestamptz);
--> statement-breakpoint
-- The completion, restated from 0012 with chaining (1.) and its records updated by address (2.).
-- p_chain_lease_ms[i]: the lease to hold the next message under, or NULL not to chain (the worker
-- passes NULL when stopping, for a transactional handler's completion, and after CHAIN_LIMIT
-- messages in a row, so that other records get their turn). A record is chained only when its
-- next message is due now and no COMPLETED record of its kind has a higher priority (one descent of
-- records_due_idx per kind in the call): priorities hold as they do for claims. A chained record
-- stays PROCESSING under the same owner with a fresh lease token, one attempt, and the message's
-- version and data are returned (`chained`), as a claim would return them.
CREATE FUNCTION rowfleet.complete_records(p_kinds text[], p_ids text[], p_versions bigint[], p_tokens uuid[], p_results jsonb[], p_seqs bigint[],
                                          p_chain_lease_ms integer[], p_now timestamptz)
RETURNS TABLE (kind text, id text, processed boolean, pending boolean, chained boolean,
               next_version bigint, next_data jsonb, attempts integer, lease_token uuid, priority integer, seq bigint) LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
SET enable_hashjoin = off SET enable_mergejoin = off
AS $fn$
#variable_conflict use_column
DECLARE
  v_now timestamptz := coalesce(p_now, now());
  v_token uuid := gen_random_uuid();
  v_chaining boolean := EXISTS (SELECT 1 FROM unnest(p_chain_lease_ms) AS c(ms) WHERE c.ms IS NOT NULL)
                         AND EXISTS (SELECT 1 FROM unnest(p_seqs) AS s(seq) WHERE s.seq IS NOT NULL);
  v_tids tid[];
  v_kind text;
  v_top_kinds text[] := '{}';
  v_tops integer[] := '{}';
BEGIN
  -- 1. Lock the records and keep their addresses (rowfleet.lock_records, below). The update finds
  --    them by address: as a join on the key, on statistics that say records is empty (see above)
  --    its generic plan read records_pkey whole, once per completion. Mode every also needs the
  --    lock before it looks up the next messages (a statement of its own, so that its snapshot sees
  --    every message committed before the lock): an upsert locks its records before it logs a
  --    message, so none can slip in between the lookup and the update.
  v_tids := rowfleet.lock_records(p_kinds, p_ids);
  IF v_chaining THEN
    -- The highest priority waiting in each kind that may chain (a chained record must not pass it):
    -- one descent of records_due_idx each, as the claim's. Ahead of the statement: as a subquery
    -- joined in it, its generic plan on a table never analyzed ran it once per completion.
    FOR v_kind IN SELECT DISTINCT c.kind FROM unnest(p_kinds, p_chain_lease_ms) AS c(kind, ms) WHERE c.ms IS NOT NULL LOOP
      v_top_kinds := v_top_kinds || v_kind;
      v_tops := v_tops || (SELECT r.priority FROM rowfleet.records r WHERE r.status = 'COMPLETED' AND r.kind = v_kind ORDER BY r.kind, r.priority DESC LIMIT 1);
    END LOOP;
  END IF;
  RETURN QUERY
  WITH updated AS (
    UPDATE rowfleet.records r
       SET status = CASE WHEN d.seq IS NOT NULL AND r.next_seq = d.seq THEN
                           CASE WHEN d.next IS NULL THEN 'PROCESSED'
                                WHEN d.chain_ms IS NOT NULL AND r.run_after <= v_now AND r.priority >= coalesce(d.top, -1000) THEN 'PROCESSING'
                                ELSE 'COMPLETED' END
                         WHEN r.version = d.version THEN 'PROCESSED' ELSE 'COMPLETED' END,
           result = CASE WHEN (d.seq IS NOT NULL AND r.next_seq = d.seq) OR r.version = d.version THEN d.result ELSE r.result END,
           processed_version = CASE WHEN (d.seq IS NOT NULL AND r.next_seq = d.seq) OR r.version = d.version THEN d.version ELSE r.processed_version END,
           processed_at = CASE WHEN (d.seq IS NOT NULL AND r.next_seq = d.seq) OR r.version = d.version THEN v_now ELSE r.processed_at END,
           last_error = CASE WHEN (d.seq IS NOT NULL AND r.next_seq = d.seq) OR r.version = d.version THEN NULL ELSE r.last_error END,
           attempts = CASE WHEN d.seq IS NOT NULL AND r.next_seq = d.seq THEN
                             CASE WHEN d.next IS NOT NULL AND d.chain_ms IS NOT NULL AND r.run_after <= v_now AND r.priority >= coalesce(d.top, -1000) THEN 1 ELSE 0 END
                           WHEN r.version = d.version THEN r.attempts ELSE 0 END,
           next_seq = CASE WHEN d.seq IS NOT NULL AND r.next_seq = d.seq THEN d.next ELSE r.next_seq END,
           lease_expirations = 0,
           run_after = greatest(r.run_after, v_now),
           lease_token = CASE WHEN d.seq IS NOT NULL AND r.next_seq = d.seq AND d.next IS NOT NULL AND d.chain_ms IS NOT NULL
                                   AND r.run_after <= v_now AND r.priority >= coalesce(d.top, -1000) THEN v_token END,
           lease_expires_at = CASE WHEN d.seq IS NOT NULL AND r.next_seq = d.seq AND d.next IS NOT NULL AND d.chain_ms IS NOT NULL
                                        AND r.run_after <= v_now AND r.priority >= coalesce(d.top, -1000) THEN v_now + d.chain_ms * interval '1 millisecond' END,
           lease_owner = CASE WHEN d.seq IS NOT NULL AND r.next_seq = d.seq AND d.next IS NOT NULL AND d.chain_ms IS NOT NULL
                                   AND r.run_after <= v_now AND r.priority >= coalesce(d.top, -1000) THEN r.lease_owner END,
           updated_at = v_now
      FROM (SELECT d.kind, d.id, d.version, d.token, d.result, d.seq, d.chain_ms, d.tid, n.seq AS next, n.version AS next_version, n.data AS next_data,
                   v_tops[array_position(v_top_kinds, d.kind)] AS top
              FROM unnest(p_kinds, p_ids, p_versions, p_tokens, p_results, p_seqs, p_chain_lease_ms, v_tids)
                     AS d(kind, id, version, token, result, seq, chain_ms, tid)
              -- The record's next applied message: the first entry of event_log_record_idx after
              -- (kind, id, seq) and within the record. Bounds as row comparisons, not as kind = ..
              -- AND id = .. AND seq > ..: on statistics that say event_log is empty (see above)
              -- the planner took event_log_pkey for `seq > ..`, reading every later message of
              -- every record; no other index gives this order without a sort.
              LEFT JOIN LATERAL (
                SELECT e.seq, e.version, e.data FROM rowfleet.event_log e
                 WHERE d.seq IS NOT NULL AND (e.kind, e.record_id, e.seq) > (d.kind, d.id, d.seq)
                   AND (e.kind, e.record_id, e.seq) <= (d.kind, d.id, 9223372036854775807::bigint) AND e.applied
                 ORDER BY e.kind, e.record_id, e.seq LIMIT 1
              ) n ON true) d
     -- By address only: a condition on the key would offer the planner records_pkey read whole again.
     WHERE r.ctid = d.tid AND r.lease_token = d.token AND r.lease_expires_at > v_now
    RETURNING r.kind, r.id, r.processed_at = v_now AND r.processed_version = d.version AS processed, r.status = 'COMPLETED' AS pending,
              r.status = 'PROCESSING' AS chained, d.next_version, d.next_data, r.attempts, r.lease_token, r.priority, r.next_seq
  ),
  counted AS (
    INSERT INTO rowfleet.stats AS s (minute, backend, processed, superseded)
    SELECT date_trunc('minute', v_now), pg_backend_pid(), count(*) FILTER (WHERE u.processed), count(*) FILTER (WHERE NOT u.processed)
      FROM updated u HAVING count(*) > 0
    ON CONFLICT (minute, backend) DO UPDATE SET processed = s.processed + excluded.processed, superseded = s.superseded + excluded.superseded
  )
  SELECT u.kind, u.id, u.processed, u.pending, u.chained,
         CASE WHEN u.chained THEN u.next_version END, CASE WHEN u.chained THEN u.next_data END,
         CASE WHEN u.chained THEN u.attempts END, u.lease_token, CASE WHEN u.chained THEN u.priority END, CASE WHEN u.chained THEN u.next_seq END
    FROM updated u;
  -- Superseded completions notify too: the waiter re-reads and keeps waiting.
  IF FOUND THEN
    PERFORM rowfleet.notify_settled();
  END IF;
END;
$fn$;
--> statement-breakpoint
-- The same cliff in the other statements that update a batch of records joined on their key
-- (heartbeats, releases, the boss engine's marks, rescues): on statistics that say records is
-- empty their generic plans read records_pkey whole, once per call. They now lock the records
-- first, in key order, and update them by address (rowfleet.lock_records); the rescue's CTE, which
-- locks them already, passes their addresses on.
CREATE OR REPLACE FUNCTION rowfleet.extend_leases(p_kinds text[], p_ids text[], p_tokens uuid[], p_lease_ms integer, p_now timestamptz)
RETURNS TABLE (kind text, id text) LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
SET enable_hashjoin = off SET enable_mergejoin = off
AS $fn$
#variable_conflict use_column
DECLARE
  v_now timestamptz := coalesce(p_now, now());
  v_tids tid[] := rowfleet.lock_records(p_kinds, p_ids);
BEGIN
  RETURN QUERY
  UPDATE rowfleet.records r
     SET lease_expires_at = v_now + p_lease_ms * interval '1 millisecond'
    FROM unnest(p_tokens, v_tids) AS h(token, tid)
   WHERE r.ctid = h.tid AND r.lease_token = h.token AND r.lease_expires_at > v_now
  RETURNING r.kind, r.id;
END;
$fn$;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION rowfleet.release_records(p_kinds text[], p_ids text[], p_tokens uuid[], p_now timestamptz)
RETURNS TABLE (kind text, id text) LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
SET enable_hashjoin = off SET enable_mergejoin = off
AS $fn$
#variable_conflict use_column
DECLARE
  v_now timestamptz := coalesce(p_now, now());
  v_tids tid[] := rowfleet.lock_records(p_kinds, p_ids);
BEGIN
  RETURN QUERY
  UPDATE rowfleet.records r
     SET status = 'COMPLETED', attempts = greatest(r.attempts - 1, 0), run_after = greatest(r.run_after, v_now),
         lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = v_now
    FROM unnest(p_tokens, v_tids) AS h(token, tid)
   WHERE r.ctid = h.tid AND r.lease_token = h.token AND r.lease_expires_at > v_now
  RETURNING r.kind, r.id;
END;
$fn$;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION rowfleet.clear_marks(p_kinds text[], p_ids text[])
RETURNS integer LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
SET enable_hashjoin = off SET enable_mergejoin = off
AS $fn$
DECLARE
  v_count integer;
  v_tids tid[] := rowfleet.lock_records(p_kinds, p_ids);
BEGIN
  UPDATE rowfleet.records r SET enqueued_at = NULL
   WHERE r.ctid = ANY (v_tids) AND r.enqueued_at IS NOT NULL;
  GET DIAGNOSTICS v_count = ROW_COUNT;
  RETURN v_count;
END;
$fn$;
--> statement-breakpoint
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
    SELECT r.ctid AS tid, r.lease_owner FROM rowfleet.records r
     WHERE r.status = 'PROCESSING' AND r.lease_expires_at <= v_now
     ORDER BY r.lease_expires_at
     LIMIT p_limit
     FOR UPDATE SKIP LOCKED
  ),
  updated AS (
    UPDATE rowfleet.records r
       SET lease_expirations = r.lease_expirations + 1,
           status = CASE WHEN r.lease_expirations + 1 > p_max_expirations THEN 'FAILED' ELSE 'COMPLETED' END,
           last_error = CASE
                          WHEN r.lease_expirations + 1 > p_max_expirations
                          THEN 'poison: the lease expired ' || (r.lease_expirations + 1) || ' times without a completion'
                          ELSE r.last_error
                        END,
           run_after = greatest(r.run_after, v_now),
           lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = v_now
      FROM expired e
     WHERE r.ctid = e.tid
    RETURNING r.kind, r.id, r.version, r.status, r.lease_expirations, e.lease_owner AS owner
  ),
  logged AS (
    INSERT INTO rowfleet.event_log (kind, record_id, version, applied, reason, detail)
    SELECT u.kind, u.id, u.version, false, CASE WHEN u.status = 'FAILED' THEN 'failed' ELSE 'rescued' END,
           jsonb_build_object('owner', u.owner, 'leaseExpirations', u.lease_expirations)
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
--> statement-breakpoint
-- The batched upsert, restated from 0012 with one change: the classifying statement updates the
-- records step 2 locked by their addresses, kept from the lock, not joined on their key (on
-- statistics taken during a bulk load its generic plan read records_pkey whole, once per call).
CREATE OR REPLACE FUNCTION rowfleet.upsert_messages(
  p_kinds text[],
  p_ids text[],
  p_data jsonb,
  p_versions bigint[],
  p_message_ids text[],
  p_priorities integer[],
  p_run_ats timestamptz[]
) RETURNS SETOF rowfleet.upsert_result LANGUAGE plpgsql
-- Always plan for the actual arrays. A generic plan (which plpgsql's default may switch to after
-- five calls) estimates a few rows per array and joins the CTEs with nested loops: measured
-- 13x slower at 100 messages and worse beyond. Planning costs ~1.5 ms per call instead.
SET plan_cache_mode = force_custom_plan
AS $fn$
#variable_conflict use_column
DECLARE
  v_kinds text[] := coalesce(p_kinds, array_fill('default'::text, ARRAY[cardinality(p_ids)]));
  -- The kinds of this call in mode every (one probe of rowfleet.kinds per kind).
  v_every text[] := ARRAY(SELECT k.kind FROM rowfleet.kinds k WHERE k.mode = 'every' AND k.kind = ANY (ARRAY(SELECT DISTINCT u FROM unnest(v_kinds) AS u)));
  v_kind text;
  v_versions bigint[];
  v_assigned boolean[];
  v_locked_kinds text[];
  v_locked text[];
  v_locked_versions bigint[];
  v_locked_data jsonb[];
  v_locked_tids tid[];
  v_missed bigint;
  r_ord integer[];
  r_id text[];
  r_applied boolean[];
  r_version bigint[];
  r_current bigint[];
  r_reason text[];
  r_duplicate boolean[];
  r_reused boolean[];
BEGIN
  -- 1. A version for every message that carries none, taken as it reaches the database and before
  --    any row lock: an earlier message always holds the lower version, and no clock is trusted.
  SELECT array_agg(coalesce(u.v, nextval('rowfleet.version_seq')) ORDER BY u.o),
         array_agg(u.v IS NULL ORDER BY u.o)
    INTO v_versions, v_assigned
    FROM unnest(p_versions) WITH ORDINALITY AS u(v, o);

  -- 2. Lock the existing rows, in (kind, id) order: every writer locks in the same order, so
  --    writers of overlapping batches queue instead of deadlocking.
  --    What they hold is what the fold compares against: no second read.
  --    A call of one kind (the common case: every message of kind default) reads the primary key
  --    with its ids as one array, as before kinds; a call of several kinds probes it key by key
  --    (LATERAL), in key order (measured per 1000: 1.7 ms against the array read's 1.5).
  v_kind := CASE WHEN p_kinds IS NULL THEN 'default' WHEN (SELECT count(DISTINCT k) FROM unnest(p_kinds) AS k) = 1 THEN p_kinds[1] END;
  IF v_kind IS NOT NULL THEN
    SELECT coalesce(array_agg(l.kind), '{}'), coalesce(array_agg(l.id), '{}'), coalesce(array_agg(l.version), '{}'), coalesce(array_agg(l.data), '{}'),
           coalesce(array_agg(l.tid), '{}')
      INTO v_locked_kinds, v_locked, v_locked_versions, v_locked_data, v_locked_tids
      FROM (SELECT r.kind, r.id, r.version, r.data, r.ctid AS tid FROM rowfleet.records r WHERE r.kind = v_kind AND r.id = ANY (p_ids) ORDER BY r.kind, r.id FOR UPDATE) l;
  ELSE
    SELECT coalesce(array_agg(l.kind), '{}'), coalesce(array_agg(l.id), '{}'), coalesce(array_agg(l.version), '{}'), coalesce(array_agg(l.data), '{}'),
           coalesce(array_agg(l.tid), '{}')
      INTO v_locked_kinds, v_locked, v_locked_versions, v_locked_data, v_locked_tids
      FROM (SELECT DISTINCT k.kind, k.id FROM unnest(v_kinds, p_ids) AS k(kind, id) ORDER BY k.kind, k.id) k
     CROSS JOIN LATERAL (
       SELECT r.kind, r.id, r.version, r.data, r.ctid AS tid FROM rowfleet.records r WHERE r.kind = k.kind AND r.id = k.id FOR UPDATE
     ) l;
  END IF;

  -- 2b. A record created since the locks were taken (by a concurrent first write of its key) was not
  --    folded against: retry now, before the insert below would wait for whoever holds it. That
  --    wait would come after our locks, out of key order: a worker completing the new record
  --    meanwhile, while waiting for one of ours, was a deadlock.
  --    (Counted, not matched key by key against the locked ones: that is quadratic in the batch.)
  IF (CASE WHEN v_kind IS NOT NULL
           THEN (SELECT count(*) FROM rowfleet.records r WHERE r.kind = v_kind AND r.id = ANY (p_ids))
           ELSE (SELECT count(*) FROM (SELECT DISTINCT k.kind, k.id FROM unnest(v_kinds, p_ids) AS k(kind, id)) k
                  WHERE EXISTS (SELECT 1 FROM rowfleet.records r WHERE r.kind = k.kind AND r.id = k.id)) END) > cardinality(v_locked) THEN
    RAISE EXCEPTION 'rowfleet.upsert_messages: a record was created concurrently; retry' USING ERRCODE = '40001';
  END IF;

  -- 3. Classify, write and audit in one statement. Its snapshot is taken after the locks, so the
  --    locked rows and earlier messageIds are seen as committed by the writers we waited for.
  WITH msg AS (
    SELECT u.o::integer AS ord, u.kind, u.id, d.value AS data, u.version, u.assigned, u.mid, u.priority, u.run_at
      FROM unnest(v_kinds, p_ids, v_versions, v_assigned, p_message_ids, p_priorities, p_run_ats) WITH ORDINALITY AS u(kind, id, version, assigned, mid, priority, run_at, o)
      JOIN jsonb_array_elements(p_data) WITH ORDINALITY AS d(value, o) ON d.o = u.o
  ),
  earlier AS (
    SELECT e.message_id, e.kind, e.record_id, e.version, e.version_assigned, e.data, e.applied, e.reason, e.current_version
      FROM rowfleet.event_log e
     WHERE e.message_id = ANY (p_message_ids)
  ),
  -- A repeat: its messageId was stored earlier or appears earlier in this call. Joins, not
  -- correlated subqueries: those rescan a materialized CTE per row, quadratic in the batch size.
  ranked AS (
    SELECT m.*,
           m.mid IS NOT NULL
             AND (row_number() OVER (PARTITION BY m.mid ORDER BY m.ord) > 1 OR e.message_id IS NOT NULL) AS repeat
      FROM msg m
      LEFT JOIN earlier e ON e.message_id = m.mid
  ),
  -- Messages to apply: those without a messageId, and the first sighting of each messageId.
  fresh AS (
    SELECT r.ord, r.kind, r.id, r.data, r.version, r.assigned, r.mid, r.priority, r.run_at FROM ranked r WHERE NOT r.repeat
  ),
  -- The data each record first had at each version in this call (the applied one, if any).
  first_at_version AS (
    SELECT DISTINCT ON (f.kind, f.id, f.version) f.kind, f.id, f.version, f.data FROM fresh f ORDER BY f.kind, f.id, f.version, f.ord
  ),
  cur AS (
    SELECT c.kind, c.id, c.version, c.data, c.tid FROM unnest(v_locked_kinds, v_locked, v_locked_versions, v_locked_data, v_locked_tids) AS c(kind, id, version, data, tid)
  ),
  -- Fold each record's messages in request order against the stored version: max_before is the
  -- version the record holds when the message is considered.
  folded AS (
    SELECT f.*, c.version AS cur_version, c.data AS cur_data, c.tid AS cur_tid,
           greatest(c.version, max(f.version) OVER before) AS max_before
      FROM fresh f
      LEFT JOIN cur c ON c.kind = f.kind AND c.id = f.id
    WINDOW before AS (PARTITION BY f.kind, f.id ORDER BY f.ord ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
  ),
  outcome AS (
    SELECT fo.*,
           CASE
             WHEN fo.max_before IS NULL OR fo.version > fo.max_before THEN 'applied'
             WHEN fo.version < fo.max_before THEN 'stale'
             -- Same version: the same data is a harmless repeat (stale), other data a conflict.
             WHEN fo.data = CASE WHEN fo.max_before = fo.cur_version THEN fo.cur_data ELSE fv.data END THEN 'stale'
             ELSE 'conflict'
           END AS reason
      FROM folded fo
      LEFT JOIN first_at_version fv ON fv.kind = fo.kind AND fv.id = fo.id AND fv.version = fo.max_before
  ),
  -- The newest applied message per record; `locked`: the record existed in step 2 and is ours.
  winner AS (
    SELECT DISTINCT ON (o.kind, o.id) o.kind, o.id, o.version, o.data, o.priority, o.run_at, o.cur_version IS NOT NULL AS locked, o.cur_tid,
           o.kind = ANY (v_every) AS every
      FROM outcome o
     WHERE o.reason = 'applied'
     ORDER BY o.kind, o.id, o.version DESC
  ),
  -- Records locked in step 2: nobody else can have changed them, and the winner is newer by
  -- construction, so no guard is needed.
  logged AS (
    INSERT INTO rowfleet.event_log (kind, record_id, message_id, version, version_assigned, data, applied, reason, current_version, priority, run_at)
    SELECT o.kind, o.id, o.mid, o.version, o.assigned, o.data, o.reason = 'applied', o.reason, o.max_before, o.priority, o.run_at
      FROM outcome o
     ORDER BY o.ord
    RETURNING seq, kind, record_id, applied
  ),
  -- Mode every: the first message this call applied to each record, which the record waits on
  -- when it waits on none yet.
  firsts AS (
    SELECT l.kind, l.record_id AS id, min(l.seq) AS seq FROM logged l WHERE l.applied AND cardinality(v_every) > 0 GROUP BY l.kind, l.record_id
  ),
  updated AS (
    UPDATE rowfleet.records r
       SET version = w.version,
           data = w.data,
           -- A record being processed keeps its status and lease: the worker's versioned
           -- completion is refused and sends it back to COMPLETED with the newest data (mode
           -- latest), or moves on to the next message (mode every). In mode every a record FAILED
           -- at a message stays FAILED, and one waiting on a message keeps its attempts and backoff.
           status = CASE WHEN r.status = 'PROCESSING' THEN r.status
                         WHEN w.every AND r.next_seq IS NOT NULL AND r.status = 'FAILED' THEN 'FAILED'
                         ELSE 'COMPLETED' END,
           priority = coalesce(w.priority, 0),
           attempts = CASE WHEN r.status = 'PROCESSING' OR (w.every AND r.next_seq IS NOT NULL) THEN r.attempts ELSE 0 END,
           lease_expirations = CASE WHEN r.status = 'PROCESSING' OR (w.every AND r.next_seq IS NOT NULL) THEN r.lease_expirations ELSE 0 END,
           -- A runAt ahead is kept even while the record is processed: the return to COMPLETED keeps it.
           run_after = CASE WHEN w.run_at > now() THEN w.run_at
                            WHEN w.every AND r.next_seq IS NOT NULL THEN r.run_after
                            ELSE least(r.run_after, now()) END,
           next_seq = CASE WHEN w.every THEN coalesce(r.next_seq, (SELECT f.seq FROM firsts f WHERE f.kind = w.kind AND f.id = w.id)) ELSE r.next_seq END,
           updated_at = now()
      FROM winner w
     -- By the address step 2 locked it at (0013): joined on the key, on statistics that say
     -- records is empty the planner read records_pkey whole for it.
     WHERE r.ctid = w.cur_tid AND w.locked
    RETURNING r.id
  ),
  -- New records, in key order. One that another writer created since step 2 was not folded
  -- against: its insert is skipped, and step 4 retries the whole call.
  inserted AS (
    INSERT INTO rowfleet.records (kind, id, version, data, status, priority, run_after, next_seq)
    SELECT w.kind, w.id, w.version, w.data, 'COMPLETED', coalesce(w.priority, 0), greatest(coalesce(w.run_at, now()), now()),
           CASE WHEN w.every THEN (SELECT f.seq FROM firsts f WHERE f.kind = w.kind AND f.id = w.id) END
      FROM winner w WHERE NOT w.locked ORDER BY w.kind, w.id
    ON CONFLICT (kind, id) DO NOTHING
    RETURNING id
  ),
  -- The first occurrence of every messageId seen in this call: stored earlier, or fresh here.
  first_seen AS (
    SELECT e.message_id, e.kind, e.record_id, e.version, e.version_assigned, e.data, e.applied, e.reason, e.current_version
      FROM earlier e
    UNION ALL
    SELECT o.mid, o.kind, o.id, o.version, o.assigned, o.data, o.reason = 'applied', o.reason, o.max_before
      FROM outcome o
     WHERE o.mid IS NOT NULL
  ),
  answered AS (
    SELECT o.ord, o.id, o.reason = 'applied' AS applied, o.version, o.max_before AS current_version,
           o.reason, false AS duplicate, false AS reused
      FROM outcome o
    UNION ALL
    -- A repeated messageId gets its first answer again; with other content it is a reuse (422).
    SELECT r.ord, r.id, f.applied, f.version, f.current_version, f.reason, true,
           NOT (f.kind = r.kind
                AND f.record_id = r.id
                AND f.data = r.data
                AND CASE WHEN f.version_assigned THEN r.assigned
                         ELSE NOT r.assigned AND f.version = r.version END)
      FROM ranked r
      JOIN first_seen f ON f.message_id = r.mid
     WHERE r.repeat
  )
  SELECT array_agg(a.ord ORDER BY a.ord), array_agg(a.id ORDER BY a.ord), array_agg(a.applied ORDER BY a.ord),
         array_agg(a.version ORDER BY a.ord), array_agg(a.current_version ORDER BY a.ord),
         array_agg(a.reason ORDER BY a.ord), array_agg(a.duplicate ORDER BY a.ord), array_agg(a.reused ORDER BY a.ord),
         -- Data-modifying CTEs run whether or not they are read: `updated` and `logged` need no reference.
         -- New records skipped by a concurrent insert. Counts, not an anti join: that was planned
         -- as a nested loop from 1-row estimates (76 ms per 1000 messages).
         (SELECT count(*) FROM winner WHERE NOT locked) - (SELECT count(*) FROM inserted)
    INTO r_ord, r_id, r_applied, r_version, r_current, r_reason, r_duplicate, r_reused, v_missed
    FROM answered a;

  -- 4. A record that appeared after step 2 (a concurrent first write of the same key) was not
  --    folded against: undo everything and let the caller retry, now with that row locked.
  IF v_missed > 0 THEN
    RAISE EXCEPTION 'rowfleet.upsert_messages: % record(s) were created concurrently; retry', v_missed
      USING ERRCODE = '40001';
  END IF;

  IF true = ANY (r_applied) THEN
    PERFORM rowfleet.notify_waiting();
  END IF;

  RETURN QUERY SELECT * FROM unnest(r_ord, r_id, r_applied, r_version, r_current, r_reason, r_duplicate, r_reused);
END;
$fn$;
