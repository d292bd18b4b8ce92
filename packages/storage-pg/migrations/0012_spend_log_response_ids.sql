-- spendguard schema, version 12: the provider's response id on spend logs. A released migration is never
-- edited: change the schema by adding a file with the next number.
--
-- spend_logs.response_id: the id the provider gave its response (chatcmpl-..., resp_..., msg_..., a
--   Gemini responseId), NULL when it gave none. The management API shows it as LiteLLM's request_id
--   and finds a log by either id; indexed for that lookup.
-- spendguard_settle_batch: migration 8's function with one more argument, p_response_ids (one per op),
--   written to the new column on insert and on the rewrite of a log taken by another op of the batch.
--   The old signature is dropped so that no caller can settle without it.

ALTER TABLE @schema@.spend_logs ADD COLUMN response_id text;
CREATE INDEX spend_logs_response_id_idx ON @schema@.spend_logs (response_id);

DROP FUNCTION @schema@.spendguard_settle_batch(
  text[], bigint[], timestamptz[], boolean[], integer[], text[], text[], text[], text[], text[], bigint[],
  integer[], integer[], integer[], timestamptz[], timestamptz[], text[], text[], text[], text[], text[],
  integer[], text[], text[], boolean[], integer[], jsonb
);

CREATE FUNCTION @schema@.spendguard_settle_batch(
  p_reservation_ids text[], p_costs bigint[], p_nows timestamptz[], p_claims boolean[],
  p_scope_counts integer[], p_kinds text[], p_ids text[],
  p_request_ids text[], p_call_types text[], p_api_key_hashes text[], p_spends bigint[],
  p_prompt_tokens integer[], p_completion_tokens integer[], p_total_tokens integer[],
  p_start_times timestamptz[], p_end_times timestamptz[], p_models text[], p_providers text[],
  p_user_ids text[], p_team_ids text[], p_end_users text[], p_tag_counts integer[], p_tags text[],
  p_statuses text[], p_estimated boolean[], p_http_statuses integer[], p_metadata jsonb,
  p_response_ids text[]
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
    OR jsonb_array_length(p_metadata) IS DISTINCT FROM v_n OR cardinality(p_response_ids) IS DISTINCT FROM v_n
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
      status, estimated, http_status, metadata, response_id)
    SELECT k.request_id, p_call_types[k.ord], p_api_key_hashes[k.ord], p_spends[k.ord], p_prompt_tokens[k.ord],
      p_completion_tokens[k.ord], p_total_tokens[k.ord], p_start_times[k.ord], p_end_times[k.ord],
      p_models[k.ord], p_providers[k.ord], p_user_ids[k.ord], p_team_ids[k.ord], p_end_users[k.ord],
      p_tags[o_tag[k.ord]:o_tag[k.ord] + p_tag_counts[k.ord] - 1], p_statuses[k.ord], p_estimated[k.ord],
      p_http_statuses[k.ord], p_metadata -> (k.ord - 1), p_response_ids[k.ord]
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
          metadata = p_metadata -> (v_op - 1), response_id = p_response_ids[v_op]
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

