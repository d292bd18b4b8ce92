import {
  isObject,
  MAX_KEPT_TEXT,
  type ObservedResponse,
  StreamObserver,
  type WireFormat,
} from './wire-formats.js';

// Server-Sent Events metered as bytes, on the hot path of every streamed token. An event is found by
// its blank line (LF or CRLF line ends), and is JSON-parsed only when it is the first one (format and
// model) or when a byte search says it carries usage; every other event is kept as a slice and read
// for its text only if the stream ends without usage (a cut stream needs an estimate). Gemini repeats
// its usage on every chunk: its events are all kept, and the last usage is read from them at the end.

const LF = 10;
const CR = 13;
const USAGE = Buffer.from('"usage"');
const USAGE_METADATA = Buffer.from('"usageMetadata"');
const WEB_SEARCH_CALL = Buffer.from('"web_search_call"');
/** Events kept unread past this many bytes are read into text (and dropped), bounding memory. */
const KEEP_LIMIT = 256 * 1024;
/** A partial event larger than this is not an SSE stream the meter can read: it stops metering. */
export const MAX_EVENT_BYTES = 32 * 1024 * 1024;

type Kept = Buffer | { event: string | null; payload: unknown };

function isSpace(b: number | undefined): boolean {
  return b === 32 || b === 9 || b === LF || b === CR;
}

/** An event's `event:` name and its `data:` lines joined, decoded from its bytes. */
export function parseSseEvent(bytes: Buffer): { event: string | null; data: string | null } {
  const text = bytes.toString('utf8');
  let event: string | null = null;
  let data: string | null = null;
  let start = 0;
  while (start < text.length) {
    let nl = text.indexOf('\n', start);
    if (nl === -1) nl = text.length;
    const line = text.charCodeAt(nl - 1) === CR ? text.slice(start, nl - 1) : text.slice(start, nl);
    start = nl + 1;
    if (line.startsWith('data:')) {
      const value = line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5);
      data = data === null ? value : `${data}\n${value}`;
    } else if (line.startsWith('event:')) {
      event = line.slice(6).trim();
    }
  }
  return { event, data };
}

function parseJson(data: string | null): unknown {
  if (data === null || data === '[DONE]') return undefined;
  try {
    return JSON.parse(data);
  } catch {
    return undefined; // a malformed event carries nothing we can price
  }
}

/**
 * Meters one SSE response as it passes, and optionally hides the usage chunk that the guard asked
 * OpenAI for (`stream_options.include_usage`) from a client that did not: that chunk is dropped and the
 * `"usage":null` field removed from the others, so the client sees the bytes it would have seen.
 * While hiding, only complete events are forwarded (a partial one waits for its end).
 */
export class SseTap {
  /** The partial event after the last complete one, in the pieces it came in (joined when it may end). */
  private tail: Buffer[] = [];
  private tailBytes = 0;
  /** Where to resume looking for a line end in the tail (bytes before it were scanned). */
  private scanned = 0;
  private kept: Kept[] = [];
  private keptBytes = 0;
  private started = false;
  private ended = false;
  /** Gemini: every event is kept as it is (its usage is read from the kept chunks, readGeminiUsage). */
  private gemini = false;
  /**
   * Position of the next `"usage"` in the buffer being scanned, its length when there is none, -1 when
   * not searched yet: one search per occurrence, however many events a chunk holds.
   */
  private nextNeedle = -1;
  private readonly observer: StreamObserver;

  /**
   * `maxEventBytes` is for tests only (the same give-up path on kilobytes instead of 32 MiB, which
   * made every mutant of the tap cost seconds in the mutation runs); the guard uses the default.
   */
  constructor(
    pathHint: WireFormat | null,
    private readonly hideUsageChunk: boolean,
    private readonly maxEventBytes: number = MAX_EVENT_BYTES,
  ) {
    this.observer = new StreamObserver(pathHint);
  }

  /** Feeds what the route wrote; returns what to send now (`null`: nothing yet). */
  write(chunk: Uint8Array | string): Uint8Array | string | null {
    if (this.ended) return chunk;
    let buf =
      typeof chunk === 'string'
        ? Buffer.from(chunk)
        : Buffer.isBuffer(chunk)
          ? chunk
          : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let pos = 0;
    if (this.tailBytes > 0) {
      if (buf.indexOf(LF) === -1) {
        // No line ends here, so no event can: add it to the partial event without copying (a large
        // event, such as a Responses `response.completed`, comes in many such pieces).
        // (`scanned` stays: a line end just before this piece may start a blank line, "\n\r" + "\n".)
        this.tail.push(buf);
        this.tailBytes += buf.length;
        if (this.tailBytes > this.maxEventBytes) {
          const held = this.giveUp();
          return this.hideUsageChunk ? held : chunk;
        }
        return this.hideUsageChunk ? null : chunk;
      }
      pos = this.scanned;
      buf = Buffer.concat([...this.tail, buf]);
      this.tail = [];
      this.tailBytes = 0;
    }
    this.nextNeedle = -1;
    const out: Buffer[] | null = this.hideUsageChunk ? [] : null;
    let copyFrom = 0;
    let eventStart = 0;
    for (;;) {
      const nl = buf.indexOf(LF, pos);
      if (nl === -1) {
        pos = buf.length;
        break;
      }
      const b1 = buf[nl + 1];
      let end = -1;
      if (b1 === LF) end = nl + 2;
      else if (b1 === CR) {
        const b2 = buf[nl + 2];
        if (b2 === LF) end = nl + 3;
        else if (b2 === undefined) {
          pos = nl;
          break;
        }
      } else if (b1 === undefined) {
        pos = nl;
        break;
      }
      if (end === -1) {
        pos = nl + 1;
        continue;
      }
      const verdict = this.onEvent(buf, eventStart, end);
      if (out && verdict !== null) {
        // Forward up to what is hidden (the event, or its `"usage":null`), then skip it: no copy.
        const [from, to] = verdict === 'drop' ? [eventStart, end] : verdict;
        if (from > copyFrom) out.push(buf.subarray(copyFrom, from));
        copyFrom = to;
      }
      eventStart = end;
      pos = end;
    }
    if (eventStart < buf.length) {
      this.tail = [buf.subarray(eventStart)];
      this.tailBytes = buf.length - eventStart;
      this.scanned = pos - eventStart;
      if (this.tailBytes > this.maxEventBytes) {
        if (!out) {
          this.giveUp();
          return chunk;
        }
        if (eventStart > copyFrom) out.push(buf.subarray(copyFrom, eventStart));
        const rest = this.giveUp();
        if (rest) out.push(Buffer.from(rest));
        return Buffer.concat(out);
      }
    }
    if (!out) return chunk;
    if (eventStart > copyFrom) out.push(buf.subarray(copyFrom, eventStart));
    if (out.length === 0) return null;
    return out.length === 1 ? out[0]! : Buffer.concat(out);
  }

  /**
   * The stream is over (or cut): a last event with no blank line after it is read, and, while hiding,
   * returned to send (unless it is the hidden chunk). Idempotent.
   */
  end(): Uint8Array | null {
    if (this.ended) return null;
    this.ended = true;
    const tail = this.tail.length === 1 ? this.tail[0]! : Buffer.concat(this.tail);
    this.tail = [];
    this.tailBytes = 0;
    this.nextNeedle = -1;
    if (tail.length === 0) return null;
    const verdict = this.onEvent(tail, 0, tail.length);
    if (!this.hideUsageChunk) return null;
    if (verdict === null) return tail;
    if (verdict === 'drop') return null;
    return Buffer.concat([tail.subarray(0, verdict[0]), tail.subarray(verdict[1])]);
  }

  /** Stops metering a stream that is not SSE after all; returns the held bytes to send (when hiding). */
  private giveUp(): Uint8Array | null {
    const held = this.tail.length === 1 ? this.tail[0]! : Buffer.concat(this.tail);
    this.tail = [];
    this.tailBytes = 0;
    this.ended = true;
    return this.hideUsageChunk && held.length > 0 ? held : null;
  }

  /** What the stream reported so far; reads the kept events' text only when an estimate needs it. */
  observe(): ObservedResponse {
    this.end();
    this.readGeminiUsage();
    const { usage, usageFinal } = this.observer.result();
    if (!usage || !usageFinal) this.readKept();
    return {
      format: this.observer.format,
      model: this.observer.model,
      responseId: this.observer.responseId,
      usage,
      usageFinal: usage ? usageFinal : false,
      completionText: this.observer.text,
      webSearchCalls: this.observer.webSearchCalls,
    };
  }

  /**
   * Meters one complete event. Returns `null` to forward it as it is, `'drop'` to hide it, or the
   * byte range of `buf` to leave out of it (its `"usage":null` member).
   */
  private onEvent(buf: Buffer, start: number, end: number): Skip | 'drop' | null {
    if (!this.started) {
      const slice = buf.subarray(start, end);
      const { event, data } = parseSseEvent(slice);
      if (data === null) return null; // a comment or keep-alive
      this.started = true;
      const payload = parseJson(data);
      this.observer.detect(event, payload);
      this.gemini = this.observer.format === 'gemini';
      return this.onParsed(event, payload, slice, start);
    }
    if (this.gemini) {
      this.keep(buf.subarray(start, end)); // read by readGeminiUsage()
      return null;
    }
    if (this.nextNeedle < start) {
      const found = buf.indexOf(USAGE, start);
      this.nextNeedle = found === -1 ? buf.length : found;
    }
    const at = this.nextNeedle;
    if (at >= end) {
      this.keep(buf.subarray(start, end));
      return null;
    }
    this.nextNeedle = -1; // this occurrence is consumed; the next event searches again
    // Find the value after `"usage":`; a null one needs no parse (OpenAI sends it on every chunk).
    let v = at + USAGE.length;
    while (isSpace(buf[v])) v++;
    if (buf[v] === 58 /* : */) v++;
    while (isSpace(buf[v])) v++;
    if (buf[v] === 110 /* n */) {
      this.keep(buf.subarray(start, end));
      return this.hiding() ? memberRange(buf, start, at, v + 4) : null;
    }
    const slice = buf.subarray(start, end);
    const { event, data } = parseSseEvent(slice);
    return this.onParsed(event, parseJson(data), slice, start);
  }

  /** `slice` is the event, at `offset` in the buffer being scanned (the range returned is in the buffer). */
  private onParsed(
    event: string | null,
    payload: unknown,
    slice: Buffer,
    offset: number,
  ): Skip | 'drop' | null {
    if (payload === undefined) return null;
    const kind = this.observer.onPayload(event, payload);
    this.kept.push({ event, payload });
    if (kind === 'usage-only' && this.hiding()) return 'drop';
    if (this.hiding()) {
      // A content chunk of a stream that asked for usage carries `"usage":null`: hide it too. The
      // member is the `"usage"` followed by a colon: the same bytes can come before it as a string
      // value (a delta whose text is `usage`).
      for (let at = slice.indexOf(USAGE); at !== -1; at = slice.indexOf(USAGE, at + 1)) {
        let v = at + USAGE.length;
        while (isSpace(slice[v])) v++;
        if (slice[v] !== 58 /* : */) continue;
        v++;
        while (isSpace(slice[v])) v++;
        if (slice[v] !== 110 /* n */) return null;
        const [from, to] = memberRange(slice, 0, at, v + 4);
        return [from + offset, to + offset];
      }
    }
    return null;
  }

  /** Hiding applies to chat-completions streams only (where the guard asked for usage). */
  private hiding(): boolean {
    return this.hideUsageChunk && this.observer.format === 'openai-chat';
  }

  private keep(slice: Buffer): void {
    this.kept.push(slice);
    this.keptBytes += slice.length;
    if (this.keptBytes > KEEP_LIMIT) {
      this.readGeminiUsage();
      this.readKept();
    }
  }

  /**
   * Gemini repeats its usage on every chunk: only the last kept chunk that reports it is read (usually
   * the last one). The bytes `"usageMetadata"` alone do not say so: a function call's `args` is an
   * object, whose keys can be any name; the chunks are read from the last back until one has usage.
   */
  private readGeminiUsage(): void {
    if (this.observer.format !== 'gemini') return;
    for (let k = this.kept.length - 1; k >= 0; k--) {
      const item = this.kept[k]!;
      if (!Buffer.isBuffer(item) || item.indexOf(USAGE_METADATA) === -1) continue; // a payload was read
      const { event, data } = parseSseEvent(item);
      const payload = parseJson(data);
      if (isObject(payload) && isObject(payload.usageMetadata)) {
        this.observer.onPayload(event, payload);
        return;
      }
    }
  }

  /** Reads the kept events' text into the observer, in stream order, and lets them go. */
  private readKept(): void {
    for (const item of this.kept) {
      if (this.observer.text.length >= MAX_KEPT_TEXT) {
        // No more text is kept; only a Responses search item past it still counts (it is billed). A
        // parsed event goes on too (no search to skip it by): its bytes held `"usage"`, which can be a
        // search's query.
        if (this.observer.format !== 'openai-responses') break;
        if (Buffer.isBuffer(item) && item.indexOf(WEB_SEARCH_CALL) === -1) continue;
      }
      if (Buffer.isBuffer(item)) {
        const { event, data } = parseSseEvent(item);
        this.observer.onText(event, parseJson(data));
      } else {
        this.observer.onText(item.event, item.payload);
      }
    }
    this.kept = [];
    this.keptBytes = 0;
  }
}

/** A byte range `[from, to)` of the buffer being scanned. */
type Skip = [number, number];

/**
 * The bytes to remove for the JSON member `"usage":null` found at [at, valueEnd) of an event starting
 * at `start`: with the comma before it (it is not the first member), else with the one after it.
 */
function memberRange(buf: Buffer, start: number, at: number, valueEnd: number): Skip {
  let from = at;
  let b = at - 1;
  while (b > start && isSpace(buf[b])) b--;
  let to = valueEnd;
  if (buf[b] === 44 /* , */) from = b;
  else {
    while (isSpace(buf[to])) to++;
    if (buf[to] === 44) {
      to++;
      while (isSpace(buf[to])) to++;
    }
  }
  return [from, to];
}
