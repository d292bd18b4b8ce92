// The worst-case bound, part by part, against hand-worked numbers from the providers' published rules
// (OpenAI's vision guide, Anthropic's vision docs, Google's token docs) and, for text, tiktoken used
// directly (not through the guard's counter).
import { createRequire } from 'node:module';
import type { Tiktoken } from 'tiktoken';
import { describe, expect, it } from 'vitest';
import { imageSize, pdfPages, wavSeconds } from '../src/admission/media-size.js';
import {
  boundCall,
  boundNano,
  type CallBound,
  outputTokensFitting,
  setOutputCap,
} from '../src/admission/worst-case.js';
import type { WireFormat } from '../src/metering/wire-formats.js';
import { PriceBook } from '../src/pricing/price-book.js';

const prices = new PriceBook();
const tiktoken = createRequire(import.meta.url)('tiktoken') as typeof import('tiktoken');
let o200k: Tiktoken | undefined;
/** Loaded on first use: most cases here count no text (and a mutation run reruns this file often). */
const encoder = (): Tiktoken => {
  o200k ??= tiktoken.get_encoding('o200k_base');
  return o200k;
};

/** A PNG whose header says `width` x `height` (the pixels are not needed to read its size). */
function png(width: number, height: number): string {
  const bytes = Buffer.alloc(33);
  Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(bytes, 0);
  bytes.writeUInt32BE(13, 8);
  bytes.write('IHDR', 12, 'latin1');
  bytes.writeUInt32BE(width, 16);
  bytes.writeUInt32BE(height, 20);
  bytes[24] = 8;
  bytes[25] = 2;
  return bytes.toString('base64');
}

/** A baseline JPEG header with an APP0 segment before its SOF0 (height, then width). */
function jpeg(width: number, height: number): string {
  const app0 = Buffer.from([0xff, 0xe0, 0x00, 0x10, ...Buffer.from('JFIF\0'), 1, 1, 0, 0, 1, 0, 1, 0, 0]);
  const sof = Buffer.alloc(19);
  sof.writeUInt16BE(0xffc0, 0);
  sof.writeUInt16BE(17, 2);
  sof[4] = 8;
  sof.writeUInt16BE(height, 5);
  sof.writeUInt16BE(width, 7);
  return Buffer.concat([Buffer.from([0xff, 0xd8]), app0, sof]).toString('base64');
}

/** A PCM WAV of `seconds` at 16 kHz, 16-bit mono (32,000 bytes a second). */
function wav(seconds: number): string {
  const data = 32_000 * seconds;
  const header = Buffer.alloc(44);
  header.write('RIFF', 0, 'latin1');
  header.writeUInt32LE(36 + data, 4);
  header.write('WAVEfmt ', 8, 'latin1');
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20);
  header.writeUInt16LE(1, 22);
  header.writeUInt32LE(16_000, 24);
  header.writeUInt32LE(32_000, 28);
  header.writeUInt16LE(2, 32);
  header.writeUInt16LE(16, 34);
  header.write('data', 36, 'latin1');
  header.writeUInt32LE(data, 40);
  return Buffer.concat([header, Buffer.alloc(data)]).toString('base64');
}

function pdf(pages: number): string {
  const objects = Array.from(
    { length: pages },
    (_, i) => `${i + 3} 0 obj << /Type /Page /Parent 2 0 R >> endobj`,
  );
  return Buffer.from(
    `%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Count ${pages} >> endobj\n${objects.join('\n')}\n%%EOF`,
  ).toString('base64');
}

function bound(model: string, format: WireFormat, body: Record<string, unknown>, precise = true): CallBound {
  return boundCall(model, format, body, prices.resolve(model), { defaultMaxOutputTokens: 4096, precise });
}

/** The prompt tokens one part adds: the bound with it, minus the bound without it. */
function partTokens(model: string, format: WireFormat, part: unknown, precise = true): number {
  const message = (content: unknown[]) =>
    format === 'gemini'
      ? { contents: [{ role: 'user', parts: content }] }
      : format === 'openai-responses'
        ? { model, input: [{ role: 'user', content }] }
        : { model, max_tokens: 10, messages: [{ role: 'user', content }] };
  const text = format === 'gemini' ? { text: 'describe' } : { type: 'text', text: 'describe' };
  const withPart = bound(model, format, message([text, part]), precise);
  const without = bound(model, format, message([text]), precise);
  return withPart.inputTokens + withPart.audioTokens - (without.inputTokens + without.audioTokens);
}

const image = (data: string, detail?: 'low' | 'high') => ({
  type: 'image_url',
  image_url: { url: `data:image/png;base64,${data}`, ...(detail ? { detail } : {}) },
});

describe('media headers', () => {
  it('reads PNG and JPEG sizes, WAV durations and PDF pages from the bytes', () => {
    expect(imageSize(png(1024, 768))).toEqual({ width: 1024, height: 768 });
    expect(imageSize(jpeg(640, 480))).toEqual({ width: 640, height: 480 });
    expect(imageSize(Buffer.from('not an image at all').toString('base64'))).toBeNull();
    expect(wavSeconds(wav(2))).toBe(2);
    expect(pdfPages(pdf(3))).toBe(3);
    expect(pdfPages(Buffer.from('%PDF-1.7 /ObjStm').toString('base64'))).toBeNull();
  });
});

describe('OpenAI images (vision guide: 85 + 170 per 512-px tile after fitting 2048 and a 768-px side)', () => {
  it.each([
    // 1024x1024: shortest side 1024 -> 768x768: 2x2 tiles = 85 + 4 x 170
    [1024, 1024, 765],
    // 4096x1024 -> fits 2048x512; shortest 512 stays: 4x1 tiles
    [4096, 1024, 765],
    // 2048x4096 -> fits 1024x2048 -> shortest 768: 768x1536: 2x3 tiles = 85 + 6 x 170
    [2048, 4096, 1105],
    // 300x200: one tile
    [300, 200, 255],
  ])('gpt-4o %ix%i high detail: %i tokens', (w, h, tokens) => {
    expect(partTokens('gpt-4o', 'openai-chat', image(png(w, h), 'high'))).toBe(tokens);
  });

  it('low detail is 85; gpt-4o-mini prices a tile at 5,667 on a base of 2,833; an unknown size takes 8 tiles', () => {
    expect(partTokens('gpt-4o', 'openai-chat', image(png(4096, 4096), 'low'))).toBe(85);
    expect(partTokens('gpt-4o-mini', 'openai-chat', image(png(1024, 1024)))).toBe(2833 + 4 * 5667);
    const url = { type: 'image_url', image_url: { url: 'https://example.com/cat.png' } };
    expect(partTokens('gpt-4o', 'openai-chat', url)).toBe(85 + 8 * 170);
    // The cheap bound reads no header: it takes the largest an image can be (plus the part's JSON bytes,
    // all of which it counts as text).
    const cheap = partTokens('gpt-4o', 'openai-chat', image(png(300, 200)), false);
    expect(cheap).toBeGreaterThanOrEqual(85 + 8 * 170);
    expect(cheap).toBeLessThan(85 + 8 * 170 + 64);
  });

  it('patch models: 32-px patches x the model multiplier, at most 1,536 patches', () => {
    // 1024x1024: 32 x 32 = 1,024 patches x 1.62 = 1,658.9 -> 1,659
    expect(partTokens('gpt-4.1-mini', 'openai-chat', image(png(1024, 1024)))).toBe(1659);
    // the Responses API's input_image carries the same rule
    const part = { type: 'input_image', image_url: `data:image/png;base64,${png(1024, 1024)}` };
    expect(partTokens('gpt-4.1-mini', 'openai-responses', part)).toBe(1659);
  });
});

describe('Anthropic images (w x h / 750 after fitting a 1568-px edge, about 1,600 at most)', () => {
  const block = (data: string) => ({
    type: 'image',
    source: { type: 'base64', media_type: 'image/png', data },
  });
  it.each([
    [1000, 1000, 1334], // 1,000,000 / 750 = 1,333.3
    [200, 200, 54], // 40,000 / 750 = 53.3
    [2000, 1000, 1600], // -> 1568x784 = 1,229,312 / 750 = 1,639.1, capped
  ])('%ix%i: %i tokens', (w, h, tokens) => {
    expect(partTokens('claude-sonnet-4-5', 'anthropic-messages', block(png(w, h)))).toBe(tokens);
  });
});

describe('Gemini images (258 up to 384x384, else 258 per 768-px tile)', () => {
  const inline = (data: string) => ({ inlineData: { mimeType: 'image/png', data } });
  it.each([
    [300, 300, 258],
    [1000, 1000, 4 * 258],
    [1536, 768, 2 * 258],
  ])('%ix%i: %i tokens', (w, h, tokens) => {
    expect(partTokens('gemini/gemini-2.5-flash', 'gemini', inline(png(w, h)))).toBe(tokens);
  });
});

describe('audio and files', () => {
  it('OpenAI input audio at 10 tokens a second, from the WAV header; other formats at 8 kbit/s', () => {
    const part = (data: string, format: string) => ({ type: 'input_audio', input_audio: { data, format } });
    expect(partTokens('gpt-4o-audio-preview', 'openai-chat', part(wav(3), 'wav'))).toBe(30);
    // 6,000 bytes of mp3 at 1,000 bytes a second at the least: 6 s, 60 tokens
    const mp3 = Buffer.alloc(6000, 1).toString('base64');
    expect(partTokens('gpt-4o-audio-preview', 'openai-chat', part(mp3, 'mp3'))).toBe(60);
  });

  it('Gemini audio at 32 tokens a second', () => {
    const part = { inlineData: { mimeType: 'audio/wav', data: wav(2) } };
    expect(partTokens('gemini/gemini-2.5-flash', 'gemini', part)).toBe(64);
  });

  it('a PDF: pages x the page bound plus its bytes; a file it cannot read: the whole context window', () => {
    const data = pdf(3);
    const bytes = Buffer.from(data, 'base64').length;
    const file = {
      type: 'file',
      file: { filename: 'a.pdf', file_data: `data:application/pdf;base64,${data}` },
    };
    // OpenAI: each page an image of at most 8 tiles (1,445) and the text (at most a token a byte)
    expect(partTokens('gpt-4o', 'openai-chat', file)).toBe(3 * 1445 + bytes);
    const byId = { type: 'file', file: { file_id: 'file-abc' } };
    expect(partTokens('gpt-4o', 'openai-chat', byId)).toBe(128_000);
    const doc = { type: 'document', source: { type: 'base64', media_type: 'application/pdf', data } };
    expect(partTokens('claude-sonnet-4-5', 'anthropic-messages', doc)).toBe(3 * 4600 + bytes);
  });
});

describe('text, tools and output', () => {
  const count = (text: string) => encoder().encode_ordinary(text).length;

  it('counts OpenAI text exactly per string, plus 4 a message and 16', () => {
    const b = bound('gpt-4o', 'openai-chat', {
      model: 'gpt-4o',
      messages: [
        { role: 'system', content: 'You are terse.' },
        { role: 'user', content: 'What is the capital of France?' },
      ],
      max_tokens: 50,
    });
    const text =
      count('system') + count('You are terse.') + count('user') + count('What is the capital of France?');
    expect(b.inputTokens).toBe(text + 2 * 4 + 16);
    expect(b.outputTokens).toBe(50);
  });

  it('bounds tool definitions above OpenAI cookbook count, and above it in the cheap form too', () => {
    const tools = [
      {
        type: 'function',
        function: {
          name: 'get_weather',
          description: 'Get the weather for a city',
          parameters: {
            type: 'object',
            properties: {
              city: { type: 'string', description: 'The city' },
              unit: { type: 'string', description: 'Units', enum: ['celsius', 'fahrenheit'] },
            },
          },
        },
      },
    ];
    // The cookbook's count for gpt-4o: func_init 7, "name:description", prop_init 3, per property
    // prop_key 3 + "key:type:description", enum_init -3 + per item 3 + the item, func_end 12.
    const cookbook =
      7 +
      count('get_weather:Get the weather for a city') +
      3 +
      (3 + count('city:string:The city')) +
      (3 + count('unit:string:Units') - 3 + (3 + count('celsius')) + (3 + count('fahrenheit'))) +
      12;
    const body = { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: 10 };
    const withTools = { ...body, tools };
    for (const precise of [true, false]) {
      const added =
        boundCall('gpt-4o', 'openai-chat', withTools, prices.resolve('gpt-4o'), {
          defaultMaxOutputTokens: 4096,
          precise,
          bodyBytes: Buffer.byteLength(JSON.stringify(withTools)),
        }).inputTokens -
        boundCall('gpt-4o', 'openai-chat', body, prices.resolve('gpt-4o'), {
          defaultMaxOutputTokens: 4096,
          precise,
          bodyBytes: Buffer.byteLength(JSON.stringify(body)),
        }).inputTokens;
      expect(added, precise ? 'precise' : 'cheap').toBeGreaterThanOrEqual(cookbook);
    }
  });

  it("adds Anthropic's largest tool-use system prompt (530) and bounds web searches by max_uses", () => {
    const body = {
      model: 'claude-sonnet-4-5',
      max_tokens: 100,
      messages: [{ role: 'user', content: 'news?' }],
      tools: [{ type: 'web_search_20250305', name: 'web_search', max_uses: 3 }],
    };
    const b = bound('claude-sonnet-4-5', 'anthropic-messages', body);
    expect(b.webSearches).toBe(3);
    const plain = bound('claude-sonnet-4-5', 'anthropic-messages', { ...body, tools: undefined });
    expect(b.inputTokens - plain.inputTokens).toBeGreaterThanOrEqual(530 + 3 * 10_000);
  });

  it('takes the output cap the request names (x n), else the model maximum; embeddings have none', () => {
    expect(bound('gpt-4o', 'openai-chat', { messages: [], max_completion_tokens: 77, n: 3 })).toMatchObject({
      outputTokens: 77,
      choices: 3,
      outputField: 'max_completion_tokens',
      outputRequested: true,
    });
    expect(bound('gpt-4o', 'openai-chat', { messages: [] })).toMatchObject({
      outputTokens: 16_384,
      outputField: 'max_completion_tokens',
      outputRequested: false,
    });
    expect(bound('gpt-4o', 'openai-responses', { input: 'x' }).outputField).toBe('max_output_tokens');
    expect(
      bound('gemini/gemini-2.5-flash', 'gemini', { contents: [], generationConfig: { maxOutputTokens: 9 } }),
    ).toMatchObject({ outputTokens: 9, outputField: 'generationConfig.maxOutputTokens' });
    expect(bound('text-embedding-3-small', 'openai-embeddings', { input: 'x' })).toMatchObject({
      outputTokens: 0,
      outputField: null,
    });
  });

  it('never gives a cheap bound below the precise one', () => {
    const bodies: Array<[string, WireFormat, Record<string, unknown>]> = [
      [
        'gpt-4o',
        'openai-chat',
        {
          messages: [
            { role: 'user', content: [{ type: 'text', text: 'héllo 👋 '.repeat(50) }, image(png(800, 600))] },
          ],
        },
      ],
      [
        'claude-sonnet-4-5',
        'anthropic-messages',
        { system: 'be brief', messages: [{ role: 'user', content: 'x y z '.repeat(200) }], max_tokens: 5 },
      ],
      [
        'gemini/gemini-2.5-flash',
        'gemini',
        { contents: [{ parts: [{ text: '日本語のテキスト'.repeat(40) }] }] },
      ],
    ];
    for (const [model, format, body] of bodies) {
      const bytes = Buffer.byteLength(JSON.stringify(body));
      const cheap = boundCall(model, format, body, prices.resolve(model), {
        defaultMaxOutputTokens: 4096,
        precise: false,
        bodyBytes: bytes,
      });
      const precise = boundCall(model, format, body, prices.resolve(model), {
        defaultMaxOutputTokens: 4096,
        precise: true,
        bodyBytes: bytes,
      });
      expect(cheap.inputTokens + cheap.audioTokens, model).toBeGreaterThanOrEqual(
        precise.inputTokens + precise.audioTokens,
      );
    }
  });
});

describe('the bound in nano-dollars, and the output that fits a room', () => {
  const b: CallBound = {
    inputTokens: 1000,
    audioTokens: 10,
    webSearches: 2,
    outputTokens: 500,
    choices: 3,
    outputField: 'max_tokens',
    outputRequested: true,
    serviceTier: undefined,
    cacheWrites: false,
    audioOutput: false,
    loose: false,
  };
  // Pico-dollars per token: $2.5e-6 input, $4e-5 audio, $1e-5 output; $7e-6 a call, $0.025 a search.
  const rates = {
    input: 2_500_000,
    audioInput: 40_000_000,
    output: 10_000_000,
    request: 7_000_000,
    webSearch: 25e9,
  };

  it('sums every part: input, audio, output x choices, the call and the searches', () => {
    // 2.5e9 + 0.4e9 + 500 x 3 x 1e7 (15e9) + 7e6 + 2 x 25e9 = 67,907,000,000 pico
    expect(boundNano(b, rates)).toBe(67_907_000);
    // With no output: 52,907,000,000 pico
    expect(boundNano(b, rates, 0)).toBe(52_907_000);
    // 100 output tokens: + 100 x 3 x 1e7 = 3e9
    expect(boundNano(b, rates, 100)).toBe(55_907_000);
  });

  it('rounds up to whole nano-dollars, and is never below 1', () => {
    const tiny = { ...b, audioTokens: 0, webSearches: 0, outputTokens: 0, inputTokens: 1001 };
    const one = { input: 1, audioInput: 0, output: 0, request: 0, webSearch: 0 };
    expect(boundNano(tiny, one)).toBe(2); // 1,001 pico: 1.001 nano, up to 2
    expect(boundNano(tiny, { ...one, input: 0 })).toBe(1); // free, yet 1
  });

  it('the most output tokens whose bound fits the room', () => {
    // (60,000,000 - 52,907,000) x 1000 / (3 x 1e7) = 236.4: 236 (59,987,000 fits; 237 is 60,017,000)
    expect(outputTokensFitting(b, rates, 60_000_000)).toBe(236);
    expect(boundNano(b, rates, 236)).toBeLessThanOrEqual(60_000_000);
    expect(boundNano(b, rates, 237)).toBeGreaterThan(60_000_000);
    // Below the fixed part even none fits: negative. (-907,000 x 1000 / 3e7 = -30.2: -31)
    expect(outputTokensFitting(b, rates, 52_000_000)).toBe(-31);
    // Free output: all of it when the rest fits, else -1.
    const free = { ...rates, output: 0 };
    expect(outputTokensFitting(b, free, 52_907_000)).toBe(500);
    expect(outputTokensFitting(b, free, 52_906_999)).toBe(-1);
  });

  it('sets the output cap where the format keeps it', () => {
    const chat: Record<string, unknown> = { max_tokens: 900 };
    setOutputCap(chat, 'max_tokens', 100);
    expect(chat).toEqual({ max_tokens: 100 });
    const gemini: Record<string, unknown> = { generationConfig: { temperature: 0.5 } };
    setOutputCap(gemini, 'generationConfig.maxOutputTokens', 100);
    expect(gemini).toEqual({ generationConfig: { temperature: 0.5, maxOutputTokens: 100 } });
    // Every other cap the request gives comes down too, whichever the provider reads; beside a written
    // max_tokens, max_completion_tokens goes (some providers ignore it, some refuse the two together).
    const twice: Record<string, unknown> = {
      max_completion_tokens: 9000,
      max_tokens: 50,
      max_output_tokens: 'x',
    };
    setOutputCap(twice, 'max_tokens', 100);
    expect(twice).toEqual({ max_tokens: 100, max_output_tokens: 100 });
    const openai: Record<string, unknown> = { max_completion_tokens: 9000, max_tokens: 50 };
    setOutputCap(openai, 'max_completion_tokens', 100);
    expect(openai).toEqual({ max_completion_tokens: 100, max_tokens: 50 });
    const wide: Record<string, unknown> = { max_tokens: 900, generationConfig: { maxOutputTokens: 900 } };
    setOutputCap(wide, 'max_tokens', 100);
    expect(wide).toEqual({ max_tokens: 100, generationConfig: { maxOutputTokens: 100 } });
    // A cap already under the new one stays; a null one is no cap; max_completion_tokens goes only
    // beside a written max_tokens.
    const under: Record<string, unknown> = {
      max_tokens: 900,
      max_completion_tokens: null,
      max_output_tokens: 50,
      generationConfig: { maxOutputTokens: 60 },
    };
    setOutputCap(under, 'max_tokens', 100);
    expect(under).toEqual({
      max_tokens: 100,
      max_completion_tokens: null,
      max_output_tokens: 50,
      generationConfig: { maxOutputTokens: 60 },
    });
    const responses: Record<string, unknown> = { max_completion_tokens: 9000, max_output_tokens: 9000 };
    setOutputCap(responses, 'max_output_tokens', 100);
    expect(responses).toEqual({ max_completion_tokens: 100, max_output_tokens: 100 });
    const legacy: Record<string, unknown> = { max_tokens: 9000, max_output_tokens: 9000 };
    setOutputCap(legacy, 'max_output_tokens', 100);
    expect(legacy).toEqual({ max_tokens: 100, max_output_tokens: 100 });
    const odd: Record<string, unknown> = { generationConfig: 'x' };
    setOutputCap(odd, 'generationConfig.maxOutputTokens', 7);
    expect(odd).toEqual({ generationConfig: { maxOutputTokens: 7 } });
  });
});

describe('what else the bound reads from the request', () => {
  it('the service tier, cache marks, audio output, and whether it was bounded loosely', () => {
    const body = {
      max_tokens: 10,
      service_tier: 'priority',
      modalities: ['text', 'audio'],
      messages: [
        { role: 'user', content: [{ type: 'text', text: 'hi', cache_control: { type: 'ephemeral' } }] },
      ],
    };
    expect(bound('claude-sonnet-4-5', 'anthropic-messages', body)).toMatchObject({
      serviceTier: 'priority',
      cacheWrites: true,
      audioOutput: true,
      loose: false,
    });
    expect(bound('claude-sonnet-4-5', 'anthropic-messages', body, false).loose).toBe(true);
    const plain = {
      max_tokens: 10,
      service_tier: 5,
      modalities: ['text'],
      messages: [{ role: 'user', content: 'hi' }],
    };
    expect(bound('claude-sonnet-4-5', 'anthropic-messages', plain)).toMatchObject({
      serviceTier: undefined,
      cacheWrites: false,
      audioOutput: false,
    });
  });

  it('the output field a request without a cap gets, per format; choices from n or candidateCount', () => {
    const none = (format: WireFormat | null, body: Record<string, unknown>) =>
      boundCall('unknown-model', format, body, undefined, { defaultMaxOutputTokens: 4096, precise: true });
    expect(none('anthropic-messages', { messages: [] })).toMatchObject({
      outputField: 'max_tokens',
      outputTokens: 4096,
    });
    expect(none('gemini', { contents: [], generationConfig: { candidateCount: 2 } })).toMatchObject({
      outputField: 'generationConfig.maxOutputTokens',
      choices: 2,
    });
    expect(none(null, { contents: [] }).outputField).toBe('generationConfig.maxOutputTokens');
    expect(none(null, { messages: [] }).outputField).toBeNull();
    // n must be a whole number above 0; max_tokens too.
    expect(none('openai-chat', { messages: [], n: 0, max_tokens: 0 })).toMatchObject({
      choices: 1,
      outputTokens: 4096,
      outputRequested: false,
    });
    expect(none('openai-chat', { messages: [], n: 1.5, max_tokens: 2.5 })).toMatchObject({
      choices: 1,
      outputTokens: 4096,
    });
  });

  it('a file it cannot read takes the context window: the price table one, else 2,000,000', () => {
    const body = { messages: [{ role: 'user', content: [{ type: 'file', file: { file_id: 'file-abc' } }] }] };
    const unknown = boundCall('unknown-model', 'openai-chat', body, undefined, {
      defaultMaxOutputTokens: 1,
      precise: true,
    });
    const empty = boundCall(
      'unknown-model',
      'openai-chat',
      { messages: [{ role: 'user', content: [] }] },
      undefined,
      {
        defaultMaxOutputTokens: 1,
        precise: true,
      },
    );
    expect(unknown.inputTokens - empty.inputTokens).toBe(2_000_000);
  });
});
