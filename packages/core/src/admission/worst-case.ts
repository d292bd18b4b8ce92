// The most a call can cost, from its request body alone, by each provider's own billing rules. Every
// part a provider bills is bounded: text, images, audio, files, tool definitions, schemas, per-call fees,
// web searches. docs/worst-case.md gives each rule and its source.
//
// Two strengths. The cheap bound walks the body's structure but never tokenizes: text is bounded by the
// body's bytes (a token is at least one byte). The precise bound counts text with tiktoken and reads image
// sizes, WAV durations and PDF page counts from the bytes. The guard uses the cheap one unless it would
// change the decision (near a cap), then the precise one.

import { countCl100kTokens, countTextTokens } from '../metering/token-count.js';
import { openaiSearchToolKind, openaiWebSearch } from '../metering/web-search.js';
import { isObject, type WireFormat } from '../metering/wire-formats.js';
import type { ModelPrice, WorstCaseRates } from '../pricing/model-price.js';
import {
  base64DecodedBytes,
  imageSize,
  type PixelSize,
  parseDataUrl,
  pdfPages,
  wavSeconds,
} from './media-size.js';

type Obj = Record<string, unknown>;

/** Whose rules bill a part: the wire format's provider and the model's may differ; both are applied. */
type Family = 'openai' | 'anthropic' | 'gemini';

/** What bounds a call's cost, before prices. */
export interface CallBound {
  /** Prompt tokens billed at an input price: text, images, files, tool definitions, schemas. */
  inputTokens: number;
  /** Prompt tokens billed at the audio input price. */
  audioTokens: number;
  /** Web searches the call may run (each at the model's price per search). */
  webSearches: number;
  /** Completion tokens per choice: the request's output cap, else the model's maximum. */
  outputTokens: number;
  /** Choices generated (`n`, Gemini `candidateCount`). */
  choices: number;
  /** Where the request sets its output cap (`null`: it has none, or the format has no output). */
  outputField: OutputField | null;
  /** Whether the request names its output cap; when not, lowering it sets one. */
  outputRequested: boolean;
  /** The service tier the request names. */
  serviceTier: string | undefined;
  /** The request marks content for caching (Anthropic `cache_control`). */
  cacheWrites: boolean;
  /** The request asks for audio output. */
  audioOutput: boolean;
  /** True when a precise count could give a smaller bound (some text or media was bounded loosely). */
  loose: boolean;
}

/** The request field that caps the output, per wire format. */
export type OutputField =
  | 'max_completion_tokens'
  | 'max_tokens'
  | 'max_output_tokens'
  | 'generationConfig.maxOutputTokens';

export interface BoundOptions {
  /** Completion tokens assumed when neither the request nor the price table caps the output. */
  defaultMaxOutputTokens: number;
  /** Count text with tiktoken and read media headers (slow); else bound by bytes. */
  precise: boolean;
  /** Size of the raw body in bytes, when the adapter read it. */
  bodyBytes?: number | undefined;
  /**
   * Tokens of the response a Responses call's `previous_response_id` names (its input and output, as
   * its spend log recorded them), billed again as this call's input; unknown: the model's whole context.
   */
  previousTurnTokens?: number | null | undefined;
}

/** Context window assumed when the price table gives none (a file of unknown size is bounded by it). */
export const DEFAULT_CONTEXT_TOKENS = 2_000_000;
/**
 * Searches bounded per call when an Anthropic web-search tool sets no `max_uses` (and, outside strict
 * mode, when a Responses web search tool has no `max_tool_calls`).
 */
export const DEFAULT_MAX_WEB_SEARCHES = 10;
/** Prompt tokens bounded per web search for the results it adds to the context. */
export const WEB_SEARCH_RESULT_TOKENS = 10_000;
/** Anthropic's largest tool-use system prompt (Claude 3 Opus, `tool_choice` auto). */
const ANTHROPIC_TOOL_PROMPT = 530;
/** Factor over cl100k_base for models whose tokenizer is not public (Anthropic says up to 1.35x). */
const NON_OPENAI_FACTOR = 1.35;

const OPENAI_MODEL = /^(?:gpt-|chatgpt-|o\d|ft:gpt-|text-embedding-|davinci|babbage|computer-use)/;

function baseName(model: string): string {
  const slash = model.lastIndexOf('/');
  return (slash < 0 ? model : model.slice(slash + 1)).toLowerCase();
}

/** A model whose tokenizer tiktoken has: OpenAI's own (on OpenAI or Azure). Others are not counted exactly. */
function isOpenAIModel(model: string, price: ModelPrice | undefined): boolean {
  const provider = price?.provider ?? '';
  return provider === 'openai' || provider === 'azure' || OPENAI_MODEL.test(baseName(model));
}

function modelFamily(model: string, price: ModelPrice | undefined): Family {
  const provider = price?.provider ?? '';
  if (provider === 'anthropic' || provider.startsWith('bedrock') || /claude/.test(model)) return 'anthropic';
  if (provider.startsWith('gemini') || provider.startsWith('vertex') || /gemini|gemma/.test(model))
    return 'gemini';
  return 'openai';
}

function formatFamily(format: WireFormat | null): Family | null {
  if (format === 'anthropic-messages') return 'anthropic';
  if (format === 'gemini') return 'gemini';
  if (format === null) return null;
  return 'openai';
}

/** Media and text counting for one call: the families whose rules apply, and the model. */
interface Counter {
  model: string;
  families: Family[];
  /** Text is counted by OpenAI's own tokenizer (exact): both the format and the model are OpenAI's. */
  openaiText: boolean;
  precise: boolean;
  contextTokens: number;
  /** Running totals. */
  text: number;
  media: number;
  audio: number;
  /** Characters of base64 media inside the body (not text: taken off the byte bound). */
  mediaChars: number;
  messages: number;
  loose: boolean;
  cacheWrites: boolean;
}

/**
 * An upper bound of everything a call can be billed for, by the rules of the provider of its wire
 * format and of its model (the dearer of the two for each part).
 */
export function boundCall(
  model: string,
  format: WireFormat | null,
  body: Obj,
  price: ModelPrice | undefined,
  options: BoundOptions,
): CallBound {
  const fromFormat = formatFamily(format ?? guessFormat(body));
  const fromModel = modelFamily(baseName(model), price);
  const families: Family[] = fromFormat && fromFormat !== fromModel ? [fromFormat, fromModel] : [fromModel];
  const c: Counter = {
    model,
    families,
    openaiText: families.length === 1 && families[0] === 'openai' && isOpenAIModel(model, price),
    precise: options.precise,
    contextTokens: price?.maxInputTokens ?? DEFAULT_CONTEXT_TOKENS,
    text: 0,
    media: 0,
    audio: 0,
    mediaChars: 0,
    messages: 0,
    loose: false,
    cacheWrites: false,
  };

  const embeddings = format === 'openai-embeddings' || (format === null && price?.mode === 'embedding');
  for (const field of PROMPT_FIELDS) {
    const value = body[field];
    if (value === undefined) continue;
    if (field === 'messages' || field === 'input' || field === 'contents') {
      c.messages += Array.isArray(value) ? value.length : 1;
    }
    walk(c, value, 0);
  }
  // A system prompt is a message too (Gemini's in either spelling, as the meter reads it).
  const system = [body.system, body.instructions, body.systemInstruction, body.system_instruction];
  if (system.some((value) => value !== undefined)) c.messages += 1;
  const tools = boundTools(c, body);
  // OpenAI's web search: a chat search model once per choice; the Responses tools up to `max_tool_calls`
  // (strict mode refuses an unbounded one first, see `unboundedSearchField`; the other modes take 10).
  const openai = openaiWebSearch(format ?? guessFormat(body), model, body);
  if (openai) {
    const searches = openai.maxSearches ?? DEFAULT_MAX_WEB_SEARCHES;
    tools.searches += openai.tool === 'chat' ? searches * (countOf(body.n) ?? 1) : searches;
  }
  let schema = 0;
  const format0 = body.response_format;
  if (isObject(format0) && format0.json_schema !== undefined) schema += boundJson(c, format0.json_schema) + 8;
  const text = isObject(body.text) ? body.text.format : undefined; // Responses `text.format`
  if (isObject(text) && text.schema !== undefined) schema += boundJson(c, text) + 8;
  schema += boundGeminiSchemas(c, body);
  boundGeminiCachedContent(c, body);
  boundStoredContext(c, body, options.previousTurnTokens);

  let textTokens: number;
  if (c.precise) {
    // Counted string by string; per message: OpenAI's 3 (+1 per name, counted as text here) and
    // Anthropic's/Gemini's 4, plus the reply priming and a system prompt's framing.
    textTokens = c.text + 4 * c.messages + 16 + schema + tools.tokens;
  } else {
    // Every string of the body is in its bytes (with two quote bytes each, which pay for the per-string
    // slack of the precise count and for the message framing).
    const bytes = Math.max(0, (options.bodyBytes ?? Buffer.byteLength(JSON.stringify(body))) - c.mediaChars);
    textTokens = (c.openaiText ? bytes : Math.ceil(bytes * NON_OPENAI_FACTOR)) + 4 * c.messages + 16;
    textTokens += tools.fixed;
    c.loose = true;
  }

  const output = outputBound(format, body, price, options.defaultMaxOutputTokens, embeddings);
  const grounding = geminiGrounding(body, price, output.choices);
  return {
    inputTokens: textTokens + c.media + (tools.searches + grounding.searches) * WEB_SEARCH_RESULT_TOKENS,
    audioTokens: c.audio,
    webSearches: tools.searches + grounding.billed,
    outputTokens: output.tokens,
    choices: output.choices,
    outputField: output.field,
    outputRequested: output.requested,
    serviceTier: typeof body.service_tier === 'string' ? body.service_tier : undefined,
    cacheWrites: c.cacheWrites,
    audioOutput: Array.isArray(body.modalities) && body.modalities.includes('audio'),
    loose: c.loose,
  };
}

/**
 * The request field whose absence leaves a call's web searches unbounded, or `null` when they are
 * bounded (or it runs none): a Responses web search tool searches as often as the model likes unless
 * `max_tool_calls` caps the response's built-in tool calls. Strict mode refuses such a call (400).
 */
export function unboundedSearchField(format: WireFormat | null, model: string, body: Obj): string | null {
  const search = openaiWebSearch(format ?? guessFormat(body), model, body);
  return search !== null && search.maxSearches === null ? 'max_tool_calls' : null;
}

/**
 * Server-side tools a provider runs, and bills beyond the call's tokens, in ways the guard cannot bound
 * from the request: a fee a call or a container, or content it adds to the prompt (fetched pages,
 * retrieved chunks, a remote tool's output) with no size the request caps.
 */
const UNBOUNDED_TOOL_TYPES: ReadonlyArray<readonly [type: string, what: string]> = [
  ['file_search', "OpenAI's file search (a fee a search, and the chunks it retrieves as input)"],
  ['code_interpreter', "OpenAI's code interpreter (a fee a container)"],
  ['image_generation', "OpenAI's image generation tool (the images' output tokens)"],
  ['mcp', "a remote MCP server (its tools' output as input)"],
  ['code_execution_', "Anthropic's code execution (container time)"],
];
/** Gemini's tools by their key (either spelling). */
const UNBOUNDED_GEMINI_TOOLS: Readonly<Record<string, string>> = {
  codeExecution: "Gemini's code execution (its code and results as tokens, over several rounds)",
  code_execution: "Gemini's code execution (its code and results as tokens, over several rounds)",
  urlContext: "Gemini's URL context (the pages it fetches as input)",
  url_context: "Gemini's URL context (the pages it fetches as input)",
  googleMaps: "Gemini's grounding with Google Maps (a fee a grounded prompt)",
  google_maps: "Gemini's grounding with Google Maps (a fee a grounded prompt)",
};

/**
 * A server-side tool of the request that no budget could bound (`param` names it, `tool` says what it
 * bills), or `null`. Anthropic's web fetch is bounded when it gives both `max_uses` and
 * `max_content_tokens` (see `boundTools`); else `param` names the one missing. Strict mode refuses such a
 * call (400).
 */
export function unboundedServerTool(body: Obj): { param: string; tool: string } | null {
  const tools = Array.isArray(body.tools) ? body.tools : [];
  for (const [i, tool] of tools.entries()) {
    if (!isObject(tool)) continue;
    if (typeof tool.type === 'string') {
      // By prefix: a dated or later version of a tool (`code_execution_20250825`) bills as it does.
      for (const [type, what] of UNBOUNDED_TOOL_TYPES) {
        if (tool.type.startsWith(type)) return { param: `tools[${i}].type`, tool: what };
      }
      if (tool.type.startsWith('web_fetch_')) {
        for (const field of ['max_uses', 'max_content_tokens']) {
          if (positiveInt(tool[field]) === undefined) {
            return {
              param: `tools[${i}].${field}`,
              tool: "Anthropic's web fetch (the pages it fetches as input)",
            };
          }
        }
      }
    }
    for (const key in tool) {
      if (Object.hasOwn(UNBOUNDED_GEMINI_TOOLS, key)) {
        return { param: `tools[${i}].${key}`, tool: UNBOUNDED_GEMINI_TOOLS[key]! };
      }
    }
  }
  if (Array.isArray(body.mcp_servers) && body.mcp_servers.length > 0) {
    return { param: 'mcp_servers', tool: "Anthropic's MCP connector (its tools' output as input)" };
  }
  return null;
}

/** For a route the guard does not know by its path: Gemini's body is recognisable; the others look alike. */
function guessFormat(body: Obj): WireFormat | null {
  return Array.isArray(body.contents) ? 'gemini' : null;
}

/** The body fields that carry the prompt, in every supported format. */
const PROMPT_FIELDS = [
  'messages',
  'input',
  'system',
  'instructions',
  'contents',
  'systemInstruction',
  'system_instruction',
  'prompt',
] as const;

const MAX_DEPTH = 64;

/** Counts text (precise mode) and bounds every media part of a prompt value. */
function walk(c: Counter, value: unknown, depth: number): void {
  if (depth > MAX_DEPTH) return;
  if (typeof value === 'string') {
    // A bare string is text to every provider, one that looks like a data URL too: media is read only
    // from the parts that carry it (mediaPart). Bounded as one image, a long one billed as text could
    // cost far more than the bound.
    if (c.precise) c.text += textTokens(c, value);
    return;
  }
  if (typeof value === 'number' || typeof value === 'boolean') {
    if (c.precise) c.text += textTokens(c, String(value));
    return;
  }
  if (Array.isArray(value)) {
    for (const item of value) walk(c, item, depth + 1);
    return;
  }
  if (!isObject(value)) return;
  if (mediaPart(c, value)) return;
  if (value.cache_control !== undefined) c.cacheWrites = true;
  for (const key in value) {
    if (key === 'cache_control') continue;
    walk(c, value[key], depth + 1);
  }
}

/** Tokens of one string of the prompt: exact for OpenAI, a documented bound for the others. */
function textTokens(c: Counter, text: string): number {
  if (text.length === 0) return 0;
  if (c.openaiText) return countTextTokens(c.model, text);
  return Math.max(Math.ceil(NON_OPENAI_FACTOR * countCl100kTokens(text)), Math.ceil(text.length / 3));
}

/** Bounds a media part by the rules of every family that applies; false when it is not one. */
function mediaPart(c: Counter, part: Obj): boolean {
  const type = part.type;
  // OpenAI chat image, Responses image, computer-use screenshot.
  if (type === 'image_url' || type === 'input_image' || type === 'computer_screenshot') {
    const ref = isObject(part.image_url) ? part.image_url.url : part.image_url;
    const detail = isObject(part.image_url) ? part.image_url.detail : part.detail;
    addImage(c, typeof ref === 'string' ? ref : null, detail === 'low' ? 'low' : 'high');
    return true;
  }
  // Anthropic image and document blocks.
  if ((type === 'image' || type === 'document') && isObject(part.source)) {
    if (part.cache_control !== undefined) c.cacheWrites = true;
    const source = part.source;
    if (source.type === 'text' || source.type === 'content') return false; // plain text: walked as text
    const data = source.type === 'base64' && typeof source.data === 'string' ? source.data : null;
    if (data !== null) c.mediaChars += data.length;
    const mime =
      typeof source.media_type === 'string'
        ? source.media_type
        : type === 'image'
          ? 'image/*'
          : 'application/pdf';
    if (data !== null) addInline(c, mime, data);
    else if (type === 'image') addImage(c, null, 'high');
    else addUnknownFile(c);
    return true;
  }
  if (type === 'input_audio' && isObject(part.input_audio)) {
    const data = part.input_audio.data;
    if (typeof data === 'string') {
      c.mediaChars += data.length;
      addInline(c, `audio/${String(part.input_audio.format ?? '')}`, data);
    } else addUnknownFile(c);
    return true;
  }
  // OpenAI chat file and Responses file.
  if (type === 'file' || type === 'input_file') {
    const file = isObject(part.file) ? part.file : part;
    const data = typeof file.file_data === 'string' ? file.file_data : null;
    if (data !== null) {
      c.mediaChars += data.length;
      const inline = parseDataUrl(data);
      addInline(c, inline?.mimeType ?? 'application/pdf', inline ? inline.base64 : data);
    } else addUnknownFile(c);
    return true;
  }
  // Gemini parts.
  const inline = isObject(part.inlineData)
    ? part.inlineData
    : isObject(part.inline_data)
      ? part.inline_data
      : null;
  if (inline) {
    const data = typeof inline.data === 'string' ? inline.data : '';
    c.mediaChars += data.length;
    const mime =
      typeof inline.mimeType === 'string'
        ? inline.mimeType
        : typeof inline.mime_type === 'string'
          ? inline.mime_type
          : null;
    addInline(c, mime, data);
    return true;
  }
  const fileData = isObject(part.fileData) ? part.fileData : isObject(part.file_data) ? part.file_data : null;
  if (fileData) {
    const mime =
      typeof fileData.mimeType === 'string'
        ? fileData.mimeType
        : typeof fileData.mime_type === 'string'
          ? fileData.mime_type
          : '';
    if (mime.startsWith('image/')) addImage(c, null, 'high');
    else addUnknownFile(c);
    return true;
  }
  return false;
}

/** A base64 payload by its MIME type: image, audio, PDF; anything else takes the context window. */
function addInline(c: Counter, mime: string | null, base64: string): void {
  const type = (mime ?? '').toLowerCase();
  if (type.startsWith('image/')) {
    addImage(c, null, 'high', base64);
    return;
  }
  if (type.startsWith('audio/')) {
    addAudio(c, base64, type);
    return;
  }
  if (type === 'application/pdf' || type === '') {
    addPdf(c, base64);
    return;
  }
  addUnknownFile(c); // video and other files: bounded by the context window
}

/** Images: the dearest family's rule, at the decoded size (precise) or the provider's largest. */
function addImage(c: Counter, url: string | null, detail: 'low' | 'high', base64?: string): void {
  let data = base64 ?? null;
  if (data === null && url !== null) {
    const inline = parseDataUrl(url);
    if (inline) {
      c.mediaChars += url.length;
      data = inline.base64;
    }
  }
  let size: PixelSize | null = null;
  if (data !== null) {
    if (c.precise) size = imageSize(data);
    else c.loose = true;
  }
  let tokens = 0;
  for (const family of c.families) tokens = Math.max(tokens, imageTokens(family, c.model, size, detail));
  c.media += tokens;
}

/** OpenAI image prices per model (vision guide, "Calculating costs"); a fine-tune (ft:) as its base. */
function openaiImageTokens(model: string, size: PixelSize | null, detail: 'low' | 'high'): number {
  const name = baseName(model).replace(/^ft:/, '');
  const tile = /^gpt-4o-mini(?:$|-)/.test(name) ? { base: 2833, tile: 5667 } : { base: 85, tile: 170 };
  let tokens = detail === 'low' ? tile.base : tile.base + tile.tile * tiles(size);
  const multiplier = PATCH_MODELS.find(([pattern]) => pattern.test(name))?.[1];
  if (multiplier !== undefined) tokens = Math.max(tokens, Math.ceil(patches(size) * multiplier));
  return tokens;
}

const PATCH_MODELS: ReadonlyArray<readonly [RegExp, number]> = [
  [/^gpt-4\.1-mini(?:$|-)/, 1.62],
  [/^gpt-4\.1-nano(?:$|-)/, 2.46],
  [/^o4-mini(?:$|-)/, 1.72],
  [/^gpt-5(?:\.\d+)?-mini(?:$|-)/, 1.62],
  [/^gpt-5(?:\.\d+)?-nano(?:$|-)/, 2.46],
];

/** 512-px tiles after fitting 2048x2048 and a 768-px shortest side; 8 (the most) when the size is unknown. */
function tiles(size: PixelSize | null): number {
  if (!size) return 8;
  let { width: w, height: h } = size;
  const fit = Math.min(1, 2048 / Math.max(w, h));
  w *= fit;
  h *= fit;
  const short = Math.min(w, h);
  if (short > 768) {
    w *= 768 / short;
    h *= 768 / short;
  }
  return Math.ceil(Math.floor(w) / 512) * Math.ceil(Math.floor(h) / 512);
}

/** 32-px patches, at most 1536 (a larger image is scaled down to fit). */
function patches(size: PixelSize | null): number {
  if (!size) return 1536;
  return Math.min(1536, Math.ceil(size.width / 32) * Math.ceil(size.height / 32));
}

function imageTokens(family: Family, model: string, size: PixelSize | null, detail: 'low' | 'high'): number {
  if (family === 'openai') return openaiImageTokens(model, size, detail);
  if (family === 'anthropic') {
    // Anthropic vision docs: w*h/750 after fitting a 1568-px long edge; about 1,600 at most.
    if (!size) return 1600;
    const fit = Math.min(1, 1568 / Math.max(size.width, size.height));
    return Math.min(1600, Math.ceil((size.width * fit * (size.height * fit)) / 750));
  }
  // Gemini: 258 per image up to 384x384, else 258 per 768-px tile (after fitting 3072x3072).
  if (!size) return 258 * 16;
  if (size.width <= 384 && size.height <= 384) return 258;
  const fit = Math.min(1, 3072 / Math.max(size.width, size.height));
  return 258 * Math.ceil((size.width * fit) / 768) * Math.ceil((size.height * fit) / 768);
}

/** Audio tokens per second: OpenAI 10 (input audio), Gemini 32. */
const AUDIO_TOKENS_PER_SECOND: Readonly<Record<Family, number>> = { openai: 10, anthropic: 0, gemini: 32 };
/** The lowest bit rate assumed for compressed audio whose duration the header does not give (8 kbit/s). */
const MIN_AUDIO_BYTES_PER_SECOND = 1000;

function addAudio(c: Counter, base64: string, mime: string): void {
  let seconds: number | null = null;
  if (c.precise && (mime.includes('wav') || mime === 'audio/')) seconds = wavSeconds(base64);
  if (seconds === null) {
    seconds = base64DecodedBytes(base64) / MIN_AUDIO_BYTES_PER_SECOND;
    if (!c.precise) c.loose = true;
  }
  let rate = 0;
  for (const family of c.families) rate = Math.max(rate, AUDIO_TOKENS_PER_SECOND[family]);
  if (rate === 0) rate = AUDIO_TOKENS_PER_SECOND.gemini; // a family with no audio rule: the dearest known
  c.audio += Math.ceil(seconds * rate);
}

/** Per page: OpenAI an image (the most tiles) and the text; Anthropic ~3,000 text + a page image; Gemini 1,120. */
const PDF_PAGE_TOKENS: Readonly<Record<Family, number>> = { openai: 1445, anthropic: 4600, gemini: 1120 };

function addPdf(c: Counter, base64: string): void {
  if (!c.precise) {
    c.loose = true;
    addUnknownFile(c);
    return;
  }
  const pages = pdfPages(base64);
  if (pages === null) {
    addUnknownFile(c);
    return;
  }
  let perPage = 0;
  for (const family of c.families) perPage = Math.max(perPage, PDF_PAGE_TOKENS[family]);
  // OpenAI also bills the extracted text: at most one token per byte of the file.
  const tokens = pages * perPage + base64DecodedBytes(base64);
  c.media += Math.min(tokens, c.contextTokens);
}

/** A file the guard cannot read (an id, a URL, a format it does not parse): the model's whole context. */
function addUnknownFile(c: Counter): void {
  c.media += c.contextTokens;
}

/** Tool definitions and built-in tools: the fixed framing (cheap) or the precise count, and web searches. */
function boundTools(c: Counter, body: Obj): { tokens: number; fixed: number; searches: number } {
  const lists = [body.tools, body.functions].filter(Array.isArray) as unknown[][];
  let count = 0;
  let searches = 0;
  let tokens = 0;
  for (const list of lists) {
    for (const tool of list) {
      count += 1;
      if (
        isObject(tool) &&
        typeof tool.type === 'string' &&
        tool.type.startsWith('web_search_') &&
        openaiSearchToolKind(tool) === null
      ) {
        // Anthropic's server-side web search: billed per search, its results as input.
        const max = tool.max_uses;
        searches +=
          typeof max === 'number' && Number.isInteger(max) && max > 0 ? max : DEFAULT_MAX_WEB_SEARCHES;
      }
      if (isObject(tool) && typeof tool.type === 'string' && tool.type.startsWith('web_fetch_')) {
        // Anthropic's web fetch: each fetch adds at most `max_content_tokens` of the page as input. Strict
        // mode refuses one without both limits (`unboundedServerTool`); the other modes assume 10 fetches
        // of the model's whole context.
        const uses = positiveInt(tool.max_uses) ?? DEFAULT_MAX_WEB_SEARCHES;
        const content = positiveInt(tool.max_content_tokens) ?? c.contextTokens;
        c.media += uses * content;
      }
      if (c.precise) tokens += boundJson(c, tool);
    }
  }
  if (count === 0) return { tokens: 0, fixed: 0, searches };
  // OpenAI's framing (cookbook: 7-10 per function, 12 at the end), Anthropic's tool-use system prompt.
  const anthropic = c.families.includes('anthropic') ? ANTHROPIC_TOOL_PROMPT : 0;
  const fixed = 32 * count + 16 + anthropic;
  return { tokens: tokens + fixed, fixed, searches };
}

/**
 * A JSON value the provider renders into the prompt (a tool definition, a schema): OpenAI by its strings
 * (keys and values) counted one by one with two tokens of slack each; the others by the whole JSON text
 * at the non-OpenAI bound.
 */
function boundJson(c: Counter, value: unknown): number {
  if (!c.precise) return 0; // the body's bytes cover it
  if (!c.openaiText) {
    const json = JSON.stringify(value) ?? '';
    return textTokens(c, json) + 16;
  }
  let tokens = 0;
  const visit = (v: unknown, depth: number): void => {
    if (depth > MAX_DEPTH) return;
    if (typeof v === 'string') tokens += countTextTokens(c.model, v) + 2;
    else if (typeof v === 'number' || typeof v === 'boolean')
      tokens += countTextTokens(c.model, String(v)) + 2;
    else if (Array.isArray(v)) for (const item of v) visit(item, depth + 1);
    else if (isObject(v)) {
      for (const key in v) {
        tokens += countTextTokens(c.model, key) + 2;
        visit(v[key], depth + 1);
      }
    }
  };
  visit(value, 0);
  return tokens;
}

function positiveInt(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isInteger(value) && value > 0 ? value : undefined;
}

/**
 * Providers whose chat completions read `max_completion_tokens` (OpenAI's own API and Azure's). Others
 * speaking OpenAI's chat format may ignore it without a word (DeepSeek does: `max_completion_tokens: 5`
 * there gives a full answer) and read `max_tokens` alone, or prefer it to `max_tokens` (vLLM).
 */
const MAX_COMPLETION_TOKENS_PROVIDERS = new Set(['openai', 'azure', 'text-completion-openai']);

/** Where a request caps its output, as its provider reads it. */
interface OutputCaps {
  /** The fields the provider may read; which one it honours when several are given is its own rule. */
  read: readonly OutputField[];
  /**
   * A cap counts only when this field gives one: the one field every such provider reads, and where a
   * lowered cap is written.
   */
  needs: OutputField | null;
  /** Where a lowered cap is written when the request names none of `read` (else: the one it names). */
  write: OutputField | null;
}

const CHAT_CAPS: OutputCaps = {
  read: ['max_completion_tokens', 'max_tokens'],
  needs: null,
  write: 'max_completion_tokens',
};
const COMPATIBLE_CHAT_CAPS: OutputCaps = {
  read: ['max_completion_tokens', 'max_tokens'],
  needs: 'max_tokens',
  write: null, // `needs` is where a lowered cap goes
};
const RESPONSES_CAPS: OutputCaps = { read: ['max_output_tokens'], needs: null, write: 'max_output_tokens' };
const ANTHROPIC_CAPS: OutputCaps = { read: ['max_tokens'], needs: null, write: 'max_tokens' };
const GEMINI_CAPS: OutputCaps = {
  read: ['generationConfig.maxOutputTokens'],
  needs: null,
  write: 'generationConfig.maxOutputTokens',
};
const ANY_CAPS: OutputCaps = {
  read: ['max_completion_tokens', 'max_tokens', 'max_output_tokens', 'generationConfig.maxOutputTokens'],
  needs: null,
  write: null,
};

/** The output cap fields of a call in this format to a model of this provider (LiteLLM's names). */
function outputCaps(format: WireFormat | null, provider: string | undefined): OutputCaps {
  switch (format) {
    case 'openai-chat':
      return provider !== undefined && MAX_COMPLETION_TOKENS_PROVIDERS.has(provider)
        ? CHAT_CAPS
        : COMPATIBLE_CHAT_CAPS;
    case 'openai-responses':
      return RESPONSES_CAPS;
    case 'anthropic-messages':
      return ANTHROPIC_CAPS;
    case 'gemini':
      return GEMINI_CAPS;
    default:
      return ANY_CAPS;
  }
}

/** A cap field's value in the body (Gemini's in either spelling, the larger). */
function capValue(body: Obj, field: OutputField, gemini: { maxOutputTokens: number | undefined }): unknown {
  return field === 'generationConfig.maxOutputTokens' ? gemini.maxOutputTokens : body[field];
}

/**
 * A count as a lenient provider reads it: a positive integer, or the digits of one (Pydantic's lax
 * mode, which OpenAI-compatible servers use, takes `"300"` for 300).
 */
function countOf(value: unknown): number | undefined {
  if (typeof value === 'string' && /^\s*\d{1,15}\s*$/.test(value)) return positiveInt(Number(value));
  return positiveInt(value);
}

/**
 * The output bound: the largest cap the request gives in a field its provider may read, else the
 * model's maximum; times the choices. A cap the provider might not read (a `max_completion_tokens`
 * without `max_tokens`, outside OpenAI's own API) bounds nothing.
 */
function outputBound(
  format: WireFormat | null,
  body: Obj,
  price: ModelPrice | undefined,
  defaultMax: number,
  embeddings: boolean,
): { tokens: number; choices: number; field: OutputField | null; requested: boolean } {
  if (embeddings) return { tokens: 0, choices: 1, field: null, requested: false };
  if (price?.mode === 'image_generation') {
    // An image's output tokens are set by its quality and size, which no cap lowers.
    return { tokens: imageOutputTokens(body), choices: countOf(body.n) ?? 1, field: null, requested: false };
  }
  const gemini = geminiGeneration(body);
  // OpenAI's legacy completions (and vLLM) generate `best_of` candidates and bill every one.
  const choices = Math.max(countOf(body.n) ?? gemini.candidates ?? 1, countOf(body.best_of) ?? 1);
  const model = price?.maxOutputTokens ?? defaultMax;
  const caps = outputCaps(format, price?.provider);
  let tokens: number | undefined;
  let field: OutputField | null = null;
  for (const name of caps.read) {
    const value = capValue(body, name, gemini);
    if (value === undefined || value === null) continue;
    const count = countOf(value);
    // A cap given but unreadable (0, negative, not a number): the provider refuses the call or reads
    // it its own way, so it bounds nothing.
    if (count === undefined) return { tokens: model, choices, field: caps.needs ?? name, requested: false };
    if (tokens === undefined || count > tokens) {
      tokens = count;
      field = name;
    }
  }
  const needed = caps.needs === null || countOf(body[caps.needs]) !== undefined;
  if (tokens !== undefined && needed) return { tokens, choices, field: caps.needs ?? field, requested: true };
  return {
    tokens: model,
    choices,
    field: caps.needs ?? caps.write ?? fallbackField(body),
    requested: false,
  };
}

/**
 * Output tokens of one gpt-image-1 image, by quality and size, as OpenAI publishes them (image
 * generation guide, "Cost and latency"); later gpt-image models are assumed to bill no more.
 */
const IMAGE_OUTPUT_TOKENS: ReadonlyMap<string, ReadonlyMap<string, number>> = new Map([
  [
    'low',
    new Map([
      ['1024x1024', 272],
      ['1024x1536', 408],
      ['1536x1024', 400],
    ]),
  ],
  [
    'medium',
    new Map([
      ['1024x1024', 1056],
      ['1024x1536', 1584],
      ['1536x1024', 1568],
    ]),
  ],
  [
    'high',
    new Map([
      ['1024x1024', 4160],
      ['1024x1536', 6240],
      ['1536x1024', 6208],
    ]),
  ],
]);
/** A partial image (streamed image generation) adds 100 output tokens (OpenAI's image generation guide). */
const PARTIAL_IMAGE_TOKENS = 100;

/**
 * The most output tokens one image of an image generation call bills: its quality and size from the
 * table (another quality, `auto` or none: high; another size: the quality's largest), plus its partial
 * images.
 */
function imageOutputTokens(body: Obj): number {
  // A Map's `get` finds nothing for a key that is no string (and nothing of a prototype).
  const bySize = IMAGE_OUTPUT_TOKENS.get(body.quality as string) ?? IMAGE_OUTPUT_TOKENS.get('high')!;
  const size = bySize.get(body.size as string);
  const tokens = size ?? Math.max(...bySize.values());
  return tokens + PARTIAL_IMAGE_TOKENS * (countOf(body.partial_images) ?? 0);
}

/** Where an unknown format caps its output when it names no cap: Gemini's, for a body of Gemini's shape. */
function fallbackField(body: Obj): OutputField | null {
  return Array.isArray(body.contents) ? 'generationConfig.maxOutputTokens' : null;
}

/**
 * Lowers a request's output cap in place (the route, or the upstream call, then sends this body):
 * `field` takes `tokens`, and every other cap the request gives is brought down to it too, whichever
 * one the provider reads; a `max_completion_tokens` beside a written `max_tokens` is dropped (a provider
 * that ignores it gains nothing from it, and some refuse the two together).
 */
export function setOutputCap(body: Obj, field: OutputField, tokens: number): void {
  for (const other of ANY_CAPS.read) {
    if (other === 'generationConfig.maxOutputTokens') {
      if (geminiConfigs(body).length > 0 && !(countOf(geminiGeneration(body).maxOutputTokens)! <= tokens))
        setGeminiOutputCap(body, tokens);
    } else if (body[other] !== undefined && body[other] !== null) {
      if (other === 'max_completion_tokens' && field === 'max_tokens') delete body[other];
      else if (!(countOf(body[other])! <= tokens)) body[other] = tokens;
    }
  }
  if (field === 'generationConfig.maxOutputTokens') setGeminiOutputCap(body, tokens);
  else body[field] = tokens;
}

// Gemini's REST API reads JSON by proto3 rules: every field is accepted in lowerCamelCase and in its
// proto name (snake_case), and a message that sets one field in both spellings is refused (unbilled).
// So each field is read in both spellings, and the larger value bounds the call.

/** Gemini's `generationConfig` / `generation_config`: the objects the request gives (none, one, or both). */
function geminiConfigs(body: Obj): Obj[] {
  const configs: Obj[] = [];
  if (isObject(body.generationConfig)) configs.push(body.generationConfig);
  if (isObject(body.generation_config)) configs.push(body.generation_config);
  return configs;
}

/** The largest positive integer among `keys` of these objects, else `undefined`. */
function largestInt(objects: Obj[], keys: readonly string[]): number | undefined {
  let largest: number | undefined;
  for (const object of objects) {
    for (const key of keys) {
      const value = positiveInt(object[key]);
      if (value !== undefined && (largest === undefined || value > largest)) largest = value;
    }
  }
  return largest;
}

/** Gemini's output cap and candidate count, in either spelling. */
function geminiGeneration(body: Obj): {
  maxOutputTokens: number | undefined;
  candidates: number | undefined;
} {
  const configs = geminiConfigs(body);
  if (configs.length === 0) return { maxOutputTokens: undefined, candidates: undefined };
  return {
    maxOutputTokens: largestInt(configs, ['maxOutputTokens', 'max_output_tokens']),
    candidates: largestInt(configs, ['candidateCount', 'candidate_count']),
  };
}

/** Gemini response schemas (`responseSchema`, `responseJsonSchema`, either spelling): as a tool definition, +8. */
function boundGeminiSchemas(c: Counter, body: Obj): number {
  let tokens = 0;
  for (const config of geminiConfigs(body)) {
    for (const key of ['responseSchema', 'response_schema', 'responseJsonSchema', 'response_json_schema']) {
      if (config[key] !== undefined) tokens += boundJson(c, config[key]) + 8;
    }
  }
  return tokens;
}

/**
 * Gemini `cachedContent` / `cached_content` names a cache whose tokens are billed as prompt tokens (at
 * the cache-read price) but are not in the body: bounded as a file the guard cannot read, the model's
 * whole context window.
 */
function boundGeminiCachedContent(c: Counter, body: Obj): void {
  const cached = body.cachedContent ?? body.cached_content;
  if (typeof cached === 'string' && cached !== '') addUnknownFile(c);
}

/**
 * OpenAI Responses' references to context stored at OpenAI, billed as input tokens but not in the body:
 * `previous_response_id` (every earlier turn of the chain, its input and its output: what that
 * response's own usage counted, when the guard logged it), `conversation` (the items of a stored
 * conversation) and `prompt` (a stored prompt template, `{ id: 'pmpt_...' }`). What the guard cannot
 * know is bounded as a file it cannot read: the model's whole context window.
 */
function boundStoredContext(c: Counter, body: Obj, previousTurnTokens: number | null | undefined): void {
  if (previousResponseId(body) !== null) {
    c.media += Math.min(previousTurnTokens ?? c.contextTokens, c.contextTokens);
  }
  const conversation = body.conversation;
  if ((typeof conversation === 'string' && conversation !== '') || isObject(conversation)) addUnknownFile(c);
  if (isObject(body.prompt) && typeof body.prompt.id === 'string' && body.prompt.id !== '') addUnknownFile(c);
}

/** The response a Responses call continues (`previous_response_id`), if it names one. */
export function previousResponseId(body: Obj): string | null {
  const previous = body.previous_response_id;
  return typeof previous === 'string' && previous !== '' ? previous : null;
}

/** Grounding with Google Search, as a Gemini tool: `google_search` / `googleSearch` and the 1.5 retrieval tool. */
const GROUNDING_TOOLS = ['google_search', 'googleSearch', 'google_search_retrieval', 'googleSearchRetrieval'];

/**
 * Grounding with Google Search: Google bills a grounded prompt (Gemini 2.x, `per_prompt`) or each search
 * query the model runs (Gemini 3, the price table's `web_search_billing_unit: "per_query"`), at the
 * table's `search_context_cost_per_query`. A prompt runs at most {@link DEFAULT_MAX_WEB_SEARCHES}
 * queries per candidate (Google publishes no limit; the same assumption as an Anthropic search tool
 * without `max_uses`), and each query's results are bounded as input like a web search's.
 * `billed`: the units priced per search; `searches`: the queries whose results are input.
 */
function geminiGrounding(
  body: Obj,
  price: ModelPrice | undefined,
  choices: number,
): { billed: number; searches: number } {
  if (!Array.isArray(body.tools)) return { billed: 0, searches: 0 };
  const grounded = body.tools.some(
    (tool) => isObject(tool) && GROUNDING_TOOLS.some((key) => tool[key] !== undefined),
  );
  if (!grounded) return { billed: 0, searches: 0 };
  const searches = DEFAULT_MAX_WEB_SEARCHES * choices;
  return { billed: price?.webSearchBillingUnit === 'per_prompt' ? 1 : searches, searches };
}

/** Lowers a Gemini output cap in the spelling the request already uses (never both: Google refuses that). */
function setGeminiOutputCap(body: Obj, tokens: number): void {
  const snake = !isObject(body.generationConfig) && isObject(body.generation_config);
  const key = snake ? 'generation_config' : 'generationConfig';
  const config: Obj = isObject(body[key]) ? { ...(body[key] as Obj) } : {};
  const present = ['maxOutputTokens', 'max_output_tokens'].filter((name) => config[name] !== undefined);
  if (present.length === 0) present.push(snake ? 'max_output_tokens' : 'maxOutputTokens');
  for (const name of present) config[name] = tokens;
  body[key] = config;
}

/**
 * A bound in nano-dollars at these rates, with `outputTokens` per choice (the bound's own by default);
 * never below 1, so that a spent budget refuses even a call it prices at nothing.
 */
export function boundNano(
  bound: CallBound,
  rates: WorstCaseRates,
  outputTokens = bound.outputTokens,
): number {
  const pico =
    bound.inputTokens * rates.input +
    bound.audioTokens * rates.audioInput +
    outputTokens * bound.choices * rates.output +
    rates.request +
    bound.webSearches * rates.webSearch;
  return Math.max(1, Math.ceil(pico / 1000));
}

/** The most output tokens per choice whose bound fits in `roomNano` (negative when even none does). */
export function outputTokensFitting(bound: CallBound, rates: WorstCaseRates, roomNano: number): number {
  const fixed = boundNano(bound, rates, 0);
  if (rates.output === 0) return roomNano >= fixed ? bound.outputTokens : -1;
  return Math.floor(((roomNano - fixed) * 1000) / (bound.choices * rates.output));
}
