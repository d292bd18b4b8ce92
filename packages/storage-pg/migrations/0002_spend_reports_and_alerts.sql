-- spendguard schema, version 2: spend reports from the rollups, soft budgets and alert claims. A
-- released migration is never edited: change the schema by adding a file with the next number.
--
-- 1. Both daily rollups get every dimension a report groups by: provider, end user and failed requests
--    on daily_spend; team, user, key, model, provider and end user on daily_tag_spend (which had only
--    day and tag). The primary keys change, so each table is rebuilt: rows are re-derived from the
--    spend logs, and whatever the logs no longer hold is kept as a remainder row with the new
--    dimensions '' (unknown), so that every old total stays exact.
-- 2. soft_budget on the budget counters (alerts only), and alert_claims: one row per alert sent, so
--    that instances sharing the database send each at most once.
-- 3. spendguard_reserve_v2 and spendguard_settle_v2 (the arguments of version 1) also return the
--    scopes' soft_budget_nano, last; spendguard_settle_v2 writes the new rollups. The version 1 names
--    stay, as thin wrappers with their version 1 result columns: an instance still running the previous
--    release keeps working while others upgrade (its prepared `SELECT *` must not change result type).
--    spendguard_budget_states gains soft_budget_nano last (callers name its columns).

CREATE TABLE @schema@.daily_spend_next (
  day date NOT NULL,
  team_id text NOT NULL,
  user_id text NOT NULL,
  api_key_hash text NOT NULL,
  model text NOT NULL,
  provider text NOT NULL,
  end_user text NOT NULL,
  requests bigint NOT NULL,
  failed_requests bigint NOT NULL,
  spend_nano bigint NOT NULL,
  prompt_tokens bigint NOT NULL,
  completion_tokens bigint NOT NULL,
  PRIMARY KEY (day, team_id, user_id, api_key_hash, model, provider, end_user)
);

INSERT INTO @schema@.daily_spend_next
SELECT (l.start_time AT TIME ZONE 'UTC')::date, coalesce(l.team_id, ''), coalesce(l.user_id, ''), l.api_key_hash,
  l.model, coalesce(l.provider, ''), coalesce(l.end_user, ''),
  count(*), count(*) FILTER (WHERE l.status = 'failure'), sum(l.spend_nano), sum(l.prompt_tokens),
  sum(l.completion_tokens)
FROM @schema@.spend_logs l
GROUP BY 1, 2, 3, 4, 5, 6, 7;

INSERT INTO @schema@.daily_spend_next AS x
SELECT d.day, d.team_id, d.user_id, d.api_key_hash, d.model, '', '',
  d.requests - coalesce(n.requests, 0), 0, d.spend_nano - coalesce(n.spend_nano, 0),
  d.prompt_tokens - coalesce(n.prompt_tokens, 0), d.completion_tokens - coalesce(n.completion_tokens, 0)
FROM @schema@.daily_spend d
LEFT JOIN (
  SELECT day, team_id, user_id, api_key_hash, model, sum(requests) AS requests, sum(spend_nano) AS spend_nano,
    sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens
  FROM @schema@.daily_spend_next GROUP BY 1, 2, 3, 4, 5
) n USING (day, team_id, user_id, api_key_hash, model)
WHERE d.requests <> coalesce(n.requests, 0) OR d.spend_nano <> coalesce(n.spend_nano, 0)
  OR d.prompt_tokens <> coalesce(n.prompt_tokens, 0) OR d.completion_tokens <> coalesce(n.completion_tokens, 0)
ON CONFLICT (day, team_id, user_id, api_key_hash, model, provider, end_user) DO UPDATE SET
  requests = x.requests + excluded.requests, spend_nano = x.spend_nano + excluded.spend_nano,
  prompt_tokens = x.prompt_tokens + excluded.prompt_tokens,
  completion_tokens = x.completion_tokens + excluded.completion_tokens;

DROP TABLE @schema@.daily_spend;
ALTER TABLE @schema@.daily_spend_next RENAME TO daily_spend;
ALTER TABLE @schema@.daily_spend RENAME CONSTRAINT daily_spend_next_pkey TO daily_spend_pkey;

CREATE TABLE @schema@.daily_tag_spend_next (
  day date NOT NULL,
  tag text NOT NULL,
  team_id text NOT NULL,
  user_id text NOT NULL,
  api_key_hash text NOT NULL,
  model text NOT NULL,
  provider text NOT NULL,
  end_user text NOT NULL,
  requests bigint NOT NULL,
  failed_requests bigint NOT NULL,
  spend_nano bigint NOT NULL,
  prompt_tokens bigint NOT NULL,
  completion_tokens bigint NOT NULL,
  PRIMARY KEY (day, tag, team_id, user_id, api_key_hash, model, provider, end_user)
);

INSERT INTO @schema@.daily_tag_spend_next
SELECT (l.start_time AT TIME ZONE 'UTC')::date, t.tag, coalesce(l.team_id, ''), coalesce(l.user_id, ''),
  l.api_key_hash, l.model, coalesce(l.provider, ''), coalesce(l.end_user, ''),
  count(*), count(*) FILTER (WHERE l.status = 'failure'), sum(l.spend_nano), sum(l.prompt_tokens),
  sum(l.completion_tokens)
FROM @schema@.spend_logs l CROSS JOIN LATERAL unnest(l.tags) AS t (tag)
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8;

INSERT INTO @schema@.daily_tag_spend_next AS x
SELECT d.day, d.tag, '', '', '', '', '', '',
  d.requests - coalesce(n.requests, 0), 0, d.spend_nano - coalesce(n.spend_nano, 0),
  d.prompt_tokens - coalesce(n.prompt_tokens, 0), d.completion_tokens - coalesce(n.completion_tokens, 0)
FROM @schema@.daily_tag_spend d
LEFT JOIN (
  SELECT day, tag, sum(requests) AS requests, sum(spend_nano) AS spend_nano,
    sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens
  FROM @schema@.daily_tag_spend_next GROUP BY 1, 2
) n USING (day, tag)
WHERE d.requests <> coalesce(n.requests, 0) OR d.spend_nano <> coalesce(n.spend_nano, 0)
  OR d.prompt_tokens <> coalesce(n.prompt_tokens, 0) OR d.completion_tokens <> coalesce(n.completion_tokens, 0)
ON CONFLICT (day, tag, team_id, user_id, api_key_hash, model, provider, end_user) DO UPDATE SET
  requests = x.requests + excluded.requests, spend_nano = x.spend_nano + excluded.spend_nano,
  prompt_tokens = x.prompt_tokens + excluded.prompt_tokens,
  completion_tokens = x.completion_tokens + excluded.completion_tokens;

DROP TABLE @schema@.daily_tag_spend;
ALTER TABLE @schema@.daily_tag_spend_next RENAME TO daily_tag_spend;
ALTER TABLE @schema@.daily_tag_spend RENAME CONSTRAINT daily_tag_spend_next_pkey TO daily_tag_spend_pkey;

ALTER TABLE @schema@.budgets ADD COLUMN soft_budget_nano bigint;

-- One row per alert sent; a claim is an INSERT that conflicts for every later sender. Rows of periods
-- that are over (expires_at passed) are pruned by later claims; NULL: a budget that never resets.
CREATE TABLE @schema@.alert_claims (
  scope_kind text NOT NULL,
  scope_id text NOT NULL,
  period text NOT NULL,
  threshold text NOT NULL,
  claimed_at timestamptz NOT NULL,
  expires_at timestamptz,
  PRIMARY KEY (scope_kind, scope_id, period, threshold)
);

DROP FUNCTION @schema@.spendguard_budget_states(text[], text[], timestamptz);

-- As in version 1, with soft_budget_nano last.
CREATE FUNCTION @schema@.spendguard_budget_states(p_kinds text[], p_ids text[], p_now timestamptz)
RETURNS TABLE (
  ord bigint, scope_kind text, scope_id text, max_budget_nano bigint, budget_duration text,
  budget_reset_at timestamptz, spend_nano bigint, reserved_nano bigint, soft_budget_nano bigint
)
LANGUAGE sql STABLE
AS $$
  SELECT s.ord, b.scope_kind, b.scope_id, b.max_budget_nano, b.budget_duration,
    CASE WHEN d.due THEN @schema@.spendguard_next_reset(b.budget_duration, p_now) ELSE b.budget_reset_at END,
    CASE WHEN d.due THEN 0 ELSE b.spend_nano END,
    b.reserved_nano,
    b.soft_budget_nano
  FROM unnest(p_kinds, p_ids) WITH ORDINALITY AS s (kind, id, ord)
  JOIN @schema@.budgets b ON b.scope_kind = s.kind AND b.scope_id = s.id
  CROSS JOIN LATERAL (
    SELECT b.budget_duration IS NOT NULL AND b.budget_reset_at <= p_now AS due
  ) d
$$;

-- spendguard_reserve of version 1, with r_soft last.
CREATE FUNCTION @schema@.spendguard_reserve_v2(
  p_reservation_id text, p_kinds text[], p_ids text[], p_amount bigint, p_now timestamptz,
  p_expires_at timestamptz, p_mode text, p_pending jsonb
)
RETURNS TABLE (
  r_status text, r_kind text, r_id text, r_max bigint, r_duration text, r_reset_at timestamptz,
  r_spend bigint, r_reserved bigint, r_soft bigint
)
LANGUAGE plpgsql
AS $$
DECLARE
  missing text;
  refused record;
BEGIN
  IF p_mode NOT IN ('strict', 'shrink', 'soft') THEN
    RAISE EXCEPTION 'unknown enforcement mode ''%''', p_mode USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF @schema@.spendguard_lock_budgets(p_kinds, p_ids) < cardinality(p_kinds) THEN
    SELECT string_agg(s.kind || ':' || s.id, ', ') INTO missing
    FROM unnest(p_kinds, p_ids) AS s (kind, id)
    WHERE NOT EXISTS (SELECT 1 FROM @schema@.budgets b WHERE b.scope_kind = s.kind AND b.scope_id = s.id);
    RAISE EXCEPTION 'no budget counter for %', missing USING ERRCODE = 'no_data_found';
  END IF;

  -- Core's fitsBudget: strict on the worst case, shrink on any headroom, soft on recorded spend.
  SELECT * INTO refused FROM @schema@.spendguard_budget_states(p_kinds, p_ids, p_now) st
  WHERE st.max_budget_nano IS NOT NULL AND NOT CASE p_mode
    WHEN 'strict' THEN st.spend_nano + st.reserved_nano + p_amount <= st.max_budget_nano
    WHEN 'shrink' THEN st.spend_nano + st.reserved_nano < st.max_budget_nano
    ELSE st.spend_nano < st.max_budget_nano
  END
  ORDER BY st.ord
  LIMIT 1;
  IF FOUND THEN
    RETURN QUERY VALUES ('refused', NULL::text, NULL::text, NULL::bigint, NULL::text, NULL::timestamptz,
      NULL::bigint, NULL::bigint, NULL::bigint),
      (NULL, refused.scope_kind, refused.scope_id, refused.max_budget_nano, refused.budget_duration,
      refused.budget_reset_at, refused.spend_nano, refused.reserved_nano, refused.soft_budget_nano);
    RETURN;
  END IF;

  -- A reused id fails here with unique_violation, and the whole statement writes nothing.
  INSERT INTO @schema@.reservations (id, scopes, amount_nano, expires_at, created_at, pending)
  SELECT p_reservation_id,
    coalesce(jsonb_agg(jsonb_build_object('kind', s.kind, 'id', s.id) ORDER BY s.ord), '[]'),
    p_amount, p_expires_at, p_now, p_pending
  FROM unnest(p_kinds, p_ids) WITH ORDINALITY AS s (kind, id, ord);

  RETURN QUERY VALUES ('ok', NULL::text, NULL::text, NULL::bigint, NULL::text, NULL::timestamptz,
    NULL::bigint, NULL::bigint, NULL::bigint);
  RETURN QUERY
  WITH written AS (
    UPDATE @schema@.budgets b
    SET spend_nano = st.spend_nano, budget_reset_at = st.budget_reset_at,
      reserved_nano = st.reserved_nano + p_amount
    FROM @schema@.spendguard_budget_states(p_kinds, p_ids, p_now) st
    WHERE b.scope_kind = st.scope_kind AND b.scope_id = st.scope_id
    RETURNING st.ord, b.scope_kind, b.scope_id, b.max_budget_nano, b.budget_duration, b.budget_reset_at,
      b.spend_nano, b.reserved_nano, b.soft_budget_nano
  )
  SELECT NULL, w.scope_kind, w.scope_id, w.max_budget_nano, w.budget_duration, w.budget_reset_at,
    w.spend_nano, w.reserved_nano, w.soft_budget_nano
  FROM written w ORDER BY w.ord;
END;
$$;

-- spendguard_settle of version 1 (same arguments, same statuses), with r_soft last and the rollups of
-- version 2.
CREATE FUNCTION @schema@.spendguard_settle_v2(
  p_reservation_id text, p_kinds text[], p_ids text[], p_cost bigint, p_now timestamptz, p_claim boolean,
  p_request_id text, p_call_type text, p_api_key_hash text, p_spend bigint, p_prompt_tokens integer,
  p_completion_tokens integer, p_total_tokens integer, p_start_time timestamptz, p_end_time timestamptz,
  p_model text, p_provider text, p_user_id text, p_team_id text, p_end_user text, p_tags text[],
  p_status text, p_estimated boolean, p_http_status integer, p_metadata jsonb
)
RETURNS TABLE (
  r_status text, r_kind text, r_id text, r_max bigint, r_duration text, r_reset_at timestamptz,
  r_spend bigint, r_reserved bigint, r_soft bigint
)
LANGUAGE plpgsql
AS $$
DECLARE
  held jsonb;
  held_amount bigint;
  log_day date := (p_start_time AT TIME ZONE 'UTC')::date;
  failed bigint := CASE WHEN p_status = 'failure' THEN 1 ELSE 0 END;
BEGIN
  SELECT r.scopes, r.amount_nano INTO held, held_amount
  FROM @schema@.reservations r WHERE r.id = p_reservation_id
  FOR UPDATE;
  IF p_claim AND held IS NULL THEN
    RETURN QUERY VALUES ('missing', NULL::text, NULL::text, NULL::bigint, NULL::text, NULL::timestamptz,
      NULL::bigint, NULL::bigint, NULL::bigint);
    RETURN;
  END IF;

  -- The log row is the idempotency key: a concurrent settle of the same request waits here for the
  -- first one to commit, then inserts nothing.
  INSERT INTO @schema@.spend_logs (request_id, call_type, api_key_hash, spend_nano, prompt_tokens, completion_tokens,
    total_tokens, start_time, end_time, model, provider, user_id, team_id, end_user, tags, status, estimated,
    http_status, metadata)
  VALUES (p_request_id, p_call_type, p_api_key_hash, p_spend, p_prompt_tokens, p_completion_tokens,
    p_total_tokens, p_start_time, p_end_time, p_model, p_provider, p_user_id, p_team_id, p_end_user, p_tags,
    p_status, p_estimated, p_http_status, p_metadata)
  ON CONFLICT (request_id) DO NOTHING;
  IF NOT FOUND THEN
    IF p_claim THEN
      PERFORM @schema@.spendguard_release(p_reservation_id);
      RETURN QUERY VALUES ('released', NULL::text, NULL::text, NULL::bigint, NULL::text,
        NULL::timestamptz, NULL::bigint, NULL::bigint, NULL::bigint);
      RETURN;
    END IF;
    RETURN QUERY VALUES ('duplicate', NULL::text, NULL::text, NULL::bigint, NULL::text, NULL::timestamptz,
      NULL::bigint, NULL::bigint, NULL::bigint);
    RETURN QUERY SELECT NULL, st.scope_kind, st.scope_id, st.max_budget_nano, st.budget_duration,
      st.budget_reset_at, st.spend_nano, st.reserved_nano, st.soft_budget_nano
    FROM @schema@.spendguard_budget_states(p_kinds, p_ids, p_now) st ORDER BY st.ord;
    RETURN;
  END IF;

  IF held IS NOT NULL THEN
    DELETE FROM @schema@.reservations WHERE id = p_reservation_id;
  END IF;
  held := coalesce(held, '[]');
  held_amount := coalesce(held_amount, 0);

  -- Every counter this settle writes, charged or only released.
  PERFORM @schema@.spendguard_lock_budgets(
    p_kinds || ARRAY(SELECT h.kind FROM jsonb_to_recordset(held) AS h (kind text, id text)),
    p_ids || ARRAY(SELECT h.id FROM jsonb_to_recordset(held) AS h (kind text, id text)));

  RETURN QUERY VALUES ('applied', NULL::text, NULL::text, NULL::bigint, NULL::text, NULL::timestamptz,
    NULL::bigint, NULL::bigint, NULL::bigint);
  RETURN QUERY
  WITH written AS (
    UPDATE @schema@.budgets b
    SET spend_nano = st.spend_nano + p_cost, budget_reset_at = st.budget_reset_at,
      reserved_nano = st.reserved_nano - CASE
        WHEN EXISTS (
          SELECT 1 FROM jsonb_to_recordset(held) AS h (kind text, id text)
          WHERE h.kind = st.scope_kind AND h.id = st.scope_id
        ) THEN held_amount ELSE 0 END
    FROM @schema@.spendguard_budget_states(p_kinds, p_ids, p_now) st
    WHERE b.scope_kind = st.scope_kind AND b.scope_id = st.scope_id
    RETURNING st.ord, b.scope_kind, b.scope_id, b.max_budget_nano, b.budget_duration, b.budget_reset_at,
      b.spend_nano, b.reserved_nano, b.soft_budget_nano
  )
  SELECT NULL, w.scope_kind, w.scope_id, w.max_budget_nano, w.budget_duration, w.budget_reset_at,
    w.spend_nano, w.reserved_nano, w.soft_budget_nano
  FROM written w ORDER BY w.ord;

  -- Reserved scopes that are not charged (usually none) are only released.
  IF held_amount <> 0 THEN
    UPDATE @schema@.budgets b SET reserved_nano = b.reserved_nano - held_amount
    FROM jsonb_to_recordset(held) AS h (kind text, id text)
    WHERE b.scope_kind = h.kind AND b.scope_id = h.id
      AND NOT EXISTS (
        SELECT 1 FROM unnest(p_kinds, p_ids) AS s (kind, id) WHERE s.kind = h.kind AND s.id = h.id
      );
  END IF;

  INSERT INTO @schema@.daily_spend AS d (day, team_id, user_id, api_key_hash, model, provider, end_user,
    requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
  VALUES (log_day, coalesce(p_team_id, ''), coalesce(p_user_id, ''), p_api_key_hash, p_model,
    coalesce(p_provider, ''), coalesce(p_end_user, ''), 1, failed, p_cost, p_prompt_tokens, p_completion_tokens)
  ON CONFLICT (day, team_id, user_id, api_key_hash, model, provider, end_user) DO UPDATE SET
    requests = d.requests + 1, failed_requests = d.failed_requests + excluded.failed_requests,
    spend_nano = d.spend_nano + excluded.spend_nano,
    prompt_tokens = d.prompt_tokens + excluded.prompt_tokens,
    completion_tokens = d.completion_tokens + excluded.completion_tokens;

  -- A tag given twice counts twice (as in core's reference). Rows are upserted in tag order, so two
  -- settles sharing tags cannot deadlock.
  IF cardinality(p_tags) > 0 THEN
    INSERT INTO @schema@.daily_tag_spend AS d (day, tag, team_id, user_id, api_key_hash, model, provider, end_user,
      requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
    SELECT log_day, t.tag, coalesce(p_team_id, ''), coalesce(p_user_id, ''), p_api_key_hash, p_model,
      coalesce(p_provider, ''), coalesce(p_end_user, ''), count(*), failed * count(*), p_cost * count(*),
      p_prompt_tokens * count(*), p_completion_tokens * count(*)
    FROM unnest(p_tags) AS t (tag)
    GROUP BY t.tag
    ORDER BY t.tag COLLATE "C"
    ON CONFLICT (day, tag, team_id, user_id, api_key_hash, model, provider, end_user) DO UPDATE SET
      requests = d.requests + excluded.requests, failed_requests = d.failed_requests + excluded.failed_requests,
      spend_nano = d.spend_nano + excluded.spend_nano,
      prompt_tokens = d.prompt_tokens + excluded.prompt_tokens,
      completion_tokens = d.completion_tokens + excluded.completion_tokens;
  END IF;
END;
$$;

-- The version 1 entry points, for instances of the previous release: the same columns as before.
CREATE OR REPLACE FUNCTION @schema@.spendguard_reserve(
  p_reservation_id text, p_kinds text[], p_ids text[], p_amount bigint, p_now timestamptz,
  p_expires_at timestamptz, p_mode text, p_pending jsonb
)
RETURNS TABLE (
  r_status text, r_kind text, r_id text, r_max bigint, r_duration text, r_reset_at timestamptz,
  r_spend bigint, r_reserved bigint
)
LANGUAGE sql
AS $$
  SELECT r.r_status, r.r_kind, r.r_id, r.r_max, r.r_duration, r.r_reset_at, r.r_spend, r.r_reserved
  FROM @schema@.spendguard_reserve_v2(p_reservation_id, p_kinds, p_ids, p_amount, p_now, p_expires_at, p_mode,
    p_pending) r
$$;

CREATE OR REPLACE FUNCTION @schema@.spendguard_settle(
  p_reservation_id text, p_kinds text[], p_ids text[], p_cost bigint, p_now timestamptz, p_claim boolean,
  p_request_id text, p_call_type text, p_api_key_hash text, p_spend bigint, p_prompt_tokens integer,
  p_completion_tokens integer, p_total_tokens integer, p_start_time timestamptz, p_end_time timestamptz,
  p_model text, p_provider text, p_user_id text, p_team_id text, p_end_user text, p_tags text[],
  p_status text, p_estimated boolean, p_http_status integer, p_metadata jsonb
)
RETURNS TABLE (
  r_status text, r_kind text, r_id text, r_max bigint, r_duration text, r_reset_at timestamptz,
  r_spend bigint, r_reserved bigint
)
LANGUAGE sql
AS $$
  SELECT r.r_status, r.r_kind, r.r_id, r.r_max, r.r_duration, r.r_reset_at, r.r_spend, r.r_reserved
  FROM @schema@.spendguard_settle_v2(p_reservation_id, p_kinds, p_ids, p_cost, p_now, p_claim, p_request_id,
    p_call_type, p_api_key_hash, p_spend, p_prompt_tokens, p_completion_tokens, p_total_tokens, p_start_time,
    p_end_time, p_model, p_provider, p_user_id, p_team_id, p_end_user, p_tags, p_status, p_estimated,
    p_http_status, p_metadata) r
$$;
