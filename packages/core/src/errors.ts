/**
 * One error class for everything the guard refuses, with a typed list of codes and one
 * code-to-HTTP table that every adapter shares (so Express and Hono can never disagree).
 */
export const ERROR_STATUS = {
  BAD_REQUEST: 400,
  // A management body or query that fails its schema (a wrong type, a value out of range, a field
  // missing): FastAPI's 422, as LiteLLM answers it. Unknown fields stay BAD_REQUEST.
  VALIDATION: 422,
  INVALID_JSON: 400,
  UNPRICED_MODEL: 400,
  UNKNOWN_TEAM: 400,
  UNKNOWN_USER: 400,
  AMBIGUOUS_TEAM: 400,
  MISSING_KEY: 401,
  INVALID_KEY: 401,
  // LiteLLM answers an expired key 400 `expired_key`, not 401.
  EXPIRED_KEY: 400,
  BLOCKED_KEY: 401,
  MODEL_NOT_ALLOWED: 401,
  INVALID_MASTER_KEY: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  CONFLICT: 409,
  PAYLOAD_TOO_LARGE: 413,
  BUDGET_EXCEEDED: 429,
  RATE_LIMITED: 429,
  INTERNAL: 500,
  STORAGE_UNAVAILABLE: 503,
  OVERLOADED: 503,
} as const;

export type SpendGuardErrorCode = keyof typeof ERROR_STATUS;

/** LiteLLM's `error.type` strings for the codes where LiteLLM has one. */
const LITELLM_TYPE: Partial<Record<SpendGuardErrorCode, string>> = {
  BUDGET_EXCEEDED: 'budget_exceeded',
  RATE_LIMITED: 'rate_limit_error',
  MISSING_KEY: 'auth_error',
  INVALID_KEY: 'auth_error',
  EXPIRED_KEY: 'expired_key',
  MODEL_NOT_ALLOWED: 'key_model_access_denied',
  BLOCKED_KEY: 'auth_error',
  INVALID_MASTER_KEY: 'auth_error',
  FORBIDDEN: 'auth_error',
  STORAGE_UNAVAILABLE: 'service_unavailable',
  OVERLOADED: 'service_unavailable',
  NOT_FOUND: 'not_found_error',
};

/**
 * One entry of FastAPI's 422 `detail` (pydantic v2's error): `{"type":"float_parsing",
 * "loc":["body","max_budget"],"msg":"Input should be a valid number, ...","input":"ten"}`.
 */
export interface ValidationDetail {
  type: string;
  loc: Array<string | number>;
  msg: string;
  input?: unknown;
  /** pydantic's context of an error (`json_invalid`: the decoder's message). */
  ctx?: Record<string, unknown>;
}

/** FastAPI's body for a request that fails validation: the `detail` list alone, no error envelope. */
export interface ValidationBody {
  detail: ValidationDetail[];
}

/** LiteLLM's error envelope. */
export interface ErrorEnvelope {
  error: { message: string; type: string; param: string | null; code: string };
}

export class SpendGuardError extends Error {
  readonly code: SpendGuardErrorCode;
  readonly status: number;
  readonly param: string | null;
  readonly headers: Record<string, string>;
  /** The budget or rate-limit scope that refused the call, when one did (for `onRefused` and metrics). */
  readonly scope: { kind: string; id: string } | null;
  /** FastAPI's `detail` list of a `VALIDATION` error (422): one entry per failed field. */
  readonly detail: ValidationDetail[] | null;

  constructor(
    code: SpendGuardErrorCode,
    message: string,
    options: {
      param?: string | null;
      headers?: Record<string, string>;
      cause?: unknown;
      scope?: { kind: string; id: string };
      detail?: ValidationDetail[];
    } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'SpendGuardError';
    this.code = code;
    this.status = ERROR_STATUS[code];
    this.param = options.param ?? null;
    this.headers = options.headers ?? {};
    this.scope = options.scope ?? null;
    this.detail = options.detail ?? null;
  }

  /**
   * LiteLLM's error body: `{"error":{"message","type","param","code"}}` with the status as a string
   * code; for a `VALIDATION` error, FastAPI's `{"detail":[...]}` alone, as LiteLLM's proxy sends it.
   */
  toJSON(): ErrorEnvelope | ValidationBody {
    if (this.detail) return { detail: this.detail };
    return this.envelope();
  }

  /** LiteLLM's error envelope, whatever the code. */
  envelope(): ErrorEnvelope {
    return {
      error: {
        message: this.message,
        type: LITELLM_TYPE[this.code] ?? 'invalid_request_error',
        param: this.param,
        code: String(this.status),
      },
    };
  }
}

/** Thrown by storage backends when an insert collides with an existing id. */
export class StorageConflictError extends Error {
  constructor(
    readonly entity: string,
    readonly id: string,
  ) {
    super(`${entity} '${id}' already exists`);
    this.name = 'StorageConflictError';
  }
}
