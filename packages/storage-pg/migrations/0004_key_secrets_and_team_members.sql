-- 1. Regenerated keys: the key record (and its budget counter) keeps its id; its current secret
--    (valid_until NULL) and replaced secrets in their grace period live here. A key without rows here
--    opens with its own token_hash.
-- 2. Team memberships with a role; each has a budget counter of kind 'member' (max_budget_in_team),
--    id team_id || ':' || user_id. Users already in teams become members with role 'user' and an
--    uncapped counter.
CREATE TABLE @schema@.key_secrets (
  secret_hash text PRIMARY KEY,
  token_hash text NOT NULL,
  valid_until timestamptz
);
CREATE INDEX key_secrets_token_hash_idx ON @schema@.key_secrets (token_hash);

CREATE TABLE @schema@.team_members (
  team_id text NOT NULL,
  user_id text NOT NULL,
  role text NOT NULL,
  created_at timestamptz NOT NULL,
  PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user_id_idx ON @schema@.team_members (user_id);

INSERT INTO @schema@.team_members (team_id, user_id, role, created_at)
SELECT t.team_id, u.user_id, 'user', u.created_at
FROM @schema@.users u CROSS JOIN LATERAL unnest(u.teams) AS m(team_id)
JOIN @schema@.teams t ON t.team_id = m.team_id
ON CONFLICT DO NOTHING;

INSERT INTO @schema@.budgets (scope_kind, scope_id, spend_nano, reserved_nano)
SELECT 'member', team_id || ':' || user_id, 0, 0 FROM @schema@.team_members
ON CONFLICT DO NOTHING;
