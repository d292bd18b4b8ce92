import type { ReserveInput, SettleInput } from '@spendguard/core/storage';

/**
 * What Postgres would refuse in one guarded write, found before the write is batched. A batch is one
 * statement, and Postgres refuses the whole statement for one op's NUL character or out-of-range
 * number; an op known to fail is failed alone at once, instead of being found by sending its batch
 * again in halves (MicroBatcher's fallback for whatever this does not foresee), which costs round
 * trips while the batches behind it wait. Core refuses such values at the edge; these come from below
 * it (a provider's model name or token counts, an app's `track()`). Lone surrogates are refused too:
 * pg would send them as U+FFFD, silently making two different values one.
 *
 * The error carries the SQLSTATE Postgres would have raised, so `isInputError` treats both alike.
 */

// biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is one of the characters refused
const SUSPECT = /[\u0000\ud800-\udfff]/; // cheap, and false for nearly every string
const UNSTORABLE_TEXT =
  // biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is one of the characters refused
  /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const INT4_MAX = 2_147_483_647;

function refused(what: string, field: string, problem: string, code: string): Error {
  return Object.assign(new Error(`Postgres cannot store the ${field} of this ${what}: ${problem}`), { code });
}

/** Collects the first problem of a write's values. */
class Check {
  problem: Error | null = null;
  constructor(private readonly what: string) {}

  text(field: string, value: string | null | undefined): this {
    if (this.problem || value == null || !SUSPECT.test(value) || !UNSTORABLE_TEXT.test(value)) return this;
    this.problem = refused(this.what, field, 'it holds a NUL character or a lone surrogate', '22021');
    return this;
  }

  texts(field: string, values: readonly string[]): this {
    for (const v of values) this.text(field, v);
    return this;
  }

  /** A BIGINT of nano-dollars, exact in a JavaScript number. */
  nano(field: string, value: number): this {
    if (this.problem || Number.isSafeInteger(value)) return this;
    this.problem = refused(
      this.what,
      field,
      `${value} is not a whole number of nano-dollars below 2^53`,
      '22003',
    );
    return this;
  }

  /** An INTEGER column (token counts, HTTP status). */
  int4(field: string, value: number): this {
    if (this.problem || (Number.isInteger(value) && value >= 0 && value <= INT4_MAX)) return this;
    this.problem = refused(this.what, field, `${value} is not a whole number from 0 to ${INT4_MAX}`, '22003');
    return this;
  }

  date(field: string, value: Date): this {
    if (this.problem || Number.isFinite(value.getTime())) return this;
    this.problem = refused(this.what, field, 'it is an invalid Date', '22008');
    return this;
  }

  /** A JSON value: every string and key storable, every number finite (walked without recursion). */
  json(field: string, value: unknown): this {
    const stack = [value];
    const seen = new Set<object>();
    while (!this.problem && stack.length > 0) {
      const v = stack.pop();
      if (typeof v === 'string') this.text(field, v);
      else if (typeof v === 'number') {
        if (!Number.isFinite(v))
          this.problem = refused(this.what, field, `${v} is not a JSON number`, '22P02');
      } else if (v !== null && typeof v === 'object' && !seen.has(v)) {
        seen.add(v);
        for (const k in v) {
          this.text(field, k);
          stack.push((v as Record<string, unknown>)[k]);
        }
      }
    }
    return this;
  }
}

export function reserveProblem(input: ReserveInput): Error | null {
  const c = new Check('reservation')
    .text('reservation id', input.reservationId)
    .nano('amount', input.amountNano)
    .date('time', input.now)
    .date('expiry', input.expiresAt);
  for (const s of input.scopes) c.text('scope id', s.id);
  const p = input.pending;
  if (p) {
    c.text('attribution', p.requestId)
      .text('attribution', p.callType)
      .text('attribution', p.apiKeyHash)
      .text('attribution', p.model)
      .texts('attribution', p.tags)
      .text('attribution', p.userId)
      .text('attribution', p.teamId)
      .text('attribution', p.endUser)
      .date('attribution', p.startTime);
  }
  return c.problem;
}

export function settleProblem(input: SettleInput): Error | null {
  const l = input.log;
  const c = new Check('settlement')
    .text('reservation id', input.reservationId)
    .nano('cost', input.costNano)
    .date('time', input.now);
  for (const s of input.scopes) c.text('scope id', s.id);
  return c
    .text('spend log', l.requestId)
    .text('spend log', l.callType)
    .text('spend log', l.apiKeyHash)
    .text('spend log', l.model)
    .text('spend log', l.status)
    .texts('spend log', l.tags)
    .text('spend log', l.provider)
    .text('spend log', l.userId)
    .text('spend log', l.teamId)
    .text('spend log', l.endUser)
    .nano('spend log', l.spendNano)
    .int4('token counts', l.promptTokens)
    .int4('token counts', l.completionTokens)
    .int4('token counts', l.totalTokens)
    .int4('HTTP status', l.httpStatus)
    .date('spend log', l.startTime)
    .date('spend log', l.endTime)
    .json('spend log metadata', l.metadata).problem;
}
