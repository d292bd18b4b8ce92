import { createRequire } from 'node:module';
import type { Tiktoken, TiktokenEncoding } from 'tiktoken';

// tiktoken is WASM: loading it and an encoding takes ~200 ms and ~80 MB, so it is required on the first
// count only, never when @spendguard/core is imported.
type TiktokenModule = typeof import('tiktoken');

let tiktoken: TiktokenModule | undefined;
const encoders = new Map<TiktokenEncoding, Tiktoken>();

// OpenAI's o200k_base families; every other model is counted with cl100k_base (for non-OpenAI models
// that is an estimate).
const O200K_MODEL = /^(?:gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-oss|o1|o3|o4)(?:$|[-:.])/;

/** The tiktoken encoding used for a model name, provider prefixes (`openai/`, `azure/`, `ft:`) ignored. */
function encodingFor(model: string): TiktokenEncoding {
  const slash = model.lastIndexOf('/');
  let name = (slash < 0 ? model : model.slice(slash + 1)).toLowerCase();
  if (name.startsWith('ft:')) name = name.slice(3);
  return O200K_MODEL.test(name) ? 'o200k_base' : 'cl100k_base';
}

function encoderFor(model: string): Tiktoken {
  return encoderOf(encodingFor(model));
}

function encoderOf(encoding: TiktokenEncoding): Tiktoken {
  let encoder = encoders.get(encoding);
  if (!encoder) {
    tiktoken ??= createRequire(import.meta.url)('tiktoken') as TiktokenModule;
    encoder = tiktoken.get_encoding(encoding);
    encoders.set(encoding, encoder);
  }
  return encoder;
}

/** Tokens of `text` in cl100k_base: the stand-in count for models whose own tokenizer is not public. */
export function countCl100kTokens(text: string): number {
  if (text.length === 0) return 0;
  return encoderOf('cl100k_base').encode_ordinary(text).length;
}

/**
 * Number of tokens `text` encodes to for `model`'s tokenizer (o200k_base for the gpt-4o, gpt-4.1, gpt-5,
 * o1, o3 and o4 families, cl100k_base otherwise). Special-token markers such as `<|endoftext|>` count
 * as the ordinary text they are, as the providers do for user content.
 * @example countTextTokens('gpt-4o', 'hello world') // 2
 */
export function countTextTokens(model: string, text: string): number {
  if (text.length === 0) return 0;
  return encoderFor(model).encode_ordinary(text).length;
}

// OpenAI's published formula for chat prompts (openai-cookbook, "How to count tokens with tiktoken").
const TOKENS_PER_MESSAGE = 3;
const TOKENS_PER_NAME = 1;
const REPLY_PRIMING_TOKENS = 3;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Tokens of a message's content given as parts: only text parts count (images, audio and files do not). */
function countContentParts(encoder: Tiktoken, parts: unknown[]): number {
  let count = 0;
  for (const part of parts) {
    if (typeof part === 'string') count += encoder.encode_ordinary(part).length;
    else if (isRecord(part) && typeof part.text === 'string')
      count += encoder.encode_ordinary(part.text).length;
  }
  return count;
}

/** Tokens of an assistant message's tool calls: function names and argument strings. */
function countToolCalls(encoder: Tiktoken, calls: unknown[]): number {
  let count = 0;
  for (const call of calls) {
    const fn = isRecord(call) ? call.function : undefined;
    if (!isRecord(fn)) continue;
    if (typeof fn.name === 'string') count += encoder.encode_ordinary(fn.name).length;
    if (typeof fn.arguments === 'string') count += encoder.encode_ordinary(fn.arguments).length;
  }
  return count;
}

/**
 * Prompt tokens of an OpenAI chat-completions `messages` array, by OpenAI's formula: 3 tokens per
 * message, plus the tokens of each of its string fields (`role`, `content`, `name` (+1), `tool_call_id`,
 * ...), plus 3 tokens priming the reply. `content` may be a string or an array of parts, of which the
 * text parts count; tool calls count their function names and arguments. Exact for text-only gpt-4o-class
 * prompts; an estimate for images, tool definitions (not part of `messages`) and non-OpenAI models.
 * A string, or a string in the array, counts as a user message with that content (the Responses API's
 * `input: 'text'`); anything else that is not an array counts as no messages.
 * @example countChatPromptTokens('gpt-4o', [{ role: 'user', content: 'hello' }]) // 8
 */
export function countChatPromptTokens(model: string, messages: unknown): number {
  const list = typeof messages === 'string' ? [messages] : messages;
  if (!Array.isArray(list)) return REPLY_PRIMING_TOKENS;
  const encoder = encoderFor(model);
  let count = REPLY_PRIMING_TOKENS;
  for (const item of list) {
    count += TOKENS_PER_MESSAGE;
    const message = typeof item === 'string' ? { role: 'user', content: item } : item;
    if (!isRecord(message)) continue;
    for (const [key, value] of Object.entries(message)) {
      if (typeof value === 'string') {
        count += encoder.encode_ordinary(value).length;
        if (key === 'name') count += TOKENS_PER_NAME;
      } else if (key === 'content' && Array.isArray(value)) {
        count += countContentParts(encoder, value);
      } else if (key === 'tool_calls' && Array.isArray(value)) {
        count += countToolCalls(encoder, value);
      }
    }
  }
  return count;
}

/** Whether tiktoken has been loaded in this process (it is loaded on the first count only). */
export function isTokenizerLoaded(): boolean {
  return tiktoken !== undefined;
}
