-- Migration 11: LiteLLM's budget objects (/budget/new), tiers of limits end users link to.
--
-- budget_tiers holds a tier's limits and no spend. customers.budget_id links an end user to one; the
-- end user keeps its own counter in budgets (and its own rate_limits row), which every write that
-- links it or changes the tier sets to the tier's limits in the same transaction. Those writes lock
-- the tier row (FOR SHARE to link, FOR UPDATE to change or delete it), so no link can slip between a
-- tier change and its linked counters, nor a tier be deleted under a new link.

CREATE TABLE @schema@.budget_tiers (
  budget_id text PRIMARY KEY,
  max_budget_nano bigint,
  soft_budget_nano bigint,
  budget_duration text,
  rpm_limit integer,
  tpm_limit integer,
  max_parallel_requests integer,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL
);
ALTER TABLE @schema@.customers ADD COLUMN budget_id text;
CREATE INDEX customers_budget_id_idx ON @schema@.customers (budget_id);
