import { ChatStreamObserver, type ObservedResponse, observeChatJson } from './openai-chat.js';
import { SseParser } from './sse-parser.js';

/**
 * Taps the bytes a guarded route answers with, whatever framework wrote them, and works out what
 * the provider reported: JSON bodies are buffered (up to a cap) and read at the end; SSE streams
 * are read event by event as they pass, never buffered.
 */
export class ResponseTap {
  private kind: 'json' | 'sse' | 'other' | null = null;
  private chunks: Uint8Array[] = [];
  /** The JSON body held back, kept after `observe()` parsed it until `drain()`. */
  private held: Uint8Array[] = [];
  private bytes = 0;
  private overflow = false;
  private decoder: TextDecoder | null = null;
  private sse: SseParser | null = null;
  private stream: ChatStreamObserver | null = null;
  private result: ObservedResponse | null = null;
  status = 200;

  constructor(private readonly maxBodyBytes: number) {}

  /** Call once, when the status and content type are known (before the first chunk). */
  begin(status: number, contentType: string | null | undefined): void {
    if (this.kind !== null) return;
    this.status = status;
    const ct = (contentType ?? '').toLowerCase();
    if (ct.includes('text/event-stream')) {
      this.kind = 'sse';
      this.decoder = new TextDecoder();
      this.stream = new ChatStreamObserver();
      const stream = this.stream;
      this.sse = new SseParser((data) => stream.onData(data));
    } else if (ct.includes('json') || ct === '') {
      this.kind = 'json';
    } else {
      this.kind = 'other';
    }
  }

  get isStream(): boolean {
    return this.kind === 'sse';
  }

  /**
   * Feeds one chunk the route wrote and returns what to send now: the chunk itself for streams,
   * `null` for a JSON body, which is held back (up to the cap) so that its cost can go into the
   * headers once it is complete; past the cap, everything held so far plus the chunk.
   */
  write(chunk: Uint8Array | string): Uint8Array | string | null {
    if (this.kind === null) this.begin(this.status, null);
    if (this.kind === 'sse') {
      this.sse!.push(typeof chunk === 'string' ? chunk : this.decoder!.decode(chunk, { stream: true }));
      return chunk;
    }
    if (this.kind !== 'json' || this.overflow) return chunk;
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    this.bytes += bytes.byteLength;
    this.chunks.push(bytes);
    if (this.bytes <= this.maxBodyBytes) return null;
    this.overflow = true; // too large to meter: stop holding, send what was held
    const held = Buffer.concat(this.chunks);
    this.chunks = [];
    return held;
  }

  /** The held JSON body (read it into usage first with `observe()`), or `null`. */
  drain(): Uint8Array | null {
    this.observe();
    if (this.held.length === 0) return null;
    const held = this.held.length === 1 ? this.held[0]! : Buffer.concat(this.held);
    this.held = [];
    return held;
  }

  /** What the response reported, read once everything written so far is in. Cached. */
  observe(): ObservedResponse {
    if (this.result) return this.result;
    if (this.kind === 'sse') {
      this.sse!.flush();
      this.result = this.stream!.observed;
    } else if (this.kind === 'json' && !this.overflow && this.chunks.length > 0) {
      // Parsed once here; the bytes stay held for drain().
      let parsed: unknown = null;
      try {
        const buf = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
        parsed = JSON.parse(Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).toString('utf8'));
      } catch {
        parsed = null;
      }
      this.result = observeChatJson(parsed);
      this.held = this.chunks;
    } else {
      this.result = { model: null, usage: null, completionText: '' };
    }
    this.chunks = [];
    return this.result;
  }
}
