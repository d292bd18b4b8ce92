-- spendguard schema, version 1. A released migration is never edited: change the schema by adding
-- a file with the next number.
--
-- `@schema@` stands for the target schema (the `schema` option, quoted); src/migrations.ts
-- substitutes it. Every name is qualified with it, functions included, so that they find their own
-- tables whatever the caller's search_path is, without a SET clause (which would stop Postgres from
-- inlining spendguard_budget_states and cost every call a re-plan: ~3x the time of a reserve).
--
-- Conventions: money is BIGINT nano-dollars (every value stays below 2^53), instants are
-- timestamptz, string lists are text[], free-form objects jsonb.

CREATE TABLE @schema@.teams (
  team_id text PRIMARY KEY,
  team_alias text,
  models text[] NOT NULL,
  metadata jsonb NOT NULL,
  blocked boolean NOT NULL,
  created_at timestamptz NOT NULL
);
CREATE INDEX teams_team_alias_idx ON @schema@.teams (team_alias);

CREATE TABLE @schema@.users (
  user_id text PRIMARY KEY,
  user_email text,
  user_role text NOT NULL,
  teams text[] NOT NULL,
  models text[] NOT NULL,
  metadata jsonb NOT NULL,
  created_at timestamptz NOT NULL
);

CREATE TABLE @schema@.keys (
  token_hash text PRIMARY KEY,
  key_name text NOT NULL,
  key_alias text,
  user_id text,
  team_id text,
  models text[] NOT NULL,
  tags text[] NOT NULL,
  metadata jsonb NOT NULL,
  blocked boolean NOT NULL,
  expires_at timestamptz,
  created_at timestamptz NOT NULL
);
CREATE INDEX keys_user_id_idx ON @schema@.keys (user_id);
CREATE INDEX keys_team_id_idx ON @schema@.keys (team_id);

-- One counter per scope. Every request updates a few of these rows; free space in each page lets
-- Postgres update them in place (HOT) instead of touching the primary key index each time.
CREATE TABLE @schema@.budgets (
  scope_kind text NOT NULL,
  scope_id text NOT NULL,
  max_budget_nano bigint,
  budget_duration text,
  budget_reset_at timestamptz,
  spend_nano bigint NOT NULL,
  reserved_nano bigint NOT NULL,
  PRIMARY KEY (scope_kind, scope_id)
) WITH (fillfactor = 70);

-- Open reservations; a settle or release deletes its row, the TTL sweep charges and deletes expired
-- ones. Only requests in flight are here, so the sweep can scan the table: an expires_at index would
-- cost every request another index write.
CREATE TABLE @schema@.reservations (
  id text PRIMARY KEY,
  -- [{"kind": "key", "id": "..."}, ...]
  scopes jsonb NOT NULL,
  amount_nano bigint NOT NULL,
  expires_at timestamptz NOT NULL,
  created_at timestamptz NOT NULL,
  -- PendingCall: attribution for the spend log written if the reservation expires unsettled.
  pending jsonb
);

CREATE TABLE @schema@.spend_logs (
  request_id text PRIMARY KEY,
  call_type text NOT NULL,
  api_key_hash text NOT NULL,
  spend_nano bigint NOT NULL,
  prompt_tokens integer NOT NULL,
  completion_tokens integer NOT NULL,
  total_tokens integer NOT NULL,
  start_time timestamptz NOT NULL,
  end_time timestamptz NOT NULL,
  model text NOT NULL,
  provider text,
  user_id text,
  team_id text,
  end_user text,
  tags text[] NOT NULL,
  status text NOT NULL,
  estimated boolean NOT NULL,
  http_status integer NOT NULL,
  metadata jsonb NOT NULL
);
CREATE INDEX spend_logs_start_time_idx ON @schema@.spend_logs (start_time);
CREATE INDEX spend_logs_api_key_hash_start_time_idx ON @schema@.spend_logs (api_key_hash, start_time);
CREATE INDEX spend_logs_user_id_start_time_idx ON @schema@.spend_logs (user_id, start_time);
CREATE INDEX spend_logs_team_id_start_time_idx ON @schema@.spend_logs (team_id, start_time);

-- Spend per UTC day and tag, upserted by every settle.
CREATE TABLE @schema@.daily_tag_spend (
  day date NOT NULL,
  tag text NOT NULL,
  requests bigint NOT NULL,
  spend_nano bigint NOT NULL,
  prompt_tokens bigint NOT NULL,
  completion_tokens bigint NOT NULL,
  PRIMARY KEY (day, tag)
);

-- Spend per UTC day x team x user x key x model, upserted by every settle. A missing dim is ''.
CREATE TABLE @schema@.daily_spend (
  day date NOT NULL,
  team_id text NOT NULL,
  user_id text NOT NULL,
  api_key_hash text NOT NULL,
  model text NOT NULL,
  requests bigint NOT NULL,
  spend_nano bigint NOT NULL,
  prompt_tokens bigint NOT NULL,
  completion_tokens bigint NOT NULL,
  PRIMARY KEY (day, team_id, user_id, api_key_hash, model)
);

-- Every key change, in order, so that other instances drop the key from their cache: each change is
-- also sent with NOTIFY on the channel spendguard_key_changes, and a listener that (re)connects
-- replays the rows after the last one it saw. Rows older than an hour are pruned by later changes.
CREATE TABLE @schema@.key_changes (
  seq bigserial PRIMARY KEY,
  -- NULL: any key may have changed.
  token_hash text,
  changed_at timestamptz NOT NULL DEFAULT now()
);

-- When a budget with this duration next resets, counted from p_now: the same calendar rule as core's
-- nextBudgetResetAt (a test compares the two over hundreds of instants). In UTC: Ns/Nm/Nh at the next
-- multiple of N counted from midnight, 1d at the next midnight, 7d (1w) on the next Monday, 30d on the
-- 1st of the next month, other Nd (Nw) N (7N) days after today's midnight, Nmo on the 1st, N months on.
CREATE FUNCTION @schema@.spendguard_next_reset(p_duration text, p_now timestamptz) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
  parts text[] := regexp_match(
    CASE p_duration WHEN 'daily' THEN '1d' WHEN 'weekly' THEN '7d' WHEN 'monthly' THEN '1mo' ELSE p_duration END,
    '^([0-9]+)(mo|s|m|h|d|w)$');
  n numeric;
  utc timestamp := p_now AT TIME ZONE 'UTC';
  midnight timestamp := date_trunc('day', p_now AT TIME ZONE 'UTC');
  unit_ms numeric;
  next_ms numeric;
  days numeric;
BEGIN
  n := parts[1]::numeric;
  IF n IS NULL OR n < 1 OR n > 9007199254740991 THEN
    RAISE EXCEPTION 'invalid budget_duration ''%''', p_duration USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF parts[2] = 'mo' THEN
    RETURN (date_trunc('month', utc) + make_interval(months => n::integer)) AT TIME ZONE 'UTC';
  END IF;
  IF parts[2] IN ('s', 'm', 'h') THEN
    unit_ms := CASE parts[2] WHEN 's' THEN 1000 WHEN 'm' THEN 60000 ELSE 3600000 END;
    -- Whole units elapsed since midnight, rounded up to the next multiple of n.
    next_ms := (floor(floor(extract(epoch FROM utc - midnight) * 1000 / unit_ms) / n) + 1) * n * unit_ms;
    -- Past midnight, LiteLLM wraps onto the next day at (next mod 24h).
    next_ms := least(next_ms, 86400000 + mod(next_ms, 86400000));
    RETURN (midnight + make_interval(secs => (next_ms / 1000)::double precision)) AT TIME ZONE 'UTC';
  END IF;
  days := CASE parts[2] WHEN 'w' THEN n * 7 ELSE n END;
  IF days = 7 THEN
    -- isodow: Monday 1 .. Sunday 7; on a Monday the next Monday is a week away.
    RETURN (midnight + make_interval(days => 8 - extract(isodow FROM utc)::integer)) AT TIME ZONE 'UTC';
  ELSIF days = 30 THEN
    RETURN (date_trunc('month', utc) + interval '1 month') AT TIME ZONE 'UTC';
  END IF;
  RETURN (midnight + make_interval(days => days::integer)) AT TIME ZONE 'UTC';
END;
$$;


-- Every writer takes its locks in one order: the reservation row, then the spend log's key, then the
-- budget counters sorted by (kind, id). Overlapping requests therefore queue instead of deadlocking.
-- In READ COMMITTED each later statement of a function takes a new snapshot, so it sees the locked
-- rows as their last writer committed them.

-- Locks the counters of these scopes in (kind, id) order; returns how many exist.
CREATE FUNCTION @schema@.spendguard_lock_budgets(p_kinds text[], p_ids text[]) RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
  locked bigint;
BEGIN
  PERFORM 1 FROM @schema@.budgets b
  WHERE (b.scope_kind, b.scope_id) IN (SELECT * FROM unnest(p_kinds, p_ids))
  ORDER BY b.scope_kind COLLATE "C", b.scope_id COLLATE "C"
  FOR UPDATE;
  GET DIAGNOSTICS locked = ROW_COUNT;
  RETURN locked;
END;
$$;

-- The counters of these scopes with their position in the list given (missing ones omitted), as they
-- stand after any due period reset. Reads only: the caller writes the reset, or not.
CREATE FUNCTION @schema@.spendguard_budget_states(p_kinds text[], p_ids text[], p_now timestamptz)
RETURNS TABLE (
  ord bigint, scope_kind text, scope_id text, max_budget_nano bigint, budget_duration text,
  budget_reset_at timestamptz, spend_nano bigint, reserved_nano bigint
)
LANGUAGE sql STABLE
AS $$
  SELECT s.ord, b.scope_kind, b.scope_id, b.max_budget_nano, b.budget_duration,
    CASE WHEN d.due THEN @schema@.spendguard_next_reset(b.budget_duration, p_now) ELSE b.budget_reset_at END,
    CASE WHEN d.due THEN 0 ELSE b.spend_nano END,
    b.reserved_nano
  FROM unnest(p_kinds, p_ids) WITH ORDINALITY AS s (kind, id, ord)
  JOIN @schema@.budgets b ON b.scope_kind = s.kind AND b.scope_id = s.id
  CROSS JOIN LATERAL (
    SELECT b.budget_duration IS NOT NULL AND b.budget_reset_at <= p_now AS due
  ) d
$$;

-- SpendStorage.reserve in one statement. Returns a header row (r_status 'ok' or 'refused', all else
-- NULL), then states: every scope's in the order given when admitted; only the first refusing scope's
-- when refused, and then nothing is written.
CREATE FUNCTION @schema@.spendguard_reserve(
  p_reservation_id text, p_kinds text[], p_ids text[], p_amount bigint, p_now timestamptz,
  p_expires_at timestamptz, p_mode text, p_pending jsonb
)
RETURNS TABLE (
  r_status text, r_kind text, r_id text, r_max bigint, r_duration text, r_reset_at timestamptz,
  r_spend bigint, r_reserved bigint
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
      NULL::bigint, NULL::bigint),
      (NULL, refused.scope_kind, refused.scope_id, refused.max_budget_nano, refused.budget_duration,
      refused.budget_reset_at, refused.spend_nano, refused.reserved_nano);
    RETURN;
  END IF;

  -- A reused id fails here with unique_violation, and the whole statement writes nothing.
  INSERT INTO @schema@.reservations (id, scopes, amount_nano, expires_at, created_at, pending)
  SELECT p_reservation_id,
    coalesce(jsonb_agg(jsonb_build_object('kind', s.kind, 'id', s.id) ORDER BY s.ord), '[]'),
    p_amount, p_expires_at, p_now, p_pending
  FROM unnest(p_kinds, p_ids) WITH ORDINALITY AS s (kind, id, ord);

  RETURN QUERY VALUES ('ok', NULL::text, NULL::text, NULL::bigint, NULL::text, NULL::timestamptz,
    NULL::bigint, NULL::bigint);
  RETURN QUERY
  WITH written AS (
    UPDATE @schema@.budgets b
    SET spend_nano = st.spend_nano, budget_reset_at = st.budget_reset_at,
      reserved_nano = st.reserved_nano + p_amount
    FROM @schema@.spendguard_budget_states(p_kinds, p_ids, p_now) st
    WHERE b.scope_kind = st.scope_kind AND b.scope_id = st.scope_id
    RETURNING st.ord, b.scope_kind, b.scope_id, b.max_budget_nano, b.budget_duration, b.budget_reset_at,
      b.spend_nano, b.reserved_nano
  )
  SELECT NULL, w.scope_kind, w.scope_id, w.max_budget_nano, w.budget_duration, w.budget_reset_at,
    w.spend_nano, w.reserved_nano
  FROM written w ORDER BY w.ord;
END;
$$;

-- SpendStorage.release: drops an open reservation without charging it. False when it was not open.
CREATE FUNCTION @schema@.spendguard_release(p_reservation_id text) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
  held jsonb;
  held_amount bigint;
BEGIN
  DELETE FROM @schema@.reservations WHERE id = p_reservation_id RETURNING scopes, amount_nano INTO held, held_amount;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  PERFORM @schema@.spendguard_lock_budgets(
    ARRAY(SELECT h.kind FROM jsonb_to_recordset(held) AS h (kind text, id text)),
    ARRAY(SELECT h.id FROM jsonb_to_recordset(held) AS h (kind text, id text)));
  UPDATE @schema@.budgets b SET reserved_nano = b.reserved_nano - held_amount
  FROM jsonb_to_recordset(held) AS h (kind text, id text)
  WHERE b.scope_kind = h.kind AND b.scope_id = h.id;
  RETURN true;
END;
$$;

-- SpendStorage.settle in one statement, idempotent on the request id. Returns a header row (r_status,
-- all else NULL), then the states of the charged scopes in the order given (missing ones omitted).
-- r_status: 'applied'; 'duplicate' (request id already logged: nothing written).
-- With p_claim (the TTL sweep charging an expired reservation) the reservation must still be open:
-- 'missing' when it is not (settled, released or expired by someone else: nothing written), and
-- 'released' when its request id was logged already (the reservation is only released).
CREATE FUNCTION @schema@.spendguard_settle(
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
LANGUAGE plpgsql
AS $$
DECLARE
  held jsonb;
  held_amount bigint;
  log_day date := (p_start_time AT TIME ZONE 'UTC')::date;
BEGIN
  SELECT r.scopes, r.amount_nano INTO held, held_amount
  FROM @schema@.reservations r WHERE r.id = p_reservation_id
  FOR UPDATE;
  IF p_claim AND held IS NULL THEN
    RETURN QUERY VALUES ('missing', NULL::text, NULL::text, NULL::bigint, NULL::text, NULL::timestamptz,
      NULL::bigint, NULL::bigint);
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
        NULL::timestamptz, NULL::bigint, NULL::bigint);
      RETURN;
    END IF;
    RETURN QUERY VALUES ('duplicate', NULL::text, NULL::text, NULL::bigint, NULL::text, NULL::timestamptz,
      NULL::bigint, NULL::bigint);
    RETURN QUERY SELECT NULL, st.scope_kind, st.scope_id, st.max_budget_nano, st.budget_duration,
      st.budget_reset_at, st.spend_nano, st.reserved_nano
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
    NULL::bigint, NULL::bigint);
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
      b.spend_nano, b.reserved_nano
  )
  SELECT NULL, w.scope_kind, w.scope_id, w.max_budget_nano, w.budget_duration, w.budget_reset_at,
    w.spend_nano, w.reserved_nano
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

  INSERT INTO @schema@.daily_spend AS d (day, team_id, user_id, api_key_hash, model, requests, spend_nano,
    prompt_tokens, completion_tokens)
  VALUES (log_day, coalesce(p_team_id, ''), coalesce(p_user_id, ''), p_api_key_hash, p_model, 1, p_cost,
    p_prompt_tokens, p_completion_tokens)
  ON CONFLICT (day, team_id, user_id, api_key_hash, model) DO UPDATE SET
    requests = d.requests + 1, spend_nano = d.spend_nano + excluded.spend_nano,
    prompt_tokens = d.prompt_tokens + excluded.prompt_tokens,
    completion_tokens = d.completion_tokens + excluded.completion_tokens;

  -- A tag given twice counts twice (as in core's reference). Rows are upserted in tag order, so two
  -- settles sharing tags cannot deadlock.
  IF cardinality(p_tags) > 0 THEN
    INSERT INTO @schema@.daily_tag_spend AS d (day, tag, requests, spend_nano, prompt_tokens, completion_tokens)
    SELECT log_day, t.tag, count(*), p_cost * count(*), p_prompt_tokens * count(*),
      p_completion_tokens * count(*)
    FROM unnest(p_tags) AS t (tag)
    GROUP BY t.tag
    ORDER BY t.tag COLLATE "C"
    ON CONFLICT (day, tag) DO UPDATE SET
      requests = d.requests + excluded.requests, spend_nano = d.spend_nano + excluded.spend_nano,
      prompt_tokens = d.prompt_tokens + excluded.prompt_tokens,
      completion_tokens = d.completion_tokens + excluded.completion_tokens;
  END IF;
END;
$$;
