-- spendguard schema, version 8: batched guarded writes. A released migration is never edited: change
-- the schema by adding a file with the next number.
--
-- spendguard_reserve_batch and spendguard_settle_batch do in one statement (one transaction, one
-- commit) what N calls of spendguard_reserve_v2 (migration 3) or spendguard_settle_v2 (migration 2)
-- would do one after the other, in the order given, each op answering exactly what its own call
-- would have answered. What a batch saves: every counter row it touches is locked once, read once and
-- written once (with the sum of its ops' changes), each rollup row is upserted once per batch (with
-- its group's sums, so the narrow-rollup triggers of migration 7 fire once per group), and the whole
-- batch costs one round trip and one commit.
--
-- Lock order, as every writer's (see migration 1): reservation rows (by id), then spend-log keys (by
-- request id), then budget counters (by kind, id), then rollup rows (daily_spend by day, team, model,
-- provider, ...; then daily_tag_spend by day, tag, team, model, provider, ...), each set in one sorted
-- statement, so batches of different instances queue instead of deadlocking. A failure of the
-- statement writes nothing for any op of the batch.
--
-- Both run with plan_cache_mode = force_generic_plan: their statements take the batch as arrays, and
-- Postgres would otherwise plan them afresh on every call (a custom plan, which knows the arrays'
-- lengths, always looks cheaper); the generic plans look rows up by primary key. (Migration 1 avoids
-- SET clauses so that SQL functions stay inlinable; plpgsql functions never are.)
--
-- Nothing existing changes: instances of the previous release keep calling the single-op functions.

-- Reserves for each op i (p_reservation_ids[i], p_amounts[i], ...) in order, as spendguard_reserve_v2
-- would. Op i's scopes are the next p_scope_counts[i] entries of p_kinds / p_ids; p_pendings is a JSON
-- array with one entry (or null) per op. Returns, per op in order, a header row (r_op, r_status) and
-- then its states, as spendguard_reserve_v2 does:
--   'ok'          then the state of every scope it reserved on, in the order given;
--   'refused'     then the first refusing scope's state; nothing written for this op;
--   'conflict'    the reservation id was taken, before the batch or by an earlier op of it
--                 (spendguard_reserve_v2's unique_violation);
--   'no_counter'  a key, user or team without a counter (its no_data_found), r_detail the message;
--   'bad_mode'    an unknown enforcement mode (its invalid_parameter_value), r_detail the message.
-- The last three write nothing for their op and do not affect the others. Taken ids are looked up
-- once, before the ops are decided; should a concurrent statement insert one of the batch's ids after
-- that, this one fails with unique_violation, having written nothing (the caller can send the batch
-- again: the id is then found taken).
CREATE FUNCTION @schema@.spendguard_reserve_batch(
  p_reservation_ids text[], p_amounts bigint[], p_nows timestamptz[], p_expires_at timestamptz[],
  p_modes text[], p_pendings jsonb, p_scope_counts integer[], p_kinds text[], p_ids text[]
)
RETURNS TABLE (
  r_op integer, r_status text, r_kind text, r_id text, r_max bigint, r_duration text, r_reset_at timestamptz,
  r_spend bigint, r_reserved bigint, r_soft bigint, r_detail text
)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_n integer := coalesce(cardinality(p_reservation_ids), 0);
  -- The counters the batch names (index v_c), locked, as the ops before the current one left them.
  c_kinds text[];
  c_ids text[];
  c_max bigint[];
  c_duration text[];
  c_reset_at timestamptz[];
  c_spend bigint[];
  c_reserved bigint[];
  c_soft bigint[];
  c_written boolean[];
  -- For every scope the ops name (p_kinds / p_ids), its counter's index, NULL when it has none.
  s_counter integer[];
  -- Per op: its first scope; its reservation id was taken before the batch; the first op with its
  -- id; admitted.
  o_scope integer[];
  o_taken boolean[];
  o_first integer[];
  o_admitted boolean[];
  -- Per first op of a reservation id: an op with that id was admitted.
  g_admitted boolean[];
  v_admitted integer := 0;
  v_inserted integer;
  v_op integer;
  v_first integer := 1;
  v_last integer;
  v_j integer;
  v_c integer;
  v_now timestamptz;
  v_amount bigint;
  v_mode text;
  v_spend bigint;
  v_missing text;
  v_refused integer;
BEGIN
  IF cardinality(p_amounts) IS DISTINCT FROM v_n OR cardinality(p_nows) IS DISTINCT FROM v_n
    OR cardinality(p_expires_at) IS DISTINCT FROM v_n OR cardinality(p_modes) IS DISTINCT FROM v_n
    OR cardinality(p_scope_counts) IS DISTINCT FROM v_n OR jsonb_array_length(p_pendings) IS DISTINCT FROM v_n
    OR cardinality(p_kinds) IS DISTINCT FROM cardinality(p_ids) THEN
    RAISE EXCEPTION 'spendguard_reserve_batch: the argument arrays do not match' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  o_scope := array_fill(0, ARRAY[v_n]);
  FOR v_op IN 1..v_n LOOP
    o_scope[v_op] := v_first;
    v_first := v_first + p_scope_counts[v_op];
  END LOOP;
  IF v_first - 1 IS DISTINCT FROM cardinality(p_kinds) THEN
    RAISE EXCEPTION 'spendguard_reserve_batch: p_scope_counts does not add up to p_kinds' USING ERRCODE = 'invalid_parameter_value';
  END IF;

  -- In one statement: every counter once, locked in (kind, id) order and read as locked (the latest
  -- committed values); each named scope's counter; and the reservation ids taken already.
  WITH locked AS MATERIALIZED (
    SELECT b.scope_kind, b.scope_id, b.max_budget_nano, b.budget_duration, b.budget_reset_at, b.spend_nano,
      b.reserved_nano, b.soft_budget_nano
    FROM @schema@.budgets b
    WHERE (b.scope_kind, b.scope_id) IN (SELECT * FROM unnest(p_kinds, p_ids))
    ORDER BY b.scope_kind COLLATE "C", b.scope_id COLLATE "C"
    FOR UPDATE
  ), counters AS MATERIALIZED (
    SELECT l.*, (row_number() OVER ())::integer AS pos FROM locked l
  )
  SELECT c.*, m.*, t.*
  INTO c_kinds, c_ids, c_max, c_duration, c_reset_at, c_spend, c_reserved, c_soft, s_counter, o_taken, o_first
  FROM (
    SELECT coalesce(array_agg(x.scope_kind ORDER BY x.pos), '{}'), coalesce(array_agg(x.scope_id ORDER BY x.pos), '{}'),
      coalesce(array_agg(x.max_budget_nano ORDER BY x.pos), '{}'), coalesce(array_agg(x.budget_duration ORDER BY x.pos), '{}'),
      coalesce(array_agg(x.budget_reset_at ORDER BY x.pos), '{}'), coalesce(array_agg(x.spend_nano ORDER BY x.pos), '{}'),
      coalesce(array_agg(x.reserved_nano ORDER BY x.pos), '{}'), coalesce(array_agg(x.soft_budget_nano ORDER BY x.pos), '{}')
    FROM counters x
  ) c, (
    SELECT coalesce(array_agg(x.pos ORDER BY u.ord), '{}')
    FROM unnest(p_kinds, p_ids) WITH ORDINALITY AS u (kind, id, ord)
    LEFT JOIN counters x ON x.scope_kind = u.kind AND x.scope_id = u.id
  ) m, (
    SELECT coalesce(array_agg(o.taken ORDER BY o.ord), '{}'), coalesce(array_agg(o.first_op ORDER BY o.ord), '{}')
    FROM (
      SELECT u.ord, (min(u.ord) OVER (PARTITION BY u.id))::integer AS first_op,
        EXISTS (SELECT 1 FROM @schema@.reservations r WHERE r.id = u.id) AS taken
      FROM unnest(p_reservation_ids) WITH ORDINALITY AS u (id, ord)
    ) o
  ) t;
  c_written := array_fill(false, ARRAY[cardinality(c_kinds)]);
  o_admitted := array_fill(false, ARRAY[v_n]);
  g_admitted := array_fill(false, ARRAY[v_n]);

  FOR v_op IN 1..v_n LOOP
    v_first := o_scope[v_op];
    v_last := v_first + p_scope_counts[v_op] - 1;
    v_now := p_nows[v_op];
    v_amount := p_amounts[v_op];
    v_mode := p_modes[v_op];
    r_op := v_op;
    r_status := NULL; r_kind := NULL; r_id := NULL; r_max := NULL; r_duration := NULL; r_reset_at := NULL;
    r_spend := NULL; r_reserved := NULL; r_soft := NULL; r_detail := NULL;
    <<op>>
    BEGIN
      IF v_mode IS NULL OR v_mode NOT IN ('strict', 'shrink', 'soft') THEN
        r_status := 'bad_mode';
        r_detail := format('unknown enforcement mode ''%s''', v_mode);
        RETURN NEXT;
        EXIT op;
      END IF;

      -- Optional kinds without a counter are skipped; a key, user or team without one is an error.
      v_missing := NULL;
      FOR v_j IN v_first..v_last LOOP
        IF s_counter[v_j] IS NULL AND p_kinds[v_j] IN ('key', 'user', 'team') THEN
          v_missing := concat_ws(', ', v_missing, p_kinds[v_j] || ':' || p_ids[v_j]);
        END IF;
      END LOOP;
      IF v_missing IS NOT NULL THEN
        r_status := 'no_counter';
        r_detail := 'no budget counter for ' || v_missing;
        RETURN NEXT;
        EXIT op;
      END IF;

      -- Core's fitsBudget on each counter as it stands after any due reset: strict on the worst case,
      -- shrink on any headroom, soft on recorded spend. The first refusing scope, in the order given.
      v_refused := NULL;
      FOR v_j IN v_first..v_last LOOP
        v_c := s_counter[v_j];
        CONTINUE WHEN v_c IS NULL OR c_max[v_c] IS NULL;
        v_spend := CASE WHEN c_duration[v_c] IS NOT NULL AND c_reset_at[v_c] <= v_now THEN 0 ELSE c_spend[v_c] END;
        IF NOT (CASE v_mode
          WHEN 'strict' THEN v_spend + c_reserved[v_c] + v_amount <= c_max[v_c]
          WHEN 'shrink' THEN v_spend + c_reserved[v_c] < c_max[v_c]
          ELSE v_spend < c_max[v_c]
        END) THEN
          v_refused := v_c;
          EXIT;
        END IF;
      END LOOP;
      IF v_refused IS NOT NULL THEN
        r_status := 'refused';
        RETURN NEXT;
        r_status := NULL;
        r_kind := c_kinds[v_refused];
        r_id := c_ids[v_refused];
        r_max := c_max[v_refused];
        r_duration := c_duration[v_refused];
        IF c_duration[v_refused] IS NOT NULL AND c_reset_at[v_refused] <= v_now THEN
          r_reset_at := @schema@.spendguard_next_reset(c_duration[v_refused], v_now);
          r_spend := 0;
        ELSE
          r_reset_at := c_reset_at[v_refused];
          r_spend := c_spend[v_refused];
        END IF;
        r_reserved := c_reserved[v_refused];
        r_soft := c_soft[v_refused];
        RETURN NEXT;
        EXIT op;
      END IF;

      -- A taken id answers 'conflict' for this op alone.
      IF o_taken[v_op] OR g_admitted[o_first[v_op]] THEN
        r_status := 'conflict';
        RETURN NEXT;
        EXIT op;
      END IF;
      g_admitted[o_first[v_op]] := true;
      o_admitted[v_op] := true;
      v_admitted := v_admitted + 1;

      r_status := 'ok';
      RETURN NEXT;
      r_status := NULL;
      FOR v_j IN v_first..v_last LOOP
        v_c := s_counter[v_j];
        -- A scope named twice is reserved on once (as spendguard_reserve_v2's UPDATE does).
        CONTINUE WHEN v_c IS NULL OR v_c = ANY (s_counter[v_first:v_j - 1]);
        IF c_duration[v_c] IS NOT NULL AND c_reset_at[v_c] <= v_now THEN
          c_spend[v_c] := 0;
          c_reset_at[v_c] := @schema@.spendguard_next_reset(c_duration[v_c], v_now);
        END IF;
        c_reserved[v_c] := c_reserved[v_c] + v_amount;
        c_written[v_c] := true;
        r_kind := c_kinds[v_c];
        r_id := c_ids[v_c];
        r_max := c_max[v_c];
        r_duration := c_duration[v_c];
        r_reset_at := c_reset_at[v_c];
        r_spend := c_spend[v_c];
        r_reserved := c_reserved[v_c];
        r_soft := c_soft[v_c];
        RETURN NEXT;
      END LOOP;
    END op;
  END LOOP;

  -- The admitted reservations, recording only the scopes that have a counter, in id order.
  IF v_admitted > 0 THEN
    INSERT INTO @schema@.reservations (id, scopes, amount_nano, expires_at, created_at, pending)
    SELECT p_reservation_ids[o.ord],
      coalesce((
        SELECT jsonb_agg(jsonb_build_object('kind', p_kinds[g.pos], 'id', p_ids[g.pos]) ORDER BY g.pos)
        FROM generate_series(o_scope[o.ord], o_scope[o.ord] + p_scope_counts[o.ord] - 1) AS g (pos)
        WHERE s_counter[g.pos] IS NOT NULL
      ), '[]'),
      p_amounts[o.ord], p_expires_at[o.ord], p_nows[o.ord], nullif(p_pendings -> (o.ord - 1), 'null'::jsonb)
    FROM generate_series(1, v_n) AS o (ord)
    WHERE o_admitted[o.ord]
    ORDER BY p_reservation_ids[o.ord] COLLATE "C"
    ON CONFLICT (id) DO NOTHING;
    GET DIAGNOSTICS v_inserted = ROW_COUNT;
    IF v_inserted < v_admitted THEN
      RAISE EXCEPTION 'spendguard_reserve_batch: a reservation id of this batch was taken while it ran'
        USING ERRCODE = 'unique_violation';
    END IF;
  END IF;

  -- Each counter written once, with what every op of the batch did to it.
  UPDATE @schema@.budgets b
  SET spend_nano = w.spend_nano, budget_reset_at = w.budget_reset_at, reserved_nano = w.reserved_nano
  FROM unnest(c_kinds, c_ids, c_spend, c_reset_at, c_reserved, c_written)
    AS w (kind, id, spend_nano, budget_reset_at, reserved_nano, written)
  WHERE w.written AND b.scope_kind = w.kind AND b.scope_id = w.id;
END;
$$;

-- Settles each op i in order, as spendguard_settle_v2 would (p_claims[i] is its p_claim). Op i's
-- scopes are the next p_scope_counts[i] entries of p_kinds / p_ids, its log's tags the next
-- p_tag_counts[i] entries of p_tags; p_metadata is a JSON array with one object per op. Returns, per
-- op in order, a header row (r_op, r_status) and then states, with spendguard_settle_v2's statuses:
-- 'applied' (then the charged scopes' states), 'duplicate' (its request id was logged already, by an
-- earlier op of the batch or before: nothing written; then its scopes' current states), and with a
-- claim 'missing' (the reservation is not open) or 'released' (its request id was logged already: the
-- reservation is only released).
CREATE FUNCTION @schema@.spendguard_settle_batch(
  p_reservation_ids text[], p_costs bigint[], p_nows timestamptz[], p_claims boolean[],
  p_scope_counts integer[], p_kinds text[], p_ids text[],
  p_request_ids text[], p_call_types text[], p_api_key_hashes text[], p_spends bigint[],
  p_prompt_tokens integer[], p_completion_tokens integer[], p_total_tokens integer[],
  p_start_times timestamptz[], p_end_times timestamptz[], p_models text[], p_providers text[],
  p_user_ids text[], p_team_ids text[], p_end_users text[], p_tag_counts integer[], p_tags text[],
  p_statuses text[], p_estimated boolean[], p_http_statuses integer[], p_metadata jsonb
)
RETURNS TABLE (
  r_op integer, r_status text, r_kind text, r_id text, r_max bigint, r_duration text, r_reset_at timestamptz,
  r_spend bigint, r_reserved bigint, r_soft bigint
)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_n integer := coalesce(cardinality(p_reservation_ids), 0);
  -- Per op: its first scope in p_kinds / p_ids, its first tag in p_tags.
  o_scope integer[] := '{}';
  o_tag integer[] := '{}';
  -- The open reservations the batch names (index v_h), locked; h_open: not closed by an earlier op.
  h_ids text[];
  h_amounts bigint[];
  h_open boolean[];
  -- Their scopes, each once, flattened by reservation: reservation v_h's are hs_from[v_h] .. hs_to[v_h].
  hs_kinds text[];
  hs_ids text[];
  hs_h integer[];
  hs_from integer[];
  hs_to integer[];
  -- Per op: its reservation (v_h) if the batch locked it open; the first op naming its request id;
  -- whether that request id had no log (this statement inserted one, with the data of the op
  -- o_logged says); what the op did, and the reservation it closed.
  o_held integer[];
  o_first integer[];
  o_fresh boolean[];
  o_logged boolean[];
  o_status text[];
  o_closed integer[];
  -- Per first op of a request id: an op of the batch took its fresh log.
  g_taken boolean[];
  v_unused text[] := '{}';
  -- The counters (index v_c), locked, as the ops before the current one left them.
  c_kinds text[];
  c_ids text[];
  c_max bigint[];
  c_duration text[];
  c_reset_at timestamptz[];
  c_spend bigint[];
  c_reserved bigint[];
  c_soft bigint[];
  c_written boolean[];
  -- The counter index of every op scope (1 .. cardinality(p_kinds)), then of every held scope.
  s_counter integer[];
  v_op_scopes integer := coalesce(cardinality(p_kinds), 0);
  v_op integer;
  v_h integer;
  v_j integer;
  v_c integer;
  v_from integer;
  v_to integer;
  v_now timestamptz;
BEGIN
  IF cardinality(p_costs) IS DISTINCT FROM v_n OR cardinality(p_nows) IS DISTINCT FROM v_n
    OR cardinality(p_claims) IS DISTINCT FROM v_n OR cardinality(p_scope_counts) IS DISTINCT FROM v_n
    OR cardinality(p_request_ids) IS DISTINCT FROM v_n OR cardinality(p_call_types) IS DISTINCT FROM v_n
    OR cardinality(p_api_key_hashes) IS DISTINCT FROM v_n OR cardinality(p_spends) IS DISTINCT FROM v_n
    OR cardinality(p_prompt_tokens) IS DISTINCT FROM v_n OR cardinality(p_completion_tokens) IS DISTINCT FROM v_n
    OR cardinality(p_total_tokens) IS DISTINCT FROM v_n OR cardinality(p_start_times) IS DISTINCT FROM v_n
    OR cardinality(p_end_times) IS DISTINCT FROM v_n OR cardinality(p_models) IS DISTINCT FROM v_n
    OR cardinality(p_providers) IS DISTINCT FROM v_n OR cardinality(p_user_ids) IS DISTINCT FROM v_n
    OR cardinality(p_team_ids) IS DISTINCT FROM v_n OR cardinality(p_end_users) IS DISTINCT FROM v_n
    OR cardinality(p_tag_counts) IS DISTINCT FROM v_n OR cardinality(p_statuses) IS DISTINCT FROM v_n
    OR cardinality(p_estimated) IS DISTINCT FROM v_n OR cardinality(p_http_statuses) IS DISTINCT FROM v_n
    OR jsonb_array_length(p_metadata) IS DISTINCT FROM v_n
    OR cardinality(p_kinds) IS DISTINCT FROM cardinality(p_ids) THEN
    RAISE EXCEPTION 'spendguard_settle_batch: the argument arrays do not match' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  v_from := 1;
  v_to := 1;
  FOR v_op IN 1..v_n LOOP
    o_scope[v_op] := v_from;
    o_tag[v_op] := v_to;
    v_from := v_from + p_scope_counts[v_op];
    v_to := v_to + p_tag_counts[v_op];
  END LOOP;
  IF v_from - 1 IS DISTINCT FROM cardinality(p_kinds) OR v_to - 1 IS DISTINCT FROM cardinality(p_tags) THEN
    RAISE EXCEPTION 'spendguard_settle_batch: p_scope_counts or p_tag_counts does not add up' USING ERRCODE = 'invalid_parameter_value';
  END IF;

  -- 1. The reservations, locked in id order, and their scopes.
  WITH locked AS MATERIALIZED (
    SELECT r.id, r.scopes, r.amount_nano FROM @schema@.reservations r
    WHERE r.id = ANY (p_reservation_ids)
    ORDER BY r.id COLLATE "C"
    FOR UPDATE
  ), held AS MATERIALIZED (
    SELECT l.*, (row_number() OVER ())::integer AS pos FROM locked l
  )
  SELECT h.*, x.*
  INTO h_ids, h_amounts, hs_kinds, hs_ids, hs_h
  FROM (
    SELECT coalesce(array_agg(y.id ORDER BY y.pos), '{}'), coalesce(array_agg(y.amount_nano ORDER BY y.pos), '{}')
    FROM held y
  ) h, (
    -- Each scope once, as spendguard_release's UPDATE releases it.
    SELECT coalesce(array_agg(z.kind ORDER BY z.pos, z.kind, z.id), '{}'),
      coalesce(array_agg(z.id ORDER BY z.pos, z.kind, z.id), '{}'),
      coalesce(array_agg(z.pos ORDER BY z.pos, z.kind, z.id), '{}')
    FROM (
      SELECT DISTINCT y.pos, j.kind, j.id
      FROM held y CROSS JOIN LATERAL jsonb_to_recordset(y.scopes) AS j (kind text, id text)
    ) z
  ) x;
  h_open := array_fill(true, ARRAY[cardinality(h_ids)]);
  hs_from := array_fill(1, ARRAY[cardinality(h_ids)]);
  hs_to := array_fill(0, ARRAY[cardinality(h_ids)]);
  FOR v_j IN 1..cardinality(hs_h) LOOP
    IF v_j = 1 OR hs_h[v_j] <> hs_h[v_j - 1] THEN
      hs_from[hs_h[v_j]] := v_j;
    END IF;
    hs_to[hs_h[v_j]] := v_j;
  END LOOP;

  -- 2. The spend logs, the idempotency keys, inserted in request id order: for each request id the
  -- log of the first op that may write one (a claim whose reservation is not open never does). A
  -- request id logged already, or being logged by a concurrent statement (this one waits for it to
  -- commit), is not inserted.
  WITH ops AS MATERIALIZED (
    SELECT u.ord::integer AS ord, u.request_id, h.pos::integer AS held,
      (min(u.ord) OVER (PARTITION BY u.request_id))::integer AS first_op,
      NOT (p_claims[u.ord::integer] AND h.pos IS NULL) AS may_log
    FROM unnest(p_reservation_ids, p_request_ids) WITH ORDINALITY AS u (reservation_id, request_id, ord)
    LEFT JOIN unnest(h_ids) WITH ORDINALITY AS h (id, pos) ON h.id = u.reservation_id
  ), picked AS (
    SELECT DISTINCT ON (o.request_id) o.ord, o.request_id FROM ops o WHERE o.may_log ORDER BY o.request_id, o.ord
  ), ins AS (
    INSERT INTO @schema@.spend_logs (request_id, call_type, api_key_hash, spend_nano, prompt_tokens,
      completion_tokens, total_tokens, start_time, end_time, model, provider, user_id, team_id, end_user, tags,
      status, estimated, http_status, metadata)
    SELECT k.request_id, p_call_types[k.ord], p_api_key_hashes[k.ord], p_spends[k.ord], p_prompt_tokens[k.ord],
      p_completion_tokens[k.ord], p_total_tokens[k.ord], p_start_times[k.ord], p_end_times[k.ord],
      p_models[k.ord], p_providers[k.ord], p_user_ids[k.ord], p_team_ids[k.ord], p_end_users[k.ord],
      p_tags[o_tag[k.ord]:o_tag[k.ord] + p_tag_counts[k.ord] - 1], p_statuses[k.ord], p_estimated[k.ord],
      p_http_statuses[k.ord], p_metadata -> (k.ord - 1)
    FROM picked k
    ORDER BY k.request_id COLLATE "C"
    ON CONFLICT (request_id) DO NOTHING
    RETURNING request_id
  )
  SELECT array_agg(o.held ORDER BY o.ord), array_agg(o.first_op ORDER BY o.ord),
    array_agg(f.request_id IS NOT NULL ORDER BY o.ord),
    array_agg(f.request_id IS NOT NULL AND k.ord IS NOT NULL ORDER BY o.ord)
  INTO o_held, o_first, o_fresh, o_logged
  FROM ops o
  LEFT JOIN ins f ON f.request_id = o.request_id
  LEFT JOIN picked k ON k.ord = o.ord;

  -- 3. What each op does, in order: spendguard_settle_v2's decisions, against the reservations and
  -- logs as the ops before it left them.
  o_status := array_fill(NULL::text, ARRAY[v_n]);
  o_closed := array_fill(NULL::integer, ARRAY[v_n]);
  g_taken := array_fill(false, ARRAY[v_n]);
  FOR v_op IN 1..v_n LOOP
    v_h := o_held[v_op];
    IF v_h IS NOT NULL AND NOT h_open[v_h] THEN
      v_h := NULL;
    END IF;
    IF p_claims[v_op] AND v_h IS NULL THEN
      o_status[v_op] := 'missing';
      CONTINUE;
    END IF;
    IF o_fresh[v_op] AND NOT g_taken[o_first[v_op]] THEN
      g_taken[o_first[v_op]] := true;
      o_status[v_op] := 'applied';
      IF NOT o_logged[v_op] THEN
        -- The log went in with another op's data (a claim that then found its reservation closed by
        -- an earlier op): this op's own.
        UPDATE @schema@.spend_logs SET call_type = p_call_types[v_op], api_key_hash = p_api_key_hashes[v_op],
          spend_nano = p_spends[v_op], prompt_tokens = p_prompt_tokens[v_op],
          completion_tokens = p_completion_tokens[v_op], total_tokens = p_total_tokens[v_op],
          start_time = p_start_times[v_op], end_time = p_end_times[v_op], model = p_models[v_op],
          provider = p_providers[v_op], user_id = p_user_ids[v_op], team_id = p_team_ids[v_op],
          end_user = p_end_users[v_op], tags = p_tags[o_tag[v_op]:o_tag[v_op] + p_tag_counts[v_op] - 1],
          status = p_statuses[v_op], estimated = p_estimated[v_op], http_status = p_http_statuses[v_op],
          metadata = p_metadata -> (v_op - 1)
        WHERE request_id = p_request_ids[v_op];
      END IF;
    ELSIF p_claims[v_op] THEN
      o_status[v_op] := 'released';
    ELSE
      o_status[v_op] := 'duplicate';
      CONTINUE;
    END IF;
    IF v_h IS NOT NULL THEN
      h_open[v_h] := false;
      o_closed[v_op] := v_h;
    END IF;
  END LOOP;
  -- Logs inserted for ops that all turned out 'missing' are taken out again.
  FOR v_op IN 1..v_n LOOP
    IF o_fresh[v_op] AND o_first[v_op] = v_op AND NOT g_taken[v_op] THEN
      v_unused := v_unused || p_request_ids[v_op];
    END IF;
  END LOOP;
  IF cardinality(v_unused) > 0 THEN
    DELETE FROM @schema@.spend_logs WHERE request_id = ANY (v_unused);
  END IF;

  DELETE FROM @schema@.reservations r
  USING unnest(h_ids, h_open) AS x (id, still_open)
  WHERE NOT x.still_open AND r.id = x.id;

  -- 4. Every counter the batch writes (charged, or released from a closed reservation) or reads, once,
  -- locked in (kind, id) order and read as locked; and the counter of each op scope (then each held
  -- scope). (The scopes of reservations left open are locked too: harmless, and rare.)
  WITH locked AS MATERIALIZED (
    SELECT b.scope_kind, b.scope_id, b.max_budget_nano, b.budget_duration, b.budget_reset_at, b.spend_nano,
      b.reserved_nano, b.soft_budget_nano
    FROM @schema@.budgets b
    WHERE (b.scope_kind, b.scope_id) IN (SELECT * FROM unnest(p_kinds || hs_kinds, p_ids || hs_ids))
    ORDER BY b.scope_kind COLLATE "C", b.scope_id COLLATE "C"
    FOR UPDATE
  ), counters AS MATERIALIZED (
    SELECT l.*, (row_number() OVER ())::integer AS pos FROM locked l
  )
  SELECT c.*, m.*
  INTO c_kinds, c_ids, c_max, c_duration, c_reset_at, c_spend, c_reserved, c_soft, s_counter
  FROM (
    SELECT coalesce(array_agg(x.scope_kind ORDER BY x.pos), '{}'), coalesce(array_agg(x.scope_id ORDER BY x.pos), '{}'),
      coalesce(array_agg(x.max_budget_nano ORDER BY x.pos), '{}'), coalesce(array_agg(x.budget_duration ORDER BY x.pos), '{}'),
      coalesce(array_agg(x.budget_reset_at ORDER BY x.pos), '{}'), coalesce(array_agg(x.spend_nano ORDER BY x.pos), '{}'),
      coalesce(array_agg(x.reserved_nano ORDER BY x.pos), '{}'), coalesce(array_agg(x.soft_budget_nano ORDER BY x.pos), '{}')
    FROM counters x
  ) c, (
    SELECT coalesce(array_agg(x.pos ORDER BY u.ord), '{}')
    FROM unnest(p_kinds || hs_kinds, p_ids || hs_ids) WITH ORDINALITY AS u (kind, id, ord)
    LEFT JOIN counters x ON x.scope_kind = u.kind AND x.scope_id = u.id
  ) m;
  c_written := array_fill(false, ARRAY[cardinality(c_kinds)]);

  -- 5. The counters, op by op in order, and the answers.
  FOR v_op IN 1..v_n LOOP
    r_op := v_op;
    r_status := o_status[v_op];
    r_kind := NULL; r_id := NULL; r_max := NULL; r_duration := NULL; r_reset_at := NULL; r_spend := NULL;
    r_reserved := NULL; r_soft := NULL;
    RETURN NEXT;
    r_status := NULL;
    -- A closed reservation is released from every scope it was held on (charged or not).
    v_h := o_closed[v_op];
    IF v_h IS NOT NULL THEN
      FOR v_j IN hs_from[v_h]..hs_to[v_h] LOOP
        v_c := s_counter[v_op_scopes + v_j];
        CONTINUE WHEN v_c IS NULL;
        c_reserved[v_c] := c_reserved[v_c] - h_amounts[v_h];
        c_written[v_c] := true;
      END LOOP;
    END IF;
    CONTINUE WHEN o_status[v_op] NOT IN ('applied', 'duplicate');
    v_now := p_nows[v_op];
    v_from := o_scope[v_op];
    v_to := v_from + p_scope_counts[v_op] - 1;
    FOR v_j IN v_from..v_to LOOP
      v_c := s_counter[v_j];
      CONTINUE WHEN v_c IS NULL;
      r_kind := c_kinds[v_c];
      r_id := c_ids[v_c];
      r_max := c_max[v_c];
      r_duration := c_duration[v_c];
      r_reserved := c_reserved[v_c];
      r_soft := c_soft[v_c];
      IF o_status[v_op] = 'duplicate' THEN
        -- The state as it stands, a due reset applied in the answer only (nothing is written).
        IF c_duration[v_c] IS NOT NULL AND c_reset_at[v_c] <= v_now THEN
          r_reset_at := @schema@.spendguard_next_reset(c_duration[v_c], v_now);
          r_spend := 0;
        ELSE
          r_reset_at := c_reset_at[v_c];
          r_spend := c_spend[v_c];
        END IF;
        RETURN NEXT;
        CONTINUE;
      END IF;
      -- A scope named twice is charged once (as spendguard_settle_v2's UPDATE does).
      CONTINUE WHEN v_c = ANY (s_counter[v_from:v_j - 1]);
      IF c_duration[v_c] IS NOT NULL AND c_reset_at[v_c] <= v_now THEN
        c_spend[v_c] := 0;
        c_reset_at[v_c] := @schema@.spendguard_next_reset(c_duration[v_c], v_now);
      END IF;
      c_spend[v_c] := c_spend[v_c] + p_costs[v_op];
      c_written[v_c] := true;
      r_reset_at := c_reset_at[v_c];
      r_spend := c_spend[v_c];
      RETURN NEXT;
    END LOOP;
  END LOOP;

  UPDATE @schema@.budgets b
  SET spend_nano = w.spend_nano, budget_reset_at = w.budget_reset_at, reserved_nano = w.reserved_nano
  FROM unnest(c_kinds, c_ids, c_spend, c_reset_at, c_reserved, c_written)
    AS w (kind, id, spend_nano, budget_reset_at, reserved_nano, written)
  WHERE w.written AND b.scope_kind = w.kind AND b.scope_id = w.id;

  -- 6. The rollups, one upsert per group with the sums of the applied ops in it (as each op's own
  -- upsert would have added up), in key order. A tag given twice counts twice.
  INSERT INTO @schema@.daily_spend AS d (day, team_id, user_id, api_key_hash, model, provider, end_user,
    requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
  SELECT g.* FROM (
    SELECT (p_start_times[o.ord] AT TIME ZONE 'UTC')::date AS day, coalesce(p_team_ids[o.ord], '') AS team_id,
      coalesce(p_user_ids[o.ord], '') AS user_id, p_api_key_hashes[o.ord] AS api_key_hash,
      p_models[o.ord] AS model, coalesce(p_providers[o.ord], '') AS provider,
      coalesce(p_end_users[o.ord], '') AS end_user, count(*) AS requests,
      count(*) FILTER (WHERE p_statuses[o.ord] = 'failure') AS failed_requests,
      sum(p_costs[o.ord])::bigint AS spend_nano, sum(p_prompt_tokens[o.ord])::bigint AS prompt_tokens,
      sum(p_completion_tokens[o.ord])::bigint AS completion_tokens
    FROM generate_series(1, v_n) AS o (ord)
    WHERE o_status[o.ord] = 'applied'
    GROUP BY 1, 2, 3, 4, 5, 6, 7
  ) g
  ORDER BY g.day, g.team_id COLLATE "C", g.model COLLATE "C", g.provider COLLATE "C", g.user_id COLLATE "C",
    g.api_key_hash COLLATE "C", g.end_user COLLATE "C"
  ON CONFLICT (day, team_id, user_id, api_key_hash, model, provider, end_user) DO UPDATE SET
    requests = d.requests + excluded.requests, failed_requests = d.failed_requests + excluded.failed_requests,
    spend_nano = d.spend_nano + excluded.spend_nano,
    prompt_tokens = d.prompt_tokens + excluded.prompt_tokens,
    completion_tokens = d.completion_tokens + excluded.completion_tokens;

  IF cardinality(p_tags) > 0 THEN
    INSERT INTO @schema@.daily_tag_spend AS d (day, tag, team_id, user_id, api_key_hash, model, provider, end_user,
      requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
    SELECT g.* FROM (
      SELECT (p_start_times[o.ord] AT TIME ZONE 'UTC')::date AS day, t.tag,
        coalesce(p_team_ids[o.ord], '') AS team_id, coalesce(p_user_ids[o.ord], '') AS user_id,
        p_api_key_hashes[o.ord] AS api_key_hash, p_models[o.ord] AS model,
        coalesce(p_providers[o.ord], '') AS provider, coalesce(p_end_users[o.ord], '') AS end_user,
        count(*) AS requests, count(*) FILTER (WHERE p_statuses[o.ord] = 'failure') AS failed_requests,
        sum(p_costs[o.ord])::bigint AS spend_nano, sum(p_prompt_tokens[o.ord])::bigint AS prompt_tokens,
        sum(p_completion_tokens[o.ord])::bigint AS completion_tokens
      FROM generate_series(1, v_n) AS o (ord)
      CROSS JOIN LATERAL unnest(p_tags[o_tag[o.ord]:o_tag[o.ord] + p_tag_counts[o.ord] - 1]) AS t (tag)
      WHERE o_status[o.ord] = 'applied'
      GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
    ) g
    ORDER BY g.day, g.tag COLLATE "C", g.team_id COLLATE "C", g.model COLLATE "C", g.provider COLLATE "C",
      g.user_id COLLATE "C", g.api_key_hash COLLATE "C", g.end_user COLLATE "C"
    ON CONFLICT (day, tag, team_id, user_id, api_key_hash, model, provider, end_user) DO UPDATE SET
      requests = d.requests + excluded.requests, failed_requests = d.failed_requests + excluded.failed_requests,
      spend_nano = d.spend_nano + excluded.spend_nano,
      prompt_tokens = d.prompt_tokens + excluded.prompt_tokens,
      completion_tokens = d.completion_tokens + excluded.completion_tokens;
  END IF;
END;
$$;
