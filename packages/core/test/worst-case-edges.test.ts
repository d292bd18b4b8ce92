// The worst-case bound (boundCall) at its edges: whose rules apply to a call (the wire format's provider
// and the model's), every prompt field and media spelling the bound reads, and the framing it adds.
// Every expected number is worked by hand from docs/worst-case.md, in a comment beside it. Token counts
// of short strings are tiktoken's (checked with tiktoken directly): in both o200k_base and cl100k_base
// "hello", "user", "text", "type", "name", "x", "f", "function", "true", "object", "schema", "strict",
// "required", "document", "content" and "STRING" are 1 token; "12345", "json_schema", "maxProperties",
// "text/plain", "hello world" 2; "the cat sat", "data:xyz" 3; '{"name":"f"}' and '{"type":"STRING"}' 5.
//
// Price entries are made up (`priced`): the bound reads only a model's provider, mode and sizes.
import { describe, expect, it } from 'vitest';
import { boundCall, type CallBound, setOutputCap, unboundedServerTool } from '../src/admission/worst-case.js';
import type { WireFormat } from '../src/metering/wire-formats.js';
import type { ModelPrice } from '../src/pricing/model-price.js';
import { dataUrl, gif, TWO_PAGE_PDF, wav } from './fixtures/media-bytes.js';

type Body = Record<string, unknown>;

/** A made-up price entry: what the bound reads of one is its provider, mode, context and output sizes. */
function priced(fields: Partial<ModelPrice>): ModelPrice {
  return { model: 'made-up', inputPico: 1, outputPico: 1, maxInputPico: 1, maxOutputPico: 1, ...fields };
}

function precise(model: string, format: WireFormat | null, body: Body, price?: ModelPrice): CallBound {
  return boundCall(model, format, body, price, { defaultMaxOutputTokens: 4096, precise: true });
}

function cheap(
  model: string,
  format: WireFormat | null,
  body: Body,
  bodyBytes: number | undefined,
  price?: ModelPrice,
): CallBound {
  return boundCall(model, format, body, price, { defaultMaxOutputTokens: 4096, precise: false, bodyBytes });
}

/** A one-message prompt in the shape of the format (Gemini `contents`/`parts`, else `messages`). */
function prompt(format: WireFormat | null, content: unknown[]): Body {
  return format === 'gemini'
    ? { contents: [{ role: 'user', parts: content }] }
    : { messages: [{ role: 'user', content }] };
}

/** Prompt tokens (input and audio) that one content part adds to a one-message prompt (precise bound). */
function part(model: string, format: WireFormat | null, content: unknown, price?: ModelPrice): number {
  const withPart = precise(model, format, prompt(format, [content]), price);
  const without = precise(model, format, prompt(format, []), price);
  return withPart.inputTokens + withPart.audioTokens - (without.inputTokens + without.audioTokens);
}

/** An image the bound cannot size (an URL): the largest each rule allows. */
const URL_IMAGE = { type: 'image_url', image_url: { url: 'https://example.com/cat.png' } };
const gifUrl = (w: number, h: number) => dataUrl('image/gif', gif(w, h));
const imageAt = (w: number, h: number, detail?: string) => ({
  type: 'image_url',
  image_url: { url: gifUrl(w, h), ...(detail ? { detail } : {}) },
});
/** 16 kHz 16-bit mono: 32,000 bytes a second. */
const ONE_SECOND_WAV = wav(16_000, 1, 32_000).toString('base64');
/** 1,001 bytes of compressed audio: 1.001 s at the 1,000 bytes a second assumed. */
const MP3_1001 = Buffer.alloc(1001, 1).toString('base64');
const PDF = TWO_PAGE_PDF.toString('base64'); // 2 pages, 298 bytes

describe('whose tokenizer counts the text: OpenAI models in OpenAI formats, by the bytes; others x 1.35', () => {
  // Cheap bound of 1,000 body bytes and no message: 1,000 + 16 when OpenAI's tokenizer counts the text,
  // else ceil(1,000 x 1.35) + 16 = 1,366.
  const body = { messages: [] };
  it.each<[string, WireFormat | null, ModelPrice | undefined]>([
    ['gpt-4o', 'openai-chat', undefined],
    ['gpt-4o', null, undefined], // no format: the model's family alone
    ['openai/GPT-4o', 'openai-chat', undefined], // provider prefix and case ignored
    ['/gpt-4o', 'openai-chat', undefined], // the name after the last slash, even the first character
    ['chatgpt-4o-latest', 'openai-chat', undefined],
    ['o3-mini', 'openai-chat', undefined],
    ['ft:gpt-4o-mini:acme::abc123', 'openai-chat', undefined],
    ['text-embedding-3-small', 'openai-embeddings', undefined],
    ['davinci-002', 'openai-chat', undefined],
    ['babbage-002', 'openai-chat', undefined],
    ['computer-use-preview', 'openai-responses', undefined],
    ['my-deployment', 'openai-chat', priced({ provider: 'azure' })], // an Azure deployment of any name
    ['my-model', 'openai-chat', priced({ provider: 'openai' })],
  ])('%s (%s): 1,016', (model, format, price) => {
    expect(cheap(model, format, body, 1000, price).inputTokens).toBe(1016);
  });

  it.each<[string, WireFormat | null, ModelPrice | undefined]>([
    ['mistral-large', 'openai-chat', undefined], // an OpenAI format, not an OpenAI model
    ['orca-mini', 'openai-chat', undefined], // "o" then a letter is not o1/o3/o4
    ['my-gpt-4o', 'openai-chat', undefined], // the name must begin with the family
    ['mistral-large', 'openai-chat', priced({ provider: 'azure_ai' })],
    ['claude-sonnet-4-5', 'openai-chat', undefined], // two families: OpenAI's format, Anthropic's model
    ['gpt-4o', 'anthropic-messages', undefined], // two families the other way round
    ['gpt-4o', 'gemini', undefined],
    // an OpenAI model served by Vertex: Gemini's rules apply too, on an OpenAI route or none
    ['gpt-oss-120b-maas', 'openai-chat', priced({ provider: 'vertex_ai-openai_models' })],
    ['gpt-oss-120b-maas', null, priced({ provider: 'vertex_ai-openai_models' })],
  ])('%s (%s): 1,366', (model, format, price) => {
    expect(cheap(model, format, body, 1000, price).inputTokens).toBe(1366);
  });

  it('x 1.35 rounds up', () => {
    // 1,001 x 1.35 = 1,351.35 -> 1,352, + 16
    expect(cheap('claude-3-haiku', 'anthropic-messages', body, 1001).inputTokens).toBe(1368);
  });

  it('without bodyBytes, the bytes of the body as JSON', () => {
    // '{"messages":[]}' is 15 bytes: 15 + 16
    expect(cheap('gpt-4o', 'openai-chat', body, undefined).inputTokens).toBe(31);
  });
});

describe("whose rules bill an image: the model's family, and the format's", () => {
  // An image of unknown size, the most each rule allows: OpenAI 85 + 8 x 170 = 1,445; Anthropic 1,600;
  // Gemini 16 tiles x 258 = 4,128. No format (a route the guard does not know): the model's family only.
  it.each<[string, ModelPrice | undefined, number]>([
    ['gpt-4o', undefined, 1445],
    ['mistral-large', undefined, 1445], // no known family: OpenAI's rules
    ['claude-3-haiku', undefined, 1600],
    ['Anthropic/Claude-3-Haiku', undefined, 1600], // by the name after the prefix, any case
    ['my-model', priced({ provider: 'anthropic' }), 1600],
    ['my-model', priced({ provider: 'bedrock' }), 1600],
    ['my-model', priced({ provider: 'bedrock_converse' }), 1600],
    ['claude-opus-4', priced({ provider: 'vertex_ai-anthropic_models' }), 1600], // Claude on Vertex
    ['gemini-2.5-pro', undefined, 4128],
    ['gemma-3-27b-it', undefined, 4128],
    ['my-model', priced({ provider: 'gemini' }), 4128],
    ['my-model', priced({ provider: 'vertex_ai-language-models' }), 4128],
    ['my-model', priced({ provider: 'gemini_enterprise' }), 4128], // a provider named gemini...
  ])('%s: %i', (model, price, tokens) => {
    expect(part(model, null, URL_IMAGE, price)).toBe(tokens);
  });

  it('the dearer of the two families when the format and the model differ', () => {
    expect(part('gpt-4o', 'anthropic-messages', URL_IMAGE)).toBe(1600); // max(1,445, 1,600)
    expect(part('claude-3-haiku', 'openai-chat', URL_IMAGE)).toBe(1600);
    expect(part('gpt-4o', 'gemini', URL_IMAGE)).toBe(4128);
    // 300x200 through OpenAI's format on Claude: OpenAI one tile, 85 + 170 = 255; Anthropic
    // 60,000 / 750 = 80: 255
    expect(part('claude-3-haiku', 'openai-chat', imageAt(300, 200))).toBe(255);
  });

  it("no format: the model's family alone, for PDFs and audio too", () => {
    // Gemini's 1,120 a page, not OpenAI's 1,445: 2 x 1,120 + 298 bytes
    expect(part('gemini-2.5-flash', null, { type: 'file', file: { file_data: PDF } })).toBe(2538);
    // Anthropic alone has no audio rule: Gemini's 32 a second, not OpenAI's 10 (1,000 bytes: 1 s)
    const mp3 = {
      type: 'input_audio',
      input_audio: { data: Buffer.alloc(1000).toString('base64'), format: 'mp3' },
    };
    expect(part('claude-3-haiku', null, mp3)).toBe(32);
  });

  it('a body with `contents` on an unknown route is Gemini', () => {
    // gpt-4o under Gemini's rules too: 4,128
    const added =
      precise('gpt-4o', null, prompt('gemini', [URL_IMAGE])).inputTokens -
      precise('gpt-4o', null, prompt('gemini', [])).inputTokens;
    expect(added).toBe(4128);
  });
});

describe('OpenAI image parts', () => {
  it('detail from the part when image_url is a string; low is 85; any other detail is high', () => {
    const responses = (detail?: string) => ({
      type: 'input_image',
      image_url: 'https://example.com/cat.png',
      ...(detail ? { detail } : {}),
    });
    expect(part('gpt-4o', 'openai-responses', responses('low'))).toBe(85);
    expect(part('gpt-4o', 'openai-responses', responses('auto'))).toBe(1445);
    expect(part('gpt-4o', 'openai-chat', imageAt(4096, 4096, 'auto'))).toBe(765); // 768x768: 4 tiles
    // a computer-use screenshot as a data URL: 300x200, one tile
    const screenshot = { type: 'computer_screenshot', image_url: gifUrl(300, 200) };
    expect(part('computer-use-preview', 'openai-responses', screenshot)).toBe(255);
    // an image_url that is neither a string nor an object: unknown size
    expect(part('gpt-4o', 'openai-chat', { type: 'image_url', image_url: 42 })).toBe(1445);
  });

  it('tiles count whole pixels after scaling', () => {
    // 1537x1152: shortest side 1152 -> 768: 1024.67x768, floored 1024x768: 2x2 tiles = 85 + 4 x 170
    expect(part('gpt-4o', 'openai-chat', imageAt(1537, 1152))).toBe(765);
  });

  it('gpt-4o-mini by name, dated or not; a name that only begins alike is another model', () => {
    expect(part('gpt-4o-mini-2024-07-18', 'openai-chat', imageAt(512, 512, 'low'))).toBe(2833);
    expect(part('gpt-4o-mini', 'openai-chat', imageAt(512, 512, 'low'))).toBe(2833);
    expect(part('gpt-4o-minix', 'openai-chat', imageAt(512, 512, 'low'))).toBe(85);
    expect(part('my-gpt-4o-mini', 'openai-chat', imageAt(512, 512, 'low'))).toBe(85);
  });

  it('a fine-tuned model prices images as its base model', () => {
    expect(part('ft:gpt-4o-mini-2024-07-18:acme::abc123', 'openai-chat', imageAt(512, 512, 'low'))).toBe(
      2833,
    );
    // 1024x1024: 1,024 patches x 1.62
    expect(part('ft:gpt-4.1-mini-2025-04-14:acme::abc123', 'openai-chat', imageAt(1024, 1024))).toBe(1659);
    // `ft:` only as the prefix: a name with it inside is not read as the name without it (gpt-4o-mini's
    // low detail is 2,833; any other GPT-4o-class name 85).
    expect(part('gpt-4o-ft:mini', 'openai-chat', imageAt(512, 512, 'low'))).toBe(85);
  });

  it.each([
    // 1024x1024: 32 x 32 = 1,024 patches
    ['gpt-4.1-mini-2025-04-14', 1659], // x 1.62 = 1,658.9
    ['gpt-4.1-nano', 2520], // x 2.46 = 2,519.0
    ['gpt-4.1-nano-2025-04-14', 2520],
    ['o4-mini', 1762], // x 1.72 = 1,761.3
    ['o4-mini-2025-04-16', 1762],
    ['gpt-5-mini', 1659],
    ['gpt-5.1-mini', 1659],
    ['gpt-5-nano', 2520],
    ['gpt-5.2-nano-2025-12-01', 2520],
    ['gpt-5.12-mini', 1659],
    ['gpt-5.12-nano', 2520],
    // not patch models (a name that only contains one, or goes on after it): 768x768, 4 tiles: 765
    ['gpt-4.1', 765],
    ['gpt-5', 765],
    ['gpt-4.1-minix', 765],
    ['my-gpt-4.1-mini', 765],
    ['gpt-4.1-nanox', 765],
    ['my-gpt-4.1-nano', 765],
    ['o4-minix', 765],
    ['my-o4-mini', 765],
    ['gpt-5-minix', 765],
    ['my-gpt-5-mini', 765],
    ['gpt-5-nanox', 765],
    ['my-gpt-5-nano', 765],
  ])('patches: %s, 1024x1024: %i', (model, tokens) => {
    expect(part(model, 'openai-chat', imageAt(1024, 1024))).toBe(tokens);
  });

  it('patches: rounded up per side, at most 1,536, the most for an unknown size, whatever the detail', () => {
    // 1000x1000: ceil(31.25) = 32 per side: 1,024 x 1.62 = 1,658.9
    expect(part('gpt-4.1-mini', 'openai-chat', imageAt(1000, 1000))).toBe(1659);
    // 2048x2048: 64 x 64 = 4,096 patches, capped at 1,536: x 1.62 = 2,488.3
    expect(part('gpt-4.1-mini', 'openai-chat', imageAt(2048, 2048))).toBe(2489);
    expect(part('gpt-4.1-mini', 'openai-chat', URL_IMAGE)).toBe(2489);
    // low detail is 85 tiles-wise, but the patches still count: 1,659
    expect(part('gpt-4.1-mini', 'openai-chat', imageAt(1024, 1024, 'low'))).toBe(1659);
  });
});

describe('Anthropic and Gemini image sizes', () => {
  it('Anthropic fits the long edge to 1,568 before w x h / 750', () => {
    // 3136x392 -> 1568x196 = 307,328 / 750 = 409.8
    const block = {
      type: 'image',
      source: { type: 'base64', media_type: 'image/gif', data: gif(3136, 392).toString('base64') },
    };
    expect(part('claude-3-haiku', 'anthropic-messages', block)).toBe(410);
  });

  it.each([
    [384, 384, 258], // within 384x384: one image
    [1000, 300, 516], // 2 x 1 tiles of 768
    [300, 1000, 516], // 1 x 2
    [6144, 768, 1032], // fitted to 3072x384: 4 x 1 tiles
  ])('Gemini %ix%i: %i', (w, h, tokens) => {
    const inline = { inlineData: { mimeType: 'image/gif', data: gif(w, h).toString('base64') } };
    expect(part('gemini-2.5-flash', 'gemini', inline)).toBe(tokens);
  });
});

describe('Anthropic image and document blocks', () => {
  const claude = priced({ provider: 'anthropic', maxInputTokens: 50_000 });
  const block = (type: string, source: Body) => ({ type, source });
  const tokens = (content: unknown) => part('claude-sonnet-4-5', 'anthropic-messages', content, claude);

  it('by an URL or a file id: the largest image, the whole context for a document', () => {
    expect(tokens(block('image', { type: 'url', url: 'https://example.com/cat.png' }))).toBe(1600);
    expect(tokens(block('document', { type: 'url', url: 'https://example.com/a.pdf' }))).toBe(50_000);
    expect(tokens(block('document', { type: 'file', file_id: 'file_abc' }))).toBe(50_000);
    // only a base64 source's data is read
    const stray = {
      type: 'url',
      url: 'https://example.com/cat.gif',
      data: gif(1000, 1000).toString('base64'),
    };
    expect(tokens(block('image', stray))).toBe(1600);
    // base64 whose data is no string: as if by URL
    expect(tokens(block('image', { type: 'base64', media_type: 'image/gif', data: 5 }))).toBe(1600);
  });

  it('base64 without a media type: an image block is an image, a document a PDF', () => {
    // 1000x1000: 1,000,000 / 750 = 1,333.3
    expect(tokens(block('image', { type: 'base64', data: gif(1000, 1000).toString('base64') }))).toBe(1334);
    // 2 pages x 4,600 + 298 bytes
    expect(tokens(block('document', { type: 'base64', data: PDF }))).toBe(9498);
  });

  it('the media type in any case; a type it cannot read takes the context', () => {
    const upper = { type: 'base64', media_type: 'IMAGE/GIF', data: gif(1000, 1000).toString('base64') };
    expect(tokens(block('image', upper))).toBe(1334);
    // the declared type is believed: PDF bytes declared as plain text are not read as a PDF
    const plain = { type: 'base64', media_type: 'text/plain', data: PDF };
    expect(tokens(block('document', plain))).toBe(50_000);
  });

  it('a plain-text document is counted as text', () => {
    // Non-OpenAI text, per string max(ceil(1.35 x cl100k), ceil(chars / 3)): "document" max(2, 3) = 3,
    // "text" max(2, 2) = 2, "text/plain" max(3, 4) = 4, "hello" max(2, 2) = 2: 11
    expect(tokens(block('document', { type: 'text', media_type: 'text/plain', data: 'hello' }))).toBe(11);
    // "document" 3, "content" max(2, 3) = 3, "text" 2, "hello" 2: 10
    const content = { type: 'content', content: [{ type: 'text', text: 'hello' }] };
    expect(tokens(block('document', content))).toBe(10);
  });

  it('a block whose source is no object, and audio that is no object, are text', () => {
    // gpt-4o: "image" 1 and "x" 1; "input_audio" 2 and "abc" 1
    expect(part('gpt-4o', 'openai-chat', { type: 'image', source: 'x' })).toBe(2);
    expect(part('gpt-4o', 'openai-chat', { type: 'input_audio', input_audio: 'abc' })).toBe(3);
  });

  it('only image and document blocks read a source, only input_audio parts read audio', () => {
    // gpt-4o: "text" 1, "hello" 1, "url" 1, "x" 1
    const cited = { type: 'text', text: 'hello', source: { type: 'url', url: 'x' } };
    expect(part('gpt-4o', 'openai-chat', cited)).toBe(4);
    // "text" 1, "hello" 1, "abc" 1, "mp3" 2
    const odd = { type: 'text', text: 'hello', input_audio: { data: 'abc', format: 'mp3' } };
    expect(part('gpt-4o', 'openai-chat', odd)).toBe(5);
  });

  it('a block marked for caching marks the call', () => {
    const image = block('image', { type: 'url', url: 'https://example.com/cat.png' });
    const marked = { ...image, cache_control: { type: 'ephemeral' } };
    expect(precise('claude-sonnet-4-5', 'anthropic-messages', prompt(null, [marked])).cacheWrites).toBe(true);
    expect(precise('claude-sonnet-4-5', 'anthropic-messages', prompt(null, [image])).cacheWrites).toBe(false);
  });
});

describe('OpenAI files and audio', () => {
  const gpt = priced({ provider: 'openai', maxInputTokens: 50_000 });
  const tokens = (content: unknown, model = 'gpt-4o') => part(model, 'openai-chat', content, gpt);

  it('file data as bare base64 is a PDF; as a data URL, by its type; by id or URL, the context', () => {
    // 2 pages x 1,445 + 298 bytes = 3,188
    expect(tokens({ type: 'file', file: { filename: 'a.pdf', file_data: PDF } })).toBe(3188);
    const responses = {
      type: 'input_file',
      filename: 'a.pdf',
      file_data: dataUrl('application/pdf', TWO_PAGE_PDF),
    };
    expect(tokens(responses)).toBe(3188);
    // an image sent as a file: 300x200, one tile
    expect(tokens({ type: 'file', file: { file_data: gifUrl(300, 200) } })).toBe(255);
    expect(tokens({ type: 'input_file', file_url: 'https://example.com/a.pdf' })).toBe(50_000);
    expect(tokens({ type: 'input_file', file_id: 'file-abc' })).toBe(50_000);
  });

  it('a PDF is bounded by the context window too', () => {
    // 3,188 for the two pages, but the model takes 1,000 at most
    const small = priced({ provider: 'openai', maxInputTokens: 1000 });
    expect(part('gpt-4o', 'openai-chat', { type: 'file', file: { file_data: PDF } }, small)).toBe(1000);
  });

  it('audio without data: the context; without a format: read as WAV when it is one', () => {
    expect(tokens({ type: 'input_audio', input_audio: { format: 'wav' } })).toBe(50_000);
    // 1 s at 10 tokens a second
    expect(tokens({ type: 'input_audio', input_audio: { data: ONE_SECOND_WAV } })).toBe(10);
    // 1.001 s of mp3 x 10 = 10.01, up to 11
    expect(tokens({ type: 'input_audio', input_audio: { data: MP3_1001, format: 'mp3' } })).toBe(11);
  });

  it('only audio declared as WAV is read as a WAV; other audio by its bytes', () => {
    // WAV bytes declared as mp3: 32,058 bytes at 1,000 a second, 32.058 s x 10 = 320.6
    expect(tokens({ type: 'input_audio', input_audio: { data: ONE_SECOND_WAV, format: 'mp3' } })).toBe(321);
  });

  it('the precise bound is never loose, even where it falls back on a largest size', () => {
    const body = prompt(null, [
      { type: 'input_audio', input_audio: { data: MP3_1001, format: 'mp3' } },
      { type: 'file', file: { file_id: 'file-abc' } },
      URL_IMAGE,
    ]);
    expect(precise('gpt-4o', 'openai-chat', body, gpt).loose).toBe(false);
  });

  it('audio is billed as audio tokens, not input tokens', () => {
    const body = prompt(null, [
      { type: 'input_audio', input_audio: { data: ONE_SECOND_WAV, format: 'wav' } },
    ]);
    const b = precise('gpt-4o-audio-preview', 'openai-chat', body);
    expect(b.audioTokens).toBe(10);
    // the rest is the text: "user" 1 + 4 + 16
    expect(b.inputTokens).toBe(21);
  });

  it("audio at the dearest family's rate; a family with no audio rule, at Gemini's", () => {
    const mp3 = {
      type: 'input_audio',
      input_audio: { data: Buffer.alloc(1000).toString('base64'), format: 'mp3' },
    };
    // 1 s: OpenAI 10, Gemini 32, Anthropic none (so Gemini's 32)
    expect(part('claude-3-haiku', 'openai-chat', mp3)).toBe(10);
    expect(part('gemini-2.5-flash', 'openai-chat', mp3)).toBe(32);
    expect(part('claude-3-haiku', 'anthropic-messages', mp3)).toBe(32);
  });

  it("a PDF at the dearest family's page rule", () => {
    // Claude through OpenAI's format: 2 pages x max(1,445, 4,600) + 298 bytes
    expect(part('claude-3-haiku', 'openai-chat', { type: 'file', file: { file_data: PDF } })).toBe(9498);
  });
});

describe('Gemini inline and file parts', () => {
  const gemini = priced({ provider: 'gemini', maxInputTokens: 50_000 });
  const tokens = (content: unknown) => part('gemini-2.5-flash', 'gemini', content, gemini);

  it('inline data in either spelling, by its MIME type (none: a PDF)', () => {
    const small = gif(300, 300).toString('base64');
    expect(tokens({ inline_data: { mime_type: 'image/gif', data: small } })).toBe(258);
    expect(tokens({ inlineData: { mimeType: 'image/gif', data: small } })).toBe(258);
    // 2 pages x 1,120 + 298 bytes
    expect(tokens({ inlineData: { data: PDF } })).toBe(2538);
    expect(tokens({ inlineData: { mimeType: 'application/pdf' } })).toBe(50_000); // no data to read
    expect(tokens({ inlineData: { mimeType: 'video/mp4', data: small } })).toBe(50_000);
    // another type is not read as a PDF, even when its bytes are one
    expect(tokens({ inlineData: { mimeType: 'text/plain', data: PDF } })).toBe(50_000);
    // 1 s at 32 a second; 1.001 s x 32 = 32.03, up to 33
    expect(tokens({ inlineData: { mimeType: 'audio/wav', data: ONE_SECOND_WAV } })).toBe(32);
    expect(tokens({ inline_data: { mime_type: 'audio/mpeg', data: MP3_1001 } })).toBe(33);
  });

  it('file data in either spelling: an image the largest one, anything else the context', () => {
    expect(tokens({ fileData: { mimeType: 'image/png', fileUri: 'gs://b/a.png' } })).toBe(4128);
    expect(tokens({ file_data: { mimeType: 'image/jpeg', fileUri: 'gs://b/a.jpg' } })).toBe(4128);
    expect(tokens({ fileData: { mimeType: 'video/mp4', fileUri: 'gs://b/a.mp4' } })).toBe(50_000);
    expect(tokens({ fileData: { fileUri: 'gs://b/a' } })).toBe(50_000);
    // The MIME type in its proto spelling too, in either spelling of the part.
    expect(tokens({ file_data: { mime_type: 'image/png', file_uri: 'gs://b/a.png' } })).toBe(4128);
    expect(tokens({ fileData: { mime_type: 'image/png', fileUri: 'gs://b/a.png' } })).toBe(4128);
    expect(tokens({ file_data: { mime_type: 'video/mp4', file_uri: 'gs://b/a.mp4' } })).toBe(50_000);
  });
});

describe('the cheap bound takes the base64 media off the body bytes', () => {
  // 100 bytes of body left once the media is taken off, one message: OpenAI 100 + 4 + 16 = 120 of text,
  // non-OpenAI ceil(135) + 20 = 155; plus the media at its largest.
  const url = gifUrl(300, 200);

  it('an image data URL in an image part; as a bare string it is text, all its bytes', () => {
    const body = prompt(null, [{ type: 'image_url', image_url: { url } }]);
    expect(cheap('gpt-4o', 'openai-chat', body, url.length + 100).inputTokens).toBe(120 + 1445);
    // the 42 characters of the URL stay in the 142 bytes: 142 + 4 + 16, no image
    expect(url).toBe('data:image/gif;base64,R0lGODlhLAHIAAAAAA==');
    const whole = { messages: [{ role: 'user', content: url }] };
    expect(cheap('gpt-4o', 'openai-chat', whole, url.length + 100).inputTokens).toBe(162);
    // fewer body bytes than media characters: no text at all
    expect(cheap('gpt-4o', 'openai-chat', body, 10).inputTokens).toBe(20 + 1445);
  });

  it('Anthropic base64, OpenAI audio and file data, Gemini inline data', () => {
    const data = gif(300, 200).toString('base64');
    const image = { type: 'image', source: { type: 'base64', media_type: 'image/gif', data } };
    expect(
      cheap('claude-3-haiku', 'anthropic-messages', prompt(null, [image]), data.length + 100).inputTokens,
    ).toBe(155 + 1600);
    const audio = { type: 'input_audio', input_audio: { data: MP3_1001, format: 'mp3' } };
    const withAudio = cheap('gpt-4o', 'openai-chat', prompt(null, [audio]), MP3_1001.length + 100);
    expect(withAudio.inputTokens).toBe(120);
    expect(withAudio.audioTokens).toBe(11); // 1.001 s x 10, up to 11
    const file = { type: 'file', file: { file_data: dataUrl('application/pdf', TWO_PAGE_PDF) } };
    const gpt = priced({ provider: 'openai', maxInputTokens: 50_000 });
    // the cheap bound reads no page count: the context
    expect(
      cheap('gpt-4o', 'openai-chat', prompt(null, [file]), file.file.file_data.length + 100, gpt).inputTokens,
    ).toBe(120 + 50_000);
    const inline = { inlineData: { mimeType: 'image/gif', data } };
    expect(
      cheap('gemini-2.5-flash', 'gemini', prompt('gemini', [inline]), data.length + 100).inputTokens,
    ).toBe(155 + 4128);
  });

  it('Gemini inline data without data: nothing taken off', () => {
    // 1,000 bytes: 1,350 + 4 + 16, and the context for a PDF it cannot read
    const gemini = priced({ provider: 'gemini', maxInputTokens: 50_000 });
    const body = prompt('gemini', [{ inlineData: { mimeType: 'application/pdf' } }]);
    expect(cheap('gemini-2.5-flash', 'gemini', body, 1000, gemini).inputTokens).toBe(1370 + 50_000);
  });

  it('audio by its bytes, a WAV too', () => {
    // 32,058 bytes (header, a LIST chunk, 32,000 of data) at 1,000 a second: 32.058 s x 10 = 320.6
    const audio = { type: 'input_audio', input_audio: { data: ONE_SECOND_WAV, format: 'wav' } };
    expect(cheap('gpt-4o', 'openai-chat', prompt(null, [audio]), 1000).audioTokens).toBe(321);
  });
});

describe('text: every prompt field, counted per string, 4 a message and 16', () => {
  // gpt-4o (o200k_base): "hello" is 1 token
  const count = (body: Body) => precise('gpt-4o', 'openai-chat', body).inputTokens;

  it.each<[string, Body, number]>([
    ['prompt', { prompt: 'hello' }, 17], // 1 + 16, no message
    ['messages', { messages: ['hello', 'hello'] }, 26], // 2 + 2 x 4 + 16
    ['messages, not a list', { messages: 'hello' }, 21], // 1 + 4 + 16
    ['input', { input: 'hello' }, 21],
    ['input, a list', { input: ['hello', 'hello'] }, 26],
    ['contents', { contents: ['hello'] }, 21],
    ['system', { system: 'hello' }, 21], // a system prompt is a message
    ['instructions', { instructions: 'hello' }, 21],
    ['systemInstruction', { systemInstruction: 'hello' }, 21],
    ['system_instruction', { system_instruction: 'hello' }, 21],
    ['system and messages', { system: 'hello', messages: ['hello'] }, 26],
    ['numbers and booleans as text, null as nothing', { prompt: [12345, true, null] }, 19], // 2 + 1 + 16
    ['a data: text that is no data URL', { prompt: 'data:xyz' }, 19], // 3 + 16
    // a bare data URL is text to the provider: 'data:image/gif;base64,R0lGODlhLAHIAAAAAA==' is 18
    // o200k_base tokens, + 16 (as an image it would be bounded at one, and left out of the cheap bound)
    ['a bare data URL', { prompt: 'data:image/gif;base64,R0lGODlhLAHIAAAAAA==' }, 34],
    ['an empty string', { prompt: '' }, 16],
  ])('%s', (_, body, tokens) => {
    expect(count(body)).toBe(tokens);
  });

  it('reads 64 levels deep, not 65, in lists and objects', () => {
    const nest = (depth: number): unknown => (depth === 0 ? 'hello' : [nest(depth - 1)]);
    expect(count({ prompt: nest(64) })).toBe(17);
    expect(count({ prompt: nest(65) })).toBe(16);
    // keys are not prompt text: "hello" alone
    const nestObject = (depth: number): unknown => (depth === 0 ? 'hello' : { a: nestObject(depth - 1) });
    expect(count({ prompt: nestObject(64) })).toBe(17);
    expect(count({ prompt: nestObject(65) })).toBe(16);
  });

  it('a cache mark is no prompt text', () => {
    // "user", "text", "hello": 3 + 4 + 16; "ephemeral" is not counted
    const content = [{ type: 'text', text: 'hello', cache_control: { type: 'ephemeral' } }];
    const b = precise('gpt-4o', 'openai-chat', { messages: [{ role: 'user', content }] });
    expect(b.inputTokens).toBe(23);
    expect(b.cacheWrites).toBe(true);
  });

  it('non-OpenAI text: the larger of 1.35 x cl100k and a token per 3 characters', () => {
    const claude = (text: string) =>
      precise('claude-3-haiku', 'anthropic-messages', { prompt: text }).inputTokens;
    // "the cat sat": 3 tokens x 1.35 = 4.05 -> 5, 11 / 3 -> 4: 5 + 16
    expect(claude('the cat sat')).toBe(21);
    // "hello world": 2 x 1.35 = 2.7 -> 3, 11 / 3 = 3.7 -> 4: 4 + 16
    expect(claude('hello world')).toBe(20);
  });
});

describe('schemas and tools, precise', () => {
  const gpt = (body: Body, format: WireFormat = 'openai-chat') => precise('gpt-4o', format, body).inputTokens;

  it('a response_format JSON schema: each key and value + 2, then + 8', () => {
    // "name" 3, "x" 3: 6 + 8, on 16
    expect(gpt({ response_format: { type: 'json_schema', json_schema: { name: 'x' } } })).toBe(30);
    // name 3, x 3, strict 3, true 3, schema 3, type 3, object 3, required 3, name 3 (27);
    // maxProperties 2 + 2, 12345 2 + 2 (8): 35 + 8, on 16
    const schema = {
      name: 'x',
      strict: true,
      schema: { type: 'object', required: ['name'], maxProperties: 12345 },
    };
    expect(gpt({ response_format: { type: 'json_schema', json_schema: schema } })).toBe(59);
    // no schema, or not an object: nothing
    expect(gpt({ response_format: { type: 'json_object' } })).toBe(16);
    expect(gpt({ response_format: 'json' })).toBe(16);
  });

  it('a schema is read 64 levels deep, not 65, in lists and objects', () => {
    const nest = (depth: number): unknown => (depth === 0 ? 'x' : [nest(depth - 1)]);
    // "x" 1 + 2, + 8, on 16
    expect(gpt({ response_format: { json_schema: nest(64) } })).toBe(27);
    expect(gpt({ response_format: { json_schema: nest(65) } })).toBe(24);
    // each key "a" 1 + 2: at 64 levels 64 keys (192) and "x" (3); at 65, 65 keys (195) and no "x"
    const nestObject = (depth: number): unknown => (depth === 0 ? 'x' : { a: nestObject(depth - 1) });
    expect(gpt({ response_format: { json_schema: nestObject(64) } })).toBe(16 + 192 + 3 + 8);
    expect(gpt({ response_format: { json_schema: nestObject(65) } })).toBe(16 + 195 + 8);
  });

  it("the Responses API's text.format, when it has a schema", () => {
    // type 3, json_schema 2 + 2, name 3, x 3, schema 3, type 3, object 3: 22 + 8, on 16
    const format = { type: 'json_schema', name: 'x', schema: { type: 'object' } };
    expect(gpt({ text: { format } }, 'openai-responses')).toBe(46);
    expect(gpt({ text: { format: { type: 'text' } } }, 'openai-responses')).toBe(16);
  });

  it("Gemini's responseSchema, as JSON text by the non-OpenAI rule", () => {
    // '{"type":"STRING"}': 5 x 1.35 = 6.75 -> 7, 17 / 3 -> 6: 7 + 16 + 8 = 31, on 16
    const body = { contents: [], generationConfig: { responseSchema: { type: 'STRING' } } };
    expect(precise('gemini-2.5-flash', 'gemini', body).inputTokens).toBe(47);
  });

  it('tools and functions: counted as JSON, 32 a tool and 16', () => {
    // type 3, function 3, function 3, name 3, f 3 = 15; + 32 + 16: 63, on 16
    const tool = { type: 'function', function: { name: 'f' } };
    expect(gpt({ tools: [tool] })).toBe(79);
    // name 3, f 3 = 6; + 32 + 16: 54, on 16
    expect(gpt({ functions: [{ name: 'f' }] })).toBe(70);
    // 15 + 6 + 2 x 32 + 16 = 101, on 16
    expect(gpt({ tools: [tool], functions: [{ name: 'f' }] })).toBe(117);
    // not a list: no tools
    expect(gpt({ tools: { name: 'f' } })).toBe(16);
  });

  it("a non-OpenAI model's tools: the JSON at the non-OpenAI rule + 16, and Anthropic's tool prompt", () => {
    // '{"name":"f"}': 5 x 1.35 -> 7, 12 / 3 = 4: 7 + 16 = 23; + 32 + 16 + 530 = 601, on 16
    const body = { tools: [{ name: 'f' }] };
    expect(precise('claude-3-haiku', 'anthropic-messages', body).inputTokens).toBe(617);
  });
});

describe('tools and web searches, cheap', () => {
  // 1,000 body bytes: OpenAI 1,000 + 16, Anthropic 1,350 + 16
  it('32 a tool of either list and 16; Anthropic adds 530', () => {
    const body = { tools: [{}, {}], functions: [{}] };
    expect(cheap('gpt-4o', 'openai-chat', body, 1000).inputTokens).toBe(1016 + 3 * 32 + 16);
    expect(cheap('claude-3-haiku', 'anthropic-messages', body, 1000).inputTokens).toBe(
      1366 + 3 * 32 + 16 + 530,
    );
  });

  it.each<[string, number, unknown[]]>([
    ['max_uses 1', 1, [{ type: 'web_search_20250305', max_uses: 1 }]],
    ['max_uses 0 (the default, 10)', 10, [{ type: 'web_search_20250305', max_uses: 0 }]],
    ['max_uses -2', 10, [{ type: 'web_search_20250305', max_uses: -2 }]],
    ['max_uses 2.5', 10, [{ type: 'web_search_20250305', max_uses: 2.5 }]],
    ['max_uses "3"', 10, [{ type: 'web_search_20250305', max_uses: '3' }]],
    ['no max_uses', 10, [{ type: 'web_search_20250305' }]],
    [
      'two search tools',
      3,
      [
        { type: 'web_search_20250305', max_uses: 1 },
        { type: 'web_search_2', max_uses: 2 },
      ],
    ],
    ['a tool named web_search (not a server search tool)', 0, [{ type: 'web_search' }]],
    ['a type that is no string', 0, [{ type: 7 }]],
    ['a tool that is no object', 0, ['web_search_20250305']],
  ])('%s: %i searches', (_, searches, tools) => {
    const b = cheap('claude-3-haiku', 'anthropic-messages', { tools }, 1000);
    expect(b.webSearches).toBe(searches);
    // 1,366 + 32 a tool + 16 + 530, and 10,000 prompt tokens of results a search
    expect(b.inputTokens).toBe(1366 + 32 * tools.length + 16 + 530 + 10_000 * searches);
  });
});

describe('the output bound', () => {
  const out = (body: Body, price?: ModelPrice, format: WireFormat | null = 'openai-chat') =>
    precise('made-up', format, body, price);

  const openai = priced({ provider: 'openai', maxOutputTokens: 16_384 });
  const deepseek = priced({ provider: 'deepseek', maxOutputTokens: 8192 });

  it("the largest cap the request gives, in the fields its format's provider reads", () => {
    // OpenAI's chat reads either (and refuses the two together): the larger bounds the call.
    expect(out({ max_completion_tokens: 5, max_tokens: 7 }, openai)).toMatchObject({
      outputTokens: 7,
      outputField: 'max_tokens',
      outputRequested: true,
    });
    expect(out({ max_completion_tokens: 9, max_tokens: 7 }, openai)).toMatchObject({
      outputTokens: 9,
      outputField: 'max_completion_tokens',
    });
    expect(out({ max_tokens: 7 }, openai).outputField).toBe('max_tokens');
    expect(out({}, openai)).toMatchObject({ outputTokens: 16_384, outputField: 'max_completion_tokens' });
    // Each other format reads its own field only: the rest are not caps there.
    expect(out({ max_tokens: 7, max_output_tokens: 9_000 }, openai, 'anthropic-messages')).toMatchObject({
      outputTokens: 7,
      outputField: 'max_tokens',
    });
    expect(out({ max_completion_tokens: 5, max_tokens: 7 }, openai, 'anthropic-messages').outputTokens).toBe(
      7,
    );
    expect(out({ max_tokens: 5, max_output_tokens: 9 }, openai, 'openai-responses')).toMatchObject({
      outputTokens: 9,
      outputField: 'max_output_tokens',
    });
    expect(out({ max_tokens: 5 }, openai, 'openai-responses')).toMatchObject({
      outputTokens: 16_384,
      outputRequested: false,
    });
    expect(
      out({ max_tokens: 5, generationConfig: { maxOutputTokens: 11 } }, undefined, 'gemini'),
    ).toMatchObject({
      outputTokens: 11,
      outputField: 'generationConfig.maxOutputTokens',
    });
    // An unknown format: whichever the provider reads, the largest.
    expect(
      out(
        { max_tokens: 7, max_output_tokens: 9, generationConfig: { maxOutputTokens: 11 } },
        undefined,
        null,
      ),
    ).toMatchObject({ outputTokens: 11, outputField: 'generationConfig.maxOutputTokens' });
  });

  it("outside OpenAI's own API, OpenAI's chat format is capped by max_tokens alone (DeepSeek ignores max_completion_tokens)", () => {
    expect(out({ max_completion_tokens: 5 }, deepseek)).toMatchObject({
      outputTokens: 8192,
      outputField: 'max_tokens',
      outputRequested: false,
    });
    expect(out({ max_completion_tokens: 5, max_tokens: 700 }, deepseek)).toMatchObject({
      outputTokens: 700,
      outputField: 'max_tokens',
      outputRequested: true,
    });
    // A provider may prefer max_completion_tokens when both are given (vLLM): the larger.
    expect(out({ max_completion_tokens: 900, max_tokens: 700 }, deepseek).outputTokens).toBe(900);
    expect(out({}, deepseek)).toMatchObject({ outputTokens: 8192, outputField: 'max_tokens' });
    // No provider known (a model priced by hand): the same rule.
    expect(out({ max_completion_tokens: 5 })).toMatchObject({
      outputTokens: 4096,
      outputField: 'max_tokens',
    });
  });

  it("OpenAI's own APIs: openai, azure and text-completion-openai read max_completion_tokens", () => {
    for (const provider of ['openai', 'azure', 'text-completion-openai']) {
      expect(out({ max_completion_tokens: 5 }, priced({ provider })).outputTokens, provider).toBe(5);
    }
    // Two equal caps: the first the provider reads names the field.
    expect(out({ max_completion_tokens: 7, max_tokens: 7 }, openai).outputField).toBe(
      'max_completion_tokens',
    );
    // An unknown format: max_completion_tokens is a cap like any other.
    expect(out({ max_completion_tokens: 77 }, undefined, null)).toMatchObject({
      outputTokens: 77,
      outputField: 'max_completion_tokens',
    });
    expect(out({ max_tokens: 78 }, undefined, null)).toMatchObject({
      outputTokens: 78,
      outputField: 'max_tokens',
    });
  });

  it('a cap given but unreadable bounds nothing; digits count as their number (lenient providers read them)', () => {
    expect(out({ max_completion_tokens: 5, max_tokens: '8000' }, deepseek)).toMatchObject({
      outputTokens: 8000,
      outputField: 'max_tokens',
    });
    expect(out({ max_completion_tokens: 5, max_tokens: 'lots' }, openai)).toMatchObject({
      outputTokens: 16_384,
      outputField: 'max_tokens',
      outputRequested: false,
    });
    expect(out({ max_tokens: 0 }, openai).outputTokens).toBe(16_384);
    expect(out({ max_tokens: -3, max_completion_tokens: 5 }, openai).outputTokens).toBe(16_384);
    expect(out({ max_tokens: null, max_completion_tokens: 5 }, openai).outputTokens).toBe(5);
    expect(out({ n: '3', max_tokens: 10 }, openai).choices).toBe(3);
    // best_of candidates are generated and billed (legacy completions, vLLM): the larger of it and n.
    expect(out({ best_of: 5, n: 2, max_tokens: 10 }, openai, null).choices).toBe(5);
    expect(out({ best_of: 1, n: 2, max_tokens: 10 }, openai, null).choices).toBe(2);
    expect(out({ best_of: 4, generationConfig: { candidateCount: 2 } }, undefined, 'gemini').choices).toBe(4);
    expect(out({ max_tokens: ' 300 ' }, openai).outputTokens).toBe(300);
    // Only decimal digits: not hexadecimal, an exponent or a fraction (which Number() would read).
    for (const odd of ['0x20', '1e3', '12.5', '12abc', 'abc12', ''])
      expect(out({ max_tokens: odd }, openai).outputTokens, odd).toBe(16_384);
  });

  it("none: the model's maximum from the table, else the default; n before candidateCount", () => {
    expect(out({}, priced({ maxOutputTokens: 300 }))).toMatchObject({
      outputTokens: 300,
      outputRequested: false,
    });
    expect(out({})).toMatchObject({ outputTokens: 4096 });
    expect(out({ n: 2, generationConfig: { candidateCount: 3 } }).choices).toBe(2);
    // a Gemini body without contents still caps its output in generationConfig
    expect(out({}, undefined, 'gemini').outputField).toBe('generationConfig.maxOutputTokens');
  });

  it('an embedding model on an unknown route has no output; on a chat route it has', () => {
    const embedding = priced({ mode: 'embedding', maxOutputTokens: 300 });
    expect(out({ input: 'x', n: 3 }, embedding, null)).toMatchObject({
      outputTokens: 0,
      choices: 1,
      outputField: null,
      outputRequested: false,
    });
    expect(out({ input: 'x' }, embedding, 'openai-chat').outputTokens).toBe(300);
    expect(out({ input: 'x' }, priced({ mode: 'chat', maxOutputTokens: 300 }), null).outputTokens).toBe(300);
  });

  it('audio output only when modalities is a list naming audio', () => {
    expect(out({ modalities: 'audio' }).audioOutput).toBe(false);
  });
});

describe('image generation (gpt-image models): output tokens by quality and size', () => {
  const painter = priced({ provider: 'openai', mode: 'image_generation', maxOutputTokens: 100 });
  const images = (body: Body) => precise('gpt-image-1', null, { prompt: 'a cat', ...body }, painter);

  it.each([
    [{ quality: 'low', size: '1024x1024' }, 272],
    [{ quality: 'low', size: '1024x1536' }, 408],
    [{ quality: 'low', size: '1536x1024' }, 400],
    [{ quality: 'medium', size: '1024x1024' }, 1056],
    [{ quality: 'medium', size: '1024x1536' }, 1584],
    [{ quality: 'medium', size: '1536x1024' }, 1568],
    [{ quality: 'high', size: '1024x1024' }, 4160],
    [{ quality: 'high', size: '1024x1536' }, 6240],
    [{ quality: 'high', size: '1536x1024' }, 6208],
    [{ quality: 3, size: 4 }, 6240],
    [{ quality: 'low' }, 408],
    [{ quality: 'medium', size: 'auto' }, 1584],
    [{ quality: 'auto', size: '1024x1024' }, 4160],
    [{}, 6240],
    [{ quality: 'constructor', size: 'constructor' }, 6240],
    [{ quality: 'high', size: '1024x1024', partial_images: 2 }, 4360],
  ])('%j: %i a image', (body, tokens) => {
    expect(images(body)).toMatchObject({ outputTokens: tokens, choices: 1, outputField: null });
  });

  it('times n, and no cap to lower', () => {
    expect(images({ n: 3, quality: 'low', size: '1024x1024', max_tokens: 5 })).toMatchObject({
      outputTokens: 272,
      choices: 3,
      outputField: null,
      outputRequested: false,
    });
  });
});

describe('server-side tools billed beyond what the request caps', () => {
  it.each([
    [
      {
        tools: [
          { type: 'function', name: 'f' },
          { type: 'file_search', vector_store_ids: ['vs_1'] },
        ],
      },
      'tools[1].type',
    ],
    [{ tools: [{ type: 'code_interpreter', container: { type: 'auto' } }] }, 'tools[0].type'],
    [{ tools: [{ type: 'image_generation' }] }, 'tools[0].type'],
    [{ tools: [{ type: 'mcp', server_url: 'https://example.com' }] }, 'tools[0].type'],
    [{ tools: [{ type: 'code_execution_20250825', name: 'code_execution' }] }, 'tools[0].type'],
    [{ tools: [{ type: 'web_fetch_20250910', name: 'web_fetch' }] }, 'tools[0].max_uses'],
    [
      { tools: [{ type: 'web_fetch_20250910', name: 'web_fetch', max_uses: 2 }] },
      'tools[0].max_content_tokens',
    ],
    [{ tools: [{ type: 'web_fetch_20250910', max_uses: 0, max_content_tokens: 5 }] }, 'tools[0].max_uses'],
    [{ mcp_servers: [{ type: 'url', url: 'https://example.com', name: 'x' }] }, 'mcp_servers'],
    [{ tools: [{ codeExecution: {} }] }, 'tools[0].codeExecution'],
    [{ tools: [{ url_context: {} }] }, 'tools[0].url_context'],
    [{ tools: [{ googleSearch: {} }, { googleMaps: {} }] }, 'tools[1].googleMaps'],
  ])('%j: %s', (body, param) => {
    expect(unboundedServerTool(body)?.param).toBe(param);
  });

  it('says what each one bills, whatever its version', () => {
    const what = (tool: Record<string, unknown>) => unboundedServerTool({ tools: [tool] })?.tool;
    expect(what({ type: 'file_search' })).toBe(
      "OpenAI's file search (a fee a search, and the chunks it retrieves as input)",
    );
    expect(what({ type: 'file_search_2026' })).toContain("OpenAI's file search");
    expect(what({ type: 'code_interpreter' })).toBe("OpenAI's code interpreter (a fee a container)");
    expect(what({ type: 'image_generation' })).toBe(
      "OpenAI's image generation tool (the images' output tokens)",
    );
    expect(what({ type: 'mcp' })).toBe("a remote MCP server (its tools' output as input)");
    expect(what({ type: 'code_execution_20250825' })).toBe("Anthropic's code execution (container time)");
    expect(what({ type: 'web_fetch_20250910' })).toBe(
      "Anthropic's web fetch (the pages it fetches as input)",
    );
    for (const key of ['codeExecution', 'code_execution']) {
      expect(what({ [key]: {} })).toBe(
        "Gemini's code execution (its code and results as tokens, over several rounds)",
      );
    }
    for (const key of ['urlContext', 'url_context']) {
      expect(what({ [key]: {} })).toBe("Gemini's URL context (the pages it fetches as input)");
    }
    for (const key of ['googleMaps', 'google_maps']) {
      expect(what({ [key]: {} })).toBe("Gemini's grounding with Google Maps (a fee a grounded prompt)");
    }
    expect(unboundedServerTool({ mcp_servers: [{}] })?.tool).toBe(
      "Anthropic's MCP connector (its tools' output as input)",
    );
    // Only a tool whose type begins with one of theirs.
    for (const type of [
      'my_file_search',
      'x_code_interpreter',
      'my_image_generation',
      'not_mcp',
      'x_code_execution_1',
    ])
      expect(what({ type }), type).toBeUndefined();
  });

  it('none in function tools, web searches, client tools, an empty MCP list, or a bounded web fetch', () => {
    for (const body of [
      {},
      { tools: [{ type: 'function', function: { name: 'f' } }, 'odd', null] },
      { tools: [{ type: 'web_search_20250305', name: 'web_search' }, { type: 'web_search' }] },
      { tools: [{ type: 'computer_20250124' }, { type: 'bash_20250124' }, { googleSearch: {} }] },
      { tools: [{ type: 'web_fetch_20250910', max_uses: 2, max_content_tokens: 5000 }] },
      { tools: [{ toString: {} }] },
      { mcp_servers: [] },
    ]) {
      expect(unboundedServerTool(body), JSON.stringify(body)).toBeNull();
    }
  });

  it('a web fetch adds max_uses x max_content_tokens of input; without them (outside strict), 10 of the context', () => {
    const claude = priced({ provider: 'anthropic', maxInputTokens: 200_000 });
    const fetches = (tool: Record<string, unknown>) =>
      cheap(
        'claude-x',
        'anthropic-messages',
        { tools: [{ type: 'web_fetch_20250910', name: 'web_fetch', ...tool }] },
        1000,
        claude,
      ).inputTokens;
    const base = fetches({ type: 'function' });
    expect(fetches({ max_uses: 3, max_content_tokens: 5000 }) - base).toBe(15_000);
    expect(fetches({ max_uses: 3 }) - base).toBe(600_000);
    expect(fetches({}) - base).toBe(2_000_000);
  });
});

describe("OpenAI Responses' stored context: previous_response_id, conversation, a stored prompt", () => {
  const model = priced({ provider: 'openai', maxInputTokens: 50_000 });
  const bound = (body: Body, previousTurnTokens?: number | null, precise = false) =>
    boundCall('gpt-x', 'openai-responses', { input: 'hi', ...body }, model, {
      defaultMaxOutputTokens: 4096,
      precise,
      bodyBytes: 1000,
      previousTurnTokens,
    }).inputTokens;
  const base = bound({});

  it('a previous response is billed again as input: what its log counted, else the whole context', () => {
    expect(bound({ previous_response_id: 'resp_1' }, 1234) - base).toBe(1234);
    expect(bound({ previous_response_id: 'resp_1' }, 1234, true) - bound({}, null, true)).toBe(1234);
    expect(bound({ previous_response_id: 'resp_1' }) - base).toBe(50_000);
    expect(bound({ previous_response_id: 'resp_1' }, null) - base).toBe(50_000);
    // never more than the context window
    expect(bound({ previous_response_id: 'resp_1' }, 80_000) - base).toBe(50_000);
    // no previous response named: nothing, whatever the option says
    expect(bound({ previous_response_id: '' }, 1234) - base).toBe(0);
    expect(bound({ previous_response_id: null }, 1234) - base).toBe(0);
  });

  it('a stored conversation or prompt template takes the whole context; a prompt string is text', () => {
    expect(bound({ conversation: 'conv_1' }) - base).toBe(50_000);
    expect(bound({ conversation: { id: 'conv_1' } }) - base).toBe(50_000);
    expect(bound({ conversation: '' }) - base).toBe(0);
    expect(bound({ prompt: { id: 'pmpt_1', version: '2' } }) - base).toBeGreaterThanOrEqual(50_000);
    expect(bound({ prompt: 'Say this is a test' }) - base).toBeLessThan(100);
    expect(bound({ prompt: { text: 'no id' } }) - base).toBeLessThan(100);
    expect(bound({ prompt: { id: '' } }) - base).toBeLessThan(100);
    expect(bound({ prompt: { id: 7 } }) - base).toBeLessThan(100);
  });
});

describe('Gemini generation config, schemas and cached content, in either spelling', () => {
  const gemini = priced({ provider: 'gemini', maxInputTokens: 50_000 });
  const g = (body: Body) => precise('gemini-x', 'gemini', { contents: [], ...body }, gemini);
  /** The cheap bound on 1,000 bytes: 1,350 + 16 of text (no message), plus what the fields add. */
  const cheapG = (body: Body) => cheap('gemini-x', 'gemini', { contents: [], ...body }, 1000, gemini);

  it('the output cap and the candidates from generationConfig or generation_config', () => {
    expect(g({ generation_config: { max_output_tokens: 300 } })).toMatchObject({
      outputTokens: 300,
      outputField: 'generationConfig.maxOutputTokens',
      outputRequested: true,
    });
    expect(g({ generation_config: { maxOutputTokens: 300, candidate_count: 3 } })).toMatchObject({
      outputTokens: 300,
      choices: 3,
    });
    expect(g({ generationConfig: { candidate_count: 2 } }).choices).toBe(2);
  });

  it('a field given twice (both spellings, or both configs): the larger value, in any order', () => {
    for (const [a, b] of [
      [100, 300],
      [300, 100],
    ] as const) {
      expect(g({ generationConfig: { maxOutputTokens: a, max_output_tokens: b } }).outputTokens).toBe(300);
      expect(
        g({ generationConfig: { maxOutputTokens: a }, generation_config: { max_output_tokens: b } })
          .outputTokens,
      ).toBe(300);
      expect(g({ generationConfig: { candidateCount: a / 100, candidate_count: b / 100 } }).choices).toBe(3);
    }
    // A value that is no positive integer does not count, wherever it is.
    expect(g({ generationConfig: { maxOutputTokens: 0, max_output_tokens: 50 } }).outputTokens).toBe(50);
    expect(g({ generationConfig: { maxOutputTokens: 50, max_output_tokens: -1 } }).outputTokens).toBe(50);
  });

  it('a response schema in any of its four spellings, in either config', () => {
    // '{"type":"STRING"}': 5 x 1.35 = 6.75 -> 7, 17 / 3 -> 6: 7 + 16 + 8 = 31, on 16
    for (const key of ['responseSchema', 'response_schema', 'responseJsonSchema', 'response_json_schema']) {
      expect(g({ generationConfig: { [key]: { type: 'STRING' } } }).inputTokens, key).toBe(47);
      expect(g({ generation_config: { [key]: { type: 'STRING' } } }).inputTokens, key).toBe(47);
    }
    // Two schemas: 31 each, on 16.
    expect(
      g({
        generationConfig: { responseSchema: { type: 'STRING' } },
        generation_config: { response_json_schema: { type: 'STRING' } },
      }).inputTokens,
    ).toBe(78);
  });

  it('cached content named in either spelling takes the context window; an empty name or no string, nothing', () => {
    const base = cheapG({}).inputTokens;
    expect(base).toBe(1350 + 16);
    expect(cheapG({ cachedContent: 'cachedContents/abc' }).inputTokens - base).toBe(50_000);
    expect(cheapG({ cached_content: 'cachedContents/abc' }).inputTokens - base).toBe(50_000);
    expect(cheapG({ cachedContent: '' }).inputTokens - base).toBe(0);
    expect(cheapG({ cached_content: 5 }).inputTokens - base).toBe(0);
  });

  it('lowers the cap in the spelling the request uses, and never adds the other one', () => {
    const snake: Body = { generation_config: { temperature: 1 } };
    setOutputCap(snake, 'generationConfig.maxOutputTokens', 7);
    expect(snake).toEqual({ generation_config: { temperature: 1, max_output_tokens: 7 } });
    const camelCfg = { maxOutputTokens: 900 };
    const camel: Body = { generationConfig: camelCfg };
    setOutputCap(camel, 'generationConfig.maxOutputTokens', 7);
    expect(camel).toEqual({ generationConfig: { maxOutputTokens: 7 } });
    expect(camelCfg).toEqual({ maxOutputTokens: 900 }); // the request's own object is not changed
    const protoName: Body = { generationConfig: { max_output_tokens: 900 } };
    setOutputCap(protoName, 'generationConfig.maxOutputTokens', 7);
    expect(protoName).toEqual({ generationConfig: { max_output_tokens: 7 } });
    const both: Body = { generationConfig: { maxOutputTokens: 900, max_output_tokens: 800 } };
    setOutputCap(both, 'generationConfig.maxOutputTokens', 7);
    expect(both).toEqual({ generationConfig: { maxOutputTokens: 7, max_output_tokens: 7 } });
    const snakeProto: Body = { generation_config: { max_output_tokens: 900 } };
    setOutputCap(snakeProto, 'generationConfig.maxOutputTokens', 7);
    expect(snakeProto).toEqual({ generation_config: { max_output_tokens: 7 } });
    const none: Body = {};
    setOutputCap(none, 'generationConfig.maxOutputTokens', 7);
    expect(none).toEqual({ generationConfig: { maxOutputTokens: 7 } });
  });
});
