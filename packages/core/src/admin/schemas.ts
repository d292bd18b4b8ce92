import * as z from 'zod';
import { SpendGuardError, type ValidationDetail } from '../errors.js';
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

/**
 * zod's issues with each union failure replaced by the issues of the one branch the value is of
 * (`{ "budget_limit": "x" }` is an object: the object branch's issues, not "Invalid input"), when
 * exactly one branch took its type; paths made whole.
 */
function flatIssues(issues: readonly z.core.$ZodIssue[], prefix: PropertyKey[] = []): z.core.$ZodIssue[] {
  return issues.flatMap((i) => {
    const path = [...prefix, ...i.path];
    if (i.code === 'invalid_union') {
      const typed = i.errors.filter((b) => !b.some((e) => e.code === 'invalid_type' && e.path.length === 0));
      if (typed.length === 1) return flatIssues(typed[0]!, path);
    }
    return [{ ...i, path }];
  });
}

/**
 * The unknown fields inside nested strict objects (`model_max_budget.gpt-4o.budget_limt`), which our
 * rule refuses with a 400 naming them rather than a 422, as it does unknown top-level fields.
 */
export function unknownFields(issues: readonly z.core.$ZodIssue[], at: PropertyKey[] = []): string[] {
  return flatIssues(issues, at).flatMap((i) =>
    i.code === 'unrecognized_keys' ? i.keys.map((key) => [...i.path, key].map(String).join('.')) : [],
  );
}

/** pydantic's name for a value of each zod type, in its `*_type` and `*_parsing` errors. */
const PYDANTIC_KIND: Record<string, { kind: string; what: string }> = {
  number: { kind: 'float', what: 'a valid number' },
  int: { kind: 'int', what: 'a valid integer' },
  string: { kind: 'string', what: 'a valid string' },
  boolean: { kind: 'bool', what: 'a valid boolean' },
  object: { kind: 'dict', what: 'a valid dictionary' },
  record: { kind: 'dict', what: 'a valid dictionary' },
  array: { kind: 'list', what: 'a valid list' },
};

/** A zod issue as pydantic v2 names and words it (its `type` and `msg`). */
function pydanticError(i: z.core.$ZodIssue, input: unknown): { type: string; msg: string } {
  const n = 'minimum' in i ? i.minimum : 'maximum' in i ? i.maximum : undefined;
  const origin = 'origin' in i ? i.origin : undefined;
  switch (i.code) {
    case 'invalid_type': {
      if (input === undefined) return { type: 'missing', msg: 'Field required' };
      const p = PYDANTIC_KIND[i.expected];
      if (!p) return { type: 'value_error', msg: `Value error, ${i.message}` };
      if (p.kind === 'int' && typeof input === 'number' && Number.isFinite(input))
        return {
          type: 'int_from_float',
          msg: 'Input should be a valid integer, got a number with a fractional part',
        };
      if ((p.kind === 'int' || p.kind === 'float') && typeof input === 'string') {
        const noun = p.kind === 'int' ? 'an integer' : 'a number';
        return {
          type: `${p.kind}_parsing`,
          msg: `Input should be ${p.what}, unable to parse string as ${noun}`,
        };
      }
      return { type: `${p.kind}_type`, msg: `Input should be ${p.what}` };
    }
    case 'too_small':
      if (origin === 'string')
        return {
          type: 'string_too_short',
          msg: `String should have at least ${n} character${n === 1 ? '' : 's'}`,
        };
      if (origin === 'array' || origin === 'set')
        return {
          type: 'too_short',
          msg: `List should have at least ${n} item${n === 1 ? '' : 's'} after validation`,
        };
      return i.inclusive
        ? { type: 'greater_than_equal', msg: `Input should be greater than or equal to ${n}` }
        : { type: 'greater_than', msg: `Input should be greater than ${n}` };
    case 'too_big':
      if (origin === 'string')
        return {
          type: 'string_too_long',
          msg: `String should have at most ${n} character${n === 1 ? '' : 's'}`,
        };
      if (origin === 'array' || origin === 'set')
        return {
          type: 'too_long',
          msg: `List should have at most ${n} item${n === 1 ? '' : 's'} after validation`,
        };
      return i.inclusive
        ? { type: 'less_than_equal', msg: `Input should be less than or equal to ${n}` }
        : { type: 'less_than', msg: `Input should be less than ${n}` };
    case 'invalid_value': {
      const options = i.values.map((v) => (typeof v === 'string' ? `'${v}'` : String(v)));
      const list =
        options.length > 1 ? `${options.slice(0, -1).join(', ')} or ${options.at(-1)}` : options[0];
      return { type: 'literal_error', msg: `Input should be ${list}` };
    }
    case 'invalid_format':
      return { type: 'string_pattern_mismatch', msg: `String should match pattern: ${i.message}` };
    case 'not_multiple_of':
      return { type: 'multiple_of', msg: `Input should be a multiple of ${String(i.divisor)}` };
    default:
      // A refinement of ours (a duration, a date, an id), a union, a record's key: pydantic words a
      // validator's failure this way.
      return { type: 'value_error', msg: `Value error, ${i.message}` };
  }
}

/**
 * Whether a value sent may be echoed in `detail` as pydantic does: not one nested deeper than
 * stored metadata may be (`metadata` 10,000 levels deep is refused at level 32) or with more than
 * 1,000 values, which would make the answer as costly as the request (and could overflow the stack
 * serialising it). An entry without `input` is the answer then.
 */
export function echoable(value: unknown): boolean {
  let budget = 1_000;
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (depth >= INPUT_LIMITS.metadataDepth) return false;
    for (const child of Object.values(v)) {
      if (--budget < 0) return false;
      stack.push([child, depth + 1]);
    }
  }
  return true;
}

/**
 * A schema failure as FastAPI answers it (LiteLLM's 422): one entry per issue,
 * `{"type","loc":[where, ...path],"msg","input"}`, the input read from what was sent (for a missing
 * field, the object that lacks it, as pydantic gives).
 */
export function validationDetail(
  error: z.ZodError,
  where: 'body' | 'query',
  sent: unknown,
  at: PropertyKey[] = [],
): ValidationDetail[] {
  return flatIssues(error.issues).map((i) => {
    let parent: unknown;
    let input: unknown = sent;
    for (const part of i.path) {
      parent = input;
      input =
        input !== null && typeof input === 'object'
          ? (input as Record<PropertyKey, unknown>)[part]
          : undefined;
    }
    const { type, msg } = pydanticError(i, input);
    const echoed = type === 'missing' ? (parent ?? {}) : input;
    const loc = [where, ...[...at, ...i.path].map((p) => (typeof p === 'number' ? p : String(p)))];
    return echoable(echoed) ? { type, loc, msg, input: echoed } : { type, loc, msg };
  });
}

/**
 * A body or query that fails its schema: LiteLLM's (FastAPI's) 422 with the `detail` list, read
 * against what was sent (before numeric strings were taken as numbers); an unknown field in a nested
 * object stays a 400 naming it, as unknown top-level fields are (never accepted and ignored). `at`
 * places a part of the body checked on its own (`["keys", 2]`).
 */
export function schemaFailure(
  error: z.ZodError,
  where: 'body' | 'query',
  sent: unknown,
  at: PropertyKey[] = [],
): SpendGuardError {
  const what = where === 'body' ? 'request' : 'query';
  const unknown = unknownFields(error.issues, at);
  if (unknown.length > 0) {
    return new SpendGuardError(
      'BAD_REQUEST',
      `Invalid ${what}: ${unknown.join(', ')} ${unknown.length === 1 ? 'is not a field' : 'are not fields'} this route takes`,
      { param: unknown[0] },
    );
  }
  const prefix = at.map((p) => `${String(p)}.`).join('');
  const first = firstField(error);
  return new SpendGuardError('VALIDATION', `Invalid ${what}: ${prefix}${describeIssues(error)}`, {
    param: first === null ? prefix.slice(0, -1) || null : `${prefix}${first}`,
    detail: validationDetail(error, where, sent, at),
  });
}

/**
 * A body that is not JSON, as FastAPI answers it (LiteLLM's 422): `json_invalid` at the character
 * where decoding failed, the decoder's message in `ctx.error` (Python's words there, JavaScript's here).
 */
export function jsonInvalid(text: string, error: Error): SpendGuardError {
  // V8 names the position only in some messages; the end of the input is the text's length; where
  // neither is known the location is the body alone rather than a made-up character.
  const at = /position (\d+)/.exec(error.message);
  const pos = at ? Number(at[1]) : /end of JSON input/.test(error.message) ? text.length : null;
  return new SpendGuardError('VALIDATION', `Request body is not valid JSON: ${error.message}`, {
    detail: [
      {
        type: 'json_invalid',
        loc: pos === null ? ['body'] : ['body', pos],
        msg: 'JSON decode error',
        input: {},
        ctx: { error: error.message },
      },
    ],
  });
}

/** A JSON body that is no object (an array, a string, a number), as FastAPI answers it: 422. */
export function notAnObject(value: unknown): SpendGuardError {
  const entry: ValidationDetail = {
    type: 'model_attributes_type',
    loc: ['body'],
    msg: 'Input should be a valid dictionary or object to extract fields from',
  };
  if (echoable(value)) entry.input = value;
  return new SpendGuardError('VALIDATION', 'Request body must be a JSON object.', { detail: [entry] });
}
