-- Migration 3: end users (customers) and tags with budgets of their own, and the optional scopes.
--
-- 1. customers and tags hold the records of /customer/new and /tag/new; their counters live in budgets
--    with scope_kind 'customer' and 'tag', as every other scope's do.
-- 2. spendguard_reserve_v2 (same arguments, same result) now skips a scope of an optional kind (member,
--    customer, tag, model, global) that has no counter: a call names those scopes whether or not a
--    budget was set on them. A key, user or team without a counter is still an error. The reservation
--    records only the scopes it reserved on. Instances of the previous release never name optional
--    kinds, so they see no change.

CREATE TABLE @schema@.customers (
  end_user_id text PRIMARY KEY,
  alias text,
  blocked boolean NOT NULL,
  metadata jsonb NOT NULL,
  created_at timestamptz NOT NULL
);

CREATE TABLE @schema@.tags (
  name text PRIMARY KEY,
  description text,
  metadata jsonb NOT NULL,
  created_at timestamptz NOT NULL
);

CREATE OR REPLACE FUNCTION @schema@.spendguard_reserve_v2(
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
    WHERE s.kind IN ('key', 'user', 'team')
      AND NOT EXISTS (SELECT 1 FROM @schema@.budgets b WHERE b.scope_kind = s.kind AND b.scope_id = s.id);
    IF missing IS NOT NULL THEN
      RAISE EXCEPTION 'no budget counter for %', missing USING ERRCODE = 'no_data_found';
    END IF;
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
    coalesce(jsonb_agg(jsonb_build_object('kind', s.kind, 'id', s.id) ORDER BY s.ord)
      FILTER (WHERE EXISTS (
        SELECT 1 FROM @schema@.budgets b WHERE b.scope_kind = s.kind AND b.scope_id = s.id)), '[]'),
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
