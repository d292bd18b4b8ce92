import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADAPTERS, startTestApp, type TestApp } from './harness.js';

/**
 * LiteLLM's documented snippets for cost tracking, customers, budgets, team member budgets, rate
 * limits, tags and spend reports, recorded as requests (method, path, body as the docs send it,
 * master key `sk-1234`) with the status and fields expected, and run in order against every adapter.
 *
 * Changes from the docs' text, and only these: comments (`# 👈 ...`) and trailing commas, which make
 * the docs' bodies invalid JSON, are dropped; LLM calls go to `/v1/chat/completions` (where the test
 * app mounts its guarded route); ids the docs assume exist (teams `core-infra` and `e8d1460f-...`)
 * are created first, marked `setup`. Where spendguard differs from LiteLLM, `differs` says how
 * (docs/litellm-compatibility.md).
 */

const MASTER = 'sk-1234';
const DOC_TEAM = 'e8d1460f-846c-45d7-9b43-55f3cc52ac32';

interface Snippet {
  doc: string;
  method: 'GET' | 'POST';
  path: string;
  /** Default: the master key; a function reads a key made by an earlier snippet. */
  auth?: string | ((s: State) => string);
  body?: unknown;
  /** A body sent as the docs print it, when that is not JSON. */
  raw?: string;
  status: number;
  /** Fields the answer must have (toMatchObject). */
  fields?: unknown;
  check?: (body: any, headers: Headers, s: State) => void;
  differs?: string;
  /** Keeps something from the answer for later snippets. */
  keep?: (body: any, s: State) => void;
}

interface State {
  keys: Record<string, string>;
}

const chat = (model: string, extra: Record<string, unknown> = {}) => ({
  model,
  messages: [{ role: 'user', content: 'what llm are you' }],
  ...extra,
});

const SNIPPETS: Snippet[] = [
  // docs/proxy/cost_tracking.md
  {
    doc: 'cost_tracking.md: Step 2, a call with user and metadata.tags',
    method: 'POST',
    path: '/v1/chat/completions',
    body: chat('llama3', {
      user: 'palantir',
      metadata: { tags: ['jobID:214590dsff09fds', 'taskName:run_page_classification'] },
    }),
    status: 200,
    check: (_b, h) => expect(Number(h.get('x-litellm-response-cost'))).toBeGreaterThan(0),
  },
  {
    doc: 'cost_tracking.md: Step 3, the spend log row',
    method: 'GET',
    path: '/spend/logs',
    status: 200,
    check: (logs) =>
      expect(logs[0]).toMatchObject({
        request_tags: ['jobID:214590dsff09fds', 'taskName:run_page_classification'],
        end_user: 'palantir',
        model_group: 'llama3',
        spend: expect.any(Number),
        total_tokens: expect.any(Number),
        completion_tokens: expect.any(Number),
        prompt_tokens: expect.any(Number),
      }),
  },
  {
    doc: 'cost_tracking.md: a key with permissions get_spend_routes',
    method: 'POST',
    path: '/key/generate',
    body: { permissions: { get_spend_routes: true } },
    status: 400,
    fields: { error: { param: 'permissions', type: 'invalid_request_error' } },
    differs: 'refused: spendguard keys take no permissions (a key reads its own spend)',
  },
  {
    doc: 'cost_tracking.md: spend report per team',
    method: 'GET',
    path: '/global/spend/report?start_date=2024-04-01&end_date=2024-06-30&group_by=team',
    status: 200,
    fields: [],
  },
  {
    doc: 'cost_tracking.md: spend report per customer',
    method: 'GET',
    path: '/global/spend/report?start_date=2024-04-01&end_date=2024-06-30&group_by=customer',
    status: 200,
    fields: [],
  },
  {
    doc: 'cost_tracking.md: spend report for one key',
    method: 'GET',
    path: '/global/spend/report?start_date=2024-04-01&end_date=2024-06-30&api_key=sk-1234',
    status: 200,
  },
  {
    doc: 'cost_tracking.md: spend report for an internal user',
    method: 'GET',
    path: '/global/spend/report?start_date=2024-04-01&end_date=2024-12-30&internal_user_id=ishaan',
    status: 200,
  },
  {
    doc: 'cost_tracking.md: daily spend breakdown',
    method: 'GET',
    path: '/user/daily/activity?start_date=2025-03-20&end_date=2025-03-27',
    status: 200,
    check: (b) => expect(b).toMatchObject({ results: expect.any(Array), metadata: { total_spend: 0 } }),
  },
  // docs/proxy/customers.md
  {
    doc: 'customers.md: a call with a customer id',
    method: 'POST',
    path: '/v1/chat/completions',
    body: chat('azure-gpt-3.5', { user: 'ishaan3' }),
    status: 200,
  },
  {
    doc: "customers.md: the customer's spend (upserted by the call)",
    method: 'GET',
    path: '/customer/info?end_user_id=ishaan3',
    status: 200,
    fields: {
      user_id: 'ishaan3',
      blocked: false,
      alias: null,
      allowed_model_region: null,
      default_model: null,
    },
    check: (b) => expect(b.spend).toBeGreaterThan(0),
  },
  {
    doc: 'customers.md: create a customer with a budget ("max_budget": "0")',
    method: 'POST',
    path: '/customer/new',
    body: { user_id: 'my-customer-id', max_budget: '0' },
    status: 200,
    fields: { user_id: 'my-customer-id', max_budget: 0 },
  },
  {
    doc: 'customers.md: test it (another customer: served)',
    method: 'POST',
    path: '/v1/chat/completions',
    body: chat('mistral', { user: 'ishaan-jaff-48' }),
    status: 200,
  },
  {
    doc: 'customers.md: the $0 customer is refused',
    method: 'POST',
    path: '/v1/chat/completions',
    body: chat('gpt-3.5-turbo', { user: 'my-customer-id' }),
    status: 429,
    fields: { error: { type: 'budget_exceeded' } },
    differs: '429 (LiteLLM: 400 before v1.80, 429 on current main)',
  },
  {
    doc: 'customers.md: pricing tiers, create a budget',
    method: 'POST',
    path: '/budget/new',
    body: { budget_id: 'my-free-tier', max_budget: 4 },
    status: 200,
    fields: { budget_id: 'my-free-tier', max_budget: 4, soft_budget: null, budget_duration: null },
  },
  {
    doc: 'customers.md: pricing tiers, assign a budget to a customer',
    method: 'POST',
    path: '/customer/new',
    body: { user_id: 'my-customer-id-2', budget_id: 'my-free-tier' },
    status: 200,
    fields: {
      user_id: 'my-customer-id-2',
      budget_id: 'my-free-tier',
      max_budget: 4,
      litellm_budget_table: { budget_id: 'my-free-tier', max_budget: 4 },
    },
    differs: "user_id 'my-customer-id-2': the docs' 'my-customer-id' was created by an earlier snippet",
  },
  {
    doc: 'customers.md: pricing tiers, test it (the customer is served)',
    method: 'POST',
    path: '/v1/chat/completions',
    body: chat('gpt-3.5-turbo', { user: 'my-customer-id-2' }),
    status: 200,
  },
  {
    doc: "customers.md: pricing tiers (setup: the customer's spend set to the tier's $4)",
    method: 'POST',
    path: '/budget/reset',
    body: { scope: 'customer', id: 'my-customer-id-2', reset_to: 4 },
    status: 200,
    differs: "spendguard's /budget/reset stands in for $4 of calls",
  },
  {
    doc: 'customers.md: pricing tiers, the customer over its tier is refused',
    method: 'POST',
    path: '/v1/chat/completions',
    body: chat('gpt-3.5-turbo', { user: 'my-customer-id-2' }),
    status: 429,
    fields: { error: { type: 'budget_exceeded', code: '429' } },
    check: (b) =>
      expect(b.error.message).toMatch(
        /^Budget has been exceeded! EndUser=my-customer-id-2 Current cost: 4\.0, Max budget: 4\.0\b/,
      ),
  },
  // docs/proxy/users.md
  {
    doc: 'users.md: add budgets to teams',
    method: 'POST',
    path: '/team/new',
    body: {
      team_alias: 'my-new-team_4',
      members_with_roles: [{ role: 'admin', user_id: '5c4a0aa3-a1e1-43dc-bd87-3c2da8382a3a' }],
      rpm_limit: 99,
    },
    status: 200,
    fields: {
      team_alias: 'my-new-team_4',
      members_with_roles: [{ role: 'admin', user_id: '5c4a0aa3-a1e1-43dc-bd87-3c2da8382a3a' }],
      metadata: {},
      tpm_limit: null,
      rpm_limit: 99,
      max_budget: null,
      models: [],
      spend: 0,
      max_parallel_requests: null,
      budget_duration: null,
      budget_reset_at: null,
    },
  },
  {
    doc: 'users.md: add budget duration to teams',
    method: 'POST',
    path: '/team/new',
    body: {
      team_alias: 'my-new-team_4',
      members_with_roles: [{ role: 'admin', user_id: '5c4a0aa3-a1e1-43dc-bd87-3c2da8382a3a' }],
      budget_duration: '30s',
    },
    status: 200,
    fields: { budget_duration: '30s' },
  },
  {
    doc: 'users.md: team members, step 1, create the user',
    method: 'POST',
    path: '/user/new',
    body: { user_id: 'ishaan' },
    status: 200,
    fields: { user_id: 'ishaan' },
  },
  {
    doc: 'setup: the team the docs assume',
    method: 'POST',
    path: '/team/new',
    body: { team_id: DOC_TEAM },
    status: 200,
  },
  {
    doc: 'users.md: team members, step 2, add the user with max_budget_in_team',
    method: 'POST',
    path: '/team/member_add',
    body: {
      team_id: DOC_TEAM,
      max_budget_in_team: 0.000000000001,
      member: { role: 'user', user_id: 'ishaan' },
    },
    status: 200,
  },
  {
    doc: 'users.md: team members, step 3, a key for the member',
    method: 'POST',
    path: '/key/generate',
    body: { user_id: 'ishaan', team_id: DOC_TEAM },
    status: 200,
    fields: { models: [], spend: 0, max_budget: null, user_id: 'ishaan', team_id: DOC_TEAM, metadata: {} },
    keep: (b, s) => {
      s.keys.member = b.key;
    },
  },
  {
    doc: "users.md: team members, step 4, the member's call crosses the budget in the team",
    method: 'POST',
    path: '/v1/chat/completions',
    auth: (s) => s.keys.member!,
    body: { model: 'llama3', messages: [{ role: 'user', content: 'tes4' }] },
    status: 429,
    check: (b) => expect(b.error.message).toMatch(/in Team=/),
    differs:
      'strict enforcement refuses the first call whose worst case does not fit (LiteLLM: after 2-3 calls)',
  },
  {
    doc: 'users.md: add budgets to users',
    method: 'POST',
    path: '/user/new',
    body: { models: ['azure-models'], max_budget: 0, user_id: 'krrish3@berri.ai' },
    status: 200,
    fields: { user_id: 'krrish3@berri.ai', max_budget: 0 },
    check: (b) => expect(b.key).toMatch(/^sk-/),
  },
  {
    doc: 'setup: the team the docs assume',
    method: 'POST',
    path: '/team/new',
    body: { team_id: 'core-infra' },
    status: 200,
  },
  {
    doc: 'users.md: add budgets to keys',
    method: 'POST',
    path: '/key/generate',
    body: { team_id: 'core-infra', max_budget: 10 },
    status: 200,
    fields: { team_id: 'core-infra', max_budget: 10 },
  },
  {
    doc: 'users.md: add budget duration to keys',
    method: 'POST',
    path: '/key/generate',
    body: { team_id: 'core-infra', max_budget: 10, budget_duration: '30s' },
    status: 200,
    fields: { max_budget: 10, budget_duration: '30s' },
  },
  {
    doc: 'users.md: model-specific budget on a key ("budget_limit": "0.0000001")',
    method: 'POST',
    path: '/key/generate',
    body: { model_max_budget: { 'gpt-4o': { budget_limit: '0.0000001', time_period: '1d' } } },
    status: 200,
    keep: (b, s) => {
      s.keys.modelBudget = b.key;
    },
  },
  {
    doc: "users.md: the key's gpt-4o budget refuses",
    method: 'POST',
    path: '/v1/chat/completions',
    auth: (s) => s.keys.modelBudget!,
    body: { model: 'gpt-4o', messages: [{ role: 'user', content: 'testing request' }] },
    status: 429,
    fields: { error: { type: 'budget_exceeded' } },
    differs:
      'the first call is refused (its worst case exceeds $0.0000001); LiteLLM serves it and refuses the next',
  },
  // docs/proxy/users.md, "Set Rate Limits"
  {
    doc: 'users.md: rate limits per team',
    method: 'POST',
    path: '/team/new',
    body: { team_id: 'my-prod-team', max_parallel_requests: 10, tpm_limit: 20, rpm_limit: 4 },
    status: 200,
    fields: { team_id: 'my-prod-team', max_parallel_requests: 10, tpm_limit: 20, rpm_limit: 4 },
  },
  {
    doc: 'users.md: rate limits per team per model (update)',
    method: 'POST',
    path: '/team/update',
    body: {
      team_id: 'my-prod-team',
      model_rpm_limit: { 'gpt-4': 100, 'gpt-3.5-turbo': 200 },
      model_tpm_limit: { 'gpt-4': 10000, 'gpt-3.5-turbo': 20000 },
    },
    status: 200,
    fields: {
      data: {
        model_rpm_limit: { 'gpt-4': 100, 'gpt-3.5-turbo': 200 },
        model_tpm_limit: { 'gpt-4': 10000, 'gpt-3.5-turbo': 20000 },
      },
    },
  },
  {
    doc: 'users.md: rate limits per team per model, in metadata',
    method: 'POST',
    path: '/team/update',
    body: {
      team_id: 'my-prod-team',
      metadata: {
        model_rpm_limit: { 'gpt-4': 100, 'gpt-3.5-turbo': 200 },
        model_tpm_limit: { 'gpt-4': 10000, 'gpt-3.5-turbo': 20000 },
      },
    },
    status: 400,
    fields: { error: { param: 'metadata.model_rpm_limit' } },
    differs: 'refused: spendguard reads limits from the fields, not from metadata',
  },
  {
    doc: 'users.md: rate limits per internal user',
    method: 'POST',
    path: '/user/new',
    body: { user_id: 'krrish@berri.ai', max_parallel_requests: 10, tpm_limit: 20, rpm_limit: 4 },
    status: 200,
    fields: { user_id: 'krrish@berri.ai', max_parallel_requests: 10, tpm_limit: 20, rpm_limit: 4 },
  },
  {
    doc: 'users.md: rate limits per key',
    method: 'POST',
    path: '/key/generate',
    body: { max_parallel_requests: 10, tpm_limit: 20, rpm_limit: 4 },
    status: 200,
    fields: { max_parallel_requests: 10, tpm_limit: 20, rpm_limit: 4 },
  },
  {
    doc: 'users.md: rate limits per key per model (the docs\' body is not JSON: `{"gpt-4":}`)',
    method: 'POST',
    path: '/key/generate',
    raw: '{"model_rpm_limit": {"gpt-4": 2}, "model_tpm_limit": {"gpt-4":}}',
    status: 422, // FastAPI's json_invalid, as LiteLLM answers it
    fields: { detail: [{ type: 'json_invalid', msg: 'JSON decode error' }] },
  },
  {
    doc: 'users.md: rate limits for customers, step 1, a budget with tpm_limit',
    method: 'POST',
    path: '/budget/new',
    body: { budget_id: 'free-tier', tpm_limit: 5 },
    status: 200,
    fields: { budget_id: 'free-tier', tpm_limit: 5, rpm_limit: null, max_budget: null },
  },
  // docs/proxy/tag_budgets.md
  {
    doc: 'tag_budgets.md: create a tag with a budget',
    method: 'POST',
    path: '/tag/new',
    body: {
      name: 'engineering',
      description: 'Engineering department cost center',
      max_budget: 500.0,
      budget_duration: '30d',
    },
    status: 200,
    fields: {
      name: 'engineering',
      description: 'Engineering department cost center',
      max_budget: 500,
      budget_duration: '30d',
    },
  },
  {
    doc: 'tag_budgets.md: use the tag in a request',
    method: 'POST',
    path: '/v1/chat/completions',
    body: {
      model: 'gpt-4',
      messages: [{ role: 'user', content: 'Hello' }],
      metadata: { tags: ['engineering'] },
    },
    status: 200,
  },
  {
    doc: 'tag_budgets.md: tag info',
    method: 'POST',
    path: '/tag/info',
    body: { names: ['engineering'] },
    status: 200,
    check: (b) => {
      expect(b.engineering).toMatchObject({ name: 'engineering', max_budget: 500, budget_duration: '30d' });
      expect(b.engineering.spend).toBeGreaterThan(0);
    },
    differs: 'the docs ask for ["engineering", "marketing"]; an unknown name is a 404 here',
  },
  {
    doc: 'tag_budgets.md: update the tag budget',
    method: 'POST',
    path: '/tag/update',
    body: { name: 'engineering', max_budget: 750.0, budget_duration: '30d' },
    status: 200,
    fields: { max_budget: 750 },
  },
  {
    doc: 'tag_budgets.md: multiple tags per request',
    method: 'POST',
    path: '/v1/chat/completions',
    body: {
      model: 'gpt-4',
      messages: [{ role: 'user', content: 'Hello' }],
      metadata: { tags: ['engineering', 'project-alpha', 'customer-acme'] },
    },
    status: 200,
  },
  {
    doc: 'tag_budgets.md: delete the tag',
    method: 'POST',
    path: '/tag/delete',
    body: { name: 'engineering' },
    status: 200,
  },
  // cost_tracking.md, last: it zeroes what the snippets above spent.
  {
    doc: 'cost_tracking.md: reset team and key spend (master key only)',
    method: 'POST',
    path: '/global/spend/reset',
    status: 200,
    fields: { message: 'Spend for all API Keys and Teams reset successfully', status: 'success' },
  },
];

describe.each(ADAPTERS)("LiteLLM's doc snippets on $name", (framework) => {
  let app: TestApp;
  const state: State = { keys: {} };
  beforeAll(async () => {
    app = await startTestApp(framework, {
      guardOptions: { masterKey: MASTER, logger: { warn: () => {}, error: () => {} } },
    });
  });
  afterAll(async () => {
    await app.close();
  });

  it.each(SNIPPETS.map((s, i) => [i + 1, s.doc, s] as const))('%i. %s', async (_n, _doc, snippet) => {
    const auth = typeof snippet.auth === 'function' ? snippet.auth(state) : (snippet.auth ?? MASTER);
    const res = await fetch(`${app.baseUrl}${snippet.path}`, {
      method: snippet.method,
      headers: { Authorization: `Bearer ${auth}`, 'Content-Type': 'application/json' },
      body: snippet.raw ?? (snippet.body === undefined ? undefined : JSON.stringify(snippet.body)),
    });
    // A route spendguard does not serve falls through to the app, whose 404 is its own (not JSON).
    const text = await res.text();
    const body = res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text;
    expect(res.status, JSON.stringify(body)).toBe(snippet.status);
    if (snippet.fields !== undefined) expect(body).toMatchObject(snippet.fields as object);
    snippet.check?.(body, res.headers, state);
    snippet.keep?.(body, state);
  });
});
