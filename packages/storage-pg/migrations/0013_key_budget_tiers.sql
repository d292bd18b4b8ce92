-- spendguard schema, version 13: budget_id on keys. A released migration is never edited: change the
-- schema by adding a file with the next number.
--
-- keys.budget_id: the budget tier (/budget/new, migration 11) a key spends under, as LiteLLM's
--   /key/generate budget_id links it. As for a linked end user, the key keeps its own counter in
--   budgets (and its own rate_limits row), which every write that links it or changes the tier sets to
--   the tier's limits in the same transaction, under the same tier row locks.

ALTER TABLE @schema@.keys ADD COLUMN budget_id text;
CREATE INDEX keys_budget_id_idx ON @schema@.keys (budget_id);
