import type { AdapterOptions, SpendGuard, SpendGuardOptions } from '@spendguard/core';
import { type SpendGuardEnv, spendGuard } from '@spendguard/hono';
import { Hono } from 'hono';
import {
  PROVIDER_ROUTES,
  providerHeaders,
  providerUrl,
  UNVERSIONED_ROUTES,
} from '../../express/src/provider-routes.js';

export interface ExampleAppOptions {
  /** The provider the app calls, OpenAI-style (`.../v1`; the demo passes the built-in simulator's URL). */
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
 * The example: an ordinary Hono app with its own provider routes (OpenAI chat and Responses,
 * embeddings, Anthropic messages, Gemini), which call the provider the way apps do and stream the
 * answer back. spendguard is the few lines in `if (guard)`.
 */
export function createExampleApp(options: ExampleAppOptions): {
  app: Hono<SpendGuardEnv>;
  guard: SpendGuard | null;
} {
  const app = new Hono<SpendGuardEnv>();
  const guard = options.unguarded
    ? null
    : spendGuard({
        metrics: true, // Prometheus at /metrics, as LiteLLM serves it
        ...options.guardOptions,
        storage: options.storage,
        masterKey: options.masterKey,
      });
  if (guard) {
    app.get('/metrics', guard.metrics); // Prometheus, in LiteLLM's metric names
    app.route('/', guard.admin); // LiteLLM's management API at the root: /team/new, /key/generate, /spend/logs, ...
    app.use('/v1/*', guard); // every call under /v1 needs a virtual key and fits its budgets
    app.use('/v1beta/*', guard); // Gemini's paths
    for (const path of UNVERSIONED_ROUTES) app.use(path, guard); // the routes without /v1, as LiteLLM calls them
  }

  app.on('POST', PROVIDER_ROUTES, async (c) => {
    try {
      const url = new URL(c.req.url);
      const upstream = await fetch(providerUrl(options.providerBaseUrl, url.pathname + url.search), {
        method: 'POST',
        headers: providerHeaders((name) => c.req.header(name)),
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
