-- spendguard schema, version 7: narrow rollups for the dashboard. A released migration is never
-- edited: change the schema by adding a file with the next number.
--
-- daily_team_spend (day x team x model x provider), daily_team_tag_spend (the same per tag) and
-- daily_key_spend (day x team x user x key). Over a busy 90 days the full rollups hold ~10x more rows,
-- because keys, users and end users multiply the groups; a report that needs none of those reads a
-- narrow table (rollupTableFor in core). Row triggers keep each one the exact sum of its full rollup
-- on every write (settle, TTL expiry, bulk loads): an update adds its difference, one upsert per
-- narrow row. A settle upserts its narrow rows after its full ones and its tags in tag order, so two
-- settles still take their row locks in one order.

CREATE TABLE @schema@.daily_team_spend (
  day date NOT NULL,
  team_id text NOT NULL,
  model text NOT NULL,
  provider text NOT NULL,
  requests bigint NOT NULL,
  failed_requests bigint NOT NULL,
  spend_nano bigint NOT NULL,
  prompt_tokens bigint NOT NULL,
  completion_tokens bigint NOT NULL,
  PRIMARY KEY (day, team_id, model, provider)
);
INSERT INTO @schema@.daily_team_spend (day, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
SELECT day, team_id, model, provider, sum(requests), sum(failed_requests), sum(spend_nano), sum(prompt_tokens), sum(completion_tokens)
FROM @schema@.daily_spend GROUP BY day, team_id, model, provider;

CREATE TABLE @schema@.daily_team_tag_spend (
  day date NOT NULL,
  tag text NOT NULL,
  team_id text NOT NULL,
  model text NOT NULL,
  provider text NOT NULL,
  requests bigint NOT NULL,
  failed_requests bigint NOT NULL,
  spend_nano bigint NOT NULL,
  prompt_tokens bigint NOT NULL,
  completion_tokens bigint NOT NULL,
  PRIMARY KEY (day, tag, team_id, model, provider)
);
INSERT INTO @schema@.daily_team_tag_spend (day, tag, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
SELECT day, tag, team_id, model, provider, sum(requests), sum(failed_requests), sum(spend_nano), sum(prompt_tokens), sum(completion_tokens)
FROM @schema@.daily_tag_spend GROUP BY day, tag, team_id, model, provider;

CREATE TABLE @schema@.daily_key_spend (
  day date NOT NULL,
  team_id text NOT NULL,
  user_id text NOT NULL,
  api_key_hash text NOT NULL,
  requests bigint NOT NULL,
  failed_requests bigint NOT NULL,
  spend_nano bigint NOT NULL,
  prompt_tokens bigint NOT NULL,
  completion_tokens bigint NOT NULL,
  PRIMARY KEY (day, team_id, user_id, api_key_hash)
);
INSERT INTO @schema@.daily_key_spend (day, team_id, user_id, api_key_hash, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
SELECT day, team_id, user_id, api_key_hash, sum(requests), sum(failed_requests), sum(spend_nano), sum(prompt_tokens), sum(completion_tokens)
FROM @schema@.daily_spend GROUP BY day, team_id, user_id, api_key_hash;

CREATE FUNCTION @schema@.spendguard_daily_spend_narrow() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO @schema@.daily_team_spend AS d (day, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
    VALUES (NEW.day, NEW.team_id, NEW.model, NEW.provider, NEW.requests, NEW.failed_requests, NEW.spend_nano, NEW.prompt_tokens, NEW.completion_tokens)
    ON CONFLICT (day, team_id, model, provider) DO UPDATE SET requests = d.requests + excluded.requests, failed_requests = d.failed_requests + excluded.failed_requests, spend_nano = d.spend_nano + excluded.spend_nano, prompt_tokens = d.prompt_tokens + excluded.prompt_tokens, completion_tokens = d.completion_tokens + excluded.completion_tokens;
    INSERT INTO @schema@.daily_key_spend AS d (day, team_id, user_id, api_key_hash, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
    VALUES (NEW.day, NEW.team_id, NEW.user_id, NEW.api_key_hash, NEW.requests, NEW.failed_requests, NEW.spend_nano, NEW.prompt_tokens, NEW.completion_tokens)
    ON CONFLICT (day, team_id, user_id, api_key_hash) DO UPDATE SET requests = d.requests + excluded.requests, failed_requests = d.failed_requests + excluded.failed_requests, spend_nano = d.spend_nano + excluded.spend_nano, prompt_tokens = d.prompt_tokens + excluded.prompt_tokens, completion_tokens = d.completion_tokens + excluded.completion_tokens;
  ELSIF TG_OP = 'UPDATE' THEN
    IF NEW.day = OLD.day AND NEW.team_id = OLD.team_id AND NEW.model = OLD.model AND NEW.provider = OLD.provider THEN
      INSERT INTO @schema@.daily_team_spend AS d (day, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
      VALUES (NEW.day, NEW.team_id, NEW.model, NEW.provider, NEW.requests - OLD.requests, NEW.failed_requests - OLD.failed_requests, NEW.spend_nano - OLD.spend_nano, NEW.prompt_tokens - OLD.prompt_tokens, NEW.completion_tokens - OLD.completion_tokens)
      ON CONFLICT (day, team_id, model, provider) DO UPDATE SET requests = d.requests + excluded.requests, failed_requests = d.failed_requests + excluded.failed_requests, spend_nano = d.spend_nano + excluded.spend_nano, prompt_tokens = d.prompt_tokens + excluded.prompt_tokens, completion_tokens = d.completion_tokens + excluded.completion_tokens;
    ELSE
      INSERT INTO @schema@.daily_team_spend AS d (day, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
      VALUES (OLD.day, OLD.team_id, OLD.model, OLD.provider, -OLD.requests, -OLD.failed_requests, -OLD.spend_nano, -OLD.prompt_tokens, -OLD.completion_tokens)
      ON CONFLICT (day, team_id, model, provider) DO UPDATE SET requests = d.requests + excluded.requests, failed_requests = d.failed_requests + excluded.failed_requests, spend_nano = d.spend_nano + excluded.spend_nano, prompt_tokens = d.prompt_tokens + excluded.prompt_tokens, completion_tokens = d.completion_tokens + excluded.completion_tokens;
      INSERT INTO @schema@.daily_team_spend AS d (day, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
      VALUES (NEW.day, NEW.team_id, NEW.model, NEW.provider, NEW.requests, NEW.failed_requests, NEW.spend_nano, NEW.prompt_tokens, NEW.completion_tokens)
      ON CONFLICT (day, team_id, model, provider) DO UPDATE SET requests = d.requests + excluded.requests, failed_requests = d.failed_requests + excluded.failed_requests, spend_nano = d.spend_nano + excluded.spend_nano, prompt_tokens = d.prompt_tokens + excluded.prompt_tokens, completion_tokens = d.completion_tokens + excluded.completion_tokens;
    END IF;
    IF NEW.day = OLD.day AND NEW.team_id = OLD.team_id AND NEW.user_id = OLD.user_id AND NEW.api_key_hash = OLD.api_key_hash THEN
      INSERT INTO @schema@.daily_key_spend AS d (day, team_id, user_id, api_key_hash, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
      VALUES (NEW.day, NEW.team_id, NEW.user_id, NEW.api_key_hash, NEW.requests - OLD.requests, NEW.failed_requests - OLD.failed_requests, NEW.spend_nano - OLD.spend_nano, NEW.prompt_tokens - OLD.prompt_tokens, NEW.completion_tokens - OLD.completion_tokens)
      ON CONFLICT (day, team_id, user_id, api_key_hash) DO UPDATE SET requests = d.requests + excluded.requests, failed_requests = d.failed_requests + excluded.failed_requests, spend_nano = d.spend_nano + excluded.spend_nano, prompt_tokens = d.prompt_tokens + excluded.prompt_tokens, completion_tokens = d.completion_tokens + excluded.completion_tokens;
    ELSE
      INSERT INTO @schema@.daily_key_spend AS d (day, team_id, user_id, api_key_hash, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
      VALUES (OLD.day, OLD.team_id, OLD.user_id, OLD.api_key_hash, -OLD.requests, -OLD.failed_requests, -OLD.spend_nano, -OLD.prompt_tokens, -OLD.completion_tokens)
      ON CONFLICT (day, team_id, user_id, api_key_hash) DO UPDATE SET requests = d.requests + excluded.requests, failed_requests = d.failed_requests + excluded.failed_requests, spend_nano = d.spend_nano + excluded.spend_nano, prompt_tokens = d.prompt_tokens + excluded.prompt_tokens, completion_tokens = d.completion_tokens + excluded.completion_tokens;
      INSERT INTO @schema@.daily_key_spend AS d (day, team_id, user_id, api_key_hash, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
      VALUES (NEW.day, NEW.team_id, NEW.user_id, NEW.api_key_hash, NEW.requests, NEW.failed_requests, NEW.spend_nano, NEW.prompt_tokens, NEW.completion_tokens)
      ON CONFLICT (day, team_id, user_id, api_key_hash) DO UPDATE SET requests = d.requests + excluded.requests, failed_requests = d.failed_requests + excluded.failed_requests, spend_nano = d.spend_nano + excluded.spend_nano, prompt_tokens = d.prompt_tokens + excluded.prompt_tokens, completion_tokens = d.completion_tokens + excluded.completion_tokens;
    END IF;
  ELSE
    INSERT INTO @schema@.daily_team_spend AS d (day, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
    VALUES (OLD.day, OLD.team_id, OLD.model, OLD.provider, -OLD.requests, -OLD.failed_requests, -OLD.spend_nano, -OLD.prompt_tokens, -OLD.completion_tokens)
    ON CONFLICT (day, team_id, model, provider) DO UPDATE SET requests = d.requests + excluded.requests, failed_requests = d.failed_requests + excluded.failed_requests, spend_nano = d.spend_nano + excluded.spend_nano, prompt_tokens = d.prompt_tokens + excluded.prompt_tokens, completion_tokens = d.completion_tokens + excluded.completion_tokens;
    INSERT INTO @schema@.daily_key_spend AS d (day, team_id, user_id, api_key_hash, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
    VALUES (OLD.day, OLD.team_id, OLD.user_id, OLD.api_key_hash, -OLD.requests, -OLD.failed_requests, -OLD.spend_nano, -OLD.prompt_tokens, -OLD.completion_tokens)
    ON CONFLICT (day, team_id, user_id, api_key_hash) DO UPDATE SET requests = d.requests + excluded.requests, failed_requests = d.failed_requests + excluded.failed_requests, spend_nano = d.spend_nano + excluded.spend_nano, prompt_tokens = d.prompt_tokens + excluded.prompt_tokens, completion_tokens = d.completion_tokens + excluded.completion_tokens;
  END IF;
  RETURN NULL;
END;
$$;

CREATE FUNCTION @schema@.spendguard_daily_tag_spend_narrow() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO @schema@.daily_team_tag_spend AS d (day, tag, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
    VALUES (NEW.day, NEW.tag, NEW.team_id, NEW.model, NEW.provider, NEW.requests, NEW.failed_requests, NEW.spend_nano, NEW.prompt_tokens, NEW.completion_tokens)
    ON CONFLICT (day, tag, team_id, model, provider) DO UPDATE SET requests = d.requests + excluded.requests, failed_requests = d.failed_requests + excluded.failed_requests, spend_nano = d.spend_nano + excluded.spend_nano, prompt_tokens = d.prompt_tokens + excluded.prompt_tokens, completion_tokens = d.completion_tokens + excluded.completion_tokens;
  ELSIF TG_OP = 'UPDATE' THEN
    IF NEW.day = OLD.day AND NEW.tag = OLD.tag AND NEW.team_id = OLD.team_id AND NEW.model = OLD.model AND NEW.provider = OLD.provider THEN
      INSERT INTO @schema@.daily_team_tag_spend AS d (day, tag, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
      VALUES (NEW.day, NEW.tag, NEW.team_id, NEW.model, NEW.provider, NEW.requests - OLD.requests, NEW.failed_requests - OLD.failed_requests, NEW.spend_nano - OLD.spend_nano, NEW.prompt_tokens - OLD.prompt_tokens, NEW.completion_tokens - OLD.completion_tokens)
      ON CONFLICT (day, tag, team_id, model, provider) DO UPDATE SET requests = d.requests + excluded.requests, failed_requests = d.failed_requests + excluded.failed_requests, spend_nano = d.spend_nano + excluded.spend_nano, prompt_tokens = d.prompt_tokens + excluded.prompt_tokens, completion_tokens = d.completion_tokens + excluded.completion_tokens;
    ELSE
      INSERT INTO @schema@.daily_team_tag_spend AS d (day, tag, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
      VALUES (OLD.day, OLD.tag, OLD.team_id, OLD.model, OLD.provider, -OLD.requests, -OLD.failed_requests, -OLD.spend_nano, -OLD.prompt_tokens, -OLD.completion_tokens)
      ON CONFLICT (day, tag, team_id, model, provider) DO UPDATE SET requests = d.requests + excluded.requests, failed_requests = d.failed_requests + excluded.failed_requests, spend_nano = d.spend_nano + excluded.spend_nano, prompt_tokens = d.prompt_tokens + excluded.prompt_tokens, completion_tokens = d.completion_tokens + excluded.completion_tokens;
      INSERT INTO @schema@.daily_team_tag_spend AS d (day, tag, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
      VALUES (NEW.day, NEW.tag, NEW.team_id, NEW.model, NEW.provider, NEW.requests, NEW.failed_requests, NEW.spend_nano, NEW.prompt_tokens, NEW.completion_tokens)
      ON CONFLICT (day, tag, team_id, model, provider) DO UPDATE SET requests = d.requests + excluded.requests, failed_requests = d.failed_requests + excluded.failed_requests, spend_nano = d.spend_nano + excluded.spend_nano, prompt_tokens = d.prompt_tokens + excluded.prompt_tokens, completion_tokens = d.completion_tokens + excluded.completion_tokens;
    END IF;
  ELSE
    INSERT INTO @schema@.daily_team_tag_spend AS d (day, tag, team_id, model, provider, requests, failed_requests, spend_nano, prompt_tokens, completion_tokens)
    VALUES (OLD.day, OLD.tag, OLD.team_id, OLD.model, OLD.provider, -OLD.requests, -OLD.failed_requests, -OLD.spend_nano, -OLD.prompt_tokens, -OLD.completion_tokens)
    ON CONFLICT (day, tag, team_id, model, provider) DO UPDATE SET requests = d.requests + excluded.requests, failed_requests = d.failed_requests + excluded.failed_requests, spend_nano = d.spend_nano + excluded.spend_nano, prompt_tokens = d.prompt_tokens + excluded.prompt_tokens, completion_tokens = d.completion_tokens + excluded.completion_tokens;
  END IF;
  RETURN NULL;
END;
$$;

CREATE TRIGGER daily_spend_narrow AFTER INSERT OR UPDATE OR DELETE ON @schema@.daily_spend
FOR EACH ROW EXECUTE FUNCTION @schema@.spendguard_daily_spend_narrow();

CREATE TRIGGER daily_tag_spend_narrow AFTER INSERT OR UPDATE OR DELETE ON @schema@.daily_tag_spend
FOR EACH ROW EXECUTE FUNCTION @schema@.spendguard_daily_tag_spend_narrow();
