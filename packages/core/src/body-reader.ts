import { SpendGuardError } from './errors.js';
import { hasArrived, readArrivedBody, readBodyText } from './web.js';

/** A body read whole: its text, its size and its bytes. */
export type BodyText = { text: string; bytes: number; raw: Buffer };

/** What a body source is: a web `ReadableStream` (`request.body`) or any async iterable of bytes. */
export type BodySource = ReadableStream<Uint8Array> | AsyncIterable<Uint8Array> | null | undefined;

/**
 * Reads request bodies under two limits: each body's size (413 PAYLOAD_TOO_LARGE) and the bytes of
 * every body being read at once (503 OVERLOADED, with `Retry-After`). One per guard, shared by its
 * guarded routes, management API and dashboard, so that concurrent large bodies cannot grow the
 * process past the budget whoever sends them. Callers read a body only after its credential is
 * checked, so an unauthenticated body is never read at all.
 */
export class BodyReader {
  #inFlight = 0;

  constructor(
    readonly limitBytes: number,
    readonly maxInFlightBytes: number,
  ) {}

  /** Bytes held by the bodies being read right now. */
  get bytesInFlight(): number {
    return this.#inFlight;
  }

  /**
   * Reads a body whole as UTF-8 text. A `Content-Length` over the limit is refused before a byte is
   * read, and a declared length is held whole from the start (a slow sender holds what it announced);
   * a body without one holds its bytes as they come.
   * @example const { text } = await guard.bodies.read(req, req.headers['content-length'])
   */
  async read(
    source: BodySource,
    contentLength: string | null | undefined,
    /** A tighter limit for this body (a sign-in form), at most `limitBytes`. */
    limitBytes = this.limitBytes,
  ): Promise<{ text: string; bytes: number; raw: Buffer }> {
    return this.readNow(source, contentLength, limitBytes);
  }

  /**
   * `read`, answered at once (no promise) when the body has arrived whole (a Node request whose
   * bytes wait in its buffer); a refusal is then thrown, not returned as a rejected promise.
   */
  readNow(
    source: BodySource,
    contentLength: string | null | undefined,
    limitBytes = this.limitBytes,
  ): BodyText | Promise<BodyText> {
    if (!hasArrived(source)) return this.readStreamed(source, contentLength, limitBytes);
    const { limit, hold, release } = this.#hold(contentLength, limitBytes);
    try {
      return readArrivedBody(source, limit, hold);
    } finally {
      release();
    }
  }

  private async readStreamed(
    source: BodySource,
    contentLength: string | null | undefined,
    limitBytes: number,
  ): Promise<BodyText> {
    const { limit, hold, release } = this.#hold(contentLength, limitBytes);
    try {
      return await readBodyText(source, limit, hold);
    } finally {
      release();
    }
  }

  /**
   * The limit of one read, refused at once past it by its Content-Length, and the bytes it holds of
   * `maxInFlightBytes` (the declared length first, then what arrives): `hold(total)` throws when the
   * process holds too much, `release()` gives it all back once the read is over.
   */
  #hold(contentLength: string | null | undefined, limitBytes: number) {
    const limit = Math.min(limitBytes, this.limitBytes);
    const declared = declaredLength(contentLength);
    if (declared !== null && declared > limit) throw tooLarge(limit);
    let held = 0;
    const hold = (total: number) => {
      if (total <= held) return;
      if (this.#inFlight + (total - held) > this.maxInFlightBytes) throw overloaded();
      this.#inFlight += total - held;
      held = total;
    };
    const release = () => {
      this.#inFlight -= held;
      held = 0;
    };
    if (declared) hold(declared);
    return { limit, hold, release };
  }
}

/** The `Content-Length` as a number of bytes; `null` when absent (chunked) or not a plain number. */
function declaredLength(header: string | null | undefined): number | null {
  if (!header || !/^\d{1,15}$/.test(header.trim())) return null;
  return Number(header.trim());
}

function tooLarge(limitBytes: number): SpendGuardError {
  return new SpendGuardError('PAYLOAD_TOO_LARGE', `Request body is larger than ${limitBytes} bytes.`);
}

function overloaded(): SpendGuardError {
  return new SpendGuardError(
    'OVERLOADED',
    'The server is reading too many request bodies at once (maxBodyBytesInFlight); retry shortly.',
    { headers: { 'retry-after': '1' } },
  );
}
