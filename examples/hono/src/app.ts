import type { AdapterOptions, SpendGuard, SpendGuardOptions } from '@spendguard/core';
import { type SpendGuardEnv, spendGuard } from '@spendguard/hono';
import { Hono } from 'hono';

export interface ExampleAppOptions {
  /** The provider the app calls, OpenAI-compatible (the demo passes the built-in simulator's URL). */
  providerBaseUrl: string;
  /** Where the guard keeps its state; the SQLite default when omitted. */
  storage?: SpendGuardOptions['storage'];
  masterKey?: string;
  /** More guard options: enforcement, onStorageError, storageTimeoutMs, reservation TTL and sweep, ... */
  guardOptions?: Omit<AdapterOptions, 'storage' | 'masterKey'>;
  /** Build the same app without the guard (the benchmark's baseline). */
  unguarded?: boolean;
}

/**
 * The example: an ordinary Hono app with its own OpenAI-compatible route, which calls its provider
 * the way apps do and streams the answer back. spendguard is two lines of it.
 */
export function createExampleApp(options: ExampleAppOptions): {
  app: Hono<SpendGuardEnv>;
  guard: SpendGuard | null;
} {
  const app = new Hono<SpendGuardEnv>();
  const guard = options.unguarded
    ? null
    : spendGuard({ ...options.guardOptions, storage: options.storage, masterKey: options.masterKey });
  if (guard) {
    app.route('/', guard.admin); // LiteLLM's management API at the root: /team/new, /key/generate, /spend/logs, ...
    app.use('/v1/*', guard); // every call under /v1 needs a virtual key and fits its budgets
  }

  app.post('/v1/chat/completions', async (c) => {
    try {
      const upstream = await fetch(`${options.providerBaseUrl}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer sk-provider-secret' },
        body: JSON.stringify(await c.req.json()),
      });
      return new Response(upstream.body, {
        status: upstream.status,
        headers: { 'content-type': upstream.headers.get('content-type') ?? 'application/json' },
      });
    } catch (error) {
      return c.json(
        { error: { message: `provider unreachable: ${(error as Error).message}`, type: 'api_error' } },
        502,
      );
    }
  });

  app.get('/health', (c) => c.json({ status: 'ok' }));

  return { app, guard: guard?.guard ?? null };
}
