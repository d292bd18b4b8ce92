import * as z from 'zod';
import { parseBudgetDuration } from './budget-period.js';
import { SpendGuardError } from './errors.js';

/**
 * Input hygiene: every id, tag, name, metadata value, amount, duration and date that can reach storage
 * is checked here, once, where it enters (the management API's schemas and query strings, the spend
 * queries, and the guarded call's model, end user and tags). A value no store can keep as given is
 * refused with 400 naming the field, before anything is read or written: Postgres refuses a NUL
 * character; UTF-8 (Postgres and SQLite alike) turns a lone surrogate into U+FFFD, so two different
 * ids would silently become one; an amount past 2^53 nano-dollars, a duration of a billion days or a
 * date in year 1 either cannot be stored or breaks the arithmetic on it. Such input is the caller's
 * mistake, so it must never look like a storage outage (503, counted in `storageErrors`).
 * docs/input-limits.md lists every limit and the error it gives.
 */
export const INPUT_LIMITS = {
  /** Team, user, end-user (customer) and member ids, in UTF-16 code units (JavaScript's `length`). */
  idLength: 256,
  /** Aliases, tag names, model names, emails and roles. */
  nameLength: 256,
  /** A tag's description. */
  descriptionLength: 2048,
  /** A key named by a management call: the key (`sk-...`) or its hash. */
  keyRefLength: 512,
  /** Any one query-string value of the management API or the dashboard. */
  queryValueLength: 2048,
  /** Tags on one call (body `tags`, `metadata.tags` and `x-litellm-tags` together) or on one key. */
  tagsPerList: 100,
  /** Nesting of a `metadata` object: the object itself is level 1. */
  metadataDepth: 32,
  /** A `metadata` object as JSON text. */
  metadataJsonLength: 65_536,
  /** Any USD amount: a budget, a soft budget, a budget increase, a reset value (2^53 nano-dollars is ~9,007,199 USD). */
  maxUsd: 9_000_000,
  /** Budget durations, key durations and grace periods: at most 10 years. */
  maxDurationDays: 3660,
  /** The dates the spend queries and `temp_budget_expiry` take, inclusive, UTC. */
  firstDate: '1970-01-01',
  lastDate: '9999-12-31',
} as const;

const FIRST_MS = Date.parse(`${INPUT_LIMITS.firstDate}T00:00:00.000Z`);
const LAST_MS = Date.parse(`${INPUT_LIMITS.lastDate}T23:59:59.999Z`);

/** A NUL, a high surrogate not followed by a low one, or a low one not preceded by a high one. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is one of the characters refused
const UNSTORABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Why `value` cannot be stored as given, or `null` when it can. */
export function textProblem(value: string, maxLength: number): string | null {
  if (value.length > maxLength) return `must be at most ${maxLength} characters`;
  const bad = UNSTORABLE.exec(value);
  if (!bad) return null;
  const at = bad.index;
  if (bad[0] === '\u0000') return `must not contain a NUL character (\\u0000, at position ${at})`;
  const unit = bad[0].charCodeAt(0).toString(16);
  return `must be valid Unicode text: it holds a lone surrogate (\\u${unit} at position ${at}), which storage would turn into U+FFFD`;
}

function refused(param: string, problem: string): SpendGuardError {
  return new SpendGuardError('BAD_REQUEST', `Invalid request: ${param} ${problem}`, { param });
}

/** Throws the 400 for a text value that cannot be stored as given (see `textProblem`). */
export function assertText(value: string, param: string, maxLength: number = INPUT_LIMITS.idLength): void {
  const problem = textProblem(value, maxLength);
  if (problem) throw refused(param, problem);
}

/** Every value of a query string (names are never stored; values may be). */
export function assertQuery(query: URLSearchParams): void {
  for (const [name, value] of query) assertText(value, name, INPUT_LIMITS.queryValueLength);
}

/** The tags of one call, once merged from their sources: how many it may carry. */
export function assertTagCount(count: number, param: string): void {
  if (count > INPUT_LIMITS.tagsPerList)
    throw refused(param, `must hold at most ${INPUT_LIMITS.tagsPerList} tags in all, got ${count}`);
}

/**
 * Why a metadata object cannot be stored, with the path of the value at fault, or `null`. Walks the
 * value iteratively and stops at the depth limit, so a body nested 10,000 deep costs 32 levels.
 */
export function metadataProblem(value: unknown): { path: Array<string | number>; problem: string } | null {
  const stack: Array<{ value: unknown; depth: number; path: Array<string | number> }> = [
    { value, depth: 1, path: [] },
  ];
  for (let next = stack.pop(); next; next = stack.pop()) {
    const { value: v, depth, path } = next;
    if (typeof v === 'string') {
      const problem = textProblem(v, Number.POSITIVE_INFINITY);
      if (problem) return { path, problem };
    } else if (typeof v === 'number') {
      if (!Number.isFinite(v)) return { path, problem: 'must be a finite number' };
    } else if (v !== null && typeof v === 'object') {
      if (depth > INPUT_LIMITS.metadataDepth) {
        return {
          path,
          problem: `is nested too deep: metadata may nest at most ${INPUT_LIMITS.metadataDepth} levels`,
        };
      }
      const entries: Array<[string | number, unknown]> = Array.isArray(v)
        ? [...v.entries()]
        : Object.entries(v);
      for (let i = entries.length - 1; i >= 0; i--) {
        const [k, child] = entries[i]!;
        if (typeof k === 'string') {
          const problem = textProblem(k, Number.POSITIVE_INFINITY);
          // The parent's path: the key itself may be what cannot be echoed.
          if (problem) return { path, problem: `(in one of its keys) ${problem}` };
        }
        stack.push({ value: child, depth: depth + 1, path: [...path, k] });
      }
    } else if (typeof v !== 'boolean') {
      return { path, problem: 'must be JSON (a string, number, boolean, null, array or object)' };
    }
  }
  const length = JSON.stringify(value)?.length ?? 0;
  if (length > INPUT_LIMITS.metadataJsonLength) {
    return {
      path: [],
      problem: `is too large: at most ${INPUT_LIMITS.metadataJsonLength} characters as JSON, got ${length}`,
    };
  }
  return null;
}

/** Why a LiteLLM duration (`30s` ... `1mo`, `daily`) is refused, or `null`. */
export function durationProblem(duration: string): string | null {
  const parsed = parseBudgetDuration(duration);
  if (!parsed) {
    return "is not a duration; use e.g. '30s', '10m', '1h', '1d', '7d', '30d', '1mo', 'daily', 'weekly' or 'monthly'";
  }
  const days = INPUT_LIMITS.maxDurationDays;
  const maxOf = { s: days * 86_400, m: days * 1440, h: days * 24, d: days, w: Math.floor(days / 7), mo: 120 };
  if (parsed.value > maxOf[parsed.unit]) {
    return `must be at most 10 years ('${days}d', '${maxOf.w}w', '${maxOf.mo}mo', '${maxOf.h}h', '${maxOf.m}m' or '${maxOf.s}s'), got '${duration}'`;
  }
  return null;
}

/** Whether an instant (ms since the epoch) is within the supported dates. */
export function dateInRange(ms: number): boolean {
  return ms >= FIRST_MS && ms <= LAST_MS;
}

/** The message for a date outside the supported range. */
export const DATE_RANGE_PROBLEM = `must be between ${INPUT_LIMITS.firstDate} and ${INPUT_LIMITS.lastDate} (UTC)`;

/** Throws the 400 for a date outside the supported range. */
export function assertDate(date: Date, param: string): void {
  if (!dateInRange(date.getTime())) throw refused(param, DATE_RANGE_PROBLEM);
}

// zod building blocks for the management API's schemas (admin/schemas.ts, admin/scope-routes.ts).

/** Text that storage keeps byte-exact: at most `maxLength` characters, no NUL, no lone surrogate. */
export function storableText(maxLength: number, notAString = 'must be a string') {
  return z.string({ error: notAString }).superRefine((value, ctx) => {
    const problem = textProblem(value, maxLength);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  });
}

/** An id (team, user, end user, member): 1 to 256 characters of storable text. */
export const storableId = storableText(INPUT_LIMITS.idLength).min(1, 'must not be empty');

/** A tag, model name, alias, email or role: storable text, at most 256 characters. */
export const storableName = storableText(INPUT_LIMITS.nameLength);

/** A list of tags: storable names, at most 100. */
export const storableTags = z
  .array(storableName, { error: 'must be an array of strings' })
  .max(INPUT_LIMITS.tagsPerList, `must hold at most ${INPUT_LIMITS.tagsPerList} tags`);

/** A `metadata` object: JSON, nested at most 32 deep, at most 64 KiB as JSON, every string storable. */
export const storableMetadata = z
  .record(z.string(), z.unknown(), { error: 'must be a JSON object' })
  .superRefine((value, ctx) => {
    const found = metadataProblem(value);
    if (found) ctx.addIssue({ code: 'custom', message: found.problem, path: found.path });
  });

/** A USD amount that converts to nano-dollars exactly within 2^53: 0 to 9,000,000. */
export const usdAmount = z
  .number({ error: 'must be a number of USD, e.g. 50 or 12.5' })
  .nonnegative('must be 0 or more')
  .max(INPUT_LIMITS.maxUsd, `must be at most ${INPUT_LIMITS.maxUsd} USD`);

/** A LiteLLM duration of at most 10 years. */
export const durationText = z
  .string({
    error:
      "must be a string like '30s', '10m', '1h', '1d', '7d', '30d', '1mo', 'daily', 'weekly' or 'monthly'",
  })
  .superRefine((value, ctx) => {
    const problem = durationProblem(value);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  });

const DAY_RE = /^\d{4}-\d{2}-\d{2}$/;
const ISO_RE = /^\d{4}-\d{2}-\d{2}([T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$/;

const ZONE_RE = /(Z|[+-]\d{2}:?\d{2})$/i;

/**
 * The instant a date-only value (`YYYY-MM-DD`, UTC midnight) or an ISO 8601 time names; NaN if neither.
 * A time without a zone (LiteLLM's `YYYY-MM-DD HH:MM:SS`, or `...T10:00:00`) is UTC, as LiteLLM means
 * it: `Date.parse` alone would read it in the server's local time zone. The one parser every admin date
 * goes through.
 */
export function parseDateOrTime(value: string): number {
  if (DAY_RE.test(value)) return Date.parse(`${value}T00:00:00.000Z`);
  if (!ISO_RE.test(value)) return Number.NaN;
  const time = value.replace(' ', 'T');
  return Date.parse(ZONE_RE.test(time) ? time : `${time}Z`);
}

/** A date `YYYY-MM-DD` or an ISO 8601 time, within the supported dates. */
export const dateOrTimeText = z
  .string({ error: "must be a date 'YYYY-MM-DD' or an ISO 8601 time" })
  .superRefine((value, ctx) => {
    const ms = ISO_RE.test(value) ? parseDateOrTime(value) : Number.NaN;
    if (Number.isNaN(ms))
      ctx.addIssue({ code: 'custom', message: "must be a date 'YYYY-MM-DD' or an ISO 8601 time" });
    else if (!dateInRange(ms)) ctx.addIssue({ code: 'custom', message: DATE_RANGE_PROBLEM });
  });

/** Whether `value` is a real UTC day `YYYY-MM-DD` (2026-02-30 is not: Date.parse rolls it into March). */
export function isRealDay(value: string): boolean {
  const ms = Date.parse(`${value}T00:00:00.000Z`);
  return DAY_RE.test(value) && !Number.isNaN(ms) && new Date(ms).toISOString().startsWith(value);
}

/** A UTC day `YYYY-MM-DD` within the supported dates. */
export const dayText = z.string({ error: "is required: a date 'YYYY-MM-DD'" }).superRefine((value, ctx) => {
  if (!isRealDay(value)) ctx.addIssue({ code: 'custom', message: "must be a date 'YYYY-MM-DD'" });
  else if (!dateInRange(Date.parse(`${value}T00:00:00.000Z`)))
    ctx.addIssue({ code: 'custom', message: DATE_RANGE_PROBLEM });
});
