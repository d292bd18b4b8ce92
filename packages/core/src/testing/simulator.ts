import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type BillingFormat,
  type BillingRules,
  countWebSearches,
  DEFAULT_BILLING_RULES,
  geminiCandidateCount,
  type ImageSize,
  providerPromptUsage,
  searchContentTokens,
} from './provider-billing.js';

/**
 * Usage a simulated call reports instead of the computed one; fields left out keep their computed
 * values (the detail counts default to 0, except the prompt's audio share and the web searches, which
 * are computed too; a scripted `prompt_tokens` sets the audio share to 0 unless it is scripted). Counted the OpenAI chat way, whatever the wire format:
 * `prompt_tokens` INCLUDES the cached, cache-write and audio prompt tokens, `completion_tokens` the
 * reasoning and audio ones; each format reports them in its own shape (Anthropic's `input_tokens`
 * exclude the cache, Gemini's `candidatesTokenCount` excludes the thoughts).
 */
export interface SimulatedUsage {
  prompt_tokens?: number;
  completion_tokens?: number;
  /** Prompt tokens read from the cache (OpenAI `cached_tokens`, Anthropic `cache_read_input_tokens`, Gemini `cachedContentTokenCount`). */
  cached_tokens?: number;
  /** Prompt tokens written to the cache with the 5-minute TTL (Anthropic only). */
  cache_write_tokens?: number;
  /** Prompt tokens written to the cache with the 1-hour TTL (Anthropic only). */
  cache_write_1h_tokens?: number;
  /** Completion tokens spent reasoning (OpenAI `reasoning_tokens`, Gemini `thoughtsTokenCount`); the visible text is that much shorter. */
  reasoning_tokens?: number;
  /** Prompt tokens that are audio (OpenAI chat `prompt_tokens_details.audio_tokens`, Gemini AUDIO modality). */
  prompt_audio_tokens?: number;
  /** Completion tokens that are audio (OpenAI chat `completion_tokens_details.audio_tokens`); the visible text is that much shorter. */
  completion_audio_tokens?: number;
  /**
   * Web searches the call ran (Anthropic `usage.server_tool_use.web_search_requests`; OpenAI Responses:
   * that many `web_search_call` output items; a chat search model searches once whatever is scripted).
   */
  web_search_requests?: number;
}

/**
 * Which parts of a prompt the simulator bills, as the providers do (`false`: that part bills 0 tokens,
 * to simulate a provider that does not bill it, or a guard test that needs text only).
 */
export interface SimulatorBilling {
  /** Image parts (OpenAI, Anthropic and Gemini sizing rules). @default true */
  images?: boolean;
  /** Audio parts (OpenAI chat `input_audio`, Gemini `audio/*`). @default true */
  audio?: boolean;
  /** PDF parts (OpenAI `file` / `input_file`, Anthropic `document`, Gemini `application/pdf`). @default true */
  files?: boolean;
  /** Tool and function definitions, and OpenAI `response_format` JSON schemas. @default true */
  tools?: boolean;
  /**
   * Web searches: Anthropic's server tool one a call; an OpenAI chat search model one a call; the OpenAI
   * Responses web search tools `max_tool_calls` (1 when unset) a call. @default true
   */
  webSearch?: boolean;
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
   * Delay before the first byte of every response, in milliseconds.
   * @default 0
   */
  latencyMs?: number;
  /**
   * Delay between two SSE events of a streamed response, in milliseconds.
   * @default 0
   */
  chunkDelayMs?: number;
  /**
   * Completion tokens of a call that asks for no maximum (`max_completion_tokens`, `max_tokens`,
   * `max_output_tokens`, `generationConfig.maxOutputTokens`).
   * @default 16
   */
  defaultCompletionTokens?: number;
  /**
   * Which prompt parts are billed; each defaults to `true`, as the providers bill them. See
   * docs/simulator.md, "How the simulator bills".
   * @default { images: true, audio: true, files: true, tools: true, webSearch: true }
   * @example startSimulator({ billing: { images: false } }) // image parts bill 0 tokens
   */
  billing?: SimulatorBilling;
  /**
   * The size assumed for an image given by http(s) URL or file id (the simulator fetches nothing), or
   * whose bytes are not a PNG, JPEG, GIF or WebP it can read.
   * @default { width: 1024, height: 1024 }
   */
  remoteImageSize?: ImageSize;
  /**
   * The page count assumed for a file given by id or URL.
   * @default 1
   */
  remoteFilePages?: number;
  /**
   * The duration, in seconds, assumed for audio given by URI (Gemini `fileData`).
   * @default 60
   */
  remoteAudioSeconds?: number;
}

/** A running simulated provider (OpenAI, Anthropic and Gemini wire formats). */
export interface Simulator {
  /**
   * Base URL to give an OpenAI client (`.../v1`); an Anthropic client takes {@link Simulator.origin}.
   * @example new OpenAI({ baseURL: simulator.url, apiKey: 'sk-test' })
   */
  readonly url: string;
  /**
   * The server's origin (`http://127.0.0.1:port`), for Anthropic (`/v1/messages`) and Gemini
   * (`/v1beta/models/...`) clients.
   * @example new Anthropic({ baseURL: simulator.origin, apiKey: 'sk-test' })
   */
  readonly origin: string;
  readonly port: number;
  /** HTTP requests received so far, whatever their path or outcome. */
  readonly requestCount: number;
  /** The most requests this server was answering at once (until each one's response finished or closed). */
  readonly peakConcurrency: number;
  /**
   * Queues a usage for the next call (any format) that carries no `x-simulator-usage` header (FIFO:
   * one queued usage per call).
   */
  scriptNextUsage(usage: SimulatedUsage): void;
  /**
   * Queues a cut for the next streamed call that carries no `x-simulator-cut-after` header: the
   * server sends that many SSE events, then destroys the connection (FIFO).
   */
  cutNextStream(afterEvents: number): void;
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

/** The usage of one simulated call, OpenAI-chat counted (plus the web searches it ran). */
interface Counts {
  prompt: number;
  completion: number;
  cached: number;
  cacheWrite5m: number;
  cacheWrite1h: number;
  reasoning: number;
  audioIn: number;
  audioOut: number;
  webSearches: number;
}

const USAGE_FIELDS = [
  'prompt_tokens',
  'completion_tokens',
  'cached_tokens',
  'cache_write_tokens',
  'cache_write_1h_tokens',
  'reasoning_tokens',
  'prompt_audio_tokens',
  'completion_audio_tokens',
  'web_search_requests',
] as const;
const BILLING_PARTS = ['images', 'audio', 'files', 'tools', 'webSearch'] as const;
const SYSTEM_FINGERPRINT = 'fp_5f1e2d3c4b';
const MAX_BODY_BYTES = 32 * 1024 * 1024;
const ALPHANUMERIC = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const GEMINI_PATH = /^\/v1(?:beta|alpha)?\/models\/([^/:]+):(generateContent|streamGenerateContent)$/;
const EMBEDDING_DIMENSIONS = 8;
/** The page a simulated web search cites. */
const SEARCH_URL = 'https://example.com/simulated-search-result';

function randomId(length: number): string {
  let id = '';
  for (const byte of randomBytes(length)) id += ALPHANUMERIC[byte % ALPHANUMERIC.length];
  return id;
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function parseSimulatedUsage(value: unknown, where: string): SimulatedUsage {
  if (!isRecord(value)) {
    throw new TypeError(`${where} must be an object such as { "prompt_tokens": 10, "completion_tokens": 5 }`);
  }
  const usage: SimulatedUsage = {};
  for (const field of USAGE_FIELDS) {
    const count = value[field];
    if (count === undefined) continue;
    if (!isCount(count)) throw new TypeError(`${where}.${field} must be a non-negative integer`);
    usage[field] = count;
  }
  return usage;
}

/** The simulator's billing options, validated, as {@link BillingRules}. */
function billingRules(options: SimulatorOptions): BillingRules {
  const rules: BillingRules = { ...DEFAULT_BILLING_RULES };
  const { billing, remoteImageSize, remoteFilePages, remoteAudioSeconds } = options;
  if (billing !== undefined) {
    if (!isRecord(billing)) {
      throw new TypeError('startSimulator: billing must be an object such as { images: false }');
    }
    for (const [part, value] of Object.entries(billing)) {
      if (!(BILLING_PARTS as readonly string[]).includes(part)) {
        throw new TypeError(
          `startSimulator: billing.${part} is not a billed part; use ${BILLING_PARTS.join(', ')}`,
        );
      }
      if (value === undefined) continue;
      if (typeof value !== 'boolean') {
        throw new TypeError(`startSimulator: billing.${part} must be true or false; got ${value}`);
      }
      rules[part as (typeof BILLING_PARTS)[number]] = value;
    }
  }
  if (remoteImageSize !== undefined) {
    const { width, height } = isRecord(remoteImageSize) ? remoteImageSize : { width: NaN, height: NaN };
    if (!isCount(width) || !isCount(height) || width === 0 || height === 0) {
      throw new TypeError(
        'startSimulator: remoteImageSize must be { width, height } in positive whole pixels, such as { width: 1024, height: 1024 }',
      );
    }
    rules.remoteImageSize = { width, height };
  }
  for (const [name, value] of Object.entries({ remoteFilePages, remoteAudioSeconds })) {
    if (value === undefined) continue;
    if (!isCount(value) || value === 0) {
      throw new TypeError(`startSimulator: ${name} must be a positive integer; got ${value}`);
    }
    rules[name as 'remoteFilePages' | 'remoteAudioSeconds'] = value;
  }
  return rules;
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

function parseJsonObject(text: string): Record<string, unknown> {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new RequestError(
      400,
      "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
    );
  }
  if (!isRecord(body)) throw new RequestError(400, 'The request body must be a JSON object.');
  return body;
}

function requireModel(body: Record<string, unknown>): string {
  if (typeof body.model !== 'string' || body.model.length === 0) {
    throw new RequestError(400, 'you must provide a model parameter');
  }
  return body.model;
}

function requireArray(body: Record<string, unknown>, param: string): unknown[] {
  const value = body[param];
  if (value === undefined) {
    throw new RequestError(
      400,
      `Missing required parameter: '${param}'.`,
      param,
      'missing_required_parameter',
    );
  }
  if (!Array.isArray(value)) {
    throw new RequestError(400, `Invalid type for '${param}': expected an array.`, param, 'invalid_type');
  }
  return value;
}

/** The first maximum the body sets among `params`, validated. */
function maxTokens(body: Record<string, unknown>, params: readonly string[]): number | undefined {
  let max: number | undefined;
  for (const param of params) {
    const value = body[param];
    if (value === undefined || value === null) continue;
    if (!isCount(value)) {
      throw new RequestError(
        400,
        `Invalid '${param}': expected a non-negative integer.`,
        param,
        'invalid_value',
      );
    }
    max ??= value;
  }
  return max;
}

/**
 * A chat completion's output cap by its provider's rules. OpenAI takes `max_completion_tokens` or
 * `max_tokens`, never both (a 400). DeepSeek, whose API speaks OpenAI's chat format (here: a model
 * named `deepseek-...`), reads `max_tokens` alone and ignores `max_completion_tokens` without a word.
 */
function chatMaxTokens(model: string, body: Record<string, unknown>): number | undefined {
  if (/^(deepseek\/)?deepseek-/.test(model)) return maxTokens(body, ['max_tokens']);
  const given = (name: string) => body[name] !== undefined && body[name] !== null;
  if (given('max_tokens') && given('max_completion_tokens')) {
    throw new RequestError(
      400,
      "Setting 'max_tokens' and 'max_completion_tokens' at the same time is not supported.",
      'max_tokens',
      'invalid_parameter_combination',
    );
  }
  return maxTokens(body, ['max_completion_tokens', 'max_tokens']);
}

/**
 * OpenAI chat's `n`: how many choices OpenAI generates and bills, 1 when unset or null; an integer from
 * 1 to 128 (OpenAI refuses others with a 400 naming `n`).
 */
function chatChoiceCount(body: Record<string, unknown>): number {
  const n = body.n;
  if (n === undefined || n === null) return 1;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 128) {
    throw new RequestError(
      400,
      `Invalid 'n': expected an integer from 1 to 128, got ${JSON.stringify(n)}.`,
      'n',
      'invalid_value',
    );
  }
  return n;
}

/**
 * A Gemini field given in camelCase or snake_case (proto3 JSON reads both); both at once is refused, as
 * Google's parser refuses a field set twice.
 */
function geminiField(body: Record<string, unknown>, camel: string, snake: string): unknown {
  if (body[camel] !== undefined && body[snake] !== undefined) {
    throw new RequestError(
      400,
      `Invalid JSON payload received. Field "${snake}" and "${camel}" are the same field, set twice.`,
      snake,
    );
  }
  return body[camel] ?? body[snake];
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
 * Output tokens of one gpt-image-1 image, by quality and size, as OpenAI publishes them (image
 * generation guide, "Cost and latency").
 */
const IMAGE_OUTPUT_TOKENS: Readonly<Record<string, Readonly<Record<string, number>>>> = {
  low: { '1024x1024': 272, '1024x1536': 408, '1536x1024': 400 },
  medium: { '1024x1024': 1056, '1024x1536': 1584, '1536x1024': 1568 },
  high: { '1024x1024': 4160, '1024x1536': 6240, '1536x1024': 6208 },
};
const ONE_PIXEL_PNG =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==';

/** One SSE event in the framing each provider uses. */
function sse(data: unknown, event?: string, lineEnd = '\n'): string {
  const payload = typeof data === 'string' ? data : JSON.stringify(data);
  return `${event ? `event: ${event}${lineEnd}` : ''}data: ${payload}${lineEnd}${lineEnd}`;
}

/** What one request asked for, whatever its format. */
interface Call {
  model: string;
  stream: boolean;
  /** The maximum the request set, if any (decides `finish_reason`). */
  max: number | undefined;
  counts: Counts;
  /** Whether the completion count came from a script (then the finish reason is `stop`). */
  scriptedCompletion: boolean;
  /** Whether the prompt count came from a script (then nothing is added to it). */
  scriptedPrompt: boolean;
  /** The visible completion text, in pieces of one token. */
  pieces: string[];
  /** SSE events to send before cutting the connection, or `null`. */
  cutAfter: number | null;
}

/**
 * Starts a simulated LLM provider on loopback, speaking the wire formats spendguard meters, JSON and
 * SSE alike:
 * - OpenAI chat completions: `POST /v1/chat/completions` (or `/chat/completions`), a usage chunk when
 *   `stream_options.include_usage` (choice-less, after the finish chunk; `usage: null` on the others);
 * - OpenAI Responses: `POST /v1/responses` (`stream: true`: `response.created` ... `response.completed`
 *   carrying `response.usage`);
 * - OpenAI embeddings: `POST /v1/embeddings` (float or base64, as the openai client asks);
 * - Anthropic messages: `POST /v1/messages` (`stream: true`: `message_start`, `content_block_start`,
 *   `ping`, `content_block_delta`..., `content_block_stop`, `message_delta`, `message_stop`);
 * - Gemini: `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent` (`?alt=sse`:
 *   SSE with CRLF framing, `usageMetadata` on every chunk, the last one final; otherwise a JSON array).
 *
 * Usage is deterministic: prompt tokens as the provider of the wire format bills them (text, images,
 * audio, files and tool definitions; see {@link SimulatorOptions.billing} and docs/simulator.md, "How
 * the simulator bills"), completion tokens = the request's maximum (`max_completion_tokens`, `max_tokens`,
 * `max_output_tokens`, `generationConfig.maxOutputTokens`) or `defaultCompletionTokens` (finish reason
 * `length` when a maximum was given, `stop` otherwise), and the text is `hello hello ...`, one token
 * per word. A request header `x-simulator-usage: {"prompt_tokens":..}` or
 * {@link Simulator.scriptNextUsage} overrides what is reported (the header wins and leaves the queue
 * alone); `x-simulator-cut-after: N` or {@link Simulator.cutNextStream} cuts a stream after N events.
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
  const rules = billingRules(options);

  const scripted: SimulatedUsage[] = [];
  const cuts: number[] = [];
  /** Stored Responses (`store` not false): the tokens a later turn naming it is billed as input. */
  const storedContext = new Map<string, number>();
  let requestCount = 0;
  let inFlight = 0;
  let peakConcurrency = 0;

  /** The usage and text of a call: computed, then overridden by its script. */
  const plan = (
    req: IncomingMessage,
    model: string,
    stream: boolean,
    max: number | undefined,
    body: Record<string, unknown>,
    format: BillingFormat,
    completionDefault = max ?? defaultCompletionTokens,
  ): Call => {
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
    let cutAfter: number | null = null;
    const cutHeader = req.headers['x-simulator-cut-after'];
    if (typeof cutHeader === 'string') {
      const n = Number(cutHeader);
      if (!isCount(n)) throw new RequestError(400, 'x-simulator-cut-after must be a non-negative integer');
      cutAfter = n;
    } else if (stream) {
      cutAfter = cuts.shift() ?? null;
    }
    // A scripted prompt replaces the whole computed prompt side (its audio share then defaults to 0);
    // searches are billed apart from tokens, so they stay computed unless scripted themselves.
    const computed =
      override?.prompt_tokens === undefined ? providerPromptUsage(body, format, model, rules) : undefined;
    const webSearches =
      override?.web_search_requests ?? computed?.webSearches ?? countWebSearches(body, format, rules, model);
    // OpenAI Responses adds the search results it bills to the prompt (input_tokens).
    const searchContent = computed ? searchContentTokens(body, format, model, webSearches) : 0;
    const counts: Counts = {
      prompt: override?.prompt_tokens ?? (computed ? computed.prompt + searchContent : 0),
      completion: override?.completion_tokens ?? completionDefault,
      cached: override?.cached_tokens ?? 0,
      cacheWrite5m: override?.cache_write_tokens ?? 0,
      cacheWrite1h: override?.cache_write_1h_tokens ?? 0,
      reasoning: override?.reasoning_tokens ?? 0,
      audioIn: override?.prompt_audio_tokens ?? computed?.audioIn ?? 0,
      audioOut: override?.completion_audio_tokens ?? 0,
      webSearches,
    };
    return {
      model,
      stream,
      max,
      counts,
      scriptedCompletion: override?.completion_tokens !== undefined,
      scriptedPrompt: override?.prompt_tokens !== undefined,
      pieces: completionPieces(Math.max(0, counts.completion - counts.reasoning - counts.audioOut)),
      cutAfter,
    };
  };

  const finishedByLength = (call: Call) => !call.scriptedCompletion && call.max !== undefined;

  /** Sends SSE events, spaced by `chunkDelayMs`, cut after `call.cutAfter` of them when asked. */
  const stream = async (
    res: ServerResponse,
    call: Call,
    events: string[],
    headers: Record<string, string>,
  ) => {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      ...headers,
    });
    const cut = call.cutAfter;
    const sent = cut === null ? events : events.slice(0, cut);
    if (chunkDelayMs === 0) {
      if (cut === null) return void res.end(sent.join(''));
      // Flushed first, then the connection dies mid-stream, as a provider's would.
      return void res.write(sent.join(''), () => res.destroy());
    }
    for (const [index, event] of sent.entries()) {
      if (index > 0) await sleep(chunkDelayMs);
      if (res.destroyed) return; // the client went away
      res.write(event);
    }
    if (cut === null) res.end();
    else res.write('', () => res.destroy());
  };

  const requestHeaders = () => ({
    'x-request-id': `req_${randomId(32)}`,
    'openai-processing-ms': String(latencyMs),
  });

  const chatUsage = (c: Counts) => ({
    prompt_tokens: c.prompt,
    completion_tokens: c.completion,
    total_tokens: c.prompt + c.completion,
    prompt_tokens_details: { cached_tokens: c.cached, audio_tokens: c.audioIn },
    completion_tokens_details: {
      reasoning_tokens: c.reasoning,
      audio_tokens: c.audioOut,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0,
    },
  });

  const completeChat = async (req: IncomingMessage, res: ServerResponse, body: Record<string, unknown>) => {
    const model = requireModel(body);
    requireArray(body, 'messages');
    const max = chatMaxTokens(model, body);
    const streamOptions = body.stream_options;
    const includeUsage = isRecord(streamOptions) && streamOptions.include_usage === true;
    const choices = chatChoiceCount(body);
    // Each of the `n` choices is generated, and billed, in full: completion_tokens is their total.
    const call = plan(
      req,
      model,
      body.stream === true,
      max,
      body,
      'openai-chat',
      (max ?? defaultCompletionTokens) * choices,
    );
    const usage = chatUsage(call.counts);
    const finishReason = finishedByLength(call) ? 'length' : 'stop';
    const id = `chatcmpl-${randomId(29)}`;
    const created = Math.floor(Date.now() / 1000);
    const headers = requestHeaders();
    if (latencyMs > 0) await sleep(latencyMs);

    // The generated words, split over the choices in turn.
    const texts = Array.from({ length: choices }, (_, i) =>
      completionPieces(Math.floor(call.pieces.length / choices) + (i < call.pieces.length % choices ? 1 : 0)),
    );
    // A search model cites what it found: url_citation annotations over the answer.
    const text = texts[0]!.join('');
    const annotations =
      call.counts.webSearches > 0
        ? [
            {
              type: 'url_citation',
              url_citation: {
                start_index: 0,
                end_index: text.length,
                title: 'Simulated result',
                url: SEARCH_URL,
              },
            },
          ]
        : [];
    if (!call.stream) {
      return sendJson(
        res,
        200,
        {
          id,
          object: 'chat.completion',
          created,
          model,
          choices: texts.map((pieces, index) => ({
            index,
            message: {
              role: 'assistant',
              content: pieces.join(''),
              refusal: null,
              annotations: index === 0 ? annotations : [],
            },
            logprobs: null,
            finish_reason: finishReason,
          })),
          usage,
          service_tier: 'default',
          system_fingerprint: SYSTEM_FINGERPRINT,
        },
        headers,
      );
    }
    // With include_usage, OpenAI sends `usage: null` on every chunk and the totals on a last, choice-less one.
    const chunk = (choices: unknown[], chunkUsage?: unknown): string =>
      sse({
        id,
        object: 'chat.completion.chunk',
        created,
        model,
        service_tier: 'default',
        system_fingerprint: SYSTEM_FINGERPRINT,
        choices,
        ...(includeUsage ? { usage: chunkUsage ?? null } : {}),
      });
    const delta = (value: Record<string, unknown>, finish: string | null = null, index = 0) => ({
      index,
      delta: value,
      logprobs: null,
      finish_reason: finish,
    });
    // OpenAI streams each choice's deltas under its own index, interleaved.
    const choiceIndexes = texts.map((_, index) => index);
    await stream(
      res,
      call,
      [
        ...choiceIndexes.map((index) =>
          chunk([delta({ role: 'assistant', content: '', refusal: null }, null, index)]),
        ),
        ...call.pieces.map((_, i) =>
          chunk([delta({ content: texts[i % choices]![Math.floor(i / choices)] }, null, i % choices)]),
        ),
        ...(annotations.length > 0 ? [chunk([delta({ annotations })])] : []),
        ...choiceIndexes.map((index) => chunk([delta({}, finishReason, index)])),
        ...(includeUsage ? [chunk([], usage)] : []),
        'data: [DONE]\n\n',
      ],
      headers,
    );
  };

  const respond = async (req: IncomingMessage, res: ServerResponse, body: Record<string, unknown>) => {
    const model = requireModel(body);
    if (body.input === undefined) {
      throw new RequestError(
        400,
        "Missing required parameter: 'input'.",
        'input',
        'missing_required_parameter',
      );
    }
    const max = maxTokens(body, ['max_output_tokens']);
    // Every earlier turn of a chain (its input and its output) is billed again as this turn's input.
    const previous = body.previous_response_id;
    const carried = previous === undefined || previous === null ? 0 : storedContext.get(String(previous));
    if (carried === undefined) {
      throw new RequestError(
        400,
        `Previous response with id '${String(previous)}' not found.`,
        'previous_response_id',
        'previous_response_not_found',
      );
    }
    const call = plan(req, model, body.stream === true, max, body, 'openai-responses');
    const c = call.counts;
    if (!call.scriptedPrompt) c.prompt += carried;
    const id = `resp_${randomId(48)}`;
    if (body.store !== false) storedContext.set(id, c.prompt + c.completion);
    const messageId = `msg_${randomId(48)}`;
    const createdAt = Math.floor(Date.now() / 1000);
    const text = call.pieces.join('');
    const incomplete = finishedByLength(call);
    const usage = {
      input_tokens: c.prompt,
      input_tokens_details: { cached_tokens: c.cached },
      output_tokens: c.completion,
      output_tokens_details: { reasoning_tokens: c.reasoning },
      total_tokens: c.prompt + c.completion,
    };
    // Each search is a `web_search_call` output item before the message, which cites what it found.
    const searches = Array.from({ length: c.webSearches }, (_, i) => ({
      id: `ws_${randomId(48)}`,
      query: `simulated query ${i + 1}`,
    }));
    const searchCall = (s: { id: string; query: string }, status: string) => ({
      id: s.id,
      type: 'web_search_call',
      status,
      action: { type: 'search', query: s.query },
    });
    const citations = (t: string) =>
      searches.length > 0
        ? [
            {
              type: 'url_citation',
              start_index: 0,
              end_index: t.length,
              title: 'Simulated result',
              url: SEARCH_URL,
            },
          ]
        : [];
    const part = (t: string) => ({ type: 'output_text', text: t, annotations: citations(t), logprobs: [] });
    const message = (status: string, content: unknown[]) => ({
      id: messageId,
      type: 'message',
      status,
      role: 'assistant',
      content,
    });
    const response = (status: string, output: unknown[], withUsage: boolean) => ({
      id,
      object: 'response',
      created_at: createdAt,
      status,
      background: body.background === true,
      error: null,
      incomplete_details: status === 'incomplete' ? { reason: 'max_output_tokens' } : null,
      instructions: typeof body.instructions === 'string' ? body.instructions : null,
      max_output_tokens: max ?? null,
      model,
      output,
      parallel_tool_calls: true,
      previous_response_id: typeof previous === 'string' ? previous : null,
      reasoning: { effort: null, summary: null },
      service_tier: 'default',
      store: body.store !== false,
      temperature: 1,
      text: { format: { type: 'text' }, verbosity: 'medium' },
      tool_choice: 'auto',
      tools: [],
      top_p: 1,
      truncation: 'disabled',
      usage: withUsage ? usage : null,
      user: null,
      metadata: {},
    });
    const headers = requestHeaders();
    if (latencyMs > 0) await sleep(latencyMs);
    const finalStatus = incomplete ? 'incomplete' : 'completed';
    const searched = searches.map((s) => searchCall(s, 'completed'));
    // A background response answers at once, queued: it runs (and is billed) afterwards.
    if (body.background === true && !call.stream) {
      return sendJson(res, 200, response('queued', [], false), headers);
    }
    if (!call.stream) {
      return sendJson(
        res,
        200,
        response(finalStatus, [...searched, message(finalStatus, [part(text)])], true),
        headers,
      );
    }
    let sequence = 0;
    const event = (type: string, fields: Record<string, unknown>) =>
      sse({ type, sequence_number: sequence++, ...fields }, type);
    const at = searches.length; // the message's output index
    const item = { item_id: messageId, output_index: at, content_index: 0 };
    const searchEvents = searches.flatMap((s, index) => [
      event('response.output_item.added', { output_index: index, item: searchCall(s, 'in_progress') }),
      event('response.web_search_call.in_progress', { output_index: index, item_id: s.id }),
      event('response.web_search_call.searching', { output_index: index, item_id: s.id }),
      event('response.web_search_call.completed', { output_index: index, item_id: s.id }),
      event('response.output_item.done', { output_index: index, item: searchCall(s, 'completed') }),
    ]);
    await stream(
      res,
      call,
      [
        event('response.created', { response: response('in_progress', [], false) }),
        event('response.in_progress', { response: response('in_progress', [], false) }),
        ...searchEvents,
        event('response.output_item.added', { output_index: at, item: message('in_progress', []) }),
        event('response.content_part.added', { ...item, part: part('') }),
        ...call.pieces.map((piece) =>
          event('response.output_text.delta', { ...item, delta: piece, logprobs: [] }),
        ),
        event('response.output_text.done', { ...item, text, logprobs: [] }),
        event('response.content_part.done', { ...item, part: part(text) }),
        event('response.output_item.done', { output_index: at, item: message(finalStatus, [part(text)]) }),
        event(`response.${finalStatus}`, {
          response: response(finalStatus, [...searched, message(finalStatus, [part(text)])], true),
        }),
      ],
      headers,
    );
  };

  /**
   * OpenAI's Images API for the gpt-image models: `n` images (1 to 10), each billed the output tokens
   * OpenAI publishes for its quality and size (`auto`: high, 1024x1024), the prompt as input text tokens;
   * JSON only (a streamed call, with partial images, is refused: the simulator does not speak it).
   */
  const generateImages = async (req: IncomingMessage, res: ServerResponse, body: Record<string, unknown>) => {
    const model = requireModel(body);
    if (typeof body.prompt !== 'string') {
      throw new RequestError(
        400,
        "Missing required parameter: 'prompt'.",
        'prompt',
        'missing_required_parameter',
      );
    }
    if (body.stream === true) {
      throw new RequestError(400, 'The simulator does not stream images (partial_images).', 'stream');
    }
    const n = body.n ?? 1;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 10) {
      throw new RequestError(
        400,
        `Invalid 'n': integer out of range; expected 1 to 10.`,
        'n',
        'integer_out_of_range',
      );
    }
    const quality = body.quality ?? 'auto';
    const size = body.size ?? 'auto';
    const qualityKey = quality === 'auto' ? 'high' : quality;
    const perQuality =
      typeof qualityKey === 'string' && Object.hasOwn(IMAGE_OUTPUT_TOKENS, qualityKey)
        ? IMAGE_OUTPUT_TOKENS[qualityKey]
        : undefined;
    const sizeKey = size === 'auto' ? '1024x1024' : size;
    const perImage =
      perQuality && typeof sizeKey === 'string' && Object.hasOwn(perQuality, sizeKey)
        ? perQuality[sizeKey]
        : undefined;
    if (perImage === undefined) {
      throw new RequestError(400, `Invalid quality or size: ${JSON.stringify({ quality, size })}.`, 'size');
    }
    const call = plan(
      req,
      model,
      false,
      undefined,
      { input: body.prompt },
      'openai-embeddings',
      n * perImage,
    );
    if (latencyMs > 0) await sleep(latencyMs);
    sendJson(
      res,
      200,
      {
        created: Math.floor(Date.now() / 1000),
        data: Array.from({ length: n }, () => ({ b64_json: ONE_PIXEL_PNG })),
        output_format: 'png',
        quality: quality === 'auto' ? 'high' : quality,
        size: size === 'auto' ? '1024x1024' : size,
        usage: {
          input_tokens: call.counts.prompt,
          input_tokens_details: { text_tokens: call.counts.prompt, image_tokens: 0 },
          output_tokens: call.counts.completion,
          total_tokens: call.counts.prompt + call.counts.completion,
        },
      },
      requestHeaders(),
    );
  };

  const embed = async (req: IncomingMessage, res: ServerResponse, body: Record<string, unknown>) => {
    const model = requireModel(body);
    const input = body.input;
    if (input === undefined) {
      throw new RequestError(
        400,
        "Missing required parameter: 'input'.",
        'input',
        'missing_required_parameter',
      );
    }
    const inputs =
      typeof input === 'string' || (Array.isArray(input) && input.every(isCount)) ? [input] : input;
    if (!Array.isArray(inputs) || inputs.length === 0) {
      throw new RequestError(400, "Invalid 'input': expected a string or an array of strings.", 'input');
    }
    const call = plan(req, model, false, undefined, body, 'openai-embeddings', 0);
    const base64 = body.encoding_format === 'base64';
    const data = inputs.map((_, index) => {
      const vector = Float32Array.from({ length: EMBEDDING_DIMENSIONS }, (_v, i) => (index + 1) / (i + 2));
      return {
        object: 'embedding',
        index,
        embedding: base64 ? Buffer.from(vector.buffer).toString('base64') : Array.from(vector),
      };
    });
    if (latencyMs > 0) await sleep(latencyMs);
    sendJson(
      res,
      200,
      {
        object: 'list',
        data,
        model,
        usage: { prompt_tokens: call.counts.prompt, total_tokens: call.counts.prompt },
      },
      requestHeaders(),
    );
  };

  // Searches run while the answer is generated: a stream's message_start reports none yet.
  const anthropicUsage = (c: Counts, output: number, searched = true) => ({
    input_tokens: Math.max(0, c.prompt - c.cached - c.cacheWrite5m - c.cacheWrite1h),
    cache_creation_input_tokens: c.cacheWrite5m + c.cacheWrite1h,
    cache_read_input_tokens: c.cached,
    cache_creation: { ephemeral_5m_input_tokens: c.cacheWrite5m, ephemeral_1h_input_tokens: c.cacheWrite1h },
    output_tokens: output,
    service_tier: 'standard',
    ...(searched && c.webSearches > 0 ? { server_tool_use: { web_search_requests: c.webSearches } } : {}),
  });

  const message = async (req: IncomingMessage, res: ServerResponse, body: Record<string, unknown>) => {
    const model = requireModel(body);
    requireArray(body, 'messages');
    const max = maxTokens(body, ['max_tokens']);
    if (max === undefined) {
      throw new RequestError(400, 'max_tokens: Field required', 'max_tokens', 'missing_required_parameter');
    }
    const call = plan(req, model, body.stream === true, max, body, 'anthropic-messages');
    const id = `msg_${randomId(24)}`;
    const stopReason = finishedByLength(call) ? 'max_tokens' : 'end_turn';
    const headers = { 'request-id': `req_${randomId(24)}` };
    if (latencyMs > 0) await sleep(latencyMs);
    const envelope = (content: unknown[], stop: string | null, usage: unknown) => ({
      id,
      type: 'message',
      role: 'assistant',
      model,
      content,
      stop_reason: stop,
      stop_sequence: null,
      usage,
    });
    if (!call.stream) {
      return sendJson(
        res,
        200,
        envelope(
          [{ type: 'text', text: call.pieces.join('') }],
          stopReason,
          anthropicUsage(call.counts, call.counts.completion),
        ),
        headers,
      );
    }
    const event = (type: string, fields: Record<string, unknown> = {}) => sse({ type, ...fields }, type);
    await stream(
      res,
      call,
      [
        event('message_start', { message: envelope([], null, anthropicUsage(call.counts, 1, false)) }),
        event('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }),
        event('ping'),
        ...call.pieces.map((piece) =>
          event('content_block_delta', { index: 0, delta: { type: 'text_delta', text: piece } }),
        ),
        event('content_block_stop', { index: 0 }),
        event('message_delta', {
          delta: { stop_reason: stopReason, stop_sequence: null },
          usage: {
            output_tokens: call.counts.completion,
            ...(call.counts.webSearches > 0
              ? { server_tool_use: { web_search_requests: call.counts.webSearches } }
              : {}),
          },
        }),
        event('message_stop'),
      ],
      headers,
    );
  };

  const generate = async (
    req: IncomingMessage,
    res: ServerResponse,
    body: Record<string, unknown>,
    model: string,
    method: string,
    query: URLSearchParams,
  ) => {
    requireArray(body, 'contents');
    const generation = geminiField(body, 'generationConfig', 'generation_config') ?? {};
    if (!isRecord(generation)) {
      throw new RequestError(400, 'Invalid generationConfig: expected an object.', 'generationConfig');
    }
    geminiField(generation, 'maxOutputTokens', 'max_output_tokens'); // refuses both spellings
    const max = maxTokens(generation, ['maxOutputTokens', 'max_output_tokens']);
    const count = geminiField(generation, 'candidateCount', 'candidate_count');
    if (count !== undefined && !(isCount(count) && count >= 1 && count <= 8)) {
      throw new RequestError(
        400,
        'Invalid candidateCount: expected an integer from 1 to 8.',
        'candidateCount',
      );
    }
    const candidates = geminiCandidateCount(body);
    const streaming = method === 'streamGenerateContent';
    // Each candidate is generated, and billed, in full: candidatesTokenCount is their total.
    const call = plan(
      req,
      model,
      streaming,
      max,
      body,
      'gemini',
      (max ?? defaultCompletionTokens) * candidates,
    );
    const c = call.counts;
    // The grounding queries, spread over the candidates (Google reports them per candidate).
    const queries = Array.from({ length: candidates }, (_, i) =>
      Array.from(
        { length: Math.floor(c.webSearches / candidates) + (i < c.webSearches % candidates ? 1 : 0) },
        (_, q) => `simulated search ${i}.${q}`,
      ),
    );
    const finishReason = finishedByLength(call) ? 'MAX_TOKENS' : 'STOP';
    const responseId = randomId(22);
    const modelVersion = model;
    const usageMetadata = (candidates: number, final: boolean) => ({
      promptTokenCount: c.prompt,
      candidatesTokenCount: candidates,
      totalTokenCount: c.prompt + candidates + (final ? c.reasoning : 0),
      ...(c.cached > 0 ? { cachedContentTokenCount: c.cached } : {}),
      ...(final && c.reasoning > 0 ? { thoughtsTokenCount: c.reasoning } : {}),
      promptTokensDetails: [
        { modality: 'TEXT', tokenCount: c.prompt - c.audioIn },
        ...(c.audioIn > 0 ? [{ modality: 'AUDIO', tokenCount: c.audioIn }] : []),
      ],
    });
    const visible = c.completion - c.reasoning;
    // The generated words, split over the candidates in turn.
    const texts: string[][] = Array.from({ length: candidates }, () => []);
    for (let i = 0; i < call.pieces.length; i++) texts[i % candidates]!.push(call.pieces[i]!);
    const chunk = (from: number, to: number, final: boolean) => ({
      candidates: texts.map((pieces, index) => ({
        content: { parts: [{ text: pieces.slice(from, to).join('') }], role: 'model' },
        ...(final ? { finishReason } : {}),
        ...(final && queries[index]!.length > 0
          ? { groundingMetadata: { webSearchQueries: queries[index], groundingChunks: [] } }
          : {}),
        index,
      })),
      usageMetadata: usageMetadata(
        final ? visible : texts.reduce((n, pieces) => n + Math.min(to, pieces.length), 0),
        final,
      ),
      modelVersion,
      responseId,
    });
    const longest = texts.reduce((n, pieces) => Math.max(n, pieces.length), 0);
    if (latencyMs > 0) await sleep(latencyMs);
    if (!streaming) return sendJson(res, 200, chunk(0, longest, true));
    // Gemini streams a few tokens per chunk; usage so far on each, the final one on the last.
    const chunks: unknown[] = [];
    const per = 4;
    for (let i = 0; i < longest || i === 0; i += per) chunks.push(chunk(i, i + per, i + per >= longest));
    if (query.get('alt') === 'sse') {
      return stream(
        res,
        call,
        chunks.map((data) => sse(data, undefined, '\r\n')),
        {},
      );
    }
    sendJson(res, 200, chunks);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    requestCount++;
    inFlight++;
    peakConcurrency = Math.max(peakConcurrency, inFlight);
    res.once('close', () => inFlight--);
    const [rawPath = '/', rawQuery = ''] = (req.url ?? '/').split('?');
    const path = rawPath;
    try {
      const gemini = GEMINI_PATH.exec(path);
      const route =
        path === '/v1/chat/completions' || path === '/chat/completions'
          ? completeChat
          : path === '/v1/responses' || path === '/responses'
            ? respond
            : path === '/v1/embeddings' || path === '/embeddings'
              ? embed
              : path === '/v1/images/generations' || path === '/images/generations'
                ? generateImages
                : path === '/v1/messages' || path === '/messages'
                  ? message
                  : null;
      if (!route && !gemini) {
        req.resume();
        throw new RequestError(404, `Invalid URL (${req.method} ${path})`);
      }
      if (req.method !== 'POST') {
        req.resume();
        throw new RequestError(405, `Method ${req.method} not allowed on ${path}; use POST.`);
      }
      const body = parseJsonObject(await readBody(req));
      if (gemini) {
        let model = gemini[1]!;
        try {
          model = decodeURIComponent(model);
        } catch {
          // keep it as sent
        }
        await generate(req, res, body, model, gemini[2]!, new URLSearchParams(rawQuery));
      } else {
        await route!(req, res, body);
      }
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
    origin: `http://${urlHost}:${address.port}`,
    port: address.port,
    get requestCount() {
      return requestCount;
    },
    get peakConcurrency() {
      return peakConcurrency;
    },
    scriptNextUsage(usage: SimulatedUsage): void {
      scripted.push(parseSimulatedUsage(usage, 'scriptNextUsage(usage)'));
    },
    cutNextStream(afterEvents: number): void {
      if (!isCount(afterEvents)) {
        throw new TypeError(`cutNextStream(afterEvents): a non-negative integer; got ${afterEvents}`);
      }
      cuts.push(afterEvents);
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
