import type { TokenUsage } from '../pricing/price-book.js';

/** What a response told us: the usage it reported (if any), its model, and the text it delivered. */
export interface ObservedResponse {
  model: string | null;
  usage: TokenUsage | null;
  /** Generated text seen so far, for a local token count when no usage was reported. */
  completionText: string;
}

interface OpenAIUsage {
  prompt_tokens?: number;
  completion_tokens?: number;
  prompt_tokens_details?: { cached_tokens?: number | null } | null;
  completion_tokens_details?: { reasoning_tokens?: number | null } | null;
}

/** OpenAI's chat-completions `usage` object into the pricing shape. */
export function usageFromOpenAIChat(raw: unknown): TokenUsage | null {
  if (!raw || typeof raw !== 'object') return null;
  const u = raw as OpenAIUsage;
  if (typeof u.prompt_tokens !== 'number' && typeof u.completion_tokens !== 'number') return null;
  return {
    promptTokens: u.prompt_tokens ?? 0,
    completionTokens: u.completion_tokens ?? 0,
    cachedPromptTokens: u.prompt_tokens_details?.cached_tokens ?? 0,
    reasoningTokens: u.completion_tokens_details?.reasoning_tokens ?? 0,
  };
}

const MAX_KEPT_TEXT = 1 << 20;

/** Reads a complete chat-completions JSON body. */
export function observeChatJson(body: unknown): ObservedResponse {
  const b = (body ?? {}) as { model?: unknown; usage?: unknown; choices?: unknown };
  let text = '';
  if (Array.isArray(b.choices)) {
    for (const choice of b.choices as Array<{ message?: { content?: unknown } }>) {
      if (typeof choice?.message?.content === 'string') text += choice.message.content;
    }
  }
  return {
    model: typeof b.model === 'string' ? b.model : null,
    usage: usageFromOpenAIChat(b.usage),
    completionText: text,
  };
}

/** Accumulates a chat-completions SSE stream, one `data:` payload at a time. */
export class ChatStreamObserver {
  readonly observed: ObservedResponse = { model: null, usage: null, completionText: '' };

  onData(data: string): void {
    if (data === '[DONE]') return;
    let chunk: { model?: unknown; usage?: unknown; choices?: unknown };
    try {
      chunk = JSON.parse(data);
    } catch {
      return; // a malformed event carries nothing we can price
    }
    if (typeof chunk.model === 'string') this.observed.model = chunk.model;
    // The usage chunk is normally last with empty `choices`, but some providers put it on a chunk
    // that still has choices: read it wherever it appears.
    const usage = usageFromOpenAIChat(chunk.usage);
    if (usage) this.observed.usage = usage;
    if (Array.isArray(chunk.choices) && this.observed.completionText.length < MAX_KEPT_TEXT) {
      for (const choice of chunk.choices as Array<{ delta?: { content?: unknown } }>) {
        const content = choice?.delta?.content;
        if (typeof content === 'string') this.observed.completionText += content;
      }
    }
  }
}
