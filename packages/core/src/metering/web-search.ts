// OpenAI's web search, read from the request: admission bounds its searches, metering prices the ones
// the response reports. Two ways in: Chat Completions search models (`gpt-4o-search-preview`,
// `gpt-5-search-api`...; `web_search_options`), which search once a call, and the Responses API's
// built-in tools (`web_search`, `web_search_preview` and their dated versions), which search as often as
// the model likes, up to `max_tool_calls` built-in tool calls. Anthropic's server tool
// (`web_search_20250305`) is not OpenAI's: worst-case.ts bounds it by its own `max_uses`.

import { isObject, type WireFormat } from './wire-formats.js';

type Obj = Record<string, unknown>;

/** Which OpenAI search path a call takes; OpenAI prices each differently. */
export type OpenAISearchTool = 'chat' | 'web_search' | 'web_search_preview';

export type SearchContextSize = 'low' | 'medium' | 'high';

export interface OpenAIWebSearch {
  tool: OpenAISearchTool;
  /** The search context size the request names (`undefined`: OpenAI's default, medium). */
  size: SearchContextSize | undefined;
  /**
   * The most searches the call can run: 1 for a chat search model, Responses' `max_tool_calls` (it
   * bounds every built-in tool call of the response); `null` when nothing bounds them.
   */
  maxSearches: number | null;
}

/** OpenAI's web search tool types: `web_search`, `web_search_preview`, dated (`web_search_2025_08_26`). */
const OPENAI_SEARCH_TOOL = /^web_search(_preview)?(?:_\d{4}_\d{2}_\d{2})?$/;
/** Chat Completions models that search the web on every call. */
const SEARCH_MODEL = /-search-(?:preview|api)(?:$|-)/;

function contextSize(value: unknown): SearchContextSize | undefined {
  return value === 'low' || value === 'medium' || value === 'high' ? value : undefined;
}

/** The OpenAI web search tool type of a tool definition (its kind), or `null` when it is not one. */
export function openaiSearchToolKind(tool: unknown): 'web_search' | 'web_search_preview' | null {
  if (!isObject(tool) || typeof tool.type !== 'string') return null;
  const m = OPENAI_SEARCH_TOOL.exec(tool.type);
  if (!m) return null;
  return m[1] ? 'web_search_preview' : 'web_search';
}

/**
 * The OpenAI web search a request can run, or `null` when it runs none. Chat: a search model or
 * `web_search_options` (OpenAI: "the model always retrieves information from the web" on Chat
 * Completions). Responses (and a route the guard does not know by its path): a web search tool.
 */
export function openaiWebSearch(format: WireFormat | null, model: string, body: Obj): OpenAIWebSearch | null {
  if (format === 'anthropic-messages' || format === 'gemini' || format === 'openai-embeddings') return null;
  if (format !== 'openai-responses') {
    const options = body.web_search_options;
    const name = model.slice(model.lastIndexOf('/') + 1).toLowerCase();
    if (isObject(options) || SEARCH_MODEL.test(name)) {
      const size = isObject(options) ? contextSize(options.search_context_size) : undefined;
      return { tool: 'chat', size, maxSearches: 1 };
    }
    if (format === 'openai-chat') return null;
  }
  if (!Array.isArray(body.tools)) return null;
  let found: OpenAIWebSearch | null = null;
  for (const tool of body.tools) {
    const kind = openaiSearchToolKind(tool);
    if (kind === null) continue;
    // The first search tool names the size (as LiteLLM reads it); a preview tool anywhere makes the
    // call dearer per search for some models, so it wins the kind.
    const size = contextSize((tool as Obj).search_context_size);
    if (found === null) found = { tool: kind, size, maxSearches: maxToolCalls(body.max_tool_calls) };
    else if (kind === 'web_search_preview') found.tool = kind;
  }
  return found;
}

/** Responses' `max_tool_calls` as a bound: a non-negative integer, else `null` (unbounded). */
function maxToolCalls(value: unknown): number | null {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 ? value : null;
}
