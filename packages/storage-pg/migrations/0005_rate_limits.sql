-- spendguard schema, version 5: rate limits (rpm, tpm, max parallel requests, per model). A released
-- migration is never edited: change the schema by adding a file with the next number.
--
-- rate_limits: each scope's limits (any scope kind), as core's RateLimits JSON.
-- rate_windows: one counter per bucket (scope, metric, model): the start of its current window and
--   what it counted (ms since the epoch, like core's rule). A `parallel` bucket's row counts nothing:
--   it is the row its acquirers lock, so that counting its leases and taking one is serialised.
-- rate_leases: the calls in flight per parallel bucket, each with an expiry so that a dead
--   instance's slots come back.
-- The rules are core's decideRateBucket / addRateTokens (packages/core/src/storage/rate-limit-rules.ts).

CREATE TABLE @schema@.rate_limits (
  scope_kind text NOT NULL,
  scope_id text NOT NULL,
  limits jsonb NOT NULL,
  PRIMARY KEY (scope_kind, scope_id)
);

CREATE TABLE @schema@.rate_windows (
  scope_kind text NOT NULL,
  scope_id text NOT NULL,
  metric text NOT NULL,
  model text NOT NULL,
  window_start bigint NOT NULL,
  used bigint NOT NULL,
  PRIMARY KEY (scope_kind, scope_id, metric, model)
) WITH (fillfactor = 70);

CREATE TABLE @schema@.rate_leases (
  scope_kind text NOT NULL,
  scope_id text NOT NULL,
  model text NOT NULL,
  lease_id text NOT NULL,
  expires_at bigint NOT NULL,
  PRIMARY KEY (scope_kind, scope_id, model, lease_id)
);
CREATE INDEX rate_leases_lease_id_idx ON @schema@.rate_leases (lease_id);

-- Checks every bucket and counts on all of them or none. One row per bucket (r_idx, 1-based, in the
-- order given) when admitted; one row, the first refusing bucket, when refused.
CREATE FUNCTION @schema@.spendguard_rate_acquire(
  p_lease text, p_kinds text[], p_ids text[], p_metrics text[], p_models text[], p_limits bigint[],
  p_now bigint, p_window bigint, p_lease_expires bigint
)
RETURNS TABLE (r_ok boolean, r_idx integer, r_used bigint, r_reset bigint)
LANGUAGE plpgsql
AS $$
DECLARE
  n integer := coalesce(array_length(p_kinds, 1), 0);
  starts bigint[] := '{}';
  useds bigint[] := '{}';
  refused integer := 0;
  w_start bigint;
  w_used bigint;
  ok boolean;
BEGIN
  -- A row per bucket (an ended window where there was none), inserted and then locked in key order,
  -- so that calls sharing buckets queue instead of deadlocking.
  INSERT INTO @schema@.rate_windows (scope_kind, scope_id, metric, model, window_start, used)
  SELECT b.k, b.i, b.m, b.md, p_now - p_window, 0
  FROM unnest(p_kinds, p_ids, p_metrics, p_models) AS b (k, i, m, md)
  ORDER BY b.k, b.i, b.m, b.md
  ON CONFLICT DO NOTHING;
  PERFORM 1 FROM @schema@.rate_windows w
  JOIN unnest(p_kinds, p_ids, p_metrics, p_models) AS b (k, i, m, md)
    ON w.scope_kind = b.k AND w.scope_id = b.i AND w.metric = b.m AND w.model = b.md
  ORDER BY w.scope_kind, w.scope_id, w.metric, w.model
  FOR UPDATE OF w;

  FOR x IN 1..n LOOP
    IF p_metrics[x] = 'parallel' THEN
      DELETE FROM @schema@.rate_leases l
      WHERE l.scope_kind = p_kinds[x] AND l.scope_id = p_ids[x] AND l.model = p_models[x] AND l.expires_at <= p_now;
      SELECT count(*) INTO w_used FROM @schema@.rate_leases l
      WHERE l.scope_kind = p_kinds[x] AND l.scope_id = p_ids[x] AND l.model = p_models[x];
      w_start := p_now;
      ok := w_used + 1 <= p_limits[x];
    ELSE
      SELECT w.window_start, w.used INTO w_start, w_used FROM @schema@.rate_windows w
      WHERE w.scope_kind = p_kinds[x] AND w.scope_id = p_ids[x] AND w.metric = p_metrics[x] AND w.model = p_models[x];
      IF p_now >= w_start + p_window THEN
        w_start := p_now;
        w_used := 0;
      END IF;
      IF p_metrics[x] = 'rpm' THEN
        ok := w_used + 1 <= p_limits[x];
      ELSE
        ok := w_used < p_limits[x];
      END IF;
    END IF;
    starts := starts || w_start;
    useds := useds || w_used;
    IF NOT ok AND refused = 0 THEN
      refused := x;
    END IF;
  END LOOP;

  IF refused > 0 THEN
    RETURN QUERY SELECT false, refused, useds[refused],
      CASE WHEN p_metrics[refused] = 'parallel' THEN NULL::bigint ELSE starts[refused] + p_window END;
    RETURN;
  END IF;

  FOR x IN 1..n LOOP
    IF p_metrics[x] = 'parallel' THEN
      INSERT INTO @schema@.rate_leases (scope_kind, scope_id, model, lease_id, expires_at)
      VALUES (p_kinds[x], p_ids[x], p_models[x], p_lease, p_lease_expires);
      useds[x] := useds[x] + 1;
    ELSIF p_metrics[x] = 'rpm' THEN
      useds[x] := useds[x] + 1;
      UPDATE @schema@.rate_windows w SET window_start = starts[x], used = useds[x]
      WHERE w.scope_kind = p_kinds[x] AND w.scope_id = p_ids[x] AND w.metric = 'rpm' AND w.model = p_models[x];
    END IF;
    RETURN QUERY SELECT true, x, useds[x],
      CASE WHEN p_metrics[x] = 'parallel' THEN NULL::bigint ELSE starts[x] + p_window END;
  END LOOP;
END;
$$;

-- Adds a settled call's tokens to its tpm buckets (a new window where the current one ended) and
-- releases its leases.
CREATE FUNCTION @schema@.spendguard_rate_settle(
  p_lease text, p_kinds text[], p_ids text[], p_models text[], p_tokens bigint, p_now bigint, p_window bigint
)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
  INSERT INTO @schema@.rate_windows AS w (scope_kind, scope_id, metric, model, window_start, used)
  SELECT b.k, b.i, 'tpm', b.md, p_now, p_tokens
  FROM unnest(p_kinds, p_ids, p_models) AS b (k, i, md)
  ORDER BY b.k, b.i, b.md
  ON CONFLICT (scope_kind, scope_id, metric, model) DO UPDATE SET
    window_start = CASE WHEN p_now >= w.window_start + p_window THEN p_now ELSE w.window_start END,
    used = CASE WHEN p_now >= w.window_start + p_window THEN p_tokens ELSE w.used + p_tokens END;
  DELETE FROM @schema@.rate_leases l WHERE l.lease_id = p_lease;
END;
$$;
