-- The versioned upsert: one call writes a batch of messages (1 to thousands), one round trip.
--
-- Why a function: a single message needs four steps with fresh snapshots between them (take
-- versions, lock rows, classify + write + audit, verify). Issued from Node that is five round trips
-- plus BEGIN/COMMIT; as one function call it is one, which is what lets single HTTP upserts reach
-- their throughput target on two cores. Callers: src/records/upsert.ts (the only one).
--
-- Inputs are parallel arrays, one element per message, in request order; p_data is a JSON array.
-- Returns one row per message, in the same order.
CREATE FUNCTION rowfleet.upsert_messages(
  p_ids text[],
  p_data jsonb,
  p_versions bigint[],
  p_message_ids text[]
) RETURNS TABLE (
  ord integer,
  record_id text,
  applied boolean,
  version bigint,
  current_version bigint,
  reason text,
  duplicate boolean,
  reused boolean
) LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
  v_versions bigint[];
  v_assigned boolean[];
  v_locked text[];
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
  SELECT coalesce(array_agg(l.id), '{}')
    INTO v_locked
    FROM (SELECT r.id FROM rowfleet.records r WHERE r.id = ANY (p_ids) ORDER BY r.id FOR UPDATE) l;

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
  ranked AS (
    SELECT m.*, row_number() OVER (PARTITION BY m.mid ORDER BY m.ord) AS mid_rank
      FROM msg m
  ),
  -- Messages to apply: those without a messageId, and the first sighting of each messageId.
  fresh AS (
    SELECT r.ord, r.id, r.data, r.version, r.assigned, r.mid
      FROM ranked r
     WHERE r.mid IS NULL
        OR (r.mid_rank = 1 AND NOT EXISTS (SELECT 1 FROM earlier e WHERE e.message_id = r.mid))
  ),
  cur AS (
    SELECT c.id, c.version, c.data FROM rowfleet.records c WHERE c.id = ANY (p_ids)
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
             WHEN fo.data = CASE
                              WHEN fo.max_before = fo.cur_version THEN fo.cur_data
                              ELSE (SELECT f2.data FROM fresh f2
                                     WHERE f2.id = fo.id AND f2.version = fo.max_before
                                     ORDER BY f2.ord LIMIT 1)
                            END THEN 'stale'
             ELSE 'conflict'
           END AS reason
      FROM folded fo
  ),
  winner AS (
    SELECT DISTINCT ON (o.id) o.id, o.version, o.data
      FROM outcome o
     WHERE o.reason = 'applied'
     ORDER BY o.id, o.version DESC
  ),
  -- Only rows locked in step 2 may be updated: a row another writer inserted since then was not
  -- folded against, so the write is skipped and step 4 retries the whole call.
  written AS (
    INSERT INTO rowfleet.records AS r (id, version, data, status, run_after)
    SELECT w.id, w.version, w.data, 'COMPLETED', now() FROM winner w ORDER BY w.id
    ON CONFLICT (id) DO UPDATE
       SET version = excluded.version,
           data = excluded.data,
           -- A record being processed keeps its status and lease: the worker's versioned
           -- completion is refused and sends it back to COMPLETED with the newest data.
           status = CASE WHEN r.status = 'PROCESSING' THEN r.status ELSE 'COMPLETED' END,
           attempts = CASE WHEN r.status = 'PROCESSING' THEN r.attempts ELSE 0 END,
           lease_expirations = CASE WHEN r.status = 'PROCESSING' THEN r.lease_expirations ELSE 0 END,
           run_after = CASE WHEN r.status = 'PROCESSING' THEN r.run_after ELSE now() END,
           updated_at = now()
     WHERE r.version < excluded.version
       AND r.id = ANY (v_locked)
    RETURNING r.id
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
     WHERE r.mid IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM fresh x WHERE x.ord = r.ord)
  )
  SELECT array_agg(a.ord ORDER BY a.ord), array_agg(a.id ORDER BY a.ord), array_agg(a.applied ORDER BY a.ord),
         array_agg(a.version ORDER BY a.ord), array_agg(a.current_version ORDER BY a.ord),
         array_agg(a.reason ORDER BY a.ord), array_agg(a.duplicate ORDER BY a.ord), array_agg(a.reused ORDER BY a.ord),
         -- Data-modifying CTEs run whether or not they are read; `logged` needs no reference.
         (SELECT count(*) FROM winner w WHERE NOT EXISTS (SELECT 1 FROM written x WHERE x.id = w.id))
    INTO r_ord, r_id, r_applied, r_version, r_current, r_reason, r_duplicate, r_reused, v_missed
    FROM answered a;

  -- 4. A record that appeared after step 2 (a concurrent first write of the same id) was not
  --    folded against: undo everything and let the caller retry, now with that row locked.
  IF v_missed > 0 THEN
    RAISE EXCEPTION 'rowfleet.upsert_messages: % record(s) were created concurrently; retry', v_missed
      USING ERRCODE = '40001';
  END IF;

  RETURN QUERY SELECT * FROM unnest(r_ord, r_id, r_applied, r_version, r_current, r_reason, r_duplicate, r_reused);
END;
$fn$;
