// The `alerts` option's type, apart from the alerts themselves, so that config.ts names it without
// importing what sends them.

/** Budget alerts by webhook (the `alerts` option of the guard). */
export interface BudgetAlertOptions {
  /**
   * Where alerts are POSTed, as JSON.
   * @example webhookUrl: 'https://hooks.example.com/spendguard'
   */
  webhookUrl: string;
  /**
   * Signs every delivery: `x-spendguard-signature: sha256=<hex HMAC-SHA256 of the raw body>`.
   * @example secret: process.env.SPENDGUARD_WEBHOOK_SECRET
   */
  secret: string;
  /**
   * Percentages of `max_budget` that alert when a scope's spend in the current period reaches them.
   * A `soft_budget` set on a key, user or team alerts too.
   * @default [50, 80, 95, 100]
   * @example thresholds: [75, 100]
   */
  thresholds?: number[];
  /**
   * Further attempts after a delivery fails (a network error, a timeout, or any status but 2xx).
   * @default 5
   */
  retries?: number;
  /**
   * Wait before the first retry; each later one waits twice as long as the one before.
   * @default 1000
   */
  retryDelayMs?: number;
  /**
   * How long one delivery attempt may take.
   * @default 10000
   */
  timeoutMs?: number;
}
