import { Readable } from 'node:stream';
import Anthropic from '@anthropic-ai/sdk';
import type { SpendGuard } from '@spendguard/core';
import type { SpendGuardEnv } from '@spendguard/hono';
import type express5 from 'express';
import type { Request as ExpressRequest, Response as ExpressResponse } from 'express';
import type { Hono } from 'hono';
import OpenAI from 'openai';

// The routes the metering suite calls, the same for every framework: proxies that stream each wire
// format through (the response tap meters them), and app routes that call the provider through an
// SDK given `guard.fetch` and answer their own JSON (the upstream calls are metered), or report usage
// with `track()`.

/** Where the harness mounts the guard besides `/v1`: Gemini's `/v1beta` and the app's own `/app`. */
export const EXTRA_GUARDED = ['/v1beta', '/app'] as const;

/** Headers a proxy passes on to the simulator (its scripting headers). */
function forwarded(header: (name: string) => string | undefined): Record<string, string> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  for (const name of ['x-simulator-usage', 'x-simulator-cut-after']) {
    const value = header(name);
    if (value) headers[name] = value;
  }
  return headers;
}

interface Answer {
  status: number;
  body: unknown;
}

/** The app's own logic, framework-neutral: SDK calls through `guard.fetch`, or usage reported by `track()`. */
function appLogic(guard: SpendGuard, providerUrl: string) {
  const openai = new OpenAI({
    baseURL: providerUrl,
    apiKey: 'sk-provider',
    fetch: guard.fetch,
    maxRetries: 0,
  });
  const anthropic = new Anthropic({
    baseURL: new URL(providerUrl).origin,
    apiKey: 'sk-provider',
    fetch: guard.fetch,
    maxRetries: 0,
  });
  const failed = (error: unknown): Answer => {
    if (error instanceof OpenAI.APIError || error instanceof Anthropic.APIError) {
      return { status: error.status ?? 502, body: { error: error.message } };
    }
    return { status: 502, body: { error: (error as Error).message } };
  };
  return {
    /** One question to one provider, streamed upstream or not; the route answers its own JSON. */
    async ask(body: any): Promise<Answer> {
      const messages = [{ role: 'user' as const, content: String(body?.question ?? 'hi') }];
      const model = String(body?.model ?? 'gpt-4o');
      try {
        let answer = '';
        // The usage the SDK saw, when it saw one (a chat stream's is hidden from it by guard.fetch).
        let usage: unknown;
        if (body?.provider === 'anthropic') {
          if (body.stream) {
            const stream = await anthropic.messages.create({ model, max_tokens: 30, messages, stream: true });
            const merged: Record<string, unknown> = {};
            for await (const event of stream) {
              if (event.type === 'content_block_delta' && event.delta.type === 'text_delta')
                answer += event.delta.text;
              if (event.type === 'message_start') Object.assign(merged, event.message.usage);
              if (event.type === 'message_delta') Object.assign(merged, event.usage);
            }
            usage = merged;
          } else {
            const message = await anthropic.messages.create({ model, max_tokens: 30, messages });
            answer = message.content.map((b) => (b.type === 'text' ? b.text : '')).join('');
            usage = message.usage;
          }
        } else if (body?.provider === 'openai-responses') {
          const response = await openai.responses.create({
            model,
            input: messages[0]!.content,
            max_output_tokens: 30,
          });
          answer = response.output_text;
          usage = response.usage;
        } else if (body?.stream) {
          const stream = await openai.chat.completions.create({
            model,
            messages,
            max_tokens: 30,
            stream: true,
          });
          for await (const chunk of stream) {
            answer += chunk.choices[0]!.delta.content ?? ''; // no choice-less usage chunk reaches the SDK
            if (chunk.usage) usage = chunk.usage;
          }
        } else {
          const completion = await openai.chat.completions.create({ model, messages, max_tokens: 30 });
          answer = completion.choices[0]?.message.content ?? '';
          usage = completion.usage;
        }
        return { status: 200, body: { answer, usage } };
      } catch (error) {
        return failed(error);
      }
    },
    /**
     * An agent: `steps` chat calls in a row, each `max_tokens` long; stops at the first refusal.
     * `callFetch`: the call's own fetch for a client made for this request, instead of `guard.fetch`.
     */
    async agent(body: any, callFetch?: typeof fetch): Promise<Answer> {
      const client = callFetch
        ? new OpenAI({ baseURL: providerUrl, apiKey: 'sk-provider', fetch: callFetch, maxRetries: 0 })
        : openai;
      const steps = Number(body?.steps ?? 3);
      const answers: string[] = [];
      for (let i = 0; i < steps; i++) {
        try {
          const completion = await client.chat.completions.create({
            model: 'gpt-4o',
            messages: [{ role: 'user', content: `step ${i + 1} of ${String(body?.task ?? 'a task')}` }],
            max_tokens: Number(body?.max_tokens ?? 100),
          });
          answers.push(completion.choices[0]?.message.content ?? '');
        } catch (error) {
          const { status, body: err } = failed(error);
          return { status, body: { completed: answers.length, ...(err as object) } };
        }
      }
      return { status: 200, body: { completed: answers.length } };
    },
    /** Calls the provider with plain fetch (unmetered) and reports the usage itself. */
    async tracked(
      body: any,
      call: { track(usage: unknown, options: { model: string }): Promise<unknown> },
    ): Promise<Answer> {
      const upstream = await fetch(`${providerUrl}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          model: body?.model ?? 'gpt-4o',
          messages: [{ role: 'user', content: 'hi' }],
          max_tokens: 10,
        }),
      });
      const completion = (await upstream.json()) as { model: string; usage: unknown; choices: any[] };
      await call.track(completion.usage, { model: completion.model });
      return {
        status: 200,
        body: { answer: completion.choices[0]?.message?.content, usage: completion.usage },
      };
    },
  };
}

/** Adds the metering routes to an Express app (the guard is mounted on `/v1` and {@link EXTRA_GUARDED}). */
export function addExpressMeteringRoutes(
  app: ReturnType<typeof express5>,
  express: typeof express5,
  guard: SpendGuard,
  providerUrl: string,
): void {
  const origin = new URL(providerUrl).origin;
  const proxy = async (req: ExpressRequest, res: ExpressResponse) => {
    const upstream = await fetch(`${origin}${req.originalUrl}`, {
      method: 'POST',
      headers: forwarded((n) => req.get(n)),
      body: JSON.stringify(req.body),
    });
    res
      .status(upstream.status)
      .setHeader('content-type', upstream.headers.get('content-type') ?? 'application/json');
    const body = Readable.fromWeb(upstream.body as import('node:stream/web').ReadableStream);
    res.on('close', () => body.destroy());
    body.on('error', () => res.destroy()); // the provider cut the stream: so does the proxy
    body.pipe(res);
  };
  app.post(
    ['/v1/responses', '/v1/embeddings', '/v1/messages', '/v1/images/generations'],
    express.json(),
    proxy,
  );
  app.post(/^\/v1beta\/models\/[^/]+$/, express.json(), proxy);
  const logic = appLogic(guard, providerUrl);
  const send = (res: any, answer: Answer) => res.status(answer.status).json(answer.body);
  app.post('/app/ask', express.json(), async (req, res) => send(res, await logic.ask(req.body)));
  app.post('/app/agent', express.json(), async (req, res) => send(res, await logic.agent(req.body)));
  app.post('/app/agent-own', express.json(), async (req, res) =>
    send(res, await logic.agent(req.body, res.locals.spendguard.fetch)),
  );
  app.post('/app/tracked', express.json(), async (req, res) =>
    send(res, await logic.tracked(req.body, res.locals.spendguard)),
  );
}

/** Adds the metering routes to a Hono app (the guard is mounted on `/v1/*` and {@link EXTRA_GUARDED}). */
export function addHonoMeteringRoutes(
  app: Hono<SpendGuardEnv>,
  guard: SpendGuard,
  providerUrl: string,
): void {
  const origin = new URL(providerUrl).origin;
  const proxy = async (c: import('hono').Context<SpendGuardEnv>) => {
    const url = new URL(c.req.url);
    const upstream = await fetch(`${origin}${url.pathname}${url.search}`, {
      method: 'POST',
      headers: forwarded((n) => c.req.header(n)),
      body: JSON.stringify(await c.req.json()),
    });
    return new Response(upstream.body, {
      status: upstream.status,
      headers: { 'content-type': upstream.headers.get('content-type') ?? 'application/json' },
    });
  };
  app.post('/v1/responses', proxy);
  app.post('/v1/embeddings', proxy);
  app.post('/v1/messages', proxy);
  app.post('/v1/images/generations', proxy);
  app.post('/v1beta/*', proxy);
  const logic = appLogic(guard, providerUrl);
  const send = (c: import('hono').Context<SpendGuardEnv>, answer: Answer) =>
    c.json(answer.body as object, answer.status as 200);
  app.post('/app/ask', async (c) => send(c, await logic.ask(await c.req.json())));
  app.post('/app/agent', async (c) => send(c, await logic.agent(await c.req.json())));
  app.post('/app/agent-own', async (c) =>
    send(c, await logic.agent(await c.req.json(), c.get('spendguard').fetch)),
  );
  app.post('/app/tracked', async (c) =>
    send(c, await logic.tracked(await c.req.json(), c.get('spendguard'))),
  );
}
