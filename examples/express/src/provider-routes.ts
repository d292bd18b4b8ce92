/**
 * The provider routes both demo apps serve, each proxied to the provider under the same name: every
 * wire format the built-in simulator speaks (and the guard meters), with and without `/v1` (LiteLLM's
 * snippets call both). Shared by examples/express and examples/hono.
 */

/** OpenAI's and Anthropic's paths, without their `/v1`. */
export const UNVERSIONED_ROUTES = ['/chat/completions', '/responses', '/embeddings', '/messages'] as const;

/** Every route, as each framework's router takes it (Gemini's model and method are one path segment). */
export const PROVIDER_ROUTES = [
  ...UNVERSIONED_ROUTES.flatMap((path) => [`/v1${path}`, path]),
  '/v1beta/models/:call',
  '/v1/models/:call',
];

/**
 * The provider URL a request is forwarded to. `providerBaseUrl` is OpenAI-style (`https://host/v1`):
 * OpenAI's and Anthropic's paths go below it, with or without their `/v1`; Gemini's versioned paths
 * (`/v1beta/models/...`) go to its origin. `pathAndQuery` is the request's, e.g. `/v1/messages` or
 * `/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse`.
 */
export function providerUrl(providerBaseUrl: string, pathAndQuery: string): string {
  const base = providerBaseUrl.replace(/\/+$/, '');
  if (/^\/v1(?:beta|alpha)?\/models\//.test(pathAndQuery)) return new URL(base).origin + pathAndQuery;
  return base + pathAndQuery.replace(/^\/v1(?=\/)/, '');
}

/** The request headers a provider needs, taken from the client's; its credential is the app's own. */
export function providerHeaders(header: (name: string) => string | undefined): Record<string, string> {
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    authorization: 'Bearer sk-provider-secret',
  };
  for (const name of ['anthropic-version', 'anthropic-beta', 'openai-beta']) {
    const value = header(name);
    if (value) headers[name] = value;
  }
  return headers;
}
