-- Room on each page for HOT updates: re-upserting a record that waits (same status, run_after
-- unchanged) touches no indexed column, so Postgres can update it in place without index writes
-- when the page has space. Most upserts of a hot key are such updates.
ALTER TABLE rowfleet.records SET (fillfactor = 80);
--> statement-breakpoint
-- The versioned upsert: one call writes a batch of messages (1 to thousands), one round trip.
--
-- Why a function: a single message needs four steps with fresh snapshots between them (take
-- versions, lock rows, classify + write + audit, verify). Issued from Node that is five round trips
-- plus BEGIN/COMMIT; as one function call it is one, which is what lets single HTTP upserts reach
-- their throughput target on two cores. Callers: src/records/upsert.ts (the only one).
--
-- rowfleet.upsert_message takes one message; rowfleet.upsert_messages takes a batch. Both give
-- the same outcomes; the caller picks by count.

-- One answer per message, in request order. duplicate: a repeated messageId answered with its
-- first outcome; reused: a messageId already used for other content (422).
CREATE TYPE rowfleet.upsert_result AS (
  ord integer,
  record_id text,
  applied boolean,
  version bigint,
  current_version bigint,
  reason text,
  duplicate boolean,
  reused boolean
);
--> statement-breakpoint
-- One message: the same steps and outcomes as the batch path below, as a few simple statements.
-- This is the HTTP hot path. Measured with pgbench on 2 cores: the batch statement (a dozen CTEs,
-- window functions) costs ~0.2 ms to execute for one row, plus ~1.5 ms to plan when plpgsql
-- re-plans it per call; these statements with generic plans cost a fraction of that.
-- test/upsert.property.test.ts checks both paths against the same model.
CREATE FUNCTION rowfleet.upsert_message(
  p_id text,
  p_data jsonb,
  p_version bigint,
  p_message_id text
) RETURNS SETOF rowfleet.upsert_result LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $fn$
#variable_conflict use_column
DECLARE
  -- Taken before the row lock: see step 1 of upsert_messages.
  v_version bigint := coalesce(p_version, nextval('rowfleet.version_seq'));
  v_current bigint;
  v_current_data jsonb;
  v_locked boolean;
  v_first rowfleet.event_log%ROWTYPE;
  v_reason text;
BEGIN
  SELECT r.version, r.data INTO v_current, v_current_data FROM rowfleet.records r WHERE r.id = p_id FOR UPDATE;
  v_locked := FOUND;

  IF p_message_id IS NOT NULL THEN
    SELECT * INTO v_first FROM rowfleet.event_log e WHERE e.message_id = p_message_id;
    IF FOUND THEN
      RETURN QUERY SELECT 1, v_first.record_id, v_first.applied, v_first.version, v_first.current_version, v_first.reason, true,
        NOT (v_first.record_id = p_id
             AND v_first.data = p_data
             -- IS NOT DISTINCT FROM: a repeat without a version of a message that had one is a
             -- reuse; `=` would yield NULL there, and NOT NULL is not true.
             AND CASE WHEN v_first.version_assigned THEN p_version IS NULL ELSE p_version IS NOT DISTINCT FROM v_first.version END);
      RETURN;
    END IF;
  END IF;

  v_reason := CASE
                WHEN v_current IS NULL OR v_version > v_current THEN 'applied'
                WHEN v_version < v_current OR p_data = v_current_data THEN 'stale'
                ELSE 'conflict'
              END;

  IF v_reason = 'applied' THEN
    IF v_locked THEN
      -- Same status rules as the batch path's ON CONFLICT clause.
      UPDATE rowfleet.records r
         SET version = v_version,
             data = p_data,
             status = CASE WHEN r.status = 'PROCESSING' THEN r.status ELSE 'COMPLETED' END,
             attempts = CASE WHEN r.status = 'PROCESSING' THEN r.attempts ELSE 0 END,
             lease_expirations = CASE WHEN r.status = 'PROCESSING' THEN r.lease_expirations ELSE 0 END,
             run_after = CASE WHEN r.status = 'PROCESSING' THEN r.run_after ELSE least(r.run_after, now()) END,
             updated_at = now()
       WHERE r.id = p_id;
    ELSE
      INSERT INTO rowfleet.records (id, version, data, status, run_after)
      VALUES (p_id, v_version, p_data, 'COMPLETED', now())
      ON CONFLICT (id) DO NOTHING;
      IF NOT FOUND THEN
        RAISE EXCEPTION 'rowfleet.upsert_message: record % was created concurrently; retry', p_id USING ERRCODE = '40001';
      END IF;
    END IF;
  END IF;

  INSERT INTO rowfleet.event_log (record_id, message_id, version, version_assigned, data, applied, reason, current_version)
  VALUES (p_id, p_message_id, v_version, p_version IS NULL, p_data, v_reason = 'applied', v_reason, v_current);

  IF v_reason = 'applied' THEN
    -- Wakes idle workers when this commits (see upsert_messages).
    PERFORM pg_notify('rowfleet_due', '');
  END IF;

  RETURN QUERY SELECT 1, p_id, v_reason = 'applied', v_version, v_current, v_reason, false, false;
END;
$fn$;
--> statement-breakpoint
-- Inputs are parallel arrays, one element per message, in request order; p_data is a JSON array.
-- Returns one row per message, in the same order.
CREATE FUNCTION rowfleet.upsert_messages(
  p_ids text[],
  p_data jsonb,
  p_versions bigint[],
  p_message_ids text[]
) RETURNS SETOF rowfleet.upsert_result LANGUAGE plpgsql
-- Always plan for the actual arrays. A generic plan (which plpgsql's default may switch to after
-- five calls) estimates a few rows per array and joins the CTEs with nested loops: measured
-- 13x slower at 100 messages and worse beyond. Planning costs ~1.5 ms per call instead.
SET plan_cache_mode = force_custom_plan
AS $fn$
#variable_conflict use_column
DECLARE
  v_versions bigint[];
  v_assigned boolean[];
  v_locked text[];
  v_locked_versions bigint[];
  v_locked_data jsonb[];
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

  -- 2. Lock the existing rows, in id order: every writer locks in the same order, so writers
  --    of overlapping batches queue instead of deadlocking.
  --    What they hold is what the fold compares against: no second read.
  SELECT coalesce(array_agg(l.id), '{}'), coalesce(array_agg(l.version), '{}'), coalesce(array_agg(l.data), '{}')
    INTO v_locked, v_locked_versions, v_locked_data
    FROM (SELECT r.id, r.version, r.data FROM rowfleet.records r WHERE r.id = ANY (p_ids) ORDER BY r.id FOR UPDATE) l;

  -- 3. Classify, write and audit in one statement. Its snapshot is taken after the locks, so the
  --    locked rows and earlier messageIds are seen as committed by the writers we waited for.
  WITH msg AS (
    SELECT u.o::integer AS ord, u.id, d.value AS data, u.version, u.assigned, u.mid
      FROM unnest(p_ids, v_versions, v_assigned, p_message_ids) WITH ORDINALITY AS u(id, version, assigned, mid, o)
      JOIN jsonb_array_elements(p_data) WITH ORDINALITY AS d(value, o) ON d.o = u.o
  ),
  earlier AS (
    SELECT e.message_id, e.record_id, e.version, e.version_assigned, e.data, e.applied, e.reason, e.current_version
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
    SELECT r.ord, r.id, r.data, r.version, r.assigned, r.mid FROM ranked r WHERE NOT r.repeat
  ),
  -- The data each id first had at each version in this call (the applied one, if any).
  first_at_version AS (
    SELECT DISTINCT ON (f.id, f.version) f.id, f.version, f.data FROM fresh f ORDER BY f.id, f.version, f.ord
  ),
  cur AS (
    SELECT c.id, c.version, c.data FROM unnest(v_locked, v_locked_versions, v_locked_data) AS c(id, version, data)
  ),
  -- Fold each id's messages in request order against the stored version: max_before is the
  -- version the record holds when the message is considered.
  folded AS (
    SELECT f.*, c.version AS cur_version, c.data AS cur_data,
           greatest(c.version, max(f.version) OVER before) AS max_before
      FROM fresh f
      LEFT JOIN cur c ON c.id = f.id
    WINDOW before AS (PARTITION BY f.id ORDER BY f.ord ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
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
      LEFT JOIN first_at_version fv ON fv.id = fo.id AND fv.version = fo.max_before
  ),
  -- The newest applied message per record; `locked`: the record existed in step 2 and is ours.
  winner AS (
    SELECT DISTINCT ON (o.id) o.id, o.version, o.data, o.cur_version IS NOT NULL AS locked
      FROM outcome o
     WHERE o.reason = 'applied'
     ORDER BY o.id, o.version DESC
  ),
  -- Records locked in step 2: nobody else can have changed them, and the winner is newer by
  -- construction, so no guard is needed.
  updated AS (
    UPDATE rowfleet.records r
       SET version = w.version,
           data = w.data,
           -- A record being processed keeps its status and lease: the worker's versioned
           -- completion is refused and sends it back to COMPLETED with the newest data.
           status = CASE WHEN r.status = 'PROCESSING' THEN r.status ELSE 'COMPLETED' END,
           attempts = CASE WHEN r.status = 'PROCESSING' THEN r.attempts ELSE 0 END,
           lease_expirations = CASE WHEN r.status = 'PROCESSING' THEN r.lease_expirations ELSE 0 END,
           run_after = CASE WHEN r.status = 'PROCESSING' THEN r.run_after ELSE least(r.run_after, now()) END,
           updated_at = now()
      FROM winner w
     WHERE r.id = w.id AND w.locked
    RETURNING r.id
  ),
  -- New records, in id order. One that another writer created since step 2 was not folded
  -- against: its insert is skipped, and step 4 retries the whole call.
  inserted AS (
    INSERT INTO rowfleet.records (id, version, data, status, run_after)
    SELECT w.id, w.version, w.data, 'COMPLETED', now() FROM winner w WHERE NOT w.locked ORDER BY w.id
    ON CONFLICT (id) DO NOTHING
    RETURNING id
  ),
  logged AS (
    INSERT INTO rowfleet.event_log (record_id, message_id, version, version_assigned, data, applied, reason, current_version)
    SELECT o.id, o.mid, o.version, o.assigned, o.data, o.reason = 'applied', o.reason, o.max_before
      FROM outcome o
     ORDER BY o.ord
    RETURNING 1
  ),
  -- The first occurrence of every messageId seen in this call: stored earlier, or fresh here.
  first_seen AS (
    SELECT e.message_id, e.record_id, e.version, e.version_assigned, e.data, e.applied, e.reason, e.current_version
      FROM earlier e
    UNION ALL
    SELECT o.mid, o.id, o.version, o.assigned, o.data, o.reason = 'applied', o.reason, o.max_before
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
           NOT (f.record_id = r.id
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

  -- 4. A record that appeared after step 2 (a concurrent first write of the same id) was not
  --    folded against: undo everything and let the caller retry, now with that row locked.
  IF v_missed > 0 THEN
    RAISE EXCEPTION 'rowfleet.upsert_messages: % record(s) were created concurrently; retry', v_missed
      USING ERRCODE = '40001';
  END IF;

  -- Wakes idle workers (LISTEN rowfleet_due) when this commits: one notification per call, not per
  -- record, and Postgres folds identical notifications of one transaction into one.
  IF true = ANY (r_applied) THEN
    PERFORM pg_notify('rowfleet_due', '');
  END IF;

  RETURN QUERY SELECT * FROM unnest(r_ord, r_id, r_applied, r_version, r_current, r_reason, r_duplicate, r_reused);
END;
$fn$;
