// The simulator bills images, audio, files, tools and web searches as the providers do, seen through
// the official clients over HTTP. Expected numbers are worked by hand from the rules (the same rules
// provider-billing.test.ts works through one by one).
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Simulator, startSimulator } from '../src/testing/simulator.js';
import { dataUrl, png, TWO_PAGE_PDF, wav } from './fixtures/media-bytes.js';

let simulator: Simulator;
let openai: OpenAI;
let anthropic: Anthropic;

beforeAll(async () => {
  simulator = await startSimulator();
  openai = new OpenAI({ baseURL: simulator.url, apiKey: 'sk-test', maxRetries: 0 });
  anthropic = new Anthropic({ baseURL: simulator.origin, apiKey: 'sk-test', maxRetries: 0 });
});

afterAll(async () => {
  await simulator.close();
});

const PNG_1024 = dataUrl('image/png', png(1024, 1024));
const PNG_1092 = png(1092, 1092).toString('base64');
const WAV_1_5_S = wav(16_000, 1, 48_000).toString('base64'); // 32,000 B/s, 48,000 B: 1.5 s
const PDF_BASE64 = TWO_PAGE_PDF.toString('base64'); // 298 bytes, 2 pages

describe('OpenAI chat completions through the openai client', () => {
  it('bills an image part (JSON and streamed alike)', async () => {
    const messages: OpenAI.ChatCompletionMessageParam[] = [
      {
        role: 'user',
        content: [
          { type: 'text', text: 'Describe this.' },
          { type: 'image_url', image_url: { url: PNG_1024, detail: 'high' } },
        ],
      },
    ];
    // 3 + [3 + "user" 1 + Describe/ this/. 3 + (85 + 170 x 4 tiles of 768 x 768)] = 775
    const completion = await openai.chat.completions.create({ model: 'gpt-4o', messages, max_tokens: 2 });
    expect(completion.usage).toMatchObject({ prompt_tokens: 775, completion_tokens: 2, total_tokens: 777 });

    const stream = await openai.chat.completions.create({
      model: 'gpt-4o',
      messages,
      max_tokens: 2,
      stream: true,
      stream_options: { include_usage: true },
    });
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) usage = chunk.usage ?? usage;
    expect(usage?.prompt_tokens).toBe(775);
  });

  it('bills input audio in the prompt and reports it as audio tokens', async () => {
    const completion = await openai.chat.completions.create({
      model: 'gpt-4o-audio-preview',
      messages: [
        { role: 'user', content: [{ type: 'input_audio', input_audio: { data: WAV_1_5_S, format: 'wav' } }] },
      ],
    });
    // 1.5 s x 10 = 15 audio tokens; 3 + [3 + "user" 1] + 15 = 22
    expect(completion.usage?.prompt_tokens).toBe(22);
    expect(completion.usage?.prompt_tokens_details).toEqual({ cached_tokens: 0, audio_tokens: 15 });
  });

  it('bills a PDF file part and function tools', async () => {
    const file = await openai.chat.completions.create({
      model: 'gpt-4o',
      messages: [
        {
          role: 'user',
          content: [
            {
              type: 'file',
              file: { filename: 'a.pdf', file_data: dataUrl('application/pdf', TWO_PAGE_PDF) },
            },
          ],
        },
      ],
    });
    // 7 + 2 pages x 765 + ceil(298 / 4) = 7 + 1530 + 75
    expect(file.usage?.prompt_tokens).toBe(1612);

    const tools = await openai.chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: 'hello' }],
      tools: [
        {
          type: 'function',
          function: {
            name: 'get_weather',
            description: 'Get the weather.',
            parameters: {
              type: 'object',
              properties: {
                location: { type: 'string', description: 'City name.' },
                unit: { type: 'string', enum: ['c', 'f'] },
              },
            },
          },
        },
      ],
    });
    // 8 + 7 + 5 + 3 + (3 + 5) + (3 - 3 + 4 + 4 + 3) + 12 = 8 + 46
    expect(tools.usage?.prompt_tokens).toBe(54);
  });
});

describe('OpenAI Responses and embeddings through the openai client', () => {
  it('bills an input_image as input_tokens', async () => {
    const response = await openai.responses.create({
      model: 'gpt-4o',
      instructions: 'Be brief.',
      input: [
        {
          role: 'user',
          content: [
            { type: 'input_text', text: 'hello' },
            { type: 'input_image', image_url: PNG_1024, detail: 'high' },
          ],
        },
      ],
      max_output_tokens: 3,
    });
    // 3 + [3 + "system" 1 + Be/ brief/. 3] + [3 + "user" 1 + "hello" 1 + 765] = 3 + 7 + 770
    expect(response.usage).toMatchObject({ input_tokens: 780, output_tokens: 3, total_tokens: 783 });
  });

  it('bills an input_file given by URL as remoteFilePages pages', async () => {
    const response = await openai.responses.create({
      model: 'gpt-4o',
      input: [{ role: 'user', content: [{ type: 'input_file', file_url: 'https://example.com/a.pdf' }] }],
    });
    expect(response.usage?.input_tokens).toBe(3 + 3 + 1 + 765);
  });

  it('counts embeddings input with cl100k_base', async () => {
    const embeddings = await openai.embeddings.create({
      model: 'text-embedding-3-small',
      input: ['hello', 'hello world'],
    });
    expect(embeddings.usage).toEqual({ prompt_tokens: 3, total_tokens: 3 });
  });
});

describe('Anthropic messages through the @anthropic-ai/sdk client', () => {
  const request = {
    model: 'claude-haiku-4-5',
    max_tokens: 4,
    system: 'hello world',
    messages: [
      {
        role: 'user' as const,
        content: [
          {
            type: 'image' as const,
            source: { type: 'base64' as const, media_type: 'image/png' as const, data: PNG_1092 },
          },
          {
            type: 'document' as const,
            source: { type: 'base64' as const, media_type: 'application/pdf' as const, data: PDF_BASE64 },
          },
          { type: 'text' as const, text: 'hello' },
        ],
      },
    ],
    tools: [
      { name: 'echo', input_schema: { type: 'object' as const } },
      { type: 'web_search_20250305' as const, name: 'web_search' as const, max_uses: 3 },
    ],
  };
  // system 8 + ceil(1.2 x 2) 3; message 4 + image 1092 x 1092 / 750 = 1589.95 -> 1590 + PDF 2 x 3149
  // + ceil(1.2 x 1) 2; tools: 346 + ceil(1.2 x 12) 15 (the web search tool bills no definition)
  const inputTokens = 11 + 4 + 1590 + 6298 + 2 + 346 + 15;

  it('bills images, PDFs and tools as input_tokens and reports the web search it ran', async () => {
    expect(inputTokens).toBe(8266);
    const message = await anthropic.messages.create(request);
    expect(message.usage).toMatchObject({
      input_tokens: 8266,
      output_tokens: 4,
      server_tool_use: { web_search_requests: 1 },
    });
  });

  it('streams the same: input on message_start, the search with the final usage', async () => {
    const stream = anthropic.messages.stream(request);
    let startInput: number | undefined;
    stream.on('streamEvent', (event) => {
      if (event.type === 'message_start') startInput = event.message.usage.input_tokens;
    });
    const message = await stream.finalMessage();
    expect(startInput).toBe(8266);
    expect(message.usage.server_tool_use).toEqual({ web_search_requests: 1 });
  });

  it('reports no server_tool_use when no search ran', async () => {
    const message = await anthropic.messages.create({
      model: 'claude-haiku-4-5',
      max_tokens: 1,
      messages: [{ role: 'user', content: 'hello' }],
    });
    expect(message.usage.input_tokens).toBe(6); // 4 + ceil(1.2 x 1)
    expect(message.usage).not.toHaveProperty('server_tool_use');
  });
});

describe('Gemini over HTTP', () => {
  it('bills inline audio and reports it under the AUDIO modality', async () => {
    const response = await fetch(`${simulator.origin}/v1beta/models/gemini-2.5-flash:generateContent`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        contents: [
          {
            role: 'user',
            parts: [{ text: 'hello world' }, { inlineData: { mimeType: 'audio/wav', data: WAV_1_5_S } }],
          },
        ],
      }),
    });
    const body = (await response.json()) as { usageMetadata: Record<string, unknown> };
    // "hello world" 11 characters -> 3; 1.5 s x 32 = 48
    expect(body.usageMetadata).toMatchObject({
      promptTokenCount: 51,
      promptTokensDetails: [
        { modality: 'TEXT', tokenCount: 3 },
        { modality: 'AUDIO', tokenCount: 48 },
      ],
    });
  });
});

describe('billing options', () => {
  const imageByUrl = (client: OpenAI) =>
    client.chat.completions.create({
      model: 'gpt-4o',
      messages: [
        { role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://example.com/a.png' } }] },
      ],
    });

  it('bills a part 0 when told, and assumes remoteImageSize for a URL', async () => {
    const off = await startSimulator({ billing: { images: false, webSearch: false } });
    const sized = await startSimulator({ remoteImageSize: { width: 512, height: 512 } });
    try {
      const offClient = new OpenAI({ baseURL: off.url, apiKey: 'sk-test', maxRetries: 0 });
      expect((await imageByUrl(offClient)).usage?.prompt_tokens).toBe(7);
      const offAnthropic = new Anthropic({ baseURL: off.origin, apiKey: 'sk-test', maxRetries: 0 });
      const message = await offAnthropic.messages.create({
        model: 'claude-haiku-4-5',
        max_tokens: 1,
        messages: [{ role: 'user', content: 'hello' }],
        tools: [{ type: 'web_search_20250305', name: 'web_search' }],
      });
      expect(message.usage).not.toHaveProperty('server_tool_use');

      // 512 x 512: one tile, 85 + 170; + 7
      const sizedClient = new OpenAI({ baseURL: sized.url, apiKey: 'sk-test', maxRetries: 0 });
      expect((await imageByUrl(sizedClient)).usage?.prompt_tokens).toBe(262);
      // The default: 1024 x 1024, 765 + 7
      expect((await imageByUrl(openai)).usage?.prompt_tokens).toBe(772);
    } finally {
      await off.close();
      await sized.close();
    }
  });

  it('refuses bad billing options with a message naming the option', async () => {
    await expect(startSimulator({ billing: { video: true } as never })).rejects.toThrow(
      /billing\.video is not a billed part; use images, audio, files, tools, webSearch/,
    );
    await expect(startSimulator({ billing: { images: 'no' as never } })).rejects.toThrow(
      /billing\.images must be true or false/,
    );
    await expect(startSimulator({ billing: [] as never })).rejects.toThrow(/billing must be an object/);
    await expect(startSimulator({ remoteImageSize: { width: 0, height: 10 } })).rejects.toThrow(
      /remoteImageSize must be \{ width, height \} in positive whole pixels/,
    );
    await expect(startSimulator({ remoteImageSize: { width: 10.5, height: 10 } })).rejects.toThrow(
      /remoteImageSize/,
    );
    await expect(startSimulator({ remoteFilePages: 0 })).rejects.toThrow(
      /remoteFilePages must be a positive integer; got 0/,
    );
    await expect(startSimulator({ remoteAudioSeconds: 1.5 })).rejects.toThrow(
      /remoteAudioSeconds must be a positive integer/,
    );
  });

  it('lets scripted usage override the computed bill; searches stay computed unless scripted', async () => {
    const withSearch = {
      model: 'claude-haiku-4-5',
      max_tokens: 1,
      messages: [{ role: 'user' as const, content: 'hello' }],
      tools: [{ type: 'web_search_20250305' as const, name: 'web_search' as const }],
    };
    const header = await anthropic.messages.create(withSearch, {
      headers: { 'x-simulator-usage': JSON.stringify({ prompt_tokens: 10 }) },
    });
    expect(header.usage).toMatchObject({ input_tokens: 10, server_tool_use: { web_search_requests: 1 } });

    simulator.scriptNextUsage({ web_search_requests: 3 });
    const scripted = await anthropic.messages.create(withSearch);
    expect(scripted.usage).toMatchObject({ input_tokens: 6, server_tool_use: { web_search_requests: 3 } });

    // A scripted prompt replaces the computed audio share too (it defaults to 0).
    simulator.scriptNextUsage({ prompt_tokens: 100 });
    const audio = await openai.chat.completions.create({
      model: 'gpt-4o-audio-preview',
      messages: [
        { role: 'user', content: [{ type: 'input_audio', input_audio: { data: WAV_1_5_S, format: 'wav' } }] },
      ],
    });
    expect(audio.usage).toMatchObject({ prompt_tokens: 100, prompt_tokens_details: { audio_tokens: 0 } });
  });
});
