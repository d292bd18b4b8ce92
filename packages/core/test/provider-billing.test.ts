import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  type BillingFormat,
  type BillingRules,
  countPdfPages,
  decodeImageSize,
  decodeWav,
  encodingForModel,
  providerPromptUsage,
} from '../src/testing/provider-billing.js';
import {
  dataUrl,
  gif,
  jpeg,
  png,
  TWO_PAGE_PDF,
  wav,
  webpExtended,
  webpLossless,
  webpLossy,
} from './fixtures/media-bytes.js';

// Every expected number below is worked out by hand from the provider's published rule (see
// docs/simulator.md, "How the simulator bills"); token splits of the text are written out where they
// matter, as tiktoken splits them ("hello", " world" = 2 tokens in both cl100k_base and o200k_base).

type Body = Record<string, unknown>;

function prompt(format: BillingFormat, model: string, body: Body, rules: Partial<BillingRules> = {}): number {
  return providerPromptUsage(body, format, model, rules).prompt;
}

/** One user message holding `part` only: 3 priming + 3 per message + "user" 1 = 7 tokens besides it. */
function chatPart(part: unknown): Body {
  return { messages: [{ role: 'user', content: [part] }] };
}

const PNG_1024 = dataUrl('image/png', png(1024, 1024));
const WAV_1_5_S = wav(16_000, 1, 48_000); // 16 kHz, 16-bit mono = 32,000 B/s; 48,000 B = 1.5 s
const WEATHER_FUNCTION = {
  name: 'get_weather',
  description: 'Get the weather.',
  parameters: {
    type: 'object',
    properties: {
      location: { type: 'string', description: 'City name.' },
      unit: { type: 'string', enum: ['c', 'f'] },
    },
  },
};

describe('decoding media headers', () => {
  it('reads the size of PNG, GIF, JPEG (baseline, progressive) and WebP (lossy, lossless, extended)', () => {
    expect(decodeImageSize(png(300, 200))).toEqual({ width: 300, height: 200 });
    expect(decodeImageSize(gif(640, 480))).toEqual({ width: 640, height: 480 });
    // The APP1 segment holds a decoy FF C0 frame of 1 x 1: segments must be walked by their lengths.
    expect(decodeImageSize(jpeg(1200, 900))).toEqual({ width: 1200, height: 900 });
    expect(decodeImageSize(jpeg(1200, 900, true))).toEqual({ width: 1200, height: 900 });
    // The VP8 size fields carry 2 scaling bits above the 14-bit size.
    expect(decodeImageSize(webpLossy(800, 600))).toEqual({ width: 800, height: 600 });
    expect(decodeImageSize(webpLossless(800, 600))).toEqual({ width: 800, height: 600 });
    expect(decodeImageSize(webpExtended(4096, 8192))).toEqual({ width: 4096, height: 8192 });
    expect(decodeImageSize(webpLossless(16_384, 1))).toEqual({ width: 16_384, height: 1 });
  });

  it('gives null for bytes it cannot read', () => {
    expect(decodeImageSize(Buffer.from('not an image at all, just some text'))).toBeNull();
    expect(decodeImageSize(png(10, 10).subarray(0, 20))).toBeNull();
    expect(decodeImageSize(Buffer.alloc(0))).toBeNull();
    // Scan data before any frame header: no size.
    expect(decodeImageSize(Buffer.from([0xff, 0xd8, 0xff, 0xda, 0x00, 0x02, 0xff, 0xd9]))).toBeNull();
    expect(decodeImageSize(png(0, 10))).toBeNull();
  });

  it('reads a WAV file’s data size and byte rate, skipping a padded odd-length chunk', () => {
    expect(decodeWav(WAV_1_5_S)).toEqual({ dataBytes: 48_000, byteRate: 32_000 });
    // 44.1 kHz stereo 16-bit: 44,100 x 2 x 2 = 176,400 B/s.
    expect(decodeWav(wav(44_100, 2, 1000))).toEqual({ dataBytes: 1000, byteRate: 176_400 });
    expect(decodeWav(Buffer.from('ID3 this is an mp3'))).toBeNull();
  });

  it('counts a PDF’s page objects, not its page-tree nodes, and at least one', () => {
    expect(TWO_PAGE_PDF.length).toBe(298);
    expect(countPdfPages(TWO_PAGE_PDF)).toBe(2);
    expect(countPdfPages(Buffer.from('%PDF-1.7 compressed object streams hide the pages'))).toBe(1);
  });
});

describe('tokenizer choice', () => {
  it('uses o200k_base for the newer OpenAI families, provider prefixes ignored, cl100k_base else', () => {
    for (const model of [
      'gpt-4o',
      'openai/gpt-4o-mini',
      'chatgpt-4o-latest',
      'gpt-4.1-nano',
      'gpt-4.5-preview',
    ]) {
      expect(encodingForModel(model), model).toBe('o200k_base');
    }
    for (const model of [
      'gpt-5.1',
      'azure/gpt-5-mini',
      'gpt-oss-120b',
      'o1',
      'o3-mini',
      'ft:o4-mini:acme::x',
    ]) {
      expect(encodingForModel(model), model).toBe('o200k_base');
    }
    for (const model of ['gpt-4', 'gpt-3.5-turbo', 'text-embedding-3-small', 'claude-sonnet-4-5', 'o10']) {
      expect(encodingForModel(model), model).toBe('cl100k_base');
    }
  });
});

describe('OpenAI chat completions', () => {
  it('counts text by the cookbook: 3 per message, +1 per name, +3 reply priming', () => {
    const messages = [
      { role: 'system', content: 'You are a helpful assistant.' },
      { role: 'user', content: 'Say hello.' },
    ];
    // 3 + [3 + "system" 1 + You/ are/ a/ helpful/ assistant/. 6] + [3 + "user" 1 + Say/ hello/. 3] = 20
    expect(prompt('openai-chat', 'gpt-4o', { messages })).toBe(20);
    expect(prompt('openai-chat', 'gpt-4', { messages })).toBe(20);
    // 3 + [3 + "user" 1 + "bob" 1 + name 1 + "hello" 1] = 10
    expect(
      prompt('openai-chat', 'gpt-4o', { messages: [{ role: 'user', name: 'bob', content: 'hello' }] }),
    ).toBe(10);
  });

  it('counts tool calls by function name and arguments, and every string field of a tool message', () => {
    const messages = [
      {
        role: 'assistant',
        content: null,
        tool_calls: [{ id: 'c1', type: 'function', function: { name: 'get_weather', arguments: '{}' } }],
      },
      { role: 'tool', tool_call_id: 'c1', content: 'sunny' },
    ];
    // 3 + [3 + "assistant" 1 + get/_weather 2 + {} 1] + [3 + "tool" 1 + c/1 2 + sun/ny 2] = 3 + 7 + 8 = 18
    expect(prompt('openai-chat', 'gpt-4o', { messages })).toBe(18);
  });

  it('bills a high-detail image by 512 px tiles after fitting 2048 and a 768 px shortest side', () => {
    const text = { type: 'text', text: 'Describe this.' };
    const image = { type: 'image_url', image_url: { url: PNG_1024 } };
    // 1024 x 1024: shortest side 1024 > 768, so 768 x 768: 2 x 2 tiles: 85 + 170 x 4 = 765;
    // 3 + [3 + "user" 1 + Describe/ this/. 3 + 765] = 775
    expect(prompt('openai-chat', 'gpt-4o', { messages: [{ role: 'user', content: [text, image] }] })).toBe(
      775,
    );
    // The vision guide's example: 2048 x 4096 fits 2048 as 1024 x 2048, then 768 x 1536: 2 x 3 tiles,
    // 85 + 170 x 6 = 1105 (+ 7)
    const tall = {
      type: 'image_url',
      image_url: { url: dataUrl('image/gif', gif(2048, 4096)), detail: 'high' },
    };
    expect(prompt('openai-chat', 'gpt-4o', chatPart(tall))).toBe(1112);
    // 4096 x 8192 scales twice to the same 768 x 1536: 1105 (+ 7)
    const huge = { type: 'image_url', image_url: { url: dataUrl('image/webp', webpExtended(4096, 8192)) } };
    expect(prompt('openai-chat', 'gpt-4o', chatPart(huge))).toBe(1112);
    // 500 x 300 is never scaled up: 1 x 1 tile, 85 + 170 = 255 (+ 7)
    const small = {
      type: 'image_url',
      image_url: { url: dataUrl('image/jpeg', jpeg(500, 300)), detail: 'auto' },
    };
    expect(prompt('openai-chat', 'gpt-4o', chatPart(small))).toBe(262);
    // 1600 x 800: shortest 800 > 768, so 1536 x 768: 3 x 2 tiles, 85 + 170 x 6 = 1105 (+ 7)
    const wide = { type: 'image_url', image_url: { url: dataUrl('image/png', png(1600, 800)) } };
    expect(prompt('openai-chat', 'openai/gpt-4o', chatPart(wide))).toBe(1112);
  });

  it('bills a low-detail image a flat 85 (gpt-4o-mini: 2833), and gpt-4o-mini tiles at 2833 + 5667 each', () => {
    const low = { type: 'image_url', image_url: { url: PNG_1024, detail: 'low' } };
    expect(prompt('openai-chat', 'gpt-4o', chatPart(low))).toBe(85 + 7);
    expect(prompt('openai-chat', 'gpt-4o-mini', chatPart(low))).toBe(2833 + 7);
    // 1024 x 1024 -> 768 x 768, 4 tiles: 2833 + 5667 x 4 = 25,501
    const high = { type: 'image_url', image_url: { url: PNG_1024 } };
    expect(prompt('openai-chat', 'gpt-4o-mini-2024-07-18', chatPart(high))).toBe(25_501 + 7);
  });

  it('bills patch-based models by 32 px patches times the model multiplier, rounded up', () => {
    const image = (url: string) => chatPart({ type: 'image_url', image_url: { url, detail: 'low' } });
    // 1024 x 1024 = 32 x 32 = 1024 patches: x 1.62 = 1658.88 -> 1659; x 2.46 = 2519.04 -> 2520; x 1.72 = 1761.28 -> 1762
    expect(prompt('openai-chat', 'gpt-4.1-mini', image(PNG_1024))).toBe(1659 + 7);
    expect(prompt('openai-chat', 'gpt-4.1-nano-2025-04-14', image(PNG_1024))).toBe(2520 + 7);
    expect(prompt('openai-chat', 'o4-mini', image(PNG_1024))).toBe(1762 + 7);
    // 100 x 100: 4 x 4 = 16 patches x 1.62 = 25.92 -> 26
    expect(prompt('openai-chat', 'gpt-4.1-mini', image(dataUrl('image/png', png(100, 100))))).toBe(26 + 7);
    // The guide's example: 1800 x 2400 is 57 x 75 = 4275 patches > 1536. r = sqrt(32^2 x 1536 / (1800 x 2400))
    // = 0.6034; 1800r/32 = 33.94, 2400r/32 = 45.25; r x= min(33/33.94, 45/45.25), so 1056 x 1408:
    // 33 x 44 = 1452 patches; x 1.62 = 2352.24 -> 2353
    expect(prompt('openai-chat', 'gpt-4.1-mini', image(dataUrl('image/jpeg', jpeg(1800, 2400))))).toBe(
      2353 + 7,
    );
  });

  it('assumes remoteImageSize for an http(s) URL or bytes it cannot read', () => {
    const remote = chatPart({ type: 'image_url', image_url: { url: 'https://example.com/cat.png' } });
    expect(prompt('openai-chat', 'gpt-4o', remote)).toBe(765 + 7); // 1024 x 1024 by default
    // 512 x 512: 1 tile, 85 + 170 = 255
    expect(prompt('openai-chat', 'gpt-4o', remote, { remoteImageSize: { width: 512, height: 512 } })).toBe(
      255 + 7,
    );
    const garbage = chatPart({ type: 'image_url', image_url: { url: 'data:image/png;base64,AAAAAAAA' } });
    expect(prompt('openai-chat', 'gpt-4o', garbage)).toBe(765 + 7);
  });

  it('bills input audio at 10 tokens a second, rounded up, in the prompt and as audio', () => {
    const audio = (data: Buffer, format: string) =>
      chatPart({ type: 'input_audio', input_audio: { data: data.toString('base64'), format } });
    // WAV: 48,000 B / 32,000 B/s = 1.5 s -> 15 tokens
    expect(providerPromptUsage(audio(WAV_1_5_S, 'wav'), 'openai-chat', 'gpt-4o-audio-preview')).toEqual({
      prompt: 15 + 7,
      audioIn: 15,
      webSearches: 0,
    });
    // mp3: 3000 B at the assumed 2000 B/s = 1.5 s -> 15; 3001 B = 1.5005 s -> 15.005 -> 16
    expect(providerPromptUsage(audio(Buffer.alloc(3000, 7), 'mp3'), 'openai-chat', 'gpt-4o').audioIn).toBe(
      15,
    );
    expect(providerPromptUsage(audio(Buffer.alloc(3001, 7), 'mp3'), 'openai-chat', 'gpt-4o').audioIn).toBe(
      16,
    );
  });

  it('bills a PDF at 765 per page plus a quarter token per byte; by id, remoteFilePages pages', () => {
    const inline = chatPart({
      type: 'file',
      file: { filename: 'a.pdf', file_data: dataUrl('application/pdf', TWO_PAGE_PDF) },
    });
    // 2 pages x 765 + ceil(298 / 4) = 1530 + 75 = 1605
    expect(prompt('openai-chat', 'gpt-4o', inline)).toBe(1605 + 7);
    const byId = chatPart({ type: 'file', file: { file_id: 'file-abc' } });
    expect(prompt('openai-chat', 'gpt-4o', byId)).toBe(765 + 7);
    expect(prompt('openai-chat', 'gpt-4o', byId, { remoteFilePages: 3 })).toBe(2295 + 7);
  });

  it('bills function definitions by the cookbook formula (func_init 7 for o200k models, 10 else)', () => {
    const messages = [{ role: 'user', content: 'hello' }]; // 3 + [3 + 1 + 1] = 8
    // 7 + get/_weather/:Get/ the/ weather 5 + prop_init 3
    //   + location: 3 + location/:string/:/City/ name 5
    //   + unit: 3 - 3 (enum) + (3 + "c" 1) + (3 + "f" 1) + unit/:string/: 3
    //   + func_end 12 = 46
    const tools = [{ type: 'function', function: WEATHER_FUNCTION }];
    expect(prompt('openai-chat', 'gpt-4o', { messages, tools })).toBe(8 + 46);
    expect(prompt('openai-chat', 'gpt-4', { messages, tools })).toBe(8 + 49);
    expect(prompt('openai-chat', 'gpt-4o', { messages, functions: [WEATHER_FUNCTION] })).toBe(8 + 46);
    // Two functions: func_end once. The second, { name: "f" }: 7 + "f:" (f/: 2) = 9
    expect(
      prompt('openai-chat', 'gpt-4o', {
        messages,
        tools: [...tools, { type: 'function', function: { name: 'f' } }],
      }),
    ).toBe(8 + 46 + 9);
  });

  it('bills a JSON-schema response_format as its JSON tokens + 8', () => {
    const responseFormat = { type: 'json_schema', json_schema: { name: 'r', schema: { type: 'object' } } };
    // {"/name/":"/r/","/schema/":{"/type/":"/object/"}} = 11, + 8 = 19
    const body = { messages: [{ role: 'user', content: 'hello' }], response_format: responseFormat };
    expect(prompt('openai-chat', 'gpt-4o', body)).toBe(8 + 19);
    expect(prompt('openai-chat', 'gpt-4o', { ...body, response_format: { type: 'json_object' } })).toBe(8);
  });

  it('bills a part 0 when its billing is off', () => {
    const image = chatPart({ type: 'image_url', image_url: { url: PNG_1024 } });
    expect(prompt('openai-chat', 'gpt-4o', image, { images: false })).toBe(7);
    const audio = chatPart({
      type: 'input_audio',
      input_audio: { data: WAV_1_5_S.toString('base64'), format: 'wav' },
    });
    expect(providerPromptUsage(audio, 'openai-chat', 'gpt-4o', { audio: false })).toEqual({
      prompt: 7,
      audioIn: 0,
      webSearches: 0,
    });
    expect(
      prompt('openai-chat', 'gpt-4o', chatPart({ type: 'file', file: { file_id: 'f' } }), { files: false }),
    ).toBe(7);
    const tools = [{ type: 'function', function: WEATHER_FUNCTION }];
    expect(prompt('openai-chat', 'gpt-4o', { messages: [], tools }, { tools: false })).toBe(3);
  });
});

describe('OpenAI Responses', () => {
  it('counts instructions as a system message and a string input as a user message', () => {
    // 3 + [3 + "system" 1 + Be/ brief/. 3] + [3 + "user" 1 + "hello" 1] = 15
    expect(prompt('openai-responses', 'gpt-4o', { instructions: 'Be brief.', input: 'hello' })).toBe(15);
  });

  it('counts message items as chat messages and other items by the strings they hold', () => {
    const input = [
      {
        role: 'user',
        content: [
          { type: 'input_text', text: 'hello' },
          { type: 'input_image', image_url: PNG_1024, detail: 'low' },
        ],
      },
      { type: 'function_call', call_id: 'c1', name: 'get_weather', arguments: '{}' },
      { type: 'function_call_output', call_id: 'c1', output: 'sunny' },
    ];
    // 3 + [3 + "user" 1 + "hello" 1 + low image 85] = 93
    //   + [3 + function/_call 2 + c/1 2 + get/_weather 2 + name 1 + {} 1] = 11 -> 104
    //   + [3 + function/_call/_output 3 + c/1 2 + sun/ny 2] = 10 -> 114
    expect(prompt('openai-responses', 'gpt-4o', { input })).toBe(114);
  });

  it('bills input_file parts and function tools', () => {
    const file = (part: Body) => ({ input: [{ role: 'user', content: [{ type: 'input_file', ...part }] }] });
    // 3 + [3 + 1 + (2 x 765 + ceil(298 / 4))] = 7 + 1605
    expect(
      prompt('openai-responses', 'gpt-4o', file({ file_data: dataUrl('application/pdf', TWO_PAGE_PDF) })),
    ).toBe(1612);
    expect(prompt('openai-responses', 'gpt-4o', file({ file_url: 'https://example.com/a.pdf' }))).toBe(772);
    expect(prompt('openai-responses', 'gpt-4o', file({ file_id: 'file-1' }), { remoteFilePages: 2 })).toBe(
      1537,
    );
    // 8 + 46 (as in chat); a built-in tool bills no definition
    const tools = [{ type: 'function', ...WEATHER_FUNCTION }, { type: 'web_search' }];
    expect(prompt('openai-responses', 'gpt-4o', { input: 'hello', tools })).toBe(54);
  });
});

describe('OpenAI embeddings', () => {
  it('counts strings with cl100k_base and token arrays by their length', () => {
    const model = 'text-embedding-3-small';
    expect(prompt('openai-embeddings', model, { input: 'hello world' })).toBe(2);
    expect(prompt('openai-embeddings', model, { input: ['hello', 'hello world'] })).toBe(3);
    expect(prompt('openai-embeddings', model, { input: [1, 2, 3] })).toBe(3);
    expect(prompt('openai-embeddings', model, { input: [[1, 2, 3], [4]] })).toBe(4);
  });
});

describe('Anthropic messages', () => {
  const model = 'claude-sonnet-4-5';
  const user = (content: unknown) => ({ messages: [{ role: 'user', content }] });

  it('counts each text as ceil(1.2 x cl100k), +4 per message, +8 for a system prompt', () => {
    // system: 8 + ceil(1.2 x 2) = 11; message: 4 + ceil(1.2 x 1) = 6
    expect(prompt('anthropic-messages', model, { system: 'hello world', ...user('hello') })).toBe(17);
    // Each block on its own: 8 + 3 + 2, then 4 + 3
    const system = [
      { type: 'text', text: 'hello world' },
      { type: 'text', text: 'hello' },
    ];
    expect(
      prompt('anthropic-messages', model, { system, ...user([{ type: 'text', text: 'hello world' }]) }),
    ).toBe(20);
    // get/_weather/:Get/ the/ weather: 5 tokens x 1.2 = 6 exactly, not rounded up: 4 + 6
    expect(prompt('anthropic-messages', model, user('get_weather:Get the weather'))).toBe(10);
    expect(prompt('anthropic-messages', model, { system: '', ...user('hello') })).toBe(6);
  });

  it('bills images as w x h / 750 (long edge at most 1568, at most 1600 tokens)', () => {
    const image = (source: Body) => user([{ type: 'image', source }]);
    const base64 = (bytes: Buffer, mediaType = 'image/png') =>
      image({ type: 'base64', media_type: mediaType, data: bytes.toString('base64') });
    // 1092 x 1092 = 1,192,464 / 750 = 1589.95 -> 1590 (+ 4)
    expect(prompt('anthropic-messages', model, base64(png(1092, 1092)))).toBe(1594);
    // 1000 x 750 = 750,000 / 750 = 1000 exactly
    expect(prompt('anthropic-messages', model, base64(gif(1000, 750), 'image/gif'))).toBe(1004);
    // 200 x 200 = 40,000 / 750 = 53.3 -> 54
    expect(prompt('anthropic-messages', model, base64(png(200, 200)))).toBe(58);
    // 4000 x 3000: long edge to 1568, 1568 x 1176 = 1,843,968 / 750 = 2458.6 -> capped at 1600
    expect(prompt('anthropic-messages', model, base64(jpeg(4000, 3000), 'image/jpeg'))).toBe(1604);
    // By URL: 1024 x 1024 = 1,048,576 / 750 = 1398.1 -> 1399
    expect(
      prompt('anthropic-messages', model, image({ type: 'url', url: 'https://example.com/a.png' })),
    ).toBe(1403);
    expect(
      prompt('anthropic-messages', model, image({ type: 'file', file_id: 'file_1' }), { images: false }),
    ).toBe(4);
  });

  it('bills PDF documents at 2000 + 1149 a page, and text documents as text', () => {
    const document = (source: Body) => user([{ type: 'document', source }]);
    const pdf = { type: 'base64', media_type: 'application/pdf', data: TWO_PAGE_PDF.toString('base64') };
    expect(prompt('anthropic-messages', model, document(pdf))).toBe(2 * 3149 + 4);
    expect(
      prompt('anthropic-messages', model, document({ type: 'url', url: 'https://example.com/a.pdf' })),
    ).toBe(3153);
    const text = { type: 'text', media_type: 'text/plain', data: 'hello world' };
    expect(prompt('anthropic-messages', model, document(text))).toBe(3 + 4);
  });

  it('bills tool results: their text and their images', () => {
    const result = {
      type: 'tool_result',
      tool_use_id: 't1',
      content: [
        { type: 'text', text: 'hello' },
        { type: 'image', source: { type: 'url', url: 'https://example.com/a.png' } },
      ],
    };
    // 4 + ceil(1.2) 2 + 1399
    expect(prompt('anthropic-messages', model, user([result]))).toBe(1405);
    expect(prompt('anthropic-messages', model, user([{ ...result, content: 'hello world' }]))).toBe(7);
  });

  it('bills tools: the tool-use system prompt by tool_choice + ceil(1.2 x cl100k(JSON)) per tool', () => {
    const echo = { name: 'echo', input_schema: { type: 'object' } };
    // {"/name/":"/echo/","/input/_schema/":{"/type/":"/object/"}} = 12 tokens: ceil(14.4) = 15
    const body = { ...user('hello'), tools: [echo] };
    expect(prompt('anthropic-messages', model, body)).toBe(6 + 346 + 15);
    expect(prompt('anthropic-messages', model, { ...body, tool_choice: { type: 'auto' } })).toBe(367);
    expect(prompt('anthropic-messages', model, { ...body, tool_choice: { type: 'none' } })).toBe(367);
    expect(prompt('anthropic-messages', model, { ...body, tool_choice: { type: 'any' } })).toBe(6 + 313 + 15);
    expect(
      prompt('anthropic-messages', model, { ...body, tool_choice: { type: 'tool', name: 'echo' } }),
    ).toBe(334);
    expect(prompt('anthropic-messages', model, body, { tools: false })).toBe(6);
  });

  it('runs one web search per call offering the tool, which bills no definition tokens', () => {
    const search = { type: 'web_search_20250305', name: 'web_search', max_uses: 5 };
    expect(providerPromptUsage({ ...user('hello'), tools: [search] }, 'anthropic-messages', model)).toEqual({
      prompt: 6,
      audioIn: 0,
      webSearches: 1,
    });
    const both = { ...user('hello'), tools: [search, { name: 'echo', input_schema: { type: 'object' } }] };
    expect(providerPromptUsage(both, 'anthropic-messages', model)).toEqual({
      prompt: 367,
      audioIn: 0,
      webSearches: 1,
    });
    const { max_uses: _, ...unlimited } = search;
    expect(
      providerPromptUsage({ ...user('hello'), tools: [unlimited] }, 'anthropic-messages', model).webSearches,
    ).toBe(1);
    const none = { ...user('hello'), tools: [{ ...search, max_uses: 0 }] };
    expect(providerPromptUsage(none, 'anthropic-messages', model).webSearches).toBe(0);
    const off = providerPromptUsage({ ...user('hello'), tools: [search] }, 'anthropic-messages', model, {
      webSearch: false,
    });
    expect(off.webSearches).toBe(0);
  });
});

describe('Gemini', () => {
  const model = 'gemini-2.5-flash';
  const parts = (...list: unknown[]) => ({ contents: [{ role: 'user', parts: list }] });
  const inline = (mimeType: string, bytes: Buffer) => ({
    inlineData: { mimeType, data: bytes.toString('base64') },
  });

  it('counts text parts as ceil(UTF-16 length / 4)', () => {
    // "Be brief." 9 -> 3; "hello world" 11 -> 3
    const body = { systemInstruction: { parts: [{ text: 'Be brief.' }] }, ...parts({ text: 'hello world' }) };
    expect(prompt('gemini', model, body)).toBe(6);
    // Two emoji are 4 UTF-16 units -> 1; "héllo" 5 -> 2
    expect(prompt('gemini', model, parts({ text: '😀😀' }, { text: 'héllo' }))).toBe(3);
  });

  it('bills images at 258 (both sides <= 384) or 258 per 768 px tile after fitting 3072', () => {
    expect(prompt('gemini', model, parts(inline('image/png', png(384, 384))))).toBe(258);
    // 1024 x 1024: 2 x 2 tiles = 1032
    expect(prompt('gemini', model, parts(inline('image/png', png(1024, 1024))))).toBe(1032);
    // 1600 x 300: 3 x 1 tiles = 774
    expect(prompt('gemini', model, parts(inline('image/gif', gif(1600, 300))))).toBe(774);
    // 4000 x 3000 fits 3072 as 3072 x 2304: 4 x 3 tiles = 3096
    expect(prompt('gemini', model, parts(inline('image/jpeg', jpeg(4000, 3000))))).toBe(3096);
    // By URI: 1024 x 1024; the snake_case spelling is read too
    expect(
      prompt('gemini', model, parts({ fileData: { mimeType: 'image/png', fileUri: 'gs://b/a.png' } })),
    ).toBe(1032);
    const snake = { inline_data: { mime_type: 'image/png', data: png(100, 100).toString('base64') } };
    expect(prompt('gemini', model, parts(snake))).toBe(258);
  });

  it('bills audio at 32 tokens a second, in the prompt and as audio', () => {
    // 1.5 s x 32 = 48
    expect(providerPromptUsage(parts(inline('audio/wav', WAV_1_5_S)), 'gemini', model)).toEqual({
      prompt: 48,
      audioIn: 48,
      webSearches: 0,
    });
    // 3000 B at 2000 B/s = 1.5 s -> 48
    expect(prompt('gemini', model, parts(inline('audio/mp3', Buffer.alloc(3000, 1))))).toBe(48);
    // By URI: remoteAudioSeconds (60 by default) x 32
    const remote = parts({ fileData: { mimeType: 'audio/mpeg', fileUri: 'gs://b/a.mp3' } });
    expect(prompt('gemini', model, remote)).toBe(1920);
    expect(providerPromptUsage(remote, 'gemini', model, { remoteAudioSeconds: 10 }).audioIn).toBe(320);
  });

  it('bills PDFs at 258 a page and tools as ceil(JSON length / 4)', () => {
    expect(prompt('gemini', model, parts(inline('application/pdf', TWO_PAGE_PDF)))).toBe(516);
    expect(
      prompt('gemini', model, parts({ fileData: { mimeType: 'application/pdf', fileUri: 'gs://b/a' } })),
    ).toBe(258);
    // [{"functionDeclarations":[{"name":"echo"}]}] is 44 characters -> 11
    const tools = [{ functionDeclarations: [{ name: 'echo' }] }];
    expect(prompt('gemini', model, { ...parts({ text: 'hello' }), tools })).toBe(2 + 11);
    expect(prompt('gemini', model, { ...parts({ text: 'hello' }), tools }, { tools: false })).toBe(2);
  });
});

describe('independence from the guard', () => {
  it('the simulator and its billing import nothing from the guard’s metering or pricing', () => {
    for (const file of ['simulator.ts', 'provider-billing.ts']) {
      const source = readFileSync(new URL(`../src/testing/${file}`, import.meta.url), 'utf8');
      const imports = [...source.matchAll(/^import[^;]*from '([^']+)';/gm)].map((match) => match[1]);
      expect(imports.length, file).toBeGreaterThan(0);
      for (const path of imports) expect(path, file).not.toMatch(/(?:^|\/)(?:metering|pricing)\//);
    }
  });
});
