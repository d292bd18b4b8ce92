// Stage 1, identify: the key presented in the headers (a virtual key or the master key), checked
// usable, and what the body says about who else the call spends for (end user, tags).
import { timingSafeEqual } from 'node:crypto';
import { SpendGuardError } from '../errors.js';
import { assertTagCount, assertText, INPUT_LIMITS } from '../input-hygiene.js';
import { hashVirtualKey } from '../keys.js';
import type { KeyRecord } from '../storage/storage-contract.js';
import { type CallInput, isPlainObject, type KeyContext } from './call-types.js';
import type { KeyCache } from './key-cache.js';

/** Who a guarded call's headers say is calling, found before its body is read. */
export type Identity =
  | { kind: 'master'; tokenHash: string }
  | { kind: 'key'; tokenHash: string; ctx: KeyContext }
  /** Storage is down under `onStorageError: 'allow'`, and this key was seen good: served unreserved. */
  | { kind: 'unresolved'; tokenHash: string; ctx: KeyContext };

/** The master key: compared in constant time, and the context its calls are admitted under. */
export class MasterKey {
  /** The master key's SHA-256 hex, as bytes: compared in constant time with each call's key hash. */
  private readonly hash: Buffer | null;
  private ctx: KeyContext | null = null;

  constructor(masterKey: string | undefined | null) {
    this.hash = masterKey ? Buffer.from(hashVirtualKey(masterKey), 'latin1') : null;
  }

  /** Compares a presented credential with the master key in constant time. */
  is(presented: string | null): boolean {
    return !!presented && this.isHash(hashVirtualKey(presented));
  }

  /** `is` for a key already hashed (SHA-256 hex, as `hashVirtualKey`): one hash per call. */
  isHash(tokenHash: string): boolean {
    if (!this.hash) return false;
    return timingSafeEqual(Buffer.from(tokenHash, 'latin1'), this.hash);
  }

  /** The master key's context: no key, user or team budget; end user, tags, model and global apply. */
  context(tokenHash: string): KeyContext {
    if (this.ctx?.key.tokenHash === tokenHash) return this.ctx;
    const key: KeyRecord = {
      tokenHash,
      keyName: 'master key',
      keyAlias: 'master key',
      userId: null,
      teamId: null,
      models: [],
      tags: [],
      metadata: {},
      blocked: false,
      expiresAt: null,
      createdAt: new Date(0),
    };
    this.ctx = {
      key,
      user: null,
      team: null,
      scopes: [],
      countedOnly: [],
      labels: new Map([[`key:${tokenHash}`, 'Key=master key']]),
      rateLimits: [],
      secretValidUntil: null,
    };
    return this.ctx;
  }
}

/**
 * The SHA-256 of each presented secret, and whether it is the master key's, remembered for the last
 * `max` distinct secrets: a pure function of the secret, so nothing invalidates it (what the secret
 * opens is the key cache's, with its TTL and invalidation). A busy key is then not hashed on every
 * call, and the master key is still compared in constant time, once per distinct secret.
 */
export class PresentedSecrets {
  private readonly known = new Map<string, { hash: string; master: boolean }>();
  /** The same, by the whole `Authorization` header that presented the secret (read without parsing). */
  private readonly byAuthorization = new Map<string, { hash: string; master: boolean }>();

  constructor(
    private readonly master: MasterKey,
    private readonly max: number,
  ) {}

  of(secret: string): { hash: string; master: boolean } {
    const known = this.known.get(secret);
    if (known) return known;
    const hash = hashVirtualKey(secret);
    const entry = { hash, master: this.master.isHash(hash) };
    // A bound, oldest first (a Map keeps insertion order): a flood of made-up secrets costs a hash each.
    if (this.known.size >= this.max) this.known.delete(this.known.keys().next().value!);
    this.known.set(secret, entry);
    return entry;
  }

  /**
   * The secret a request's headers present (refused as `readPresentedKey` refuses it), remembered by
   * its `Authorization` header when it came in one: the same header value always presents the same secret.
   */
  presentedBy(header: CallInput['header']): { hash: string; master: boolean } {
    const authorization = header('authorization');
    if (!authorization) return this.of(readPresentedKey(header));
    const known = this.byAuthorization.get(authorization);
    if (known) return known;
    const entry = this.of(readPresentedKey(header));
    if (this.byAuthorization.size >= this.max)
      this.byAuthorization.delete(this.byAuthorization.keys().next().value!);
    this.byAuthorization.set(authorization, entry);
    return entry;
  }
}

/** What identifying a caller needs of the guard. */
export interface IdentifyDeps {
  master: MasterKey;
  secrets: PresentedSecrets;
  keys: KeyCache;
  /** True when the failure is storage's and the policy says to serve anyway. */
  servesThrough(error: unknown): boolean;
  /** Under `onStorageError: 'allow'`, whether a key seen before may be served while storage is down. */
  servableWhileDown(ctx: KeyContext, now: Date): boolean;
}

/**
 * Step 1 from the headers alone: the key presented, resolved and checked usable (401 otherwise),
 * before anything reads the body. A key in the cache is identified at once (no promise); one to
 * load from storage comes back as a promise. Refusals are thrown (synchronously on the first path).
 */
export function identify(
  deps: IdentifyDeps,
  header: CallInput['header'],
  now: Date,
): Identity | Promise<Identity> {
  const presented = deps.secrets.presentedBy(header);
  const tokenHash = presented.hash;
  if (presented.master) return { kind: 'master', tokenHash };
  const cached = deps.keys.cached(tokenHash);
  if (cached) {
    assertKeyUsable(cached, now);
    return { kind: 'key', tokenHash, ctx: cached };
  }
  return identifyFromStorage(deps, tokenHash, now);
}

async function identifyFromStorage(deps: IdentifyDeps, tokenHash: string, now: Date): Promise<Identity> {
  let ctx: KeyContext | null;
  try {
    ctx = await deps.keys.resolve(tokenHash);
  } catch (error) {
    if (!deps.servesThrough(error)) throw error;
    // Storage is down and the policy is 'allow': only a key this process resolved before, usable
    // and within its budgets when last seen, is served (unreserved); any other gets the 503.
    const seen = deps.keys.seen(tokenHash);
    if (!seen || !deps.servableWhileDown(seen, now)) throw error;
    return { kind: 'unresolved', tokenHash, ctx: seen };
  }
  if (!ctx)
    throw new SpendGuardError('INVALID_KEY', 'Authentication Error, Invalid proxy server token passed.');
  assertKeyUsable(ctx, now);
  return { kind: 'key', tokenHash, ctx };
}

/**
 * Refuses (401) a key that may not be used at `now`: blocked (or its team), expired, or a replaced
 * secret past its grace period. The guarded routes and the management API both check keys with it.
 */
export function assertKeyUsable(ctx: KeyContext, now: Date): void {
  const { key } = ctx;
  if (key.blocked || ctx.team?.blocked) {
    throw new SpendGuardError(
      'BLOCKED_KEY',
      'Authentication Error, this key is blocked. Unblock it with /key/unblock.',
    );
  }
  if (key.expiresAt && key.expiresAt.getTime() <= now.getTime()) {
    throw new SpendGuardError(
      'EXPIRED_KEY',
      `Authentication Error - Expired Key. Key Expiry time ${key.expiresAt.toISOString()} and current time ${now.toISOString()}`,
    );
  }
  if (ctx.secretValidUntil && ctx.secretValidUntil.getTime() <= now.getTime()) {
    // A replaced secret past its grace no longer names a key, as in LiteLLM: 401, not an expiry.
    throw new SpendGuardError(
      'INVALID_KEY',
      `Authentication Error - this key was regenerated and its grace period ended at ${ctx.secretValidUntil.toISOString()}. Use the new key.`,
    );
  }
}

export function readPresentedKey(header: CallInput['header']): string {
  const auth = header('authorization');
  let value: string | null | undefined;
  if (auth) {
    const m = /^Bearer\s+(.+)$/i.exec(auth.trim());
    if (!m) {
      throw new SpendGuardError(
        'INVALID_KEY',
        'Malformed API Key passed in. Ensure Key has `Bearer ` prefix.',
      );
    }
    value = m[1]!.trim();
  } else {
    value = header('x-api-key') ?? header('api-key') ?? header('x-goog-api-key');
  }
  if (!value) {
    throw new SpendGuardError(
      'MISSING_KEY',
      'Authentication Error, No api key passed in. Send `Authorization: Bearer sk-...`.',
    );
  }
  if (!value.startsWith('sk-') || value.length > 512) {
    throw new SpendGuardError(
      'INVALID_KEY',
      "Authentication Error, Invalid proxy server token passed. Keys start with 'sk-'.",
    );
  }
  return value;
}

/**
 * The call's tags with its key's own (LiteLLM applies a key's tags to every call it makes): its `tags`
 * and, as LiteLLM reads them too, its `metadata.tags` (checked to be strings when the key was written).
 */
export function withKeyTags(tags: string[], ctx: KeyContext): string[] {
  const inMetadata = ctx.key.metadata.tags;
  const own = Array.isArray(inMetadata) ? [...ctx.key.tags, ...(inMetadata as string[])] : ctx.key.tags;
  return own.length > 0 ? [...new Set([...tags, ...own])] : tags;
}

/**
 * The call's end user, from every place LiteLLM reads one: the body's `user`, the
 * `x-litellm-customer-id` and `x-litellm-end-user-id` headers, `litellm_metadata.user` and
 * `metadata.user_id` (the body's `user` first, as spendguard always read it).
 */
export function readEndUser(
  body: Record<string, unknown>,
  header: CallInput['header'],
): { id: string; field: string } | null {
  if (typeof body.user === 'string' && body.user !== '') return { id: body.user, field: 'user' };
  for (const name of ['x-litellm-customer-id', 'x-litellm-end-user-id']) {
    const value = header(name);
    if (value) return { id: value, field: name };
  }
  const litellmMetadata = body.litellm_metadata;
  if (
    isPlainObject(litellmMetadata) &&
    typeof litellmMetadata.user === 'string' &&
    litellmMetadata.user !== ''
  )
    return { id: litellmMetadata.user, field: 'litellm_metadata.user' };
  const metadata = body.metadata;
  if (isPlainObject(metadata) && typeof metadata.user_id === 'string' && metadata.user_id !== '')
    return { id: metadata.user_id, field: 'metadata.user_id' };
  return null;
}

export function readTags(body: Record<string, unknown>, header: CallInput['header']): string[] {
  const tags: string[] = [];
  const add = (value: unknown, where: string) => {
    if (value === undefined || value === null) return;
    if (!Array.isArray(value) || value.some((t) => typeof t !== 'string')) {
      throw new SpendGuardError('BAD_REQUEST', `${where} must be an array of strings`, { param: where });
    }
    for (const tag of value as string[]) assertText(tag, where, INPUT_LIMITS.nameLength);
    tags.push(...(value as string[]));
  };
  add(body.tags, 'tags');
  if (isPlainObject(body.metadata)) add(body.metadata.tags, 'metadata.tags');
  const h = header('x-litellm-tags');
  if (h)
    add(
      h
        .split(',')
        .map((t) => t.trim())
        .filter(Boolean),
      'x-litellm-tags',
    );
  const unique = tags.length > 1 ? [...new Set(tags)] : tags;
  assertTagCount(unique.length, 'tags');
  return unique;
}

/**
 * LiteLLM's model access: the key's `models` (else its team's; none: every model), with `*`,
 * `all-proxy-models` and provider wildcards (`openai/*`). A name in the list also admits what the
 * `modelAliases` option maps it to, and a requested alias is admitted by its target's name.
 */
export function modelAllowed(
  model: string,
  keyModels: string[],
  teamModels: string[],
  aliases: Record<string, string> = {},
): boolean {
  const list = keyModels.length > 0 ? keyModels : teamModels;
  if (list.length === 0) return true;
  const asked = Object.hasOwn(aliases, model) ? [model, aliases[model]!] : [model];
  return list.some((m) => {
    if (m === '*' || m === 'all-proxy-models') return true;
    const names = Object.hasOwn(aliases, m) ? [m, aliases[m]!] : [m];
    return asked.some((a) =>
      names.some((n) => n === a || (n.endsWith('/*') && a.startsWith(n.slice(0, -1)))),
    );
  });
}
