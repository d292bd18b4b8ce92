-- spendguard schema, version 10: dashboard sessions. A released migration is never edited: change the
-- schema by adding a file with the next number.
--
-- dashboard_sessions: one row per dashboard sign-in, so that logout and expiry hold on every instance
--   sharing the database and across restarts. Keyed by the SHA-256 (hex) of the cookie's random id:
--   the id itself is never stored. credential_mac binds the session to the credentials it was opened
--   with (an HMAC keyed by the id, worthless without the cookie). Expired rows are deleted by later
--   sign-ins.

CREATE TABLE @schema@.dashboard_sessions (
  id_hash text PRIMARY KEY,
  username text NOT NULL,
  credential_mac text NOT NULL,
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL
);
CREATE INDEX dashboard_sessions_expires_at_idx ON @schema@.dashboard_sessions (expires_at);
