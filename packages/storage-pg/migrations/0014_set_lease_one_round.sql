-- SpendStorage.setLease on an open lease in one statement (one round trip instead of a transaction of
-- five or more): the counters of the lease's scopes locked in the order every guarded write locks them,
-- then the lease's row; its amount changed (or the row deleted at 0), each counter's reserved amount
-- moved by the difference, a due period reset written with it. A lease that grows must fit every capped
-- scope (`p_mode`); one that does not fit changes nothing.
-- Rows: a header (r_status 'ok', 'refused' or 'absent'; r_previous the amount the lease held), then
-- states: every scope's, in the lease's order, when 'ok'; the refusing scope's when 'refused'; the
-- given scopes' when 'absent' (no open lease of that id: the caller opens one with a reserve).
CREATE FUNCTION @schema@.spendguard_set_lease(
  p_id text, p_amount bigint, p_now timestamptz, p_expires_at timestamptz, p_mode text,
  p_kinds text[], p_ids text[]
)
RETURNS TABLE (
  r_status text, r_previous bigint, scope_kind text, scope_id text, max_budget_nano bigint,
  budget_duration text, budget_reset_at timestamptz, spend_nano bigint, reserved_nano bigint,
  soft_budget_nano bigint
)
LANGUAGE plpgsql
AS $$
DECLARE
  v_scopes jsonb;
  v_held bigint;
  v_kinds text[];
  v_ids text[];
  v_delta bigint;
  s record;
BEGIN
  PERFORM @schema@.spendguard_lock_budgets(p_kinds, p_ids);
  SELECT r.scopes, r.amount_nano INTO v_scopes, v_held
  FROM @schema@.reservations r WHERE r.id = p_id FOR UPDATE;
  IF NOT FOUND THEN
    RETURN QUERY SELECT 'absent'::text, 0::bigint, NULL::text, NULL::text, NULL::bigint, NULL::text,
      NULL::timestamptz, NULL::bigint, NULL::bigint, NULL::bigint;
    RETURN QUERY SELECT NULL::text, NULL::bigint, b.scope_kind, b.scope_id, b.max_budget_nano,
      b.budget_duration, b.budget_reset_at, b.spend_nano, b.reserved_nano, b.soft_budget_nano
      FROM @schema@.spendguard_budget_states(p_kinds, p_ids, p_now) b ORDER BY b.ord;
    RETURN;
  END IF;
  SELECT array_agg(e->>'kind' ORDER BY o), array_agg(e->>'id' ORDER BY o) INTO v_kinds, v_ids
  FROM jsonb_array_elements(v_scopes) WITH ORDINALITY AS x (e, o);
  v_delta := p_amount - v_held;
  IF v_delta > 0 THEN
    FOR s IN
      SELECT b.* FROM @schema@.spendguard_budget_states(v_kinds, v_ids, p_now) b ORDER BY b.ord
    LOOP
      IF (s.max_budget_nano IS NOT NULL AND (CASE p_mode
          WHEN 'strict' THEN s.spend_nano + s.reserved_nano + v_delta > s.max_budget_nano
          WHEN 'shrink' THEN s.spend_nano + s.reserved_nano >= s.max_budget_nano
          WHEN 'soft' THEN s.spend_nano >= s.max_budget_nano
          ELSE true END)) THEN
        RETURN QUERY SELECT 'refused'::text, v_held, NULL::text, NULL::text, NULL::bigint, NULL::text,
          NULL::timestamptz, NULL::bigint, NULL::bigint, NULL::bigint;
        RETURN QUERY SELECT NULL::text, NULL::bigint, s.scope_kind, s.scope_id, s.max_budget_nano,
          s.budget_duration, s.budget_reset_at, s.spend_nano, s.reserved_nano, s.soft_budget_nano;
        RETURN;
      END IF;
    END LOOP;
  END IF;
  -- Each counter as the states say (a due reset applied), its reserved amount moved by the difference.
  UPDATE @schema@.budgets b
  SET spend_nano = st.spend_nano, reserved_nano = st.reserved_nano + v_delta,
    budget_reset_at = st.budget_reset_at
  FROM @schema@.spendguard_budget_states(v_kinds, v_ids, p_now) st
  WHERE b.scope_kind = st.scope_kind AND b.scope_id = st.scope_id;
  IF p_amount = 0 THEN
    DELETE FROM @schema@.reservations WHERE id = p_id;
  ELSE
    UPDATE @schema@.reservations SET amount_nano = p_amount, expires_at = p_expires_at WHERE id = p_id;
  END IF;
  RETURN QUERY SELECT 'ok'::text, v_held, NULL::text, NULL::text, NULL::bigint, NULL::text,
    NULL::timestamptz, NULL::bigint, NULL::bigint, NULL::bigint;
  RETURN QUERY SELECT NULL::text, NULL::bigint, b.scope_kind, b.scope_id, b.max_budget_nano,
    b.budget_duration, b.budget_reset_at, b.spend_nano, b.reserved_nano, b.soft_budget_nano
    FROM @schema@.spendguard_budget_states(v_kinds, v_ids, p_now) b ORDER BY b.ord;
END;
$$;
