import { UNSUPPORTED_FIELDS } from './litellm-fields.js';

/**
 * LiteLLM's cost-tracking routes (keys, teams, users, customers, tags, budgets, spend, models,
 * health: `litellm/proxy/_types.py`'s route lists, v1.80 and main) and what spendguard does with
 * each: `differences` for a route it serves, `missing` (why) for one it does not. The compatibility
 * page (docs/litellm-compatibility.md) is rendered from this list and the management API's route
 * table together, and a test fails when they disagree: a route served must be in the table, a route
 * missing must not be.
 */
export interface CompatEntry {
  route: string;
  /** What differs from LiteLLM on a route spendguard serves (absent: nothing known). */
  differences?: string;
  /** Why spendguard does not serve it. */
  missing?: string;
}

const MODELS =
  'spendguard routes no models: it lists the ones the app declares (the `models` option, none by default), each one deployment with its price-table data; other keys see those they may call';

export const LITELLM_COST_ROUTES: readonly CompatEntry[] = [
  {
    route: 'POST /key/generate',
    differences:
      "`budget_id`: the tier's six limits replace the key's (LiteLLM fills only what the key leaves unset, and not `budget_duration`, `max_parallel_requests`), so own limits beside it are refused; master key only",
  },
  { route: 'POST /key/update', differences: '`spend` is set alone (a body with only `key` and `spend`)' },
  { route: 'POST /key/delete', differences: '`key_aliases` not taken; `keys` all deleted or none' },
  { route: 'GET /key/info' },
  {
    route: 'POST /key/regenerate',
    differences: 'also `POST /key/{key}/regenerate`; `spend` and `new_master_key` refused',
  },
  { route: 'POST /key/block' },
  { route: 'POST /key/unblock' },
  { route: 'GET /key/list', differences: 'filters `user_id`, `team_id`, `key_alias`; no `organization_id`' },
  { route: 'GET /key/aliases', differences: 'master key only' },
  { route: 'POST /v2/key/info' },
  { route: 'POST /key/health', differences: 'always healthy: no logging callbacks to check' },
  {
    route: 'POST /key/bulk_update',
    differences:
      'all keys written in one transaction or none: a bad entry is a 4xx naming it (`keys.<i>.<field>`), so `failed_updates` is always empty (LiteLLM applies each on its own); `team_id` moves a key under LiteLLM’s checks, `budget_id` links it as on /key/update, `null` keeps either; a key with a temporary budget increase refuses `max_budget` (use /key/update)',
  },
  {
    route: 'POST /key/{key_id}/reset_spend',
    differences: 'the key in the path is the key or its id; calls in flight keep their reservations',
  },
  {
    route: 'POST /key/service-account/generate',
    differences:
      '`/key/generate` with `team_id` required (400 without it, as LiteLLM); `user_id` refused (LiteLLM ignores it)',
  },
  { route: 'POST /team/new', differences: '`members_with_roles` users are created when new' },
  { route: 'POST /team/update' },
  { route: 'POST /team/delete', differences: 'all teams deleted or none' },
  { route: 'GET /team/info' },
  { route: 'GET /team/list' },
  {
    route: 'GET /v2/team/list',
    differences:
      'a key other than the master key lists its own user’s teams only: another `user_id` is 403, a key with no user 403 (LiteLLM lists every team then); `organization_id` refused; an unknown `sort_by` or `sort_order` is 400 (LiteLLM ignores it)',
  },
  { route: 'POST /team/block' },
  { route: 'POST /team/unblock' },
  { route: 'POST /team/member_add' },
  { route: 'POST /team/member_update' },
  { route: 'POST /team/member_delete' },
  {
    route: 'POST /team/bulk_member_add',
    differences: 'all members join in one write, or none (LiteLLM reports each)',
  },
  {
    route: 'GET /team/available',
    missing:
      'LiteLLM lists the teams of `default_internal_user_params.available_teams`, which a user joins by itself on /team/member_add; spendguard has neither the setting nor self-joining (the master key or a team admin adds members)',
  },
  { route: 'GET /team/daily/activity' },
  { route: 'POST /user/new', differences: 'one `team_id` (no `teams` list); no `user_alias`, `password`' },
  { route: 'POST /user/update', differences: '`spend` is set alone' },
  { route: 'POST /user/delete', differences: 'all users deleted or none' },
  { route: 'GET /user/info' },
  { route: 'GET /user/list' },
  { route: 'POST /user/bulk_update', differences: 'every body is checked before any is applied' },
  { route: 'GET /user/daily/activity' },
  {
    route: 'POST /customer/new',
    differences:
      '`allowed_model_region`, `default_model` refused; `budget_id` with limits of its own refused (LiteLLM: either, not both); numeric strings taken as numbers',
  },
  {
    route: 'POST /customer/update',
    differences:
      '`blocked` left out keeps the flag (LiteLLM sets it to false); limits of its own on an end user linked to a budget refused (change the budget, or send `budget_id: null`)',
  },
  { route: 'POST /customer/delete' },
  { route: 'GET /customer/info' },
  { route: 'GET /customer/list' },
  { route: 'POST /customer/block' },
  { route: 'POST /customer/unblock' },
  { route: 'GET /customer/daily/activity' },
  { route: 'POST /end_user/new', differences: 'as /customer/new' },
  { route: 'POST /end_user/update', differences: 'as /customer/update' },
  { route: 'POST /end_user/delete' },
  { route: 'GET /end_user/info' },
  { route: 'GET /end_user/list' },
  { route: 'POST /end_user/block' },
  { route: 'POST /end_user/unblock' },
  { route: 'POST /tag/new', differences: '`models` refused (tag routing)' },
  { route: 'POST /tag/update' },
  { route: 'POST /tag/delete' },
  { route: 'POST /tag/info' },
  { route: 'GET /tag/list' },
  { route: 'GET /tag/daily/activity', differences: 'a call with two tags counts under each' },
  // Budget objects (budget-routes.ts): tiers of limits end users and keys link to by budget_id.
  {
    route: 'POST /budget/new',
    differences:
      'master key only; `model_max_budget` and `budget_reset_at` refused (resets follow `budget_duration`, calendar-aligned); linked by end users (`/customer/*`) and keys (`/key/generate|update`), as in LiteLLM',
  },
  {
    route: 'POST /budget/update',
    differences:
      'master key only; reaches every linked end user and key in the same transaction; unknown `budget_id`: 404',
  },
  {
    route: 'POST /budget/delete',
    differences:
      'master key only; refused (400) while an end user or a key is linked (LiteLLM leaves them with no budget)',
  },
  { route: 'POST /budget/info', differences: 'master key only' },
  { route: 'GET /budget/list' },
  { route: 'GET /budget/settings', differences: 'the six fields acted on (no `model_max_budget`)' },
  {
    route: 'GET /spend/logs',
    differences:
      '`start_date`/`end_date` also take ISO times (then the logs); `call_id` added (the `x-litellm-call-id`), and `request_id=` finds a log by either id',
  },
  {
    route: 'GET /spend/logs/v2',
    differences:
      '`start_date`/`end_date` also take days and ISO times; `status_filter` is `success` or `failure`; at most 100,000 logs in the range (else 400: narrow it)',
  },
  { route: 'GET /spend/tags' },
  { route: 'GET /spend/keys' },
  { route: 'GET /spend/users' },
  {
    route: 'POST /spend/calculate',
    differences:
      'prices with the price table only (no router deployments); `model` + `messages` counts the prompt',
  },
  { route: 'GET /global/spend', differences: 'the last 30 UTC days, from the daily rollups' },
  { route: 'GET /global/spend/logs', differences: 'the last 30 UTC days, one row per day with spend' },
  { route: 'GET /global/spend/keys' },
  { route: 'GET /global/spend/teams' },
  { route: 'GET /global/spend/models' },
  { route: 'GET /global/spend/tags' },
  { route: 'POST /global/spend/end_users', differences: 'times count by their UTC day' },
  { route: 'GET /global/spend/provider' },
  {
    route: 'POST /global/spend/reset',
    differences: 'each counter reset in its own write; calling again finishes a failed run',
  },
  { route: 'GET /global/spend/report' },
  { route: 'GET /global/spend/all_tag_names' },
  {
    route: 'GET /global/activity',
    differences: 'master key only (LiteLLM also shows an internal user its own)',
  },
  { route: 'GET /global/activity/model', differences: 'master key only (as /global/activity)' },
  {
    route: 'GET /global/activity/cache_hits',
    differences:
      'master key only; no response cache runs here, so `cache_hit_true_rows` and `cached_completion_tokens` are 0; from the daily rollups, so `call_type` is null; `failed_rows` as LiteLLM main',
  },
  { route: 'GET /model/info', differences: MODELS },
  { route: 'GET /v1/model/info', differences: MODELS },
  {
    route: 'GET /model_group/info',
    differences: `${MODELS}; no capability flags (\`supports_*\`): the price snapshot keeps prices and limits only`,
  },
  {
    route: 'GET /v1/models',
    differences: `${MODELS}; answered only with the \`serveModelList\` option (else the app's own /v1/models answers); no query parameters`,
  },
  { route: 'GET /models', differences: 'as /v1/models' },
  { route: 'GET /health/liveliness', differences: 'open, as in LiteLLM' },
  { route: 'GET /health/liveness', differences: 'open, as in LiteLLM' },
  { route: 'GET /health/readiness', differences: 'open; 503 when storage does not answer' },
  {
    route: 'GET /health',
    missing:
      'LiteLLM sends a test call to every model it routes; spendguard routes none and never calls a provider itself (the app does), so it has no model health to report, and a /health under guard.admin would hide the app’s own; the guard’s storage answers /health/readiness',
  },
];

/** spendguard's own routes, beside LiteLLM's. */
export const SPENDGUARD_ONLY_ROUTES: Readonly<Record<string, string>> = {
  'POST /budget/reset': "a scope's spend back to 0 (or `reset_to`), for any scope kind",
  'GET /spend/logs/export':
    'every spend log of a date range as JSON Lines or CSV (`format`), streamed; docs/observability.md',
};

/** The compatibility page's route table: one row per LiteLLM route, then spendguard's own. */
export function compatTable(served: readonly string[]): string {
  const rows = LITELLM_COST_ROUTES.map((e) => {
    const here = served.includes(e.route) ? 'served' : 'missing';
    const note = e.missing ?? e.differences ?? '';
    return `| \`${e.route}\` | ${here} | ${note} |`;
  });
  const own = Object.entries(SPENDGUARD_ONLY_ROUTES).map(
    ([route, what]) => `| \`${route}\` | spendguard only | ${what} |`,
  );
  return ['| Route | Here | Differences |', '| --- | --- | --- |', ...rows, ...own].join('\n');
}

/** The request fields of LiteLLM's models that spendguard refuses, for the page. */
export function refusedFieldsTable(): string {
  return [
    '| Field | Refused where the route does not act on it (its do-nothing default passes), because |',
    '| --- | --- |',
    ...Object.entries(UNSUPPORTED_FIELDS)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([field, { why }]) => `| \`${field}\` | ${why} |`),
  ].join('\n');
}
