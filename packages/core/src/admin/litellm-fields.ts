import * as z from 'zod';
import { SpendGuardError } from '../errors.js';

/**
 * LiteLLM's request fields that spendguard does not act on. A budget API that answers 200 and drops
 * a field is lying to its caller, so each of these is refused with a 400 naming it and saying why,
 * except when its value means nothing (LiteLLM's own default: `null`, `false`, `0`, `[]`, `{}`, or a
 * value listed in `noop`), which LiteLLM's clients send unasked and which is then accepted and
 * ignored, as LiteLLM ignores it. Fields outside this table and outside a route's schema are refused
 * as unknown (LiteLLM ignores them; a typo in a budget field must not pass silently).
 *
 * Fields from LiteLLM's request models (`litellm/proxy/_types.py`: GenerateKeyRequest,
 * UpdateKeyRequest, RegenerateKeyRequest, NewTeamRequest, UpdateTeamRequest, NewUserRequest,
 * UpdateUserRequest, NewCustomerRequest, UpdateCustomerRequest, TagNewRequest), v1.80 and main.
 */
export const UNSUPPORTED_FIELDS: Readonly<Record<string, { why: string; noop?: readonly unknown[] }>> = {
  agent_id: { why: 'spendguard has no agents' },
  organization_id: { why: 'spendguard has no organizations; use a team' },
  organizations: { why: 'spendguard has no organizations; use a team' },
  project_id: { why: 'spendguard has no projects; use a team or tags' },
  allowed_cache_controls: { why: 'spendguard does not run a cache' },
  config: { why: 'spendguard passes no per-key config to the provider' },
  permissions: {
    why: 'spendguard keys take no permissions; a key reads its own spend, the master key or a team admin reads the rest',
  },
  guardrails: { why: 'spendguard runs no guardrails' },
  policies: { why: 'spendguard runs no policies' },
  prompts: { why: 'spendguard manages no prompts' },
  aliases: { why: 'spendguard routes nothing; model aliases are a guard option (modelAliases)' },
  model_aliases: { why: 'spendguard routes nothing; model aliases are a guard option (modelAliases)' },
  object_permission: { why: 'spendguard manages no MCP servers, vector stores or agents' },
  enforced_params: { why: 'spendguard does not check request parameters' },
  allowed_routes: { why: 'spendguard keys call the routes the app guards; there is no per-key route list' },
  allowed_passthrough_routes: { why: 'spendguard has no pass-through routes' },
  allowed_vector_store_indexes: { why: 'spendguard manages no vector stores' },
  rpm_limit_type: { why: 'spendguard limits are best effort within one store; no throughput guarantees' },
  tpm_limit_type: { why: 'spendguard limits are best effort within one store; no throughput guarantees' },
  router_settings: { why: 'spendguard routes nothing' },
  access_group_ids: { why: 'spendguard has no access groups; list the models' },
  send_invite_email: { why: 'spendguard sends no email' },
  key_type: {
    why: 'spendguard has one kind of key; management routes need the master key or a team admin',
    noop: ['default'],
  },
  auto_rotate: { why: 'spendguard does not rotate keys by itself; call /key/regenerate' },
  rotation_interval: { why: 'spendguard does not rotate keys by itself; call /key/regenerate' },
  new_master_key: { why: 'the master key is configuration (SPENDGUARD_MASTER_KEY), not stored' },
  admins: { why: 'deprecated in LiteLLM; use members_with_roles' },
  members: { why: 'deprecated in LiteLLM; use members_with_roles' },
  team_member_permissions: { why: 'team member permissions are fixed here (docs/access-control.md)' },
  secret_manager_settings: { why: 'spendguard holds no provider secrets' },
  tags: {
    why: "spendguard's team tags are not applied to calls; set tags on the team's keys (/key/generate tags)",
  },
  team_member_budget: { why: 'not supported yet; set max_budget_in_team with /team/member_add' },
  team_member_budget_duration: { why: 'not supported yet; set max_budget_in_team with /team/member_add' },
  team_member_rpm_limit: { why: 'not supported yet; set rpm_limit with /team/member_add' },
  team_member_tpm_limit: { why: 'not supported yet; set tpm_limit with /team/member_add' },
  team_member_key_duration: { why: "not supported yet; set duration on each key's /key/generate" },
  enforced_batch_output_expires_after: { why: 'spendguard manages no batches' },
  enforced_file_expires_after: { why: 'spendguard manages no files' },
  user_alias: { why: 'spendguard users have no alias; use user_email or metadata' },
  teams: { why: 'spendguard /user/new takes one team_id; add more with /team/member_add' },
  sso_user_id: { why: 'spendguard has no SSO users' },
  password: { why: 'spendguard users do not sign in; the dashboard has its own password' },
  key_alias: { why: 'on /user/new the auto-created key takes no alias here; set it with /key/update' },
  duration: { why: 'on /user/new the auto-created key takes no duration here; set it with /key/update' },
  allowed_model_region: { why: 'spendguard routes nothing, so it cannot keep calls in a region' },
  default_model: { why: 'spendguard routes nothing, so it cannot redirect calls to a default model' },
  budget_reset_at: { why: 'the reset time follows budget_duration (calendar-aligned); it cannot be set' },
  model_max_budget: { why: 'per-model budgets are taken on keys only (/key/generate, /key/update)' },
  model_rpm_limit: { why: 'per-model rate limits are taken on keys and teams only' },
  model_tpm_limit: { why: 'per-model rate limits are taken on keys and teams only' },
  blocked: { why: 'this route cannot block; use /key/block, /team/block or /customer/block' },
  models: { why: 'tags here do not restrict models (that is tag routing, and spendguard routes nothing)' },
  budget_id: {
    why: 'budgets (/budget/new) are linked by keys (/key/generate, /key/update) and end users (/customer/new), as in LiteLLM, whose users and teams take no budget_id; set max_budget on them',
  },
  spend: {
    why: 'spend can be set on /key/update and /user/update alone (a body with only the id and spend)',
  },
};

/**
 * Keys of an entity's `metadata` that LiteLLM acts on and spendguard does not: refused, since
 * metadata is otherwise kept as given and these would be dropped in silence.
 */
const METADATA_REFUSED: Readonly<Record<string, string>> = {
  model_rpm_limit: 'spendguard reads per-model limits from the model_rpm_limit field, not from metadata',
  model_tpm_limit: 'spendguard reads per-model limits from the model_tpm_limit field, not from metadata',
};

/** LiteLLM's query parameters that spendguard does not act on, with the same rule. */
export const UNSUPPORTED_QUERY: Readonly<Record<string, { why: string; noop?: readonly unknown[] }>> = {};

/** A value LiteLLM's models give the field when it is not set: sending it changes nothing. */
function meansNothing(value: unknown, noop: readonly unknown[] = []): boolean {
  if (value === null || value === false || value === 0 || value === '') return true;
  if (Array.isArray(value)) return value.length === 0;
  if (typeof value === 'object') return Object.keys(value).length === 0;
  return noop.includes(value);
}

/**
 * The body with LiteLLM's do-nothing fields dropped; a 400 naming the first field that is neither
 * the schema's nor a do-nothing LiteLLM field. Schemas that are not plain objects are left to zod.
 */
export function refuseUnactedFields(
  value: Record<string, unknown>,
  schema: z.ZodType,
  table: Readonly<Record<string, { why: string; noop?: readonly unknown[] }>> = UNSUPPORTED_FIELDS,
  where: 'body' | 'query' = 'body',
): Record<string, unknown> {
  if (!(schema instanceof z.ZodObject)) return value;
  const known = schema.shape as Record<string, unknown>;
  const metadata = value.metadata;
  if (metadata !== null && typeof metadata === 'object' && !Array.isArray(metadata)) {
    for (const [field, why] of Object.entries(METADATA_REFUSED)) {
      if (field in metadata) {
        throw new SpendGuardError(
          'BAD_REQUEST',
          `Invalid request: metadata.${field} is not supported: ${why}`,
          {
            param: `metadata.${field}`,
          },
        );
      }
    }
  }
  const kept: Record<string, unknown> = {};
  for (const [field, v] of Object.entries(value)) {
    // `?=x` names no field: there is nothing to act on or refuse.
    if (where === 'query' && field === '') continue;
    if (field in known) {
      kept[field] = v;
      continue;
    }
    const unsupported = table[field];
    if (unsupported && meansNothing(v, unsupported.noop)) continue;
    if (unsupported) {
      throw new SpendGuardError(
        'BAD_REQUEST',
        `Invalid request: ${field} is not supported: ${unsupported.why}`,
        { param: field },
      );
    }
    throw new SpendGuardError(
      'BAD_REQUEST',
      `Invalid request: ${field} is not a field this route takes${where === 'query' ? ' in its query' : ''}; it takes ${Object.keys(known).join(', ')}`,
      { param: field },
    );
  }
  return kept;
}

/** LiteLLM's number fields: pydantic takes a numeric string there (`"max_budget": "0"`), so do we. */
const NUMBER_FIELDS = new Set([
  'max_budget',
  'soft_budget',
  'max_budget_in_team',
  'spend',
  'temp_budget_increase',
  'tpm_limit',
  'rpm_limit',
  'max_parallel_requests',
  'budget_limit',
  'reset_to',
]);
const NUMERIC = /^\s*-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/;

/** A numeric string's finite value (`"12"`, `" 1.5 "`); null for anything else (`""`, `"abc"`, `"1e400"`). */
function numericString(v: string): number | null {
  if (!NUMERIC.test(v)) return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
}

/**
 * The body with LiteLLM's number fields given as numeric strings turned into numbers, at any depth
 * (`model_max_budget`'s `budget_limit` included), and `"max_budget": ""` as `null` (LiteLLM's own
 * rule). Other strings stay, for the schema to refuse with the field's name.
 */
export function coerceNumericStrings(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(coerceNumericStrings);
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [field, v] of Object.entries(value)) {
    if (NUMBER_FIELDS.has(field) && typeof v === 'string') {
      out[field] = field === 'max_budget' && v === '' ? null : (numericString(v) ?? v);
    } else if (field === 'metadata') {
      out[field] = v; // free-form: its values are the caller's, kept as sent
    } else {
      out[field] = coerceNumericStrings(v);
    }
  }
  return out;
}
