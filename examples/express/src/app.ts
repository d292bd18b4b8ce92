import { Readable } from 'node:stream';
import type { AdapterOptions, SpendGuard, SpendGuardOptions } from '@spendguard/core';
import { spendGuard } from '@spendguard/express';
import express, { type Express } from 'express';
import { PROVIDER_ROUTES, providerHeaders, providerUrl, UNVERSIONED_ROUTES } from './provider-routes.js';

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
 * The example: an ordinary Express app with its own provider routes (OpenAI chat and Responses,
 * embeddings, Anthropic messages, Gemini), which call the provider the way apps do and stream the
 * answer back. spendguard is the few lines in `if (guard)`.
 */
export function createExampleApp(options: ExampleAppOptions): { app: Express; guard: SpendGuard | null } {
  const app = express();
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
    app.use(guard.admin); // LiteLLM's management API at the root: /team/new, /key/generate, /spend/logs, ...
    app.use('/v1', guard); // every call under /v1 needs a virtual key and fits its budgets
    app.use('/v1beta', guard); // Gemini's paths
    app.post([...UNVERSIONED_ROUTES], guard); // and the routes without /v1, as LiteLLM's snippets call them
  }

  app.post(PROVIDER_ROUTES, express.json({ limit: '10mb' }), async (req, res) => {
    try {
      const upstream = await fetch(providerUrl(options.providerBaseUrl, req.originalUrl), {
        method: 'POST',
        headers: providerHeaders((name) => req.get(name)),
        body: JSON.stringify(req.body),
      });
      res.status(upstream.status);
      res.setHeader('content-type', upstream.headers.get('content-type') ?? 'application/json');
      if (!upstream.body) return void res.end();
      const body = Readable.fromWeb(upstream.body as import('node:stream/web').ReadableStream);
      res.on('close', () => body.destroy());
      body.pipe(res);
    } catch (error) {
      res
        .status(502)
        .json({ error: { message: `provider unreachable: ${(error as Error).message}`, type: 'api_error' } });
    }
  });

  app.get('/health', (_req, res) => {
    res.json({ status: 'ok' });
  });

  return { app, guard: guard?.guard ?? null };
}
