import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { countChatPromptTokens } from '../metering/token-count.js';

/**
 * Usage a simulated call reports instead of the computed one; fields left out keep their computed
 * values (`cached_tokens` and `reasoning_tokens` default to 0).
 */
export interface SimulatedUsage {
  prompt_tokens?: number;
  completion_tokens?: number;
  /** Reported as `usage.prompt_tokens_details.cached_tokens`. */
  cached_tokens?: number;
  /** Reported as `usage.completion_tokens_details.reasoning_tokens`; the visible text is that much shorter. */
  reasoning_tokens?: number;
}

/** Options of {@link startSimulator}. */
export interface SimulatorOptions {
  /**
   * Port to listen on; 0 picks a free one.
   * @default 0
   */
  port?: number;
  /**
   * Address to listen on.
   * @default '127.0.0.1'
   */
  host?: string;
  /**
   * Delay before the first byte of every chat completion response, in milliseconds.
   * @default 0
   */
  latencyMs?: number;
  /**
   * Delay between two SSE chunks of a streamed response, in milliseconds.
   * @default 0
   */
  chunkDelayMs?: number;
  /**
   * Completion tokens of a call that sets neither `max_completion_tokens` nor `max_tokens`.
   * @default 16
   */
  defaultCompletionTokens?: number;
}

/** A running simulated OpenAI provider. */
export interface Simulator {
  /**
   * Base URL to give an OpenAI client.
   * @example new OpenAI({ baseURL: simulator.url, apiKey: 'sk-test' })
   */
  readonly url: string;
  readonly port: number;
  /** HTTP requests received so far, whatever their path or outcome. */
  readonly requestCount: number;
  /**
   * Queues a usage for the next chat completion that carries no `x-simulator-usage` header (FIFO: one
   * queued usage per call).
   */
  scriptNextUsage(usage: SimulatedUsage): void;
  /** Stops the server, dropping open connections. */
  close(): Promise<void>;
}

interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

class RequestError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }

  toBody(): ErrorBody {
    return {
      error: { message: this.message, type: 'invalid_request_error', param: this.param, code: this.code },
    };
  }
}

interface ChatRequest {
  model: string;
  messages: unknown[];
  stream: boolean;
  includeUsage: boolean;
  maxTokens: number | undefined;
}

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number; audio_tokens: number };
  completion_tokens_details: {
    reasoning_tokens: number;
    audio_tokens: number;
    accepted_prediction_tokens: number;
    rejected_prediction_tokens: number;
  };
}

const USAGE_FIELDS = ['prompt_tokens', 'completion_tokens', 'cached_tokens', 'reasoning_tokens'] as const;
const SYSTEM_FINGERPRINT = 'fp_5f1e2d3c4b';
const MAX_BODY_BYTES = 32 * 1024 * 1024;
const ALPHANUMERIC = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

function randomId(length: number): string {
  let id = '';
  for (const byte of randomBytes(length)) id += ALPHANUMERIC[byte % ALPHANUMERIC.length];
  return id;
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function parseSimulatedUsage(value: unknown, where: string): SimulatedUsage {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TypeError(`${where} must be an object such as { "prompt_tokens": 10, "completion_tokens": 5 }`);
  }
  const record = value as Record<string, unknown>;
  const usage: SimulatedUsage = {};
  for (const field of USAGE_FIELDS) {
    const count = record[field];
    if (count === undefined) continue;
    if (!isCount(count)) throw new TypeError(`${where}.${field} must be a non-negative integer`);
    usage[field] = count;
  }
  return usage;
}

/** The completion text: `hello hello ...`, exactly `tokens` tokens in both cl100k_base and o200k_base. */
function completionPieces(tokens: number): string[] {
  return Array.from({ length: tokens }, (_, index) => (index === 0 ? 'hello' : ' hello'));
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new RequestError(413, 'Request body too large.');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseChatRequest(text: string): ChatRequest {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new RequestError(
      400,
      "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
    );
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new RequestError(400, 'The request body must be a JSON object.');
  }
  const record = body as Record<string, unknown>;
  if (typeof record.model !== 'string' || record.model.length === 0) {
    throw new RequestError(400, 'you must provide a model parameter');
  }
  if (record.messages === undefined) {
    throw new RequestError(
      400,
      "Missing required parameter: 'messages'.",
      'messages',
      'missing_required_parameter',
    );
  }
  if (!Array.isArray(record.messages)) {
    throw new RequestError(
      400,
      "Invalid type for 'messages': expected an array.",
      'messages',
      'invalid_type',
    );
  }
  let maxTokens: number | undefined;
  for (const param of ['max_completion_tokens', 'max_tokens'] as const) {
    const value = record[param];
    if (value === undefined || value === null) continue;
    if (!isCount(value)) {
      throw new RequestError(
        400,
        `Invalid '${param}': expected a non-negative integer.`,
        param,
        'invalid_value',
      );
    }
    maxTokens ??= value;
  }
  const streamOptions = record.stream_options;
  const includeUsage =
    typeof streamOptions === 'object' &&
    streamOptions !== null &&
    (streamOptions as Record<string, unknown>).include_usage === true;
  return {
    model: record.model,
    messages: record.messages,
    stream: record.stream === true,
    includeUsage,
    maxTokens,
  };
}

function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

/**
 * Starts a simulated OpenAI chat-completions provider on loopback: `POST /v1/chat/completions` (or
 * `/chat/completions`), JSON or SSE (`stream: true`, with a usage chunk when
 * `stream_options.include_usage`), in OpenAI's wire format.
 *
 * Usage is deterministic: `prompt_tokens` by OpenAI's token-counting formula, `completion_tokens` =
 * `max_completion_tokens ?? max_tokens ?? defaultCompletionTokens` (finish_reason `length` when a maximum
 * was given, `stop` otherwise), and the content is `hello hello ...`, one token per word. A request
 * header `x-simulator-usage: {"prompt_tokens":..}` or {@link Simulator.scriptNextUsage} overrides what is
 * reported (the header wins and leaves the queue alone).
 *
 * @example
 * const simulator = await startSimulator();
 * const openai = new OpenAI({ baseURL: simulator.url, apiKey: 'sk-test' });
 * await openai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
 * await simulator.close();
 */
export async function startSimulator(options: SimulatorOptions = {}): Promise<Simulator> {
  const {
    port = 0,
    host = '127.0.0.1',
    latencyMs = 0,
    chunkDelayMs = 0,
    defaultCompletionTokens = 16,
  } = options;
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new TypeError(
      `startSimulator: port must be an integer from 0 to 65535 (0 picks a free port); got ${port}`,
    );
  }
  for (const [name, value] of Object.entries({ latencyMs, chunkDelayMs, defaultCompletionTokens })) {
    if (!isCount(value))
      throw new TypeError(`startSimulator: ${name} must be a non-negative integer; got ${value}`);
  }

  const scripted: SimulatedUsage[] = [];
  let requestCount = 0;

  const completeChat = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const request = parseChatRequest(await readBody(req));
    let override: SimulatedUsage | undefined;
    const header = req.headers['x-simulator-usage'];
    if (typeof header === 'string') {
      try {
        override = parseSimulatedUsage(JSON.parse(header), 'x-simulator-usage');
      } catch (error) {
        throw new RequestError(400, `Invalid x-simulator-usage header: ${(error as Error).message}`);
      }
    } else {
      override = scripted.shift();
    }

    const promptTokens = override?.prompt_tokens ?? countChatPromptTokens(request.model, request.messages);
    const completionTokens = override?.completion_tokens ?? request.maxTokens ?? defaultCompletionTokens;
    const reasoningTokens = override?.reasoning_tokens ?? 0;
    const usage: Usage = {
      prompt_tokens: promptTokens,
      completion_tokens: completionTokens,
      total_tokens: promptTokens + completionTokens,
      prompt_tokens_details: { cached_tokens: override?.cached_tokens ?? 0, audio_tokens: 0 },
      completion_tokens_details: {
        reasoning_tokens: reasoningTokens,
        audio_tokens: 0,
        accepted_prediction_tokens: 0,
        rejected_prediction_tokens: 0,
      },
    };
    const finishReason =
      override?.completion_tokens === undefined && request.maxTokens !== undefined ? 'length' : 'stop';
    const pieces = completionPieces(Math.max(0, completionTokens - reasoningTokens));
    const id = `chatcmpl-${randomId(29)}`;
    const created = Math.floor(Date.now() / 1000);
    const headers = { 'x-request-id': `req_${randomId(32)}`, 'openai-processing-ms': String(latencyMs) };

    if (latencyMs > 0) await sleep(latencyMs);

    if (!request.stream) {
      sendJson(
        res,
        200,
        {
          id,
          object: 'chat.completion',
          created,
          model: request.model,
          choices: [
            {
              index: 0,
              message: { role: 'assistant', content: pieces.join(''), refusal: null, annotations: [] },
              logprobs: null,
              finish_reason: finishReason,
            },
          ],
          usage,
          service_tier: 'default',
          system_fingerprint: SYSTEM_FINGERPRINT,
        },
        headers,
      );
      return;
    }

    // With include_usage, OpenAI sends `usage: null` on every chunk and the totals on a last, choice-less one.
    const chunk = (choices: unknown[], chunkUsage?: Usage): string =>
      `data: ${JSON.stringify({
        id,
        object: 'chat.completion.chunk',
        created,
        model: request.model,
        service_tier: 'default',
        system_fingerprint: SYSTEM_FINGERPRINT,
        choices,
        ...(request.includeUsage ? { usage: chunkUsage ?? null } : {}),
      })}\n\n`;
    const delta = (value: Record<string, unknown>, finish: string | null = null) => ({
      index: 0,
      delta: value,
      logprobs: null,
      finish_reason: finish,
    });
    const events = [
      chunk([delta({ role: 'assistant', content: '', refusal: null })]),
      ...pieces.map((piece) => chunk([delta({ content: piece })])),
      chunk([delta({}, finishReason)]),
      ...(request.includeUsage ? [chunk([], usage)] : []),
      'data: [DONE]\n\n',
    ];
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      ...headers,
    });
    if (chunkDelayMs === 0) {
      res.end(events.join(''));
      return;
    }
    for (const [index, event] of events.entries()) {
      if (index > 0) await sleep(chunkDelayMs);
      if (res.destroyed) return; // the client went away
      res.write(event);
    }
    res.end();
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    requestCount++;
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    try {
      if (path === '/v1/chat/completions' || path === '/chat/completions') {
        if (req.method !== 'POST') {
          req.resume();
          throw new RequestError(405, `Method ${req.method} not allowed on ${path}; use POST.`);
        }
        await completeChat(req, res);
        return;
      }
      req.resume();
      throw new RequestError(404, `Invalid URL (${req.method} ${path})`);
    } catch (error) {
      if (res.headersSent) {
        res.destroy();
      } else if (error instanceof RequestError) {
        sendJson(res, error.status, error.toBody());
      } else {
        const message = error instanceof Error ? error.message : String(error);
        sendJson(res, 500, {
          error: { message: `Simulator error: ${message}`, type: 'server_error', param: null, code: null },
        });
      }
    }
  };

  // HTTP keep-alive is Node's default; keep idle connections longer than clients' pools do (undici: 4 s).
  const server = createServer((req, res) => {
    void handle(req, res);
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  let closing: Promise<void> | undefined;
  const urlHost = address.address.includes(':') ? `[${address.address}]` : address.address;

  return {
    url: `http://${urlHost}:${address.port}/v1`,
    port: address.port,
    get requestCount() {
      return requestCount;
    },
    scriptNextUsage(usage: SimulatedUsage): void {
      scripted.push(parseSimulatedUsage(usage, 'scriptNextUsage(usage)'));
    },
    close(): Promise<void> {
      closing ??= new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
