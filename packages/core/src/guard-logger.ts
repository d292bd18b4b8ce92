/** Where the guard writes its warnings and errors (the `logger` option; `console` by default). */
export interface GuardLogger {
  warn(message: string): void;
  error(message: string, error?: unknown): void;
}
