import { createRequire } from 'node:module';
import type { Tiktoken } from 'tiktoken';

// What a provider bills for a request's prompt, by each provider's published rules (docs/simulator.md,
// "How the simulator bills", gives every rule with its source). This is the simulator's side of the
// contract and deliberately shares no code with the guard's metering or pricing: an overshoot test
// (spend <= cap) proves something only if the provider stand-in counts on its own.

type Obj = Record<string, unknown>;
type Encoding = 'cl100k_base' | 'o200k_base';

/** The request formats the simulator serves. */
export type BillingFormat =
  | 'openai-chat'
  | 'openai-responses'
  | 'openai-embeddings'
  | 'anthropic-messages'
  | 'gemini';

export interface ImageSize {
  width: number;
  height: number;
}

/** Which parts of a prompt are billed, and what is assumed for media the simulator cannot read. */
export interface BillingRules {
  images: boolean;
  audio: boolean;
  files: boolean;
  tools: boolean;
  webSearch: boolean;
  /** Size of an image given by URL or file id, or whose bytes are not a PNG, JPEG, GIF or WebP. */
  remoteImageSize: ImageSize;
  /** Pages of a file given by id or URL. */
  remoteFilePages: number;
  /** Duration of audio given by URI (Gemini `fileData`). */
  remoteAudioSeconds: number;
}

export const DEFAULT_BILLING_RULES: Readonly<BillingRules> = Object.freeze({
  images: true,
  audio: true,
  files: true,
  tools: true,
  webSearch: true,
  remoteImageSize: Object.freeze({ width: 1024, height: 1024 }),
  remoteFilePages: 1,
  remoteAudioSeconds: 60,
});

/** The prompt side of a provider's usage report. */
export interface ProviderPromptUsage {
  /** Every prompt token: text, images, files, tool definitions and audio. */
  prompt: number;
  /** The audio tokens among `prompt` (OpenAI `prompt_tokens_details.audio_tokens`, Gemini AUDIO). */
  audioIn: number;
  /** Server-side web searches the call runs (Anthropic `server_tool_use.web_search_requests`). */
  webSearches: number;
}

// ---------------------------------------------------------------------------------------------------
// Tokenizer. tiktoken is WASM (~200 ms and ~80 MB per encoding): required on the first count only.

type TiktokenModule = typeof import('tiktoken');
let tiktoken: TiktokenModule | undefined;
const encoders = new Map<Encoding, Tiktoken>();

function encoder(encoding: Encoding): Tiktoken {
  let found = encoders.get(encoding);
  if (!found) {
    tiktoken ??= createRequire(import.meta.url)('tiktoken') as TiktokenModule;
    found = tiktoken.get_encoding(encoding);
    encoders.set(encoding, found);
  }
  return found;
}

function tokens(encoding: Encoding, text: string): number {
  return text.length === 0 ? 0 : encoder(encoding).encode_ordinary(text).length;
}

/** The model name without provider prefixes (`openai/`, `azure/`, `ft:`), lower-cased. */
function bareModel(model: string): string {
  const name = model.slice(model.lastIndexOf('/') + 1).toLowerCase();
  return name.startsWith('ft:') ? name.slice(3) : name;
}

const O200K_FAMILY = /^(?:gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-oss|o1|o3|o4)(?:$|[-:.])/;

/** The tiktoken encoding OpenAI uses for `model`: o200k_base for its newer families, cl100k_base else. */
export function encodingForModel(model: string): Encoding {
  return O200K_FAMILY.test(bareModel(model)) ? 'o200k_base' : 'cl100k_base';
}

// ---------------------------------------------------------------------------------------------------
// Media decoding: sizes, durations and page counts from the bytes themselves.

function isRecord(value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function str(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

// Float scaling can land a hair above an exact multiple (767.9999 x 512/768...); a side that is a whole
// number of tiles mathematically must not gain a tile from rounding noise.
function ceilExact(value: number): number {
  return Math.ceil(value - 1e-9);
}

/** Base64 (or a `data:...;base64,` URL) to bytes; `null` for anything else. */
function decodeBase64(data: unknown): Buffer | null {
  if (typeof data !== 'string') return null;
  if (data.startsWith('data:')) {
    const comma = data.indexOf(',');
    if (comma < 0 || !data.slice(0, comma).endsWith(';base64')) return null;
    return Buffer.from(data.slice(comma + 1), 'base64');
  }
  return Buffer.from(data, 'base64');
}

function be16(b: Uint8Array, at: number): number {
  return ((b[at] ?? 0) << 8) | (b[at + 1] ?? 0);
}

function le16(b: Uint8Array, at: number): number {
  return (b[at] ?? 0) | ((b[at + 1] ?? 0) << 8);
}

function le24(b: Uint8Array, at: number): number {
  return le16(b, at) + (b[at + 2] ?? 0) * 0x10000;
}

function le32(b: Uint8Array, at: number): number {
  return le24(b, at) + (b[at + 3] ?? 0) * 0x1000000;
}

function ascii(b: Uint8Array, at: number, length: number): string {
  return String.fromCharCode(...b.subarray(at, at + length));
}

function jpegSize(b: Uint8Array): ImageSize | null {
  let at = 2;
  while (at + 1 < b.length) {
    if (b[at] !== 0xff) return null;
    const marker = b[at + 1] ?? 0;
    if (marker === 0xff) {
      at++; // fill byte
      continue;
    }
    // Standalone markers carry no length.
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd8)) {
      at += 2;
      continue;
    }
    if (marker === 0xd9 || marker === 0xda) return null; // image data began before any frame header
    // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC): length, precision, height, width.
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      if (at + 8 >= b.length) return null;
      return { height: be16(b, at + 5), width: be16(b, at + 7) };
    }
    at += 2 + be16(b, at + 2);
  }
  return null;
}

function webpSize(b: Uint8Array): ImageSize | null {
  switch (ascii(b, 12, 4)) {
    case 'VP8 ': // lossy: a key frame's start code, then 14-bit width and height
      if (b.length < 30 || b[23] !== 0x9d || b[24] !== 0x01 || b[25] !== 0x2a) return null;
      return { width: le16(b, 26) & 0x3fff, height: le16(b, 28) & 0x3fff };
    case 'VP8L': {
      if (b.length < 25 || b[20] !== 0x2f) return null;
      const bits = le32(b, 21);
      return { width: (bits & 0x3fff) + 1, height: (Math.floor(bits / 0x4000) & 0x3fff) + 1 };
    }
    case 'VP8X':
      if (b.length < 30) return null;
      return { width: le24(b, 24) + 1, height: le24(b, 27) + 1 };
    default:
      return null;
  }
}

/**
 * Width and height from an image's header (PNG, JPEG baseline or progressive, GIF, WebP lossy,
 * lossless or extended), or `null` if the bytes are none of these.
 */
export function decodeImageSize(b: Uint8Array): ImageSize | null {
  let size: ImageSize | null = null;
  if (b.length >= 24 && be16(b, 0) === 0x8950 && ascii(b, 1, 3) === 'PNG' && ascii(b, 12, 4) === 'IHDR') {
    size = { width: be16(b, 16) * 0x10000 + be16(b, 18), height: be16(b, 20) * 0x10000 + be16(b, 22) };
  } else if (b.length >= 10 && (ascii(b, 0, 6) === 'GIF87a' || ascii(b, 0, 6) === 'GIF89a')) {
    size = { width: le16(b, 6), height: le16(b, 8) };
  } else if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8) {
    size = jpegSize(b);
  } else if (b.length >= 16 && ascii(b, 0, 4) === 'RIFF' && ascii(b, 8, 4) === 'WEBP') {
    size = webpSize(b);
  }
  return size && size.width > 0 && size.height > 0 ? size : null;
}

/** A WAV file's audio bytes and byte rate (from its `fmt ` and `data` chunks), or `null`. */
export function decodeWav(b: Uint8Array): { dataBytes: number; byteRate: number } | null {
  if (b.length < 12 || ascii(b, 0, 4) !== 'RIFF' || ascii(b, 8, 4) !== 'WAVE') return null;
  let byteRate = 0;
  let at = 12;
  while (at + 8 <= b.length) {
    const id = ascii(b, at, 4);
    const size = le32(b, at + 4);
    if (id === 'fmt ') byteRate = le32(b, at + 16);
    if (id === 'data') {
      // A streamed WAV may declare more (or 0xFFFFFFFF) than it holds: what is there is what plays.
      const dataBytes = Math.min(size, b.length - at - 8);
      return byteRate > 0 ? { dataBytes, byteRate } : null;
    }
    at += 8 + size + (size % 2); // chunks are padded to an even length
  }
  return null;
}

// A compressed format's duration is not in a fixed header: assume 16 kbit/s.
const ASSUMED_AUDIO_BYTES_PER_SECOND = 2000;

/** Audio tokens at `perSecond` tokens per second, rounded up. */
function audioTokens(bytes: Uint8Array, perSecond: number): number {
  const wav = decodeWav(bytes);
  return wav
    ? Math.ceil((wav.dataBytes * perSecond) / wav.byteRate)
    : Math.ceil((bytes.length * perSecond) / ASSUMED_AUDIO_BYTES_PER_SECOND);
}

// A page object's /Type is /Page; the page tree's nodes are /Pages. A PDF name ends at whitespace or a
// delimiter.
const PDF_PAGE = /\/Type\s*\/Page(?![^\s/<>[\]()%{}])/g;

/**
 * The number of `/Type /Page` objects in a PDF's bytes (at least 1: a provider bills any document one
 * page at least, even when its page objects sit in compressed object streams).
 */
export function countPdfPages(b: Uint8Array): number {
  const text = Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');
  return Math.max(1, text.match(PDF_PAGE)?.length ?? 0);
}

// ---------------------------------------------------------------------------------------------------
// Image token formulas.

const PATCH_MODELS: ReadonlyArray<readonly [RegExp, number]> = [
  [/^gpt-4\.1-mini(?:$|[-:.])/, 1.62],
  [/^gpt-4\.1-nano(?:$|[-:.])/, 2.46],
  [/^o4-mini(?:$|[-:.])/, 1.72],
];
const GPT_4O_MINI = /^gpt-4o-mini(?:$|[-:.])/;
const PATCH = 32;
const MAX_PATCHES = 1536;

/** OpenAI's 32-pixel patch count for patch-based models, the image scaled down to fit 1536 patches. */
function openaiPatches({ width, height }: ImageSize): number {
  const raw = Math.ceil(width / PATCH) * Math.ceil(height / PATCH);
  if (raw <= MAX_PATCHES) return raw;
  // The vision guide's two steps: shrink to the patch budget, then to a whole number of patches wide
  // or high, whichever is smaller.
  let r = Math.sqrt((PATCH * PATCH * MAX_PATCHES) / (width * height));
  const w = (width * r) / PATCH;
  const h = (height * r) / PATCH;
  r *= Math.min(Math.floor(w) / w, Math.floor(h) / h);
  const patches = ceilExact((width * r) / PATCH) * ceilExact((height * r) / PATCH);
  return Math.min(MAX_PATCHES, patches);
}

/** Tokens OpenAI bills for an image of `size` at `detail` (`low`, `high`, `auto` or absent) for `model`. */
export function openaiImageTokens(model: string, size: ImageSize, detail: unknown): number {
  const name = bareModel(model);
  const patchModel = PATCH_MODELS.find(([pattern]) => pattern.test(name));
  if (patchModel) return Math.ceil(openaiPatches(size) * patchModel[1]);
  const [base, perTile] = GPT_4O_MINI.test(name) ? [2833, 5667] : [85, 170];
  if (detail === 'low') return base;
  let { width, height } = size;
  const fit = Math.min(1, 2048 / Math.max(width, height));
  width *= fit;
  height *= fit;
  const shortest = Math.min(width, height);
  if (shortest > 768) {
    width *= 768 / shortest;
    height *= 768 / shortest;
  }
  return base + perTile * ceilExact(width / 512) * ceilExact(height / 512);
}

/** Tokens Anthropic bills for an image: the long edge capped at 1568 px, w x h / 750, at most 1600. */
export function anthropicImageTokens({ width, height }: ImageSize): number {
  const scale = Math.min(1, 1568 / Math.max(width, height));
  return Math.min(1600, ceilExact((width * scale * height * scale) / 750));
}

const GEMINI_TOKENS_PER_IMAGE_TILE = 258;

/** Tokens Gemini bills for an image: 258 if both sides are <= 384 px, else 258 per 768 px tile. */
export function geminiImageTokens({ width, height }: ImageSize): number {
  if (width <= 384 && height <= 384) return GEMINI_TOKENS_PER_IMAGE_TILE;
  const fit = Math.min(1, 3072 / Math.max(width, height));
  return GEMINI_TOKENS_PER_IMAGE_TILE * ceilExact((width * fit) / 768) * ceilExact((height * fit) / 768);
}

// ---------------------------------------------------------------------------------------------------
// Per-request state.

interface Bill {
  model: string;
  encoding: Encoding;
  rules: BillingRules;
  /** Audio tokens counted so far (also inside every returned count). */
  audio: number;
}

function imageSize(bill: Bill, data: unknown): ImageSize {
  const bytes = decodeBase64(data);
  return (bytes && decodeImageSize(bytes)) ?? bill.rules.remoteImageSize;
}

function isRemote(data: unknown): boolean {
  return typeof data !== 'string' || /^https?:/i.test(data);
}

// ---------------------------------------------------------------------------------------------------
// OpenAI: chat completions, Responses and embeddings.

// OpenAI cookbook, "How to count tokens with tiktoken".
const TOKENS_PER_MESSAGE = 3;
const TOKENS_PER_NAME = 1;
const REPLY_PRIMING = 3;

// OpenAI cookbook, "Counting tokens for chat completions API calls with functions".
const PROP_INIT = 3;
const PROP_KEY = 3;
const ENUM_INIT = -3;
const ENUM_ITEM = 3;
const FUNC_END = 12;

// The PDF page image OpenAI bills: a letter page as one high-detail tiled image (85 + 170 x 4).
const OPENAI_TOKENS_PER_PDF_PAGE = 765;

function openaiImage(bill: Bill, url: unknown, detail: unknown): number {
  if (!bill.rules.images) return 0;
  const size = isRemote(url) ? bill.rules.remoteImageSize : imageSize(bill, url);
  return openaiImageTokens(bill.model, size, detail);
}

function openaiAudio(bill: Bill, data: unknown): number {
  if (!bill.rules.audio) return 0;
  const bytes = decodeBase64(data);
  const count = bytes ? audioTokens(bytes, 10) : 0;
  bill.audio += count;
  return count;
}

/** A file part: its page images plus its text, a quarter token per byte; by id or URL, pages only. */
function openaiFile(bill: Bill, data: unknown): number {
  if (!bill.rules.files) return 0;
  const bytes = typeof data === 'string' ? decodeBase64(data) : null;
  if (!bytes) return bill.rules.remoteFilePages * OPENAI_TOKENS_PER_PDF_PAGE;
  return countPdfPages(bytes) * OPENAI_TOKENS_PER_PDF_PAGE + Math.ceil(bytes.length / 4);
}

const OPENAI_MEDIA_PARTS = new Set(['image_url', 'input_image', 'input_audio', 'file', 'input_file']);
const OPENAI_TEXT_PARTS = new Set(['text', 'input_text', 'output_text']);

/** One content part of a chat message or Responses item. */
function openaiPart(bill: Bill, part: unknown): number {
  if (typeof part === 'string') return tokens(bill.encoding, part);
  if (!isRecord(part)) return 0;
  switch (part.type) {
    case 'image_url': {
      const image = part.image_url;
      return isRecord(image)
        ? openaiImage(bill, image.url, image.detail)
        : openaiImage(bill, image, undefined);
    }
    case 'input_image':
      return openaiImage(bill, part.image_url, part.detail);
    case 'input_audio':
      return openaiAudio(bill, isRecord(part.input_audio) ? part.input_audio.data : undefined);
    case 'file': {
      const file = isRecord(part.file) ? part.file : {};
      return openaiFile(bill, file.file_data);
    }
    case 'input_file':
      return openaiFile(bill, part.file_data);
    default:
      return typeof part.text === 'string' ? tokens(bill.encoding, part.text) : 0;
  }
}

/** A message, by the cookbook: 3, each string field (+1 for `name`), content parts, tool calls. */
function openaiMessage(bill: Bill, message: Obj): number {
  let count = TOKENS_PER_MESSAGE;
  for (const [key, value] of Object.entries(message)) {
    if (typeof value === 'string') {
      count += tokens(bill.encoding, value) + (key === 'name' ? TOKENS_PER_NAME : 0);
    } else if (key === 'content' && Array.isArray(value)) {
      for (const part of value) count += openaiPart(bill, part);
    } else if (key === 'tool_calls' && Array.isArray(value)) {
      for (const call of value) {
        const fn = isRecord(call) ? call.function : undefined;
        if (isRecord(fn))
          count += tokens(bill.encoding, str(fn.name)) + tokens(bill.encoding, str(fn.arguments));
      }
    }
  }
  return count;
}

/** The strings a value holds, at any depth; content parts inside it are billed as parts. */
function heldStrings(bill: Bill, value: unknown): number {
  if (typeof value === 'string') return tokens(bill.encoding, value);
  if (Array.isArray(value)) return value.reduce<number>((sum, item) => sum + heldStrings(bill, item), 0);
  if (!isRecord(value)) return 0;
  if (
    typeof value.type === 'string' &&
    (OPENAI_MEDIA_PARTS.has(value.type) || OPENAI_TEXT_PARTS.has(value.type))
  ) {
    return openaiPart(bill, value);
  }
  return Object.values(value).reduce<number>((sum, item) => sum + heldStrings(bill, item), 0);
}

/** A Responses `input` item: a message as in chat; any other item (a function call, its output...) 3 + its strings. */
function responsesItem(bill: Bill, item: unknown): number {
  if (typeof item === 'string') return openaiMessage(bill, { role: 'user', content: item });
  if (!isRecord(item)) return TOKENS_PER_MESSAGE;
  if (typeof item.role === 'string') return openaiMessage(bill, item);
  let count = TOKENS_PER_MESSAGE;
  for (const [key, value] of Object.entries(item)) {
    count += heldStrings(bill, value) + (key === 'name' && typeof value === 'string' ? TOKENS_PER_NAME : 0);
  }
  return count;
}

/** Function definitions by the cookbook's formula (7 per function for o200k_base models, 10 else). */
function openaiFunctions(bill: Bill, functions: Obj[]): number {
  if (functions.length === 0) return 0;
  const funcInit = bill.encoding === 'o200k_base' ? 7 : 10;
  const trimDot = (text: string) => (text.endsWith('.') ? text.slice(0, -1) : text);
  let count = 0;
  for (const fn of functions) {
    count += funcInit + tokens(bill.encoding, `${str(fn.name)}:${trimDot(str(fn.description))}`);
    const parameters = isRecord(fn.parameters) ? fn.parameters : {};
    const properties = isRecord(parameters.properties) ? parameters.properties : {};
    const keys = Object.keys(properties);
    if (keys.length > 0) count += PROP_INIT;
    for (const key of keys) {
      const property = isRecord(properties[key]) ? properties[key] : {};
      count += PROP_KEY;
      if (Array.isArray(property.enum)) {
        count += ENUM_INIT;
        for (const item of property.enum) count += ENUM_ITEM + tokens(bill.encoding, String(item));
      }
      const type = typeof property.type === 'string' ? property.type : (JSON.stringify(property.type) ?? '');
      count += tokens(bill.encoding, `${key}:${type}:${trimDot(str(property.description))}`);
    }
  }
  return count + FUNC_END;
}

function openaiResponseFormat(bill: Bill, format: unknown): number {
  if (!isRecord(format) || format.type !== 'json_schema' || format.json_schema === undefined) return 0;
  return tokens(bill.encoding, JSON.stringify(format.json_schema)) + 8;
}

function chatPrompt(bill: Bill, body: Obj): number {
  let count = REPLY_PRIMING;
  if (Array.isArray(body.messages)) {
    for (const message of body.messages) {
      count += isRecord(message) ? openaiMessage(bill, message) : TOKENS_PER_MESSAGE;
    }
  }
  if (bill.rules.tools) {
    const functions: Obj[] = [];
    if (Array.isArray(body.tools)) {
      for (const tool of body.tools) {
        if (isRecord(tool) && tool.type === 'function' && isRecord(tool.function))
          functions.push(tool.function);
      }
    }
    if (Array.isArray(body.functions)) functions.push(...body.functions.filter(isRecord));
    count += openaiFunctions(bill, functions) + openaiResponseFormat(bill, body.response_format);
  }
  return count;
}

function responsesPrompt(bill: Bill, body: Obj): number {
  let count = REPLY_PRIMING;
  const instructions = body.instructions;
  if (typeof instructions === 'string' || Array.isArray(instructions)) {
    count += openaiMessage(bill, { role: 'system', content: instructions });
  }
  const input = body.input;
  if (typeof input === 'string') count += openaiMessage(bill, { role: 'user', content: input });
  else if (Array.isArray(input)) for (const item of input) count += responsesItem(bill, item);
  if (bill.rules.tools && Array.isArray(body.tools)) {
    const functions = body.tools.filter((tool): tool is Obj => isRecord(tool) && tool.type === 'function');
    count += openaiFunctions(bill, functions);
  }
  return count;
}

/** Embeddings `input`: a string, strings, a token array or token arrays (counted by their length). */
function embeddingsPrompt(body: Obj): number {
  const input = body.input;
  const items =
    typeof input === 'string' || (Array.isArray(input) && input.every((t) => typeof t === 'number'))
      ? [input]
      : Array.isArray(input)
        ? input
        : [];
  let count = 0;
  for (const item of items) {
    if (typeof item === 'string') count += tokens('cl100k_base', item);
    else if (Array.isArray(item)) count += item.length;
  }
  return count;
}

// ---------------------------------------------------------------------------------------------------
// Anthropic messages.

// Claude's tokenizer is not public: cl100k_base plus 20% stands in for it (as 6n/5, in integers, so a
// whole result is never nudged up a token by floating point).
function anthropicText(text: string): number {
  return Math.ceil((tokens('cl100k_base', text) * 6) / 5);
}

const ANTHROPIC_TOKENS_PER_MESSAGE = 4;
const ANTHROPIC_SYSTEM_TOKENS = 8;
// A letter-size page: its text (up to 2000 tokens) plus its image, 816 x 1056 px: ceil(816 x 1056 / 750).
const ANTHROPIC_TOKENS_PER_PDF_PAGE = 2000 + 1149;
// Anthropic's pricing table, "tool use system prompt" (Claude 4, 3.7 Sonnet, 3.5 Sonnet).
const ANTHROPIC_TOOL_PROMPT_AUTO = 346;
const ANTHROPIC_TOOL_PROMPT_ANY = 313;

function anthropicImage(bill: Bill, source: unknown): number {
  if (!bill.rules.images) return 0;
  const size =
    isRecord(source) && source.type === 'base64' ? imageSize(bill, source.data) : bill.rules.remoteImageSize;
  return anthropicImageTokens(size);
}

function anthropicDocument(bill: Bill, source: unknown): number {
  if (!bill.rules.files || !isRecord(source)) return 0;
  if (source.type === 'text') return anthropicText(str(source.data));
  if (source.type === 'content') return anthropicContent(bill, source.content);
  const bytes = source.type === 'base64' ? decodeBase64(source.data) : null;
  const pages = bytes ? countPdfPages(bytes) : bill.rules.remoteFilePages;
  return pages * ANTHROPIC_TOKENS_PER_PDF_PAGE;
}

/** A content string or array of blocks: text, images, documents and tool results. */
function anthropicContent(bill: Bill, content: unknown): number {
  if (typeof content === 'string') return anthropicText(content);
  if (!Array.isArray(content)) return 0;
  let count = 0;
  for (const block of content) {
    if (!isRecord(block)) continue;
    if (block.type === 'text') count += anthropicText(str(block.text));
    else if (block.type === 'image') count += anthropicImage(bill, block.source);
    else if (block.type === 'document') count += anthropicDocument(bill, block.source);
    else if (block.type === 'tool_result') count += anthropicContent(bill, block.content);
  }
  return count;
}

function isWebSearchTool(tool: unknown): tool is Obj {
  return isRecord(tool) && typeof tool.type === 'string' && tool.type.startsWith('web_search_');
}

function anthropicPrompt(bill: Bill, body: Obj): number {
  let count = 0;
  const system = body.system;
  if ((typeof system === 'string' && system.length > 0) || (Array.isArray(system) && system.length > 0)) {
    count += ANTHROPIC_SYSTEM_TOKENS + anthropicContent(bill, system);
  }
  if (Array.isArray(body.messages)) {
    for (const message of body.messages) {
      count +=
        ANTHROPIC_TOKENS_PER_MESSAGE + (isRecord(message) ? anthropicContent(bill, message.content) : 0);
    }
  }
  const tools = Array.isArray(body.tools) ? body.tools.filter((tool) => !isWebSearchTool(tool)) : [];
  if (bill.rules.tools && tools.length > 0) {
    const choice = isRecord(body.tool_choice) ? body.tool_choice.type : undefined;
    count += choice === 'any' || choice === 'tool' ? ANTHROPIC_TOOL_PROMPT_ANY : ANTHROPIC_TOOL_PROMPT_AUTO;
    for (const tool of tools) count += anthropicText(JSON.stringify(tool));
  }
  return count;
}

// ---------------------------------------------------------------------------------------------------
// Gemini.

const GEMINI_AUDIO_TOKENS_PER_SECOND = 32;
const GEMINI_TOKENS_PER_PDF_PAGE = 258;

/** Google: "a token is about 4 characters". */
function geminiText(text: string): number {
  return Math.ceil(text.length / 4);
}

function geminiMedia(bill: Bill, mimeType: string, data: unknown, remote: boolean): number {
  if (mimeType.startsWith('image/')) {
    if (!bill.rules.images) return 0;
    return geminiImageTokens(remote ? bill.rules.remoteImageSize : imageSize(bill, data));
  }
  if (mimeType.startsWith('audio/')) {
    if (!bill.rules.audio) return 0;
    const bytes = remote ? null : decodeBase64(data);
    const count = bytes
      ? audioTokens(bytes, GEMINI_AUDIO_TOKENS_PER_SECOND)
      : bill.rules.remoteAudioSeconds * GEMINI_AUDIO_TOKENS_PER_SECOND;
    bill.audio += count;
    return count;
  }
  if (mimeType === 'application/pdf') {
    if (!bill.rules.files) return 0;
    const bytes = remote ? null : decodeBase64(data);
    return (bytes ? countPdfPages(bytes) : bill.rules.remoteFilePages) * GEMINI_TOKENS_PER_PDF_PAGE;
  }
  return 0;
}

function geminiParts(bill: Bill, parts: unknown): number {
  if (!Array.isArray(parts)) return 0;
  let count = 0;
  for (const part of parts) {
    if (!isRecord(part)) continue;
    if (typeof part.text === 'string') count += geminiText(part.text);
    // The REST API takes camelCase and snake_case field names alike.
    const inline = part.inlineData ?? part.inline_data;
    if (isRecord(inline))
      count += geminiMedia(bill, str(inline.mimeType ?? inline.mime_type), inline.data, false);
    const file = part.fileData ?? part.file_data;
    if (isRecord(file)) count += geminiMedia(bill, str(file.mimeType ?? file.mime_type), undefined, true);
  }
  return count;
}

function geminiPrompt(bill: Bill, body: Obj): number {
  let count = 0;
  const system = body.systemInstruction ?? body.system_instruction;
  if (typeof system === 'string') count += geminiText(system);
  else if (isRecord(system)) count += geminiParts(bill, system.parts);
  if (Array.isArray(body.contents)) {
    for (const content of body.contents) if (isRecord(content)) count += geminiParts(bill, content.parts);
  }
  if (bill.rules.tools && Array.isArray(body.tools) && body.tools.length > 0) {
    count += geminiText(JSON.stringify(body.tools));
  }
  return count;
}

// ---------------------------------------------------------------------------------------------------

// OpenAI web search (platform.openai.com/docs/guides/tools-web-search, /docs/pricing "Built-in tools").
// Chat Completions: a search model (`gpt-4o-search-preview`, `gpt-5-search-api`) retrieves from the web
// on every call. Responses: the `web_search` / `web_search_preview` tools (and dated versions); the
// stand-in runs as many searches as `max_tool_calls` allows (the most the provider may run), 1 without it.

const OPENAI_WEB_SEARCH_TYPE = /^web_search(?:_preview)?(?:_\d{4}_\d{2}_\d{2})?$/;
/** OpenAI: search content tokens of `gpt-4o-mini` and `gpt-4.1-mini` are a fixed 8,000-token block a call. */
const OPENAI_FIXED_SEARCH_BLOCK = 8000;
/** A stand-in (OpenAI publishes no count): search content tokens of one search, where they are billed. */
export const SIMULATED_SEARCH_CONTENT_TOKENS = 2000;

function openaiSearchTools(body: Obj): Obj[] {
  if (!Array.isArray(body.tools)) return [];
  return body.tools.filter(
    (tool): tool is Obj =>
      isRecord(tool) && typeof tool.type === 'string' && OPENAI_WEB_SEARCH_TYPE.test(tool.type),
  );
}

function isChatSearch(body: Obj, model: string): boolean {
  return isRecord(body.web_search_options) || /-search-/.test(baseModel(model));
}

function baseModel(model: string): string {
  return model.slice(model.lastIndexOf('/') + 1).toLowerCase();
}

/**
 * The search content tokens a provider adds to the prompt for `searches` web searches: OpenAI
 * Responses `web_search` bills them at the model's input rate (a fixed 8,000-token block a call on
 * gpt-4o-mini and gpt-4.1-mini; else {@link SIMULATED_SEARCH_CONTENT_TOKENS}); `web_search_preview`
 * bills them only on reasoning models (o-series, gpt-5), free on the others; Chat search models and
 * Anthropic bill none apart (0).
 */
export function searchContentTokens(
  body: Obj,
  format: BillingFormat,
  model: string,
  searches: number,
): number {
  if (format !== 'openai-responses' || searches === 0) return 0;
  const tools = openaiSearchTools(body);
  if (tools.length === 0) return 0;
  const name = baseModel(model);
  const preview = tools.some((tool) => String(tool.type).startsWith('web_search_preview'));
  if (!preview) {
    const fixed = /^gpt-4(?:o|\.1)-mini(?:$|-)/.test(name);
    return searches * (fixed ? OPENAI_FIXED_SEARCH_BLOCK : SIMULATED_SEARCH_CONTENT_TOKENS);
  }
  const reasoning = /^o\d/.test(name) || (name.startsWith('gpt-5') && !name.includes('-chat'));
  return reasoning ? searches * SIMULATED_SEARCH_CONTENT_TOKENS : 0;
}

/** Gemini's grounding tools (the REST API takes either spelling): Google Search, and 1.5's retrieval tool. */
const GEMINI_SEARCH_TOOLS = [
  'google_search',
  'googleSearch',
  'google_search_retrieval',
  'googleSearchRetrieval',
];

/**
 * Gemini's `candidateCount` (or `candidate_count`) in `generationConfig` (or `generation_config`): the
 * number of candidates Google generates and bills, 1 when unset.
 */
export function geminiCandidateCount(body: Obj): number {
  const config = body.generationConfig ?? body.generation_config;
  if (!isRecord(config)) return 1;
  const count = config.candidateCount ?? config.candidate_count;
  return typeof count === 'number' && Number.isInteger(count) && count > 0 ? count : 1;
}

/**
 * Server-side web searches a call runs, when web-search billing is on: Anthropic, one when the request
 * offers a `web_search_*` tool whose `max_uses` (default 1) is at least 1; OpenAI chat, one for a search
 * model or `web_search_options`; OpenAI Responses, `max_tool_calls` (1 when unset) when it offers a web
 * search tool; Gemini with a Google Search grounding tool, one search query per candidate (Google
 * reports them in each candidate's `groundingMetadata.webSearchQueries`). 0 otherwise.
 */
export function countWebSearches(
  body: Obj,
  format: BillingFormat,
  rules: Partial<BillingRules> = {},
  model = typeof body.model === 'string' ? body.model : '',
): number {
  if (!(rules.webSearch ?? DEFAULT_BILLING_RULES.webSearch)) return 0;
  if (format === 'openai-chat') return isChatSearch(body, model) ? 1 : 0;
  if (format === 'openai-responses') {
    if (openaiSearchTools(body).length === 0) return 0;
    const max = body.max_tool_calls;
    return typeof max === 'number' && Number.isInteger(max) && max >= 0 ? max : 1;
  }
  if (format === 'gemini') {
    if (!Array.isArray(body.tools)) return 0;
    const grounded = body.tools.some(
      (tool) => isRecord(tool) && GEMINI_SEARCH_TOOLS.some((key) => tool[key] !== undefined),
    );
    return grounded ? geminiCandidateCount(body) : 0;
  }
  if (format !== 'anthropic-messages') return 0;
  if (!Array.isArray(body.tools)) return 0;
  for (const tool of body.tools) {
    if (!isWebSearchTool(tool)) continue;
    const maxUses = typeof tool.max_uses === 'number' ? tool.max_uses : 1;
    if (maxUses >= 1) return 1;
  }
  return 0;
}

/**
 * The prompt usage a provider reports for a request body, by the provider's published rules for
 * `format` (docs/simulator.md, "How the simulator bills"): text, images, audio, files and tool
 * definitions, each part billed unless `rules` turns it off. Pure: media sizes come from the bytes
 * in the body, or from `rules` for what is given by URL or id.
 * @example providerPromptUsage({ messages: [{ role: 'user', content: 'hello' }] }, 'openai-chat', 'gpt-4o')
 * // { prompt: 8, audioIn: 0, webSearches: 0 }  (3 + role 1 + content 1 + priming 3)
 */
export function providerPromptUsage(
  body: Obj,
  format: BillingFormat,
  model: string,
  rules: Partial<BillingRules> = {},
): ProviderPromptUsage {
  const bill: Bill = {
    model,
    encoding: encodingForModel(model),
    rules: { ...DEFAULT_BILLING_RULES, ...rules },
    audio: 0,
  };
  let prompt: number;
  switch (format) {
    case 'openai-chat':
      prompt = chatPrompt(bill, body);
      break;
    case 'openai-responses':
      prompt = responsesPrompt(bill, body);
      break;
    case 'openai-embeddings':
      prompt = embeddingsPrompt(body);
      break;
    case 'anthropic-messages':
      prompt = anthropicPrompt(bill, body);
      break;
    case 'gemini':
      prompt = geminiPrompt(bill, body);
      break;
  }
  return { prompt, audioIn: bill.audio, webSearches: countWebSearches(body, format, bill.rules, model) };
}
