import * as z from 'zod';
import {
  dateOrTimeText,
  dayText,
  durationText,
  INPUT_LIMITS,
  storableId,
  storableMetadata,
  storableName,
  storableTags,
  storableText,
  usdAmount,
} from '../input-hygiene.js';

/**
 * Request bodies of the management API, with LiteLLM's field names. A field outside a schema is refused
 * (400 naming it) unless it is one of LiteLLM's that means nothing as sent (litellm-fields.ts). Every
 * id, name, tag, metadata value, amount, duration and date is checked by input-hygiene.ts, so that a
 * value no store can keep as given is a 400 naming the field, never a storage error.
 */

const maxBudget = usdAmount.nullable().optional();
const budgetDuration = durationText.nullable().optional();
export const id = storableId;
const models = z.array(storableName, { error: 'must be an array of model names' }).optional();
export const metadata = storableMetadata.optional();
const tags = storableTags.optional();
const alias = storableName.nullable().optional();
/** A key named by a management call: the key (`sk-...`) or its hash. */
const keyRef = storableText(INPUT_LIMITS.keyRefLength, 'must be the key (sk-...) or its hash').min(
  1,
  'must not be empty',
);
/** A comma-separated list in a query string. */
const queryList = storableText(INPUT_LIMITS.queryValueLength);
// Query-string filters: as their body counterparts, but an empty one is taken as before (no minimum).
const idFilter = storableText(INPUT_LIMITS.idLength);
const keyFilter = storableText(INPUT_LIMITS.keyRefLength);
/** A key's metadata: LiteLLM applies its `tags` to the key's calls, so they must be strings. */
const keyMetadata = metadata.refine(
  (m) => m?.tags === undefined || (Array.isArray(m.tags) && m.tags.every((t) => typeof t === 'string')),
  { message: 'tags must be an array of strings (they are applied to every call the key makes)' },
);
/** LiteLLM's `soft_budget`: USD at which an alert fires; never refuses a call. */
const softBudget = maxBudget;
/** The budget fields every scope takes. */
export const budgetFields = {
  max_budget: maxBudget,
  soft_budget: softBudget,
  budget_duration: budgetDuration,
};

/**
 * LiteLLM's `model_max_budget` on a key: `{ "gpt-4o": { "budget_limit": 10, "time_period": "1d" } }`
 * (or the older `{ "gpt-4o": 10 }`). `null` for a model removes its budget.
 */
export const modelMaxBudgetSchema = z
  .record(
    storableName.min(1, 'model names must not be empty'),
    z
      .union([
        usdAmount,
        z.strictObject({
          budget_limit: usdAmount.nullable().optional(),
          time_period: budgetDuration,
        }),
      ])
      .nullable(),
    { error: 'must be an object of model name to budget' },
  )
  .optional();

export type ModelMaxBudget = z.infer<typeof modelMaxBudgetSchema>;

/**
 * More budget windows beside `max_budget` / `budget_duration`, each with its own cap and reset, e.g.
 * `[{ "budget_duration": "1d", "max_budget": 10 }, { "budget_duration": "30d", "max_budget": 200 }]`.
 */
export const budgetLimitsSchema = z
  .array(
    z.strictObject({
      budget_duration: budgetDuration.unwrap().unwrap(),
      max_budget: maxBudget.unwrap(),
    }),
    { error: 'must be an array of { budget_duration, max_budget }' },
  )
  .max(8, 'must have at most 8 windows')
  .refine((l) => new Set(l.map((w) => w.budget_duration)).size === l.length, {
    message: 'must not name a budget_duration twice',
  })
  .nullable()
  .optional();

export type BudgetLimits = z.infer<typeof budgetLimitsSchema>;
const rateLimit = z
  .number({ error: 'must be a whole number, e.g. 60' })
  .int('must be a whole number')
  .nonnegative('must be 0 or more')
  .max(Number.MAX_SAFE_INTEGER, 'is too large')
  .nullable()
  .optional();
const modelRateLimit = z
  .record(
    storableName.min(1, 'model names must not be empty'),
    z
      .number({ error: 'must map model names to whole numbers, e.g. { "gpt-4o": 10 }' })
      .int('must map model names to whole numbers')
      .nonnegative('must be 0 or more')
      .max(Number.MAX_SAFE_INTEGER, 'is too large'),
    { error: 'must be an object of model name to limit, e.g. { "gpt-4o": 10 }' },
  )
  .nullable()
  .optional();
/** LiteLLM's rate-limit fields, on keys, users and teams. */
export const rateLimitFields = {
  rpm_limit: rateLimit,
  tpm_limit: rateLimit,
  max_parallel_requests: rateLimit,
};
/** Per-model limits, on keys. */
const modelRateLimitFields = {
  model_rpm_limit: modelRateLimit,
  model_tpm_limit: modelRateLimit,
};

export const teamNewSchema = z.object({
  team_id: id.optional(),
  budget_limits: budgetLimitsSchema,
  team_alias: alias,
  max_budget: maxBudget,
  soft_budget: softBudget,
  budget_duration: budgetDuration,
  models,
  metadata,
  blocked: z.boolean().optional(),
  ...rateLimitFields,
  ...modelRateLimitFields,
  /** LiteLLM's: the team's first members, created as users when not known yet (as /team/member_add). */
  members_with_roles: z.lazy(() =>
    z.array(memberSchema, { error: 'must be an array of members' }).optional(),
  ),
});

export const userNewSchema = z.object({
  user_id: id.optional(),
  budget_limits: budgetLimitsSchema,
  user_email: alias,
  user_role: storableName.optional(),
  team_id: id.nullable().optional(),
  max_budget: maxBudget,
  soft_budget: softBudget,
  budget_duration: budgetDuration,
  models,
  metadata,
  auto_create_key: z.boolean().optional(),
  ...rateLimitFields,
});

export const keyGenerateSchema = z.object({
  key: z
    .string()
    .regex(
      /^sk-[A-Za-z0-9_-]{16,200}$/,
      "must start with 'sk-' followed by at least 16 letters, digits, '-' or '_'",
    )
    .optional(),
  key_alias: alias,
  user_id: id.nullable().optional(),
  team_id: id.nullable().optional(),
  /** A budget tier (`/budget/new`) whose limits the key spends under (master key only). */
  budget_id: id.nullable().optional(),
  max_budget: maxBudget,
  soft_budget: softBudget,
  budget_duration: budgetDuration,
  duration: budgetDuration,
  models,
  metadata: keyMetadata,
  tags,
  blocked: z.boolean().optional(),
  model_max_budget: modelMaxBudgetSchema,
  budget_limits: budgetLimitsSchema,
  ...rateLimitFields,
  ...modelRateLimitFields,
});

export const keyRefSchema = z.object({ key: keyRef });

export const keyDeleteSchema = z.object({
  keys: z
    .array(keyRef, { error: 'must be an array of keys or key hashes' })
    .min(1, 'must name at least one key'),
});

/** LiteLLM's `spend` on an update: the scope's spend set to this many USD (0 resets it). */
const spendSet = z
  .number({ error: 'must be a number of USD' })
  .nonnegative('must be 0 or more')
  .max(9_000_000);

export const keyUpdateSchema = z.object({
  key: keyRef,
  spend: spendSet.optional(),
  /** LiteLLM's temporary budget increase, USD, with `temp_budget_expiry` (both or neither). */
  temp_budget_increase: usdAmount.positive('must be more than 0').nullable().optional(),
  temp_budget_expiry: dateOrTimeText.nullable().optional(),
  budget_limits: budgetLimitsSchema,
  model_max_budget: modelMaxBudgetSchema,
  key_alias: alias,
  /** Links the key to a budget tier; `null` unlinks it (master key only). */
  budget_id: id.nullable().optional(),
  max_budget: maxBudget,
  soft_budget: softBudget,
  budget_duration: budgetDuration,
  duration: budgetDuration,
  models,
  metadata: keyMetadata,
  tags,
  blocked: z.boolean().optional(),
  ...rateLimitFields,
  ...modelRateLimitFields,
});

export const keyListQuerySchema = z.object({
  user_id: idFilter.optional(),
  team_id: idFilter.optional(),
  key_alias: storableName.optional(),
  return_full_object: z.enum(['true', 'false']).optional(),
  page: z.coerce.number({ error: 'must be a page number' }).int('must be a whole number').min(1).optional(),
  size: z.coerce
    .number({ error: 'must be a page size' })
    .int('must be a whole number')
    .min(1)
    .max(100, 'must be at most 100')
    .optional(),
});

/** LiteLLM's `/key/regenerate` (also `/key/{key}/regenerate`, where the key comes from the path). */
export const keyRegenerateSchema = keyUpdateSchema.omit({ spend: true, budget_id: true }).extend({
  key: keyRef.optional(),
  new_key: keyGenerateSchema.shape.key,
  /** How long the replaced key keeps working, e.g. `24h`; absent: it stops at once. */
  grace_period: budgetDuration,
});

const memberRole = z.enum(['admin', 'user'], { error: "must be 'admin' or 'user'" });

/** A team member as LiteLLM's `Member`: a user id or email, and a role. */
const memberSchema = z
  .strictObject({
    user_id: id.nullable().optional(),
    user_email: storableName.min(1, 'must not be empty').nullable().optional(),
    role: memberRole.optional(),
  })
  .refine((m) => m.user_id || m.user_email, { message: 'needs a user_id or a user_email' });

export const teamUpdateSchema = teamNewSchema.omit({ members_with_roles: true }).extend({ team_id: id });

export const teamDeleteSchema = z.object({
  team_ids: z.array(id, { error: 'must be an array of team ids' }).min(1, 'must name at least one team'),
});

export const teamListQuerySchema = z.object({ user_id: idFilter.optional() });

export const memberAddSchema = z.object({
  team_id: id,
  member: z.union([memberSchema, z.array(memberSchema).min(1, 'must name at least one member')], {
    error: 'must be a member {user_id | user_email, role} or an array of them',
  }),
  max_budget_in_team: maxBudget,
  ...rateLimitFields,
});

export const memberUpdateSchema = z
  .object({
    team_id: id,
    user_id: id.optional(),
    user_email: storableName.min(1, 'must not be empty').optional(),
    role: memberRole.optional(),
    max_budget_in_team: maxBudget,
    ...rateLimitFields,
  })
  .refine((m) => m.user_id || m.user_email, { message: 'needs a user_id or a user_email' });

export const memberDeleteSchema = z
  .object({
    team_id: id,
    user_id: id.optional(),
    user_email: storableName.min(1, 'must not be empty').optional(),
  })
  .refine((m) => m.user_id || m.user_email, { message: 'needs a user_id or a user_email' });

export const userUpdateSchema = z
  .object({
    user_id: id.optional(),
    spend: spendSet.optional(),
    user_email: alias,
    user_role: storableName.optional(),
    max_budget: maxBudget,
    soft_budget: softBudget,
    budget_duration: budgetDuration,
    models,
    metadata,
    ...rateLimitFields,
  })
  .refine((u) => u.user_id || u.user_email, { message: 'needs a user_id or a user_email' });

export const userDeleteSchema = z.object({
  user_ids: z.array(id, { error: 'must be an array of user ids' }).min(1, 'must name at least one user'),
});

export const userListQuerySchema = z.object({
  /** Comma-separated. */
  user_ids: queryList.optional(),
  role: storableName.optional(),
  team: idFilter.optional(),
  page: z.coerce.number({ error: 'must be a page number' }).int('must be a whole number').min(1).optional(),
  page_size: z.coerce
    .number({ error: 'must be a page size' })
    .int('must be a whole number')
    .min(1)
    .max(100, 'must be at most 100')
    .optional(),
});

const isoDate = dateOrTimeText;

export const spendLogsQuerySchema = z.object({
  api_key: keyFilter.optional(),
  user_id: idFilter.optional(),
  team_id: idFilter.optional(),
  request_id: storableName.optional(),
  start_date: isoDate.optional(),
  end_date: isoDate.optional(),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
  /** LiteLLM's: `true` with both dates answers per-day sums instead of the logs. */
  summarize: z.enum(['true', 'false'], { error: "must be 'true' or 'false'" }).optional(),
});

/** `/spend/logs/export`: a range (dates or ISO times, both required) and a format. */
export const spendExportQuerySchema = z.object({
  start_date: isoDate,
  end_date: isoDate,
  format: z.enum(['jsonl', 'csv'], { error: "must be 'jsonl' or 'csv'" }).optional(),
  api_key: keyFilter.optional(),
  user_id: idFilter.optional(),
  team_id: idFilter.optional(),
});

export const spendTagsQuerySchema = z.object({
  start_date: isoDate.optional(),
  end_date: isoDate.optional(),
});

/** A UTC day, `YYYY-MM-DD` (as LiteLLM's report routes take it), required. */
const reportDay = dayText;
const page = z.coerce
  .number({ error: 'must be a page number' })
  .int('must be a whole number')
  .min(1)
  .optional();
const pageSize = z.coerce
  .number({ error: 'must be a number of days' })
  .int('must be a whole number')
  .min(1)
  .max(1000, 'must be at most 1000')
  .optional();

export const globalSpendReportQuerySchema = z.object({
  start_date: reportDay,
  end_date: reportDay,
  group_by: z
    .enum(['team', 'customer', 'api_key'], { error: "must be 'team', 'customer' or 'api_key'" })
    .optional(),
  api_key: keyFilter.optional(),
  internal_user_id: idFilter.optional(),
  team_id: idFilter.optional(),
  customer_id: idFilter.optional(),
});

export const userDailyActivityQuerySchema = z.object({
  start_date: reportDay,
  end_date: reportDay,
  user_id: idFilter.optional(),
  model: storableName.optional(),
  api_key: keyFilter.optional(),
  page,
  page_size: pageSize,
});

export const teamDailyActivityQuerySchema = z.object({
  start_date: reportDay,
  end_date: reportDay,
  /** Comma-separated. */
  team_ids: queryList.optional(),
  exclude_team_ids: queryList.optional(),
  model: storableName.optional(),
  api_key: keyFilter.optional(),
  page,
  page_size: pageSize,
});

/** Turns zod's issues into one readable sentence per field. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((i) => {
      const field = i.path.join('.');
      return field ? `${field} ${i.message}` : i.message;
    })
    .join('; ');
}

/** The field the first issue names (`model_max_budget.gpt-4o`), for the error's `param`; null for the body. */
export function firstField(error: z.ZodError): string | null {
  const path = error.issues[0]?.path ?? [];
  return path.length > 0 ? path.map(String).join('.') : null;
}
