import * as z from 'zod';
import type { ModelPriceOverride } from './pricing/price-book.js';
import type { SpendStorage } from './storage/storage-contract.js';

/** Where the guard reports what it cannot put in a response (unpriced models, settlement failures). */
export interface GuardLogger {
  warn(message: string): void;
  error(message: string, error?: unknown): void;
}

export interface SpendGuardOptions {
  /**
   * Where keys, budgets and spend live. A promise is awaited before the first request.
   * The adapters default to `@spendguard/storage-sqlite` (`./spendguard.db` or `SPENDGUARD_DB`).
   * @example storage: sqliteStorage({ path: './spend.db' })
   */
  storage: SpendStorage | Promise<SpendStorage>;
  /**
   * The admin credential for the management API (`Authorization: Bearer <masterKey>`).
   * @default process.env.SPENDGUARD_MASTER_KEY ?? process.env.LITELLM_MASTER_KEY
   */
  masterKey?: string;
  /**
   * Per-model prices in LiteLLM's format, over the shipped table.
   * @example modelPrices: { 'my-ft-model': { input_cost_per_token: 3e-6, output_cost_per_token: 1.2e-5 } }
   */
  modelPrices?: Record<string, ModelPriceOverride>;
  /**
   * Output-token bound used for the worst-case estimate when a request sets no `max_tokens`
   * and the price table knows no `max_output_tokens` for the model.
   * @default 4096
   */
  defaultMaxOutputTokens?: number;
  /** How many resolved keys the in-process LRU cache holds. @default 10000 */
  keyCacheSize?: number;
  /**
   * How long a resolved key is trusted before it is read from storage again. Changes made through
   * this guard's management API invalidate it at once; this bounds changes made by other processes.
   * @default 5000
   */
  keyCacheTtlMs?: number;
  /** After this a reservation that was never settled counts as abandoned. @default 600000 (10 min) */
  reservationTtlMs?: number;
  /** Largest JSON response the meter buffers to read usage from. @default 8 MiB */
  maxMeteredBodyBytes?: number;
  /** @default console */
  logger?: GuardLogger;
  /** The clock; tests pass a controllable one. @default () => new Date() */
  now?: () => Date;
}

const priceOverride = z
  .object({
    input_cost_per_token: z.number().nonnegative().optional(),
    output_cost_per_token: z.number().nonnegative().optional(),
    cache_read_input_token_cost: z.number().nonnegative().optional(),
    cache_creation_input_token_cost: z.number().nonnegative().optional(),
    output_cost_per_reasoning_token: z.number().nonnegative().optional(),
    max_output_tokens: z.number().int().positive().optional(),
    litellm_provider: z.string().optional(),
  })
  .strict();

const optionsSchema = z.object({
  storage: z.custom<SpendStorage | Promise<SpendStorage>>(
    (v) =>
      typeof v === 'object' &&
      v !== null &&
      ('reserve' in v || typeof (v as Promise<unknown>).then === 'function'),
    {
      message:
        'must be a SpendStorage (e.g. sqliteStorage() from @spendguard/storage-sqlite) or a promise of one',
    },
  ),
  masterKey: z
    .string()
    .min(8, 'must be at least 8 characters; LiteLLM users usually start it with "sk-"')
    .optional(),
  modelPrices: z.record(z.string(), priceOverride).optional(),
  defaultMaxOutputTokens: z.number().int().positive().optional(),
  keyCacheSize: z.number().int().positive().optional(),
  keyCacheTtlMs: z.number().int().nonnegative().optional(),
  reservationTtlMs: z.number().int().positive().optional(),
  maxMeteredBodyBytes: z.number().int().positive().optional(),
  logger: z
    .custom<GuardLogger>((v) => typeof v === 'object' && v !== null && 'warn' in v && 'error' in v)
    .optional(),
  now: z.custom<() => Date>((v) => typeof v === 'function').optional(),
});

export type ResolvedOptions = Required<Omit<SpendGuardOptions, 'masterKey' | 'modelPrices'>> &
  Pick<SpendGuardOptions, 'masterKey' | 'modelPrices'>;

/** Validates once, at creation, with messages that say how to fix the option. */
export function resolveOptions(options: SpendGuardOptions): ResolvedOptions {
  const parsed = optionsSchema.safeParse(options);
  if (!parsed.success) {
    const problems = parsed.error.issues
      .map((i) => `  - ${i.path.join('.') || 'options'}: ${i.message}`)
      .join('\n');
    throw new TypeError(`spendguard: invalid options\n${problems}`);
  }
  const masterKey = options.masterKey ?? process.env.SPENDGUARD_MASTER_KEY ?? process.env.LITELLM_MASTER_KEY;
  return {
    storage: options.storage,
    masterKey: masterKey || undefined,
    modelPrices: options.modelPrices,
    defaultMaxOutputTokens: options.defaultMaxOutputTokens ?? 4096,
    keyCacheSize: options.keyCacheSize ?? 10_000,
    keyCacheTtlMs: options.keyCacheTtlMs ?? 5_000,
    reservationTtlMs: options.reservationTtlMs ?? 600_000,
    maxMeteredBodyBytes: options.maxMeteredBodyBytes ?? 8 * 1024 * 1024,
    logger: options.logger ?? {
      warn: (m) => console.warn(`[spendguard] ${m}`),
      error: (m, e) => console.error(`[spendguard] ${m}`, e ?? ''),
    },
    now: options.now ?? (() => new Date()),
  };
}
