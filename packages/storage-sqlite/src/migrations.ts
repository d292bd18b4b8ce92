import type BetterSqlite3 from 'better-sqlite3';

/**
 * Versioned schema migrations, kept as SQL strings in the bundle so that they are found the same way
 * from `src` and from `dist`. A released migration is never edited: change the schema by appending one.
 *
 * Tables are STRICT: an INTEGER money column refuses a fractional value instead of quietly storing a
 * REAL, so amounts stay exact or the write fails.
 */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial',
    sql: `
CREATE TABLE teams (
  team_id TEXT PRIMARY KEY NOT NULL,
  team_alias TEXT,
  models TEXT NOT NULL,
  metadata TEXT NOT NULL,
  blocked INTEGER NOT NULL,
  created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX teams_team_alias_idx ON teams (team_alias);

CREATE TABLE users (
  user_id TEXT PRIMARY KEY NOT NULL,
  user_email TEXT,
  user_role TEXT NOT NULL,
  teams TEXT NOT NULL,
  models TEXT NOT NULL,
  metadata TEXT NOT NULL,
  created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE keys (
  token_hash TEXT PRIMARY KEY NOT NULL,
  key_name TEXT NOT NULL,
  key_alias TEXT,
  user_id TEXT,
  team_id TEXT,
  models TEXT NOT NULL,
  tags TEXT NOT NULL,
  metadata TEXT NOT NULL,
  blocked INTEGER NOT NULL,
  expires_at INTEGER,
  created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX keys_user_id_idx ON keys (user_id);
CREATE INDEX keys_team_id_idx ON keys (team_id);

CREATE TABLE budgets (
  scope_kind TEXT NOT NULL,
  scope_id TEXT NOT NULL,
  max_budget_nano INTEGER,
  budget_duration TEXT,
  budget_reset_at INTEGER,
  spend_nano INTEGER NOT NULL,
  reserved_nano INTEGER NOT NULL,
  PRIMARY KEY (scope_kind, scope_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE reservations (
  id TEXT PRIMARY KEY NOT NULL,
  scopes TEXT NOT NULL,
  amount_nano INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE spend_logs (
  request_id TEXT PRIMARY KEY NOT NULL,
  call_type TEXT NOT NULL,
  api_key_hash TEXT NOT NULL,
  spend_nano INTEGER NOT NULL,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  total_tokens INTEGER NOT NULL,
  start_time INTEGER NOT NULL,
  end_time INTEGER NOT NULL,
  model TEXT NOT NULL,
  provider TEXT,
  user_id TEXT,
  team_id TEXT,
  end_user TEXT,
  tags TEXT NOT NULL,
  status TEXT NOT NULL,
  estimated INTEGER NOT NULL,
  http_status INTEGER NOT NULL,
  metadata TEXT NOT NULL
) STRICT;
CREATE INDEX spend_logs_start_time_idx ON spend_logs (start_time);
CREATE INDEX spend_logs_api_key_hash_start_time_idx ON spend_logs (api_key_hash, start_time);
CREATE INDEX spend_logs_user_id_start_time_idx ON spend_logs (user_id, start_time);
CREATE INDEX spend_logs_team_id_start_time_idx ON spend_logs (team_id, start_time);

CREATE TABLE daily_tag_spend (
  day TEXT NOT NULL,
  tag TEXT NOT NULL,
  requests INTEGER NOT NULL,
  spend_nano INTEGER NOT NULL,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  PRIMARY KEY (day, tag)
) STRICT, WITHOUT ROWID;

CREATE TABLE daily_spend (
  day TEXT NOT NULL,
  team_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  api_key_hash TEXT NOT NULL,
  model TEXT NOT NULL,
  requests INTEGER NOT NULL,
  spend_nano INTEGER NOT NULL,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  PRIMARY KEY (day, team_id, user_id, api_key_hash, model)
) STRICT, WITHOUT ROWID;
`,
  },
  {
    version: 2,
    name: 'reservation-attribution',
    // Who a reservation was for, so that one charged after its TTL gets a proper spend log. No
    // expires_at index: only calls in flight are here, the sweep's scan is cheap, an index is not
    // (two more pages written per request).
    sql: `
ALTER TABLE reservations ADD COLUMN pending TEXT;
`,
  },
  {
    version: 3,
    name: 'key-changes',
    // Every key change, in order, so that other processes sharing the file drop it from their key
    // cache (they poll the sequence). Old rows are pruned.
    sql: `
CREATE TABLE key_changes (
  seq INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
  token_hash TEXT NOT NULL,
  changed_at INTEGER NOT NULL
) STRICT;
`,
  },
  {
    version: 4,
    name: 'spend-reports-and-alerts',
    // 1. Both daily rollups get every dimension a report groups by: provider, end user and failed
    //    requests on daily_spend; team, user, key, model, provider and end user on daily_tag_spend
    //    (which had only day and tag). SQLite cannot change a primary key, so each table is rebuilt:
    //    rows are re-derived from the spend logs, and whatever the logs no longer hold is kept as a
    //    remainder row with the new dimensions '' (unknown), so that every old total stays exact.
    // 2. soft_budget on the budget counters, and the claims that make each alert go out once.
    sql: `
CREATE TABLE daily_spend_next (
  day TEXT NOT NULL,
  team_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  api_key_hash TEXT NOT NULL,
  model TEXT NOT NULL,
  provider TEXT NOT NULL,
  end_user TEXT NOT NULL,
  requests INTEGER NOT NULL,
  failed_requests INTEGER NOT NULL,
  spend_nano INTEGER NOT NULL,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  PRIMARY KEY (day, team_id, user_id, api_key_hash, model, provider, end_user)
) STRICT, WITHOUT ROWID;

INSERT INTO daily_spend_next
SELECT strftime('%Y-%m-%d', l.start_time / 1000, 'unixepoch'), coalesce(l.team_id, ''), coalesce(l.user_id, ''),
  l.api_key_hash, l.model, coalesce(l.provider, ''), coalesce(l.end_user, ''),
  count(*), sum(l.status = 'failure'), sum(l.spend_nano), sum(l.prompt_tokens), sum(l.completion_tokens)
FROM spend_logs l
GROUP BY 1, 2, 3, 4, 5, 6, 7;

INSERT INTO daily_spend_next
SELECT d.day, d.team_id, d.user_id, d.api_key_hash, d.model, '', '',
  d.requests - coalesce(n.requests, 0), 0, d.spend_nano - coalesce(n.spend_nano, 0),
  d.prompt_tokens - coalesce(n.prompt_tokens, 0), d.completion_tokens - coalesce(n.completion_tokens, 0)
FROM daily_spend d
LEFT JOIN (
  SELECT day, team_id, user_id, api_key_hash, model, sum(requests) AS requests, sum(spend_nano) AS spend_nano,
    sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens
  FROM daily_spend_next GROUP BY 1, 2, 3, 4, 5
) n USING (day, team_id, user_id, api_key_hash, model)
WHERE d.requests <> coalesce(n.requests, 0) OR d.spend_nano <> coalesce(n.spend_nano, 0)
  OR d.prompt_tokens <> coalesce(n.prompt_tokens, 0) OR d.completion_tokens <> coalesce(n.completion_tokens, 0)
ON CONFLICT DO UPDATE SET
  requests = requests + excluded.requests, spend_nano = spend_nano + excluded.spend_nano,
  prompt_tokens = prompt_tokens + excluded.prompt_tokens,
  completion_tokens = completion_tokens + excluded.completion_tokens;

DROP TABLE daily_spend;
ALTER TABLE daily_spend_next RENAME TO daily_spend;

CREATE TABLE daily_tag_spend_next (
  day TEXT NOT NULL,
  tag TEXT NOT NULL,
  team_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  api_key_hash TEXT NOT NULL,
  model TEXT NOT NULL,
  provider TEXT NOT NULL,
  end_user TEXT NOT NULL,
  requests INTEGER NOT NULL,
  failed_requests INTEGER NOT NULL,
  spend_nano INTEGER NOT NULL,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  PRIMARY KEY (day, tag, team_id, user_id, api_key_hash, model, provider, end_user)
) STRICT, WITHOUT ROWID;

INSERT INTO daily_tag_spend_next
SELECT strftime('%Y-%m-%d', l.start_time / 1000, 'unixepoch'), t.value, coalesce(l.team_id, ''),
  coalesce(l.user_id, ''), l.api_key_hash, l.model, coalesce(l.provider, ''), coalesce(l.end_user, ''),
  count(*), sum(l.status = 'failure'), sum(l.spend_nano), sum(l.prompt_tokens), sum(l.completion_tokens)
FROM spend_logs l, json_each(l.tags) t
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8;

INSERT INTO daily_tag_spend_next
SELECT d.day, d.tag, '', '', '', '', '', '',
  d.requests - coalesce(n.requests, 0), 0, d.spend_nano - coalesce(n.spend_nano, 0),
  d.prompt_tokens - coalesce(n.prompt_tokens, 0), d.completion_tokens - coalesce(n.completion_tokens, 0)
FROM daily_tag_spend d
LEFT JOIN (
  SELECT day, tag, sum(requests) AS requests, sum(spend_nano) AS spend_nano,
    sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens
  FROM daily_tag_spend_next GROUP BY 1, 2
) n USING (day, tag)
WHERE d.requests <> coalesce(n.requests, 0) OR d.spend_nano <> coalesce(n.spend_nano, 0)
  OR d.prompt_tokens <> coalesce(n.prompt_tokens, 0) OR d.completion_tokens <> coalesce(n.completion_tokens, 0)
ON CONFLICT DO UPDATE SET
  requests = requests + excluded.requests, spend_nano = spend_nano + excluded.spend_nano,
  prompt_tokens = prompt_tokens + excluded.prompt_tokens,
  completion_tokens = completion_tokens + excluded.completion_tokens;

DROP TABLE daily_tag_spend;
ALTER TABLE daily_tag_spend_next RENAME TO daily_tag_spend;

ALTER TABLE budgets ADD COLUMN soft_budget_nano INTEGER;

CREATE TABLE alert_claims (
  scope_kind TEXT NOT NULL,
  scope_id TEXT NOT NULL,
  period TEXT NOT NULL,
  threshold TEXT NOT NULL,
  claimed_at INTEGER NOT NULL,
  expires_at INTEGER,
  PRIMARY KEY (scope_kind, scope_id, period, threshold)
) STRICT, WITHOUT ROWID;
`,
  },
  {
    version: 5,
    name: 'customers-and-tags',
    // End users and tags with budgets of their own (/customer/new, /tag/new). Their counters, like
    // those of the member, model and global scopes, live in budgets as every other scope's do.
    sql: `
CREATE TABLE customers (
  end_user_id TEXT PRIMARY KEY NOT NULL,
  alias TEXT,
  blocked INTEGER NOT NULL,
  metadata TEXT NOT NULL,
  created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE tags (
  name TEXT PRIMARY KEY NOT NULL,
  description TEXT,
  metadata TEXT NOT NULL,
  created_at INTEGER NOT NULL
) STRICT;
`,
  },
  {
    version: 6,
    name: 'key-secrets-and-team-members',
    // 1. Regenerated keys: the key record (and its budget counter) keeps its id; its current secret
    //    (valid_until NULL) and replaced secrets in their grace period live here. A key without rows
    //    here opens with its own token_hash.
    // 2. Team memberships with a role; each has a budget counter of kind 'member' (max_budget_in_team).
    //    Users already in teams become members with role 'user' and an uncapped counter.
    sql: `
CREATE TABLE key_secrets (
  secret_hash TEXT PRIMARY KEY NOT NULL,
  token_hash TEXT NOT NULL,
  valid_until INTEGER
) STRICT, WITHOUT ROWID;
CREATE INDEX key_secrets_token_hash_idx ON key_secrets (token_hash);

CREATE TABLE team_members (
  team_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  role TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (team_id, user_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX team_members_user_id_idx ON team_members (user_id);

INSERT OR IGNORE INTO team_members (team_id, user_id, role, created_at)
SELECT j.value, u.user_id, 'user', u.created_at FROM users u, json_each(u.teams) j
WHERE EXISTS (SELECT 1 FROM teams t WHERE t.team_id = j.value);

INSERT OR IGNORE INTO budgets (scope_kind, scope_id, spend_nano, reserved_nano)
SELECT 'member', team_id || ':' || user_id, 0, 0 FROM team_members;
`,
  },
  {
    version: 7,
    name: 'rate-limits',
    // Rate limits per scope (any kind), their one-minute windows, and the leases of calls in flight
    // for max_parallel_requests (each with an expiry, so a dead process's slots come back).
    sql: `
CREATE TABLE rate_limits (
  scope_kind TEXT NOT NULL,
  scope_id TEXT NOT NULL,
  limits TEXT NOT NULL,
  PRIMARY KEY (scope_kind, scope_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE rate_windows (
  scope_kind TEXT NOT NULL,
  scope_id TEXT NOT NULL,
  metric TEXT NOT NULL,
  model TEXT NOT NULL,
  window_start INTEGER NOT NULL,
  used INTEGER NOT NULL,
  PRIMARY KEY (scope_kind, scope_id, metric, model)
) STRICT, WITHOUT ROWID;

CREATE TABLE rate_leases (
  scope_kind TEXT NOT NULL,
  scope_id TEXT NOT NULL,
  model TEXT NOT NULL,
  lease_id TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  PRIMARY KEY (scope_kind, scope_id, model, lease_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX rate_leases_lease_id_idx ON rate_leases (lease_id);
`,
  },
  {
    version: 9,
    name: 'narrow-rollups',
    // Narrow rollups for the dashboard: day x team x model x provider (and the same per tag), and
    // day x team x user x key. Over a busy 90 days the full rollups hold ~10x more rows, because keys,
    // users and end users multiply the groups; a report that needs none of those reads a narrow table
    // (rollupTableFor in core). Triggers keep each one the exact sum of its full rollup on every
    // write (settle, TTL expiry, bulk loads): an update adds its difference, one upsert per narrow row.
    sql: `
CREATE TABLE daily_team_spend (
  day TEXT NOT NULL,
  team_id TEXT NOT NULL,
  model TEXT NOT NULL,
  provider TEXT NOT NULL,
  requests INTEGER NOT NULL,
  failed_requests INTEGER NOT NULL,
  spend_nano INTEGER NOT NULL,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  PRIMARY KEY (day, team_id, model, provider)
) STRICT, WITHOUT ROWID;
INSERT INTO daily_team_spend (day, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
SELECT day, team_id, model, provider, sum(requests), sum(failed_requests), sum(spend_nano), sum(prompt_tokens), sum(completion_tokens)
FROM daily_spend GROUP BY day, team_id, model, provider;
CREATE TABLE daily_team_tag_spend (
  day TEXT NOT NULL,
  tag TEXT NOT NULL,
  team_id TEXT NOT NULL,
  model TEXT NOT NULL,
  provider TEXT NOT NULL,
  requests INTEGER NOT NULL,
  failed_requests INTEGER NOT NULL,
  spend_nano INTEGER NOT NULL,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  PRIMARY KEY (day, tag, team_id, model, provider)
) STRICT, WITHOUT ROWID;
INSERT INTO daily_team_tag_spend (day, tag, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
SELECT day, tag, team_id, model, provider, sum(requests), sum(failed_requests), sum(spend_nano), sum(prompt_tokens), sum(completion_tokens)
FROM daily_tag_spend GROUP BY day, tag, team_id, model, provider;
CREATE TABLE daily_key_spend (
  day TEXT NOT NULL,
  team_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  api_key_hash TEXT NOT NULL,
  requests INTEGER NOT NULL,
  failed_requests INTEGER NOT NULL,
  spend_nano INTEGER NOT NULL,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  PRIMARY KEY (day, team_id, user_id, api_key_hash)
) STRICT, WITHOUT ROWID;
INSERT INTO daily_key_spend (day, team_id, user_id, api_key_hash, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
SELECT day, team_id, user_id, api_key_hash, sum(requests), sum(failed_requests), sum(spend_nano), sum(prompt_tokens), sum(completion_tokens)
FROM daily_spend GROUP BY day, team_id, user_id, api_key_hash;
CREATE TRIGGER daily_spend_team_insert AFTER INSERT ON daily_spend BEGIN
  INSERT INTO daily_team_spend (day, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
  VALUES (NEW.day, NEW.team_id, NEW.model, NEW.provider, NEW.requests, NEW.failed_requests, NEW.spend_nano, NEW.prompt_tokens, NEW.completion_tokens)
  ON CONFLICT DO UPDATE SET requests = requests + excluded.requests, failed_requests = failed_requests + excluded.failed_requests, spend_nano = spend_nano + excluded.spend_nano, prompt_tokens = prompt_tokens + excluded.prompt_tokens, completion_tokens = completion_tokens + excluded.completion_tokens;
END;
CREATE TRIGGER daily_spend_team_update AFTER UPDATE ON daily_spend WHEN NEW.day = OLD.day AND NEW.team_id = OLD.team_id AND NEW.model = OLD.model AND NEW.provider = OLD.provider BEGIN
  INSERT INTO daily_team_spend (day, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
  VALUES (NEW.day, NEW.team_id, NEW.model, NEW.provider, NEW.requests - OLD.requests, NEW.failed_requests - OLD.failed_requests, NEW.spend_nano - OLD.spend_nano, NEW.prompt_tokens - OLD.prompt_tokens, NEW.completion_tokens - OLD.completion_tokens)
  ON CONFLICT DO UPDATE SET requests = requests + excluded.requests, failed_requests = failed_requests + excluded.failed_requests, spend_nano = spend_nano + excluded.spend_nano, prompt_tokens = prompt_tokens + excluded.prompt_tokens, completion_tokens = completion_tokens + excluded.completion_tokens;
END;
CREATE TRIGGER daily_spend_team_rekey AFTER UPDATE ON daily_spend WHEN NOT (NEW.day = OLD.day AND NEW.team_id = OLD.team_id AND NEW.model = OLD.model AND NEW.provider = OLD.provider) BEGIN
  INSERT INTO daily_team_spend (day, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
  VALUES (OLD.day, OLD.team_id, OLD.model, OLD.provider, -OLD.requests, -OLD.failed_requests, -OLD.spend_nano, -OLD.prompt_tokens, -OLD.completion_tokens)
  ON CONFLICT DO UPDATE SET requests = requests + excluded.requests, failed_requests = failed_requests + excluded.failed_requests, spend_nano = spend_nano + excluded.spend_nano, prompt_tokens = prompt_tokens + excluded.prompt_tokens, completion_tokens = completion_tokens + excluded.completion_tokens;
  DELETE FROM daily_team_spend WHERE day = OLD.day AND team_id = OLD.team_id AND model = OLD.model AND provider = OLD.provider AND requests = 0 AND failed_requests = 0 AND spend_nano = 0 AND prompt_tokens = 0 AND completion_tokens = 0;
  INSERT INTO daily_team_spend (day, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
  VALUES (NEW.day, NEW.team_id, NEW.model, NEW.provider, NEW.requests, NEW.failed_requests, NEW.spend_nano, NEW.prompt_tokens, NEW.completion_tokens)
  ON CONFLICT DO UPDATE SET requests = requests + excluded.requests, failed_requests = failed_requests + excluded.failed_requests, spend_nano = spend_nano + excluded.spend_nano, prompt_tokens = prompt_tokens + excluded.prompt_tokens, completion_tokens = completion_tokens + excluded.completion_tokens;
END;
CREATE TRIGGER daily_spend_team_delete AFTER DELETE ON daily_spend BEGIN
  INSERT INTO daily_team_spend (day, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
  VALUES (OLD.day, OLD.team_id, OLD.model, OLD.provider, -OLD.requests, -OLD.failed_requests, -OLD.spend_nano, -OLD.prompt_tokens, -OLD.completion_tokens)
  ON CONFLICT DO UPDATE SET requests = requests + excluded.requests, failed_requests = failed_requests + excluded.failed_requests, spend_nano = spend_nano + excluded.spend_nano, prompt_tokens = prompt_tokens + excluded.prompt_tokens, completion_tokens = completion_tokens + excluded.completion_tokens;
  DELETE FROM daily_team_spend WHERE day = OLD.day AND team_id = OLD.team_id AND model = OLD.model AND provider = OLD.provider AND requests = 0 AND failed_requests = 0 AND spend_nano = 0 AND prompt_tokens = 0 AND completion_tokens = 0;
END;
CREATE TRIGGER daily_spend_key_insert AFTER INSERT ON daily_spend BEGIN
  INSERT INTO daily_key_spend (day, team_id, user_id, api_key_hash, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
  VALUES (NEW.day, NEW.team_id, NEW.user_id, NEW.api_key_hash, NEW.requests, NEW.failed_requests, NEW.spend_nano, NEW.prompt_tokens, NEW.completion_tokens)
  ON CONFLICT DO UPDATE SET requests = requests + excluded.requests, failed_requests = failed_requests + excluded.failed_requests, spend_nano = spend_nano + excluded.spend_nano, prompt_tokens = prompt_tokens + excluded.prompt_tokens, completion_tokens = completion_tokens + excluded.completion_tokens;
END;
CREATE TRIGGER daily_spend_key_update AFTER UPDATE ON daily_spend WHEN NEW.day = OLD.day AND NEW.team_id = OLD.team_id AND NEW.user_id = OLD.user_id AND NEW.api_key_hash = OLD.api_key_hash BEGIN
  INSERT INTO daily_key_spend (day, team_id, user_id, api_key_hash, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
  VALUES (NEW.day, NEW.team_id, NEW.user_id, NEW.api_key_hash, NEW.requests - OLD.requests, NEW.failed_requests - OLD.failed_requests, NEW.spend_nano - OLD.spend_nano, NEW.prompt_tokens - OLD.prompt_tokens, NEW.completion_tokens - OLD.completion_tokens)
  ON CONFLICT DO UPDATE SET requests = requests + excluded.requests, failed_requests = failed_requests + excluded.failed_requests, spend_nano = spend_nano + excluded.spend_nano, prompt_tokens = prompt_tokens + excluded.prompt_tokens, completion_tokens = completion_tokens + excluded.completion_tokens;
END;
CREATE TRIGGER daily_spend_key_rekey AFTER UPDATE ON daily_spend WHEN NOT (NEW.day = OLD.day AND NEW.team_id = OLD.team_id AND NEW.user_id = OLD.user_id AND NEW.api_key_hash = OLD.api_key_hash) BEGIN
  INSERT INTO daily_key_spend (day, team_id, user_id, api_key_hash, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
  VALUES (OLD.day, OLD.team_id, OLD.user_id, OLD.api_key_hash, -OLD.requests, -OLD.failed_requests, -OLD.spend_nano, -OLD.prompt_tokens, -OLD.completion_tokens)
  ON CONFLICT DO UPDATE SET requests = requests + excluded.requests, failed_requests = failed_requests + excluded.failed_requests, spend_nano = spend_nano + excluded.spend_nano, prompt_tokens = prompt_tokens + excluded.prompt_tokens, completion_tokens = completion_tokens + excluded.completion_tokens;
  DELETE FROM daily_key_spend WHERE day = OLD.day AND team_id = OLD.team_id AND user_id = OLD.user_id AND api_key_hash = OLD.api_key_hash AND requests = 0 AND failed_requests = 0 AND spend_nano = 0 AND prompt_tokens = 0 AND completion_tokens = 0;
  INSERT INTO daily_key_spend (day, team_id, user_id, api_key_hash, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
  VALUES (NEW.day, NEW.team_id, NEW.user_id, NEW.api_key_hash, NEW.requests, NEW.failed_requests, NEW.spend_nano, NEW.prompt_tokens, NEW.completion_tokens)
  ON CONFLICT DO UPDATE SET requests = requests + excluded.requests, failed_requests = failed_requests + excluded.failed_requests, spend_nano = spend_nano + excluded.spend_nano, prompt_tokens = prompt_tokens + excluded.prompt_tokens, completion_tokens = completion_tokens + excluded.completion_tokens;
END;
CREATE TRIGGER daily_spend_key_delete AFTER DELETE ON daily_spend BEGIN
  INSERT INTO daily_key_spend (day, team_id, user_id, api_key_hash, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
  VALUES (OLD.day, OLD.team_id, OLD.user_id, OLD.api_key_hash, -OLD.requests, -OLD.failed_requests, -OLD.spend_nano, -OLD.prompt_tokens, -OLD.completion_tokens)
  ON CONFLICT DO UPDATE SET requests = requests + excluded.requests, failed_requests = failed_requests + excluded.failed_requests, spend_nano = spend_nano + excluded.spend_nano, prompt_tokens = prompt_tokens + excluded.prompt_tokens, completion_tokens = completion_tokens + excluded.completion_tokens;
  DELETE FROM daily_key_spend WHERE day = OLD.day AND team_id = OLD.team_id AND user_id = OLD.user_id AND api_key_hash = OLD.api_key_hash AND requests = 0 AND failed_requests = 0 AND spend_nano = 0 AND prompt_tokens = 0 AND completion_tokens = 0;
END;
CREATE TRIGGER daily_tag_spend_team_insert AFTER INSERT ON daily_tag_spend BEGIN
  INSERT INTO daily_team_tag_spend (day, tag, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
  VALUES (NEW.day, NEW.tag, NEW.team_id, NEW.model, NEW.provider, NEW.requests, NEW.failed_requests, NEW.spend_nano, NEW.prompt_tokens, NEW.completion_tokens)
  ON CONFLICT DO UPDATE SET requests = requests + excluded.requests, failed_requests = failed_requests + excluded.failed_requests, spend_nano = spend_nano + excluded.spend_nano, prompt_tokens = prompt_tokens + excluded.prompt_tokens, completion_tokens = completion_tokens + excluded.completion_tokens;
END;
CREATE TRIGGER daily_tag_spend_team_update AFTER UPDATE ON daily_tag_spend WHEN NEW.day = OLD.day AND NEW.tag = OLD.tag AND NEW.team_id = OLD.team_id AND NEW.model = OLD.model AND NEW.provider = OLD.provider BEGIN
  INSERT INTO daily_team_tag_spend (day, tag, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
  VALUES (NEW.day, NEW.tag, NEW.team_id, NEW.model, NEW.provider, NEW.requests - OLD.requests, NEW.failed_requests - OLD.failed_requests, NEW.spend_nano - OLD.spend_nano, NEW.prompt_tokens - OLD.prompt_tokens, NEW.completion_tokens - OLD.completion_tokens)
  ON CONFLICT DO UPDATE SET requests = requests + excluded.requests, failed_requests = failed_requests + excluded.failed_requests, spend_nano = spend_nano + excluded.spend_nano, prompt_tokens = prompt_tokens + excluded.prompt_tokens, completion_tokens = completion_tokens + excluded.completion_tokens;
END;
CREATE TRIGGER daily_tag_spend_team_rekey AFTER UPDATE ON daily_tag_spend WHEN NOT (NEW.day = OLD.day AND NEW.tag = OLD.tag AND NEW.team_id = OLD.team_id AND NEW.model = OLD.model AND NEW.provider = OLD.provider) BEGIN
  INSERT INTO daily_team_tag_spend (day, tag, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
  VALUES (OLD.day, OLD.tag, OLD.team_id, OLD.model, OLD.provider, -OLD.requests, -OLD.failed_requests, -OLD.spend_nano, -OLD.prompt_tokens, -OLD.completion_tokens)
  ON CONFLICT DO UPDATE SET requests = requests + excluded.requests, failed_requests = failed_requests + excluded.failed_requests, spend_nano = spend_nano + excluded.spend_nano, prompt_tokens = prompt_tokens + excluded.prompt_tokens, completion_tokens = completion_tokens + excluded.completion_tokens;
  DELETE FROM daily_team_tag_spend WHERE day = OLD.day AND tag = OLD.tag AND team_id = OLD.team_id AND model = OLD.model AND provider = OLD.provider AND requests = 0 AND failed_requests = 0 AND spend_nano = 0 AND prompt_tokens = 0 AND completion_tokens = 0;
  INSERT INTO daily_team_tag_spend (day, tag, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
  VALUES (NEW.day, NEW.tag, NEW.team_id, NEW.model, NEW.provider, NEW.requests, NEW.failed_requests, NEW.spend_nano, NEW.prompt_tokens, NEW.completion_tokens)
  ON CONFLICT DO UPDATE SET requests = requests + excluded.requests, failed_requests = failed_requests + excluded.failed_requests, spend_nano = spend_nano + excluded.spend_nano, prompt_tokens = prompt_tokens + excluded.prompt_tokens, completion_tokens = completion_tokens + excluded.completion_tokens;
END;
CREATE TRIGGER daily_tag_spend_team_delete AFTER DELETE ON daily_tag_spend BEGIN
  INSERT INTO daily_team_tag_spend (day, tag, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
  VALUES (OLD.day, OLD.tag, OLD.team_id, OLD.model, OLD.provider, -OLD.requests, -OLD.failed_requests, -OLD.spend_nano, -OLD.prompt_tokens, -OLD.completion_tokens)
  ON CONFLICT DO UPDATE SET requests = requests + excluded.requests, failed_requests = failed_requests + excluded.failed_requests, spend_nano = spend_nano + excluded.spend_nano, prompt_tokens = prompt_tokens + excluded.prompt_tokens, completion_tokens = completion_tokens + excluded.completion_tokens;
  DELETE FROM daily_team_tag_spend WHERE day = OLD.day AND tag = OLD.tag AND team_id = OLD.team_id AND model = OLD.model AND provider = OLD.provider AND requests = 0 AND failed_requests = 0 AND spend_nano = 0 AND prompt_tokens = 0 AND completion_tokens = 0;
END;
`,
  },
  {
    version: 10,
    name: 'compact-reservations',
    // A reservation row held its scope list and its call's attribution as JSON, ~600 bytes: past what
    // a 1 KiB page keeps in a WITHOUT ROWID row (~230 bytes), so every reservation allocated and freed
    // an overflow page (and touched the free list and page 1). What a key's calls share (the scope list,
    // the key, user, team, model and call type) is now a profile row, written once and pointed to; the
    // row keeps only what is the call's own. About 10 µs and half the bytes written per guarded call
    // (measured in commit 2737b52). The open reservations are carried over; bodies are built here as the
    // store builds them, and one built differently would only make a second profile of the same content.
    sql: `
CREATE TABLE reservation_profiles (
  id INTEGER PRIMARY KEY NOT NULL,
  body TEXT NOT NULL UNIQUE
) STRICT;
CREATE TEMP TABLE old_reservations AS
  SELECT r.*, json_array(json(r.scopes), CASE WHEN r.pending IS NULL THEN NULL ELSE json_object(
    'callType', json_extract(r.pending, '$.callType'), 'apiKeyHash', json_extract(r.pending, '$.apiKeyHash'),
    'model', json_extract(r.pending, '$.model'), 'userId', json_extract(r.pending, '$.userId'),
    'teamId', json_extract(r.pending, '$.teamId')) END) AS body
  FROM reservations r;
INSERT OR IGNORE INTO reservation_profiles (body) SELECT body FROM old_reservations;
CREATE TABLE reservations_compact (
  id TEXT PRIMARY KEY NOT NULL,
  profile_id INTEGER NOT NULL,
  amount_nano INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  start_time INTEGER,
  request_id TEXT,
  end_user TEXT,
  tags TEXT
) STRICT, WITHOUT ROWID;
INSERT INTO reservations_compact (id, profile_id, amount_nano, expires_at, created_at, start_time, request_id, end_user, tags)
  SELECT o.id, p.id, o.amount_nano, o.expires_at, o.created_at,
    CAST(round((julianday(json_extract(o.pending, '$.startTime')) - 2440587.5) * 86400000) AS INTEGER),
    nullif(json_extract(o.pending, '$.requestId'), o.id),
    json_extract(o.pending, '$.endUser'),
    CASE WHEN json_array_length(o.pending, '$.tags') > 0 THEN json_extract(o.pending, '$.tags') END
  FROM old_reservations o JOIN reservation_profiles p ON p.body = o.body;
DROP TABLE old_reservations;
DROP TABLE reservations;
ALTER TABLE reservations_compact RENAME TO reservations;
`,
  },
  {
    version: 11,
    name: 'process-heartbeats',
    // Each process sharing the file beats here every few seconds; a reservation names its process by
    // this table's integer id (a byte or two per row, not a 36-character id), and the reservations of
    // a process whose beat stopped are charged by the others (settleDeadProcesses). AUTOINCREMENT: an
    // id is never handed out again, so a reservation never names a process it was not made by.
    sql: `
CREATE TABLE processes (
  id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
  name TEXT NOT NULL UNIQUE,
  heartbeat_at INTEGER NOT NULL
) STRICT;
ALTER TABLE reservations ADD COLUMN holder INTEGER;
`,
  },
  {
    version: 12,
    name: 'dashboard-sessions',
    // Dashboard sign-ins, so that logout and expiry hold on every process sharing the file and across
    // restarts. Keyed by the SHA-256 of the cookie's random id: the id itself is never stored.
    sql: `
CREATE TABLE dashboard_sessions (
  id_hash TEXT PRIMARY KEY NOT NULL,
  username TEXT NOT NULL,
  credential_mac TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX dashboard_sessions_expires_at_idx ON dashboard_sessions (expires_at);
`,
  },
  {
    version: 13,
    name: 'budget-tiers',
    // LiteLLM's budget objects (/budget/new): tiers of limits an end user links to by budget_id. The
    // tier holds no spend: each linked end user keeps its own counter in budgets, which every write
    // that links it or changes the tier sets to the tier's limits in the same transaction.
    sql: `
CREATE TABLE budget_tiers (
  budget_id TEXT PRIMARY KEY NOT NULL,
  max_budget_nano INTEGER,
  soft_budget_nano INTEGER,
  budget_duration TEXT,
  rpm_limit INTEGER,
  tpm_limit INTEGER,
  max_parallel_requests INTEGER,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) STRICT;
ALTER TABLE customers ADD COLUMN budget_id TEXT;
CREATE INDEX customers_budget_id_idx ON customers (budget_id);
`,
  },
  {
    version: 14,
    name: 'spend-log-response-ids',
    // The provider's id for its response (chatcmpl-..., resp_..., msg_..., a Gemini responseId), NULL
    // when it gave none: the management API shows it as LiteLLM's request_id and finds a log by either id.
    sql: `
ALTER TABLE spend_logs ADD COLUMN response_id TEXT;
CREATE INDEX spend_logs_response_id_idx ON spend_logs (response_id);
`,
  },
  {
    version: 15,
    name: 'key-budget-tiers',
    // budget_id on keys (LiteLLM's /key/generate budget_id): a key linked to a budget tier, whose
    // counter and rate limits every write that links it or changes the tier sets to the tier's.
    sql: `
ALTER TABLE keys ADD COLUMN budget_id TEXT;
CREATE INDEX keys_budget_id_idx ON keys (budget_id);
`,
  },
];

/**
 * Applies every migration this database has not seen, inside one `BEGIN IMMEDIATE` transaction: a
 * second process opening the same file at the same moment waits on the write lock (busy timeout),
 * then finds the versions already recorded and applies nothing.
 */
export function applyMigrations(
  db: BetterSqlite3.Database,
  migrations: readonly Migration[] = MIGRATIONS,
): number[] {
  const run = db.transaction((): number[] => {
    db.exec(
      'CREATE TABLE IF NOT EXISTS spendguard_migrations (version INTEGER PRIMARY KEY NOT NULL, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT',
    );
    const applied = new Set(
      db
        .prepare('SELECT version FROM spendguard_migrations')
        .pluck()
        .all()
        .map((v) => Number(v)),
    );
    const record = db.prepare(
      'INSERT INTO spendguard_migrations (version, name, applied_at) VALUES (?, ?, ?)',
    );
    const done: number[] = [];
    for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
      if (applied.has(m.version)) continue;
      db.exec(m.sql);
      record.run(m.version, m.name, Date.now());
      done.push(m.version);
    }
    return done;
  });
  return run.immediate();
}
