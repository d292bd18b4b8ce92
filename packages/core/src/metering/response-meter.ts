import { skimJsonObject } from './json-skim.js';
import { SseTap } from './sse-stream.js';
import { type ObservedResponse, observeJson, type WireFormat } from './wire-formats.js';

export type { ObservedResponse } from './wire-formats.js';

/** What the request said about the response to expect (set by the guard before the route runs). */
export interface TapHints {
  /** The wire format the request path points at; the response body's shape decides. */
  format?: WireFormat | null;
  /**
   * The guard asked for usage (`stream_options.include_usage`) on the client's behalf: hide the usage
   * chunk (and the `"usage":null` fields) from it.
   */
  hideUsageChunk?: boolean;
  /** The request can run web searches: a JSON body is read whole, for its `web_search_call` items. */
  searches?: boolean;
}

/**
 * Taps the bytes a guarded route answers with, whatever framework wrote them, and works out what
 * the provider reported: JSON bodies are buffered (up to a cap) and read at the end; SSE streams
 * are read event by event as they pass, never buffered (see {@link SseTap}).
 */
export class ResponseTap {
  private kind: 'json' | 'sse' | 'other' | null = null;
  /** The JSON body written so far, held back (one chunk, the usual case, needs no array). */
  private chunks: Uint8Array | Uint8Array[] | null = null;
  /**
   * The body as the route wrote it when that was one well-formed string: parsed as it is, rather than
   * its bytes decoded back into the same text.
   */
  private text: string | null = null;
  /** The JSON body held back, kept after `observe()` parsed it until `drain()`. */
  private held: Uint8Array | null = null;
  private bytes = 0;
  private overflow = false;
  private sse: SseTap | null = null;
  private result: ObservedResponse | null = null;
  // The hints, each a field of its own: cheaper than a hints object spread again on every call.
  private format: WireFormat | null = null;
  private hideUsageChunk = false;
  private searches = false;
  status = 200;

  constructor(private readonly maxBodyBytes: number) {}

  /** Sets what the request said to expect (the hints not given stay); call before {@link ResponseTap.begin}. */
  hint(hints: TapHints): void {
    if (hints.format !== undefined) this.format = hints.format;
    if (hints.hideUsageChunk !== undefined) this.hideUsageChunk = hints.hideUsageChunk;
    if (hints.searches !== undefined) this.searches = hints.searches;
  }

  /** Call once, when the status and content type are known (before the first chunk). */
  begin(status: number, contentType: string | null | undefined): void {
    if (this.kind !== null) return;
    this.status = status;
    const ct = (contentType ?? '').toLowerCase();
    if (ct.includes('text/event-stream')) {
      this.kind = 'sse';
      this.sse = new SseTap(this.format, this.hideUsageChunk && status < 400);
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
   * Feeds one chunk the route wrote and returns what to send now: for streams the chunk itself, or,
   * when a usage chunk is hidden, the complete events in it minus that one (`null`: nothing yet); for a
   * JSON body `null`, as it is held back (up to the cap) so that its cost can go into the headers once
   * it is complete; past the cap, everything held so far plus the chunk.
   */
  write(chunk: Uint8Array | string): Uint8Array | string | null {
    if (this.kind === null) this.begin(this.status, null);
    if (this.kind === 'sse') return this.sse!.write(chunk);
    if (this.kind !== 'json' || this.overflow) return chunk;
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    this.bytes += bytes.byteLength;
    const before = this.chunks;
    if (before === null) this.chunks = bytes;
    else if (Array.isArray(before)) before.push(bytes);
    else this.chunks = [before, bytes];
    // Kept only where it is parsed whole (see `observe`); a string with a lone surrogate is read from
    // its bytes, as the client gets it (U+FFFD).
    this.text =
      before === null &&
      typeof chunk === 'string' &&
      bytes.byteLength <= WHOLE_PARSE_BYTES &&
      isWellFormed(chunk)
        ? chunk
        : null;
    if (this.bytes <= this.maxBodyBytes) return null;
    this.overflow = true; // too large to meter: stop holding, send what was held
    const held = this.heldBytes();
    this.chunks = null;
    this.text = null;
    return held;
  }

  /** The bytes written and held so far, in one buffer. */
  private heldBytes(): Uint8Array {
    const chunks = this.chunks!;
    return Array.isArray(chunks) ? Buffer.concat(chunks) : chunks;
  }

  /**
   * Call when the body is complete: what is still held and must be sent last (the JSON body, read into
   * usage first; or the end of a stream whose last event had no blank line after it), or `null`.
   */
  drain(): Uint8Array | null {
    if (this.kind === 'sse') return this.sse!.end();
    this.observe();
    const held = this.held;
    this.held = null;
    return held;
  }

  /** What the response reported, read once everything written so far is in. Cached. */
  observe(): ObservedResponse {
    if (this.result) return this.result;
    if (this.kind === 'sse') {
      this.result = this.sse!.observe();
    } else if (this.kind === 'json' && !this.overflow && this.chunks !== null) {
      // Read once here; the bytes stay held for drain(). First without the generated text (which only
      // a body without its final usage needs, to count it), else whole.
      const buf = this.heldBytes();
      const format = this.format;
      // A small body is parsed whole at once: what the skim would fall back to anyway, and cheaper
      // than the skim's byte searches below about a kilobyte (a chat completion of a few sentences).
      // Malformed, it goes on to the skim, which still finds a usage its text cannot hide.
      const whole = buf.byteLength <= WHOLE_PARSE_BYTES ? parseWhole(this.text ?? buf) : undefined;
      this.chunks = null;
      this.text = null;
      if (whole !== undefined) {
        this.result = observeJson(whole, format);
        this.held = buf;
        return this.result;
      }
      const skimmed = skimJsonObject(buf);
      const quick = skimmed ? observeJson(skimmed, format) : null;
      // The skim drops `output` (where OpenAI's Responses API lists its web searches, billed apart,
      // read in full when the request could search) and `candidates` (where Gemini reports its
      // grounding searches).
      const grounded = quick?.format === 'gemini' && hasGrounding(buf);
      if (quick?.usage && quick.usageFinal && !this.searches && !grounded) {
        this.result = quick;
      } else {
        this.result = observeJson(parseWhole(buf) ?? null, format);
      }
      this.held = buf; // concatenated once, for drain() too
    } else {
      this.result = {
        format: this.format,
        model: null,
        responseId: null,
        usage: null,
        usageFinal: false,
        completionText: '',
        webSearchCalls: 0,
      };
      this.chunks = null;
      this.text = null;
    }
    return this.result;
  }
}

/**
 * Bodies up to this size are parsed whole rather than skimmed (`skimJsonObject`): in process, a
 * 300-byte chat completion is read in about 2/3 of the skim's CPU; the two cost the same near 1.5 KB,
 * past which the skim's saving grows with the generated text it does not build.
 */
const WHOLE_PARSE_BYTES = 1024;

/** The body (its text, or its bytes as UTF-8) parsed whole; `undefined` when it is not JSON. */
function parseWhole(body: string | Uint8Array): unknown {
  try {
    return JSON.parse(typeof body === 'string' ? body : asBuffer(body).toString('utf8'));
  } catch {
    return undefined;
  }
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** `String.prototype.isWellFormed` (ES2024, in Node 20): no lone surrogate. */
const isWellFormed = (s: string): boolean => (s as string & { isWellFormed(): boolean }).isWellFormed();

/** A byte search, no parse: the camelCase name first (what Google sends), then the proto name. */
function hasGrounding(bytes: Uint8Array): boolean {
  const buf = asBuffer(bytes);
  return buf.includes('"groundingMetadata"') || buf.includes('"grounding_metadata"');
}
