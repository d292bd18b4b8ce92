import type { GuardLogger } from '../config.js';
import type { CallInput, GuardResponse } from '../pipeline/call-types.js';
import { meterResponse, type RespondingCall, toWebResponse } from '../web.js';
import { currentCall, type MeteredCall, noCallHint } from './track.js';

/** An upstream call admitted as a child of a guarded call: metered and settled as its own. */
export type UpstreamCall = MeteredCall & RespondingCall;

/** What `guard.fetch` and a call's own `fetch` need of the guard: admission, and a logger. */
export interface FetchHost {
  logger: Pick<GuardLogger, 'warn'>;
  admit(input: CallInput): Promise<{ ok: true; call: UpstreamCall } | { ok: false; response: GuardResponse }>;
}

/**
 * A `fetch` for the provider SDKs a guarded route uses (`new OpenAI({ fetch: guard.fetch })`,
 * `new Anthropic({ fetch: guard.fetch })`). A call made while a guarded request is handled (inside
 * the route, found through AsyncLocalStorage) is:
 * - admitted first, as a call of its own presenting the request's key: the key must be allowed the
 *   upstream model, and the upstream body's worst case must fit every budget, else it is never sent and
 *   the SDK gets the guard's refusal (429 `budget_exceeded`, with `x-should-retry: false` so that it
 *   does not retry);
 * - metered from its response as the SDK reads it (JSON or SSE, every wire format), and settled as its
 *   own spend-log row linked to the request (`metadata.parent_request_id`), whatever the route answers;
 * - for a streamed chat completion, asked for usage, the usage chunk hidden from the SDK.
 *
 * The request itself is then charged $0 (see the double-count rule in `track.ts`).
 *
 * Outside a guarded request it is plain `fetch`, unmetered: startup and background calls keep working
 * (a warning is logged once).
 */
export function createGuardFetch(guard: FetchHost): typeof fetch {
  let warned = false;
  return function guardFetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
    const parent = currentCall();
    if (!parent) {
      if (!warned) {
        warned = true;
        guard.logger.warn(
          `guard.fetch was called outside a guarded request: that call is not metered (${noCallHint()})`,
        );
      }
      return fetch(input, init);
    }
    return fetchAsChild(guard, parent, input, init);
  } as typeof fetch;
}

/**
 * The call's own `fetch` (`res.locals.spendguard.fetch`, `c.get('spendguard').fetch`): what
 * `guard.fetch` does inside a guarded route, for this call, with no AsyncLocalStorage context needed.
 */
export function createCallFetch(guard: FetchHost, parent: Pick<MeteredCall, 'meter'>): typeof fetch {
  return function callFetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
    return fetchAsChild(guard, parent, input, init);
  } as typeof fetch;
}

/** One upstream call of `parent`: admitted, sent, metered and settled as its own child call. */
async function fetchAsChild(
  guard: FetchHost,
  parent: Pick<MeteredCall, 'meter'>,
  input: string | URL | Request,
  init: RequestInit | undefined,
): Promise<Response> {
  const url = new URL(input instanceof Request ? input.url : String(input));
  const method = (init?.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase();
  const text = bodyText(init?.body);
  let body: unknown;
  if (text !== null) {
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined; // not JSON (a file upload): admitted on its size alone
    }
  }
  await parent.meter.releaseOwnReservation(); // the request itself will be charged $0
  const outcome = await guard.admit({
    method,
    path: url.pathname,
    header: parent.meter.header,
    body,
    bodyBytes: text === null ? undefined : Buffer.byteLength(text),
  });
  if (!outcome.ok) {
    const refusal = toWebResponse(outcome.response);
    // A spent budget does not come back on retry; a storage outage may.
    if (outcome.response.status !== 503) refusal.headers.set('x-should-retry', 'false');
    return refusal;
  }
  const child = outcome.call;
  parent.meter.adopt(child);
  const sent = child.meter.rewrittenBody;
  let request = init;
  if (sent !== null) {
    const headers = new Headers(init?.headers);
    headers.delete('content-length'); // the body grew by `stream_options`
    request = { ...init, headers, body: sent };
  }
  let response: Response;
  try {
    response = await fetch(input, request);
  } catch (error) {
    child.tap.begin(502, null); // never answered: nothing to charge
    child.finish({ aborted: true }).catch(() => {});
    throw error;
  }
  return meterResponse(child, response);
}

/** The body of a fetch call as text, when it is text or bytes (what SDKs send for JSON), else `null`. */
function bodyText(body: RequestInit['body'] | undefined): string | null {
  if (typeof body === 'string') return body;
  if (body instanceof ArrayBuffer) return Buffer.from(body).toString('utf8');
  if (ArrayBuffer.isView(body))
    return Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8');
  return null;
}
