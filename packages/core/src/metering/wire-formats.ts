import { normalizeUsage, type TokenUsage } from '../pricing/normalize-usage.js';

/**
 * The provider wire formats the meter reads. Detected from the response body's shape, with the request
 * path as a hint when the body alone does not say (an error body, an empty stream).
 */
export type WireFormat =
  | 'openai-chat'
  | 'openai-responses'
  | 'openai-embeddings'
  | 'anthropic-messages'
  | 'gemini';

/** What a response told us: the usage it reported (if any), its model, and the text it delivered. */
export interface ObservedResponse {
  format: WireFormat | null;
  model: string | null;
  /**
   * The provider's id for the response (`chatcmpl-...`, `resp_...`, `msg_...`, Gemini's `responseId`),
   * `null` when it gave none (embeddings, an error body).
   */
  responseId: string | null;
  /** The reported usage, normalized; `null` when none arrived. */
  usage: TokenUsage | null;
  /**
   * `false` when only part of the usage arrived before a stream ended (Anthropic's `message_start`
   * without its `message_delta`, Gemini chunks without the final one): the input side is as reported,
   * the output side must be counted from {@link ObservedResponse.completionText}.
   */
  usageFinal: boolean;
  /** Generated text seen, for a local token count when no (final) usage was reported. */
  completionText: string;
  /** OpenAI Responses `web_search_call` output items (each a billed search), 0 when none or another format. */
  webSearchCalls: number;
}

/** The `web_search_call` items of a Responses `output` array. */
function countSearchCalls(output: unknown): number {
  if (!Array.isArray(output)) return 0;
  let calls = 0;
  for (const item of output) if (isObject(item) && item.type === 'web_search_call') calls += 1;
  return calls;
}

type Obj = Record<string, unknown>;

export function isObject(value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Generated text kept for an estimate is capped: past this a cut stream is counted from its first MiB. */
export const MAX_KEPT_TEXT = 1 << 20;

const GEMINI_PATH = /\/models\/([^/:]+):(?:stream)?generateContent$/i;

/** The wire format a request path points at (`/v1/chat/completions`, `/v1/messages`, `...:generateContent`). */
export function formatFromPath(path: string | null | undefined): WireFormat | null {
  if (!path) return null;
  const p = path.split('?')[0]!.replace(/\/+$/, '');
  if (p.endsWith('/chat/completions')) return 'openai-chat';
  if (p.endsWith('/responses')) return 'openai-responses';
  if (p.endsWith('/embeddings')) return 'openai-embeddings';
  if (p.endsWith('/messages')) return 'anthropic-messages';
  if (GEMINI_PATH.test(p)) return 'gemini';
  return null;
}

/**
 * Work a POST to this path starts and the provider bills after the request has answered (so its cost
 * never passes through a guarded route), described for the refusal; else `null`: OpenAI's Batch API
 * (`/batches`) and fine-tuning jobs (`/fine_tuning/jobs`), Anthropic's Message Batches
 * (`/messages/batches`), Gemini's batch mode (`:batchGenerateContent`, `:asyncBatchEmbedContent`).
 */
export function deferredBillingOf(method: string, path: string | null | undefined): string | null {
  if (!path || (method !== 'POST' && method.toUpperCase() !== 'POST')) return null;
  // One test of the path as it is (every guarded call passes here): no copy of it is made.
  const m = DEFERRED_PATH.exec(path);
  if (!m) return null;
  return m[1] === '/fine_tuning/jobs' ? 'a fine-tuning job' : 'a batch';
}

/** The end of a path (before any query, trailing slashes allowed) that starts work billed later. */
const DEFERRED_PATH =
  /(\/batches|\/fine_tuning\/jobs|:batchGenerateContent|:asyncBatchEmbedContent)\/*(?:\?.*)?$/;

/** The model named in a Gemini URL (`/v1beta/models/gemini-2.0-flash:generateContent`), else `null`. */
export function modelFromPath(path: string | null | undefined): string | null {
  if (!path) return null;
  const m = GEMINI_PATH.exec(path.split('?')[0]!);
  if (!m) return null;
  try {
    return decodeURIComponent(m[1]!);
  } catch {
    return m[1]!;
  }
}

/** The wire format of a complete JSON response body, from its shape (the path only breaks ties). */
export function detectJsonFormat(body: unknown, pathHint: WireFormat | null): WireFormat | null {
  if (Array.isArray(body)) return body.some((c) => isObject(c) && 'candidates' in c) ? 'gemini' : pathHint;
  if (!isObject(body)) return pathHint;
  switch (body.object) {
    case 'chat.completion':
      return 'openai-chat';
    case 'response':
      return 'openai-responses';
    case 'list':
      if (Array.isArray(body.data)) return 'openai-embeddings';
  }
  if (body.type === 'message') return 'anthropic-messages';
  if ('usageMetadata' in body || 'candidates' in body) return 'gemini';
  if (Array.isArray(body.choices)) return 'openai-chat';
  return pathHint;
}

/** The wire format of a stream, from its first event (`event:` name or payload). */
export function detectEventFormat(
  event: string | null,
  payload: unknown,
  hint: WireFormat | null,
): WireFormat | null {
  const type = isObject(payload) && typeof payload.type === 'string' ? payload.type : (event ?? '');
  if (type.startsWith('response.')) return 'openai-responses';
  if (ANTHROPIC_EVENTS.has(type)) return 'anthropic-messages';
  if (!isObject(payload)) return hint;
  if (payload.object === 'chat.completion.chunk' || Array.isArray(payload.choices)) return 'openai-chat';
  if ('candidates' in payload || 'usageMetadata' in payload) return 'gemini';
  return hint;
}

const ANTHROPIC_EVENTS = new Set([
  'message_start',
  'message_delta',
  'message_stop',
  'content_block_start',
  'content_block_delta',
  'content_block_stop',
  'ping',
]);

function str(value: unknown): string | null {
  return typeof value === 'string' && value !== '' ? value : null;
}

/** Appends the generated text of one chat-completions message or delta (content, refusal, tool arguments). */
function chatText(message: unknown): string {
  if (!isObject(message)) return '';
  let text = typeof message.content === 'string' ? message.content : '';
  if (typeof message.refusal === 'string') text += message.refusal;
  if (Array.isArray(message.tool_calls)) {
    for (const call of message.tool_calls) {
      const fn = isObject(call) ? call.function : undefined;
      if (isObject(fn) && typeof fn.arguments === 'string') text += fn.arguments;
    }
  }
  return text;
}

function geminiText(chunk: unknown): string {
  if (!isObject(chunk) || !Array.isArray(chunk.candidates)) return '';
  let text = '';
  for (const candidate of chunk.candidates) {
    const parts = isObject(candidate) && isObject(candidate.content) ? candidate.content.parts : undefined;
    if (!Array.isArray(parts)) continue;
    for (const part of parts) if (isObject(part) && typeof part.text === 'string') text += part.text;
  }
  return text;
}

function geminiFinished(chunk: unknown): boolean {
  return (
    isObject(chunk) &&
    Array.isArray(chunk.candidates) &&
    chunk.candidates.some((c) => isObject(c) && typeof c.finishReason === 'string' && c.finishReason !== '')
  );
}

/** Reads a complete JSON response body of any supported format. */
export function observeJson(body: unknown, pathHint: WireFormat | null): ObservedResponse {
  const format = detectJsonFormat(body, pathHint);
  const observed: ObservedResponse = {
    format,
    model: null,
    responseId: null,
    usage: null,
    usageFinal: true,
    completionText: '',
    webSearchCalls: 0,
  };
  if (format === 'gemini') {
    // `streamGenerateContent` without `alt=sse` answers a JSON array of chunks: the last usage is the total.
    const chunks = Array.isArray(body) ? body : [body];
    for (const chunk of chunks) {
      if (!isObject(chunk)) continue;
      observed.model = str(chunk.modelVersion) ?? observed.model;
      observed.responseId ??= str(chunk.responseId);
      if (isObject(chunk.usageMetadata)) observed.usage = normalizeUsage(chunk);
      observed.completionText += geminiText(chunk);
    }
    if (Array.isArray(body) && observed.usage) observed.usageFinal = chunks.some(geminiFinished);
    return observed;
  }
  if (!isObject(body)) return observed;
  observed.model = str(body.model);
  if (format !== 'openai-embeddings' && format !== null) observed.responseId = str(body.id);
  if (isObject(body.usage)) observed.usage = normalizeUsage(body);
  if (format === 'openai-chat' && Array.isArray(body.choices)) {
    for (const choice of body.choices)
      if (isObject(choice)) observed.completionText += chatText(choice.message);
  } else if (format === 'openai-responses') {
    observed.completionText = responsesOutputText(body.output);
    observed.webSearchCalls = countSearchCalls(body.output);
  } else if (format === 'anthropic-messages' && Array.isArray(body.content)) {
    for (const block of body.content)
      if (isObject(block)) observed.completionText += anthropicBlockText(block);
  }
  return observed;
}

function responsesOutputText(output: unknown): string {
  if (!Array.isArray(output)) return '';
  let text = '';
  for (const item of output) {
    if (!isObject(item)) continue;
    if (typeof item.arguments === 'string') text += item.arguments; // function_call items
    if (!Array.isArray(item.content)) continue;
    for (const part of item.content) {
      if (isObject(part) && typeof part.text === 'string') text += part.text;
      else if (isObject(part) && typeof part.refusal === 'string') text += part.refusal;
    }
  }
  return text;
}

function anthropicBlockText(block: Obj): string {
  if (typeof block.text === 'string') return block.text;
  if (typeof block.thinking === 'string') return block.thinking;
  // The model writes every tool block's input (tool_use, and server_tool_use for web search or code
  // execution), billed as output; a stream counts each one's input_json_delta the same way.
  if (block.input !== undefined) return JSON.stringify(block.input);
  return '';
}

/**
 * Accumulates one stream's events, in any supported format. Events the tap found cheap to skip are
 * handed over later through {@link StreamObserver.onText} (only when their text is needed).
 */
export class StreamObserver {
  format: WireFormat | null;
  model: string | null = null;
  /** The first response id the stream carried (every chunk repeats it; the first event is always read). */
  responseId: string | null = null;
  private rawUsage: Obj | null = null;
  private final = false;
  private geminiLast: unknown = null;
  text = '';
  /** Responses: the final response's `web_search_call` items (`null` until it arrives). */
  private finalSearchCalls: number | null = null;
  /** Responses: `web_search_call` items seen done one by one, for a stream cut before its end. */
  private doneSearchCalls = 0;

  constructor(pathHint: WireFormat | null) {
    this.format = pathHint;
  }

  /** Sets the format from the stream's first event (the path hint stays when it says nothing). */
  detect(event: string | null, payload: unknown): void {
    this.format = detectEventFormat(event, payload, this.format);
  }

  /**
   * Reads an event's payload for usage and model. Returns `'usage-only'` for a chat-completions chunk
   * that carries usage and no choices (the one `stream_options.include_usage` adds).
   */
  onPayload(event: string | null, payload: unknown): 'usage-only' | null {
    if (!isObject(payload)) return null;
    switch (this.format) {
      case 'openai-chat': {
        this.model = str(payload.model) ?? this.model;
        this.responseId ??= str(payload.id);
        if (isObject(payload.usage)) {
          this.rawUsage = payload;
          this.final = true;
        }
        const choices = payload.choices;
        if (Array.isArray(choices) && choices.length === 0 && isObject(payload.usage)) return 'usage-only';
        return null;
      }
      case 'anthropic-messages': {
        const type = typeof payload.type === 'string' ? payload.type : event;
        if (type === 'message_start' && isObject(payload.message)) {
          this.model = str(payload.message.model) ?? this.model;
          this.responseId ??= str(payload.message.id);
          if (isObject(payload.message.usage)) this.mergeUsage(payload.message.usage);
        } else if (type === 'message_delta' && isObject(payload.usage)) {
          this.mergeUsage(payload.usage); // cumulative: later fields replace earlier ones
          this.final = true;
        }
        return null;
      }
      case 'openai-responses': {
        const response = payload.response;
        if (isObject(response)) {
          this.model = str(response.model) ?? this.model;
          this.responseId ??= str(response.id);
          if (isObject(response.usage)) {
            this.rawUsage = response;
            this.final = true;
            this.finalSearchCalls = countSearchCalls(response.output);
          }
        }
        return null;
      }
      case 'gemini':
        this.model = str(payload.modelVersion) ?? this.model;
        this.responseId ??= str(payload.responseId);
        if (isObject(payload.usageMetadata)) this.geminiLast = payload;
        return null;
      default:
        return null;
    }
  }

  private mergeUsage(usage: Obj): void {
    const merged: Obj = { ...(this.rawUsage ?? {}) };
    for (const [k, v] of Object.entries(usage)) if (v !== null && v !== undefined) merged[k] = v;
    this.rawUsage = merged;
  }

  /** Collects the generated text of an event the tap set aside (called lazily, in stream order). */
  onText(event: string | null, payload: unknown): void {
    if (!isObject(payload)) return;
    // A finished search counts whatever text is kept already (it is billed, however long the answer).
    if (this.format === 'openai-responses' && isObject(payload.item)) {
      const type = payload.type ?? event;
      if (type === 'response.output_item.done' && payload.item.type === 'web_search_call') {
        this.doneSearchCalls += 1;
      }
    }
    if (this.text.length >= MAX_KEPT_TEXT) return;
    switch (this.format) {
      case 'openai-chat':
        if (Array.isArray(payload.choices)) {
          for (const choice of payload.choices) if (isObject(choice)) this.text += chatText(choice.delta);
        }
        return;
      case 'anthropic-messages': {
        const delta = payload.delta;
        if ((payload.type ?? event) !== 'content_block_delta' || !isObject(delta)) return;
        if (typeof delta.text === 'string') this.text += delta.text;
        else if (typeof delta.partial_json === 'string') this.text += delta.partial_json;
        else if (typeof delta.thinking === 'string') this.text += delta.thinking;
        return;
      }
      case 'openai-responses': {
        const type = payload.type ?? event;
        if (
          (type === 'response.output_text.delta' ||
            type === 'response.refusal.delta' ||
            type === 'response.function_call_arguments.delta') &&
          typeof payload.delta === 'string'
        ) {
          this.text += payload.delta;
        }
        return;
      }
      case 'gemini':
        this.text += geminiText(payload);
        return;
    }
  }

  /**
   * The Responses `web_search_call` items: the final response's, else (a cut stream) those seen done.
   * Items are read from kept events only when a stream ends without its final usage, as text is.
   */
  get webSearchCalls(): number {
    return this.finalSearchCalls ?? this.doneSearchCalls;
  }

  /** The usage seen so far, normalized, and whether it is the final one. */
  result(): { usage: TokenUsage | null; usageFinal: boolean } {
    if (this.format === 'gemini' && this.geminiLast) {
      return { usage: normalizeUsage(this.geminiLast), usageFinal: geminiFinished(this.geminiLast) };
    }
    if (!this.rawUsage) return { usage: null, usageFinal: false };
    return { usage: normalizeUsage(this.rawUsage), usageFinal: this.final };
  }
}
