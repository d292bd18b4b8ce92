import { countChatPromptTokens, countTextTokens } from './token-count.js';
import { isObject, type WireFormat } from './wire-formats.js';

// What a request body says, in every supported wire format: how many prompt tokens it carries (for
// an estimate when the provider reported none, and for the precise admission bound), and how many
// completion tokens it may ask for.

type Obj = Record<string, unknown>;

/** Gemini `contents` / `systemInstruction` as chat messages whose content parts carry `text`. */
function geminiMessages(body: Obj): unknown[] {
  const messages: unknown[] = [];
  const system = body.systemInstruction ?? body.system_instruction;
  if (isObject(system) && Array.isArray(system.parts))
    messages.push({ role: 'system', content: system.parts });
  if (Array.isArray(body.contents)) {
    for (const content of body.contents) {
      if (isObject(content) && Array.isArray(content.parts)) {
        messages.push({
          role: typeof content.role === 'string' ? content.role : 'user',
          content: content.parts,
        });
      }
    }
  }
  return messages;
}

/** Embeddings `input`: a string, strings, or token arrays (already counted). */
function embeddingTokens(model: string, input: unknown): number {
  if (typeof input === 'string') return countTextTokens(model, input);
  if (!Array.isArray(input)) return 0;
  if (input.every((t) => typeof t === 'number')) return input.length;
  let count = 0;
  for (const item of input) {
    if (typeof item === 'string') count += countTextTokens(model, item);
    else if (Array.isArray(item)) count += item.length;
  }
  return count;
}

/**
 * Prompt tokens of a request body in any supported format, counted with the model's tokenizer (loads
 * tiktoken): chat `messages`, Anthropic `system` + `messages`, Responses `instructions` + `input`,
 * embeddings `input`, Gemini `systemInstruction` + `contents`. Exact for OpenAI text prompts, an estimate
 * otherwise.
 * @example countRequestPromptTokens('gpt-4o', { messages: [{ role: 'user', content: 'hello' }] }) // 8
 */
export function countRequestPromptTokens(model: string, body: Obj, format: WireFormat | null = null): number {
  if (format === 'openai-embeddings') return embeddingTokens(model, body.input);
  if (format === 'gemini' || (format === null && Array.isArray(body.contents))) {
    return countChatPromptTokens(model, geminiMessages(body));
  }
  const messages: unknown[] = [];
  const system = body.system ?? body.instructions;
  if (typeof system === 'string') messages.push({ role: 'system', content: system });
  else if (Array.isArray(system)) messages.push({ role: 'system', content: system });
  const list = body.messages ?? body.input;
  if (typeof list === 'string') messages.push({ role: 'user', content: list });
  else if (Array.isArray(list)) messages.push(...list);
  return countChatPromptTokens(model, messages);
}

function positiveInt(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isInteger(value) && value > 0 ? value : undefined;
}

/**
 * The most completion tokens a request asks for, in any supported format (`max_completion_tokens`,
 * `max_tokens`, `max_output_tokens`, Gemini `generationConfig.maxOutputTokens`), or `undefined`.
 */
export function requestedOutputTokens(body: Obj): number | undefined {
  // Gemini takes each field in camelCase or snake_case (proto3 JSON).
  const generation = isObject(body.generationConfig)
    ? body.generationConfig
    : isObject(body.generation_config)
      ? body.generation_config
      : undefined;
  return (
    positiveInt(body.max_completion_tokens) ??
    positiveInt(body.max_tokens) ??
    positiveInt(body.max_output_tokens) ??
    positiveInt(generation?.maxOutputTokens) ??
    positiveInt(generation?.max_output_tokens)
  );
}

/**
 * For a streamed OpenAI chat completion that does not ask for usage, asks for it
 * (`stream_options.include_usage: true`) in place, and says so: the usage chunk must then be hidden
 * from the client. Other formats report usage on every stream already.
 */
export function requestStreamUsage(format: WireFormat | null, body: unknown): boolean {
  if (format !== 'openai-chat' || !isObject(body) || body.stream !== true) return false;
  const options = body.stream_options;
  if (isObject(options) && options.include_usage === true) return false;
  body.stream_options = { ...(isObject(options) ? options : {}), include_usage: true };
  return true;
}
